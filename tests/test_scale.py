"""Large stores: what the fast paths of apply, plan, list and validate must keep (no timings here: see bench/scale.py).

The spec loader built from parser events gives what ruamel's safe loader gives; an unchanged re-apply
decodes no JWT; apply records its state from what it wrote; list and validate in several processes say
what they say in one; users written by several processes at once are whole and private.
"""

import json
import os
import shutil
import stat

import pytest
from conftest import snapshot
from ruamel.yaml import YAML

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops._fs import atomic_write, find_temps
from dchat_ops.errors import NKeyError
from dchat_ops.nsc import admin, describe
from dchat_ops.nsc import store as store_mod
from dchat_ops.nsc.claims import UserClaims
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store
from dchat_ops.provision import _yaml
from dchat_ops.provision.state import fingerprint, load_state, sha, state_path

YAML_CASES = [
    "",
    "a: 1",
    "- 1\n- 2",
    "a: &x [1, 2]\nb: *x",
    "a: &x 1\nb: *x\n",
    "&a a: 1\nb: *a",
    "a: [&z {k: v}, *z]",
    "a: 'q'\nb: \"w\\n\"\nc: |\n  lit\n  x\nd: >\n  fold\n  ed\n",
    "e: [1, 2.5, true, null, ~, 2024-01-02, 0o17, 0x1f, .inf, -.inf, +1, 1_000, yes, no, on, 1e3, 0b101, 012]",
    "t: [True, TRUE, true, False, FALSE, false, tRue]",
    "n: [Null, NULL, null, ~, '', .5, 1., NaN, .NaN, -, =x, <x, ~x, 7x, .x, +x]",
    "t: 2001-12-14t21:59:43.10-05:00",
    "d: 2027-06-30\nq: '2027-06-30'",
    "f: {g: h, i: }",
    "nested: [[1, [2, {a: [3]}]], {}]",
    "'<<': {a: 1}",
    "a: 'it''s'",
    "%YAML 1.1\n---\na: yes",
    "a: b\n...\n",
    "? a\n? b\n",
    # left to ruamel's own loader: same result, or the same error
    "? [k]\n: v",
    "[1, 2]: x",
    "a: 1\na: 2",
    "1: one\ntrue: t\n",
    "<<: {a: 1}\nb: 2",
    "base: &b {a: 1}\nx:\n  <<: *b\n  c: 2",
    "a: !!str 1",
    "a: !custom x",
    "--- 1\n--- 2",
    "a: *nope",
    "x: =",
    "a: - b",
    "key: value: colon",
    "[unclosed",
]


def _ruamel(text):
    try:
        return ("value", YAML(typ="safe").load(text))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


def _ours(text):
    try:
        return ("value", _yaml.load_yaml(text))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize("text", YAML_CASES)
def test_event_loader_builds_what_ruamels_safe_loader_builds(text):
    assert repr(_ours(text)) == repr(_ruamel(text))


def spec_text(n=30):
    """``n`` users over three rooms, and a user of a role with an expiry (a YAML date)."""
    users = "\n".join(
        f'      - {{name: u{i}, allow_sub: [room.{i % 3}, "_INBOX.>"], allow_pub: ["room.>"]}}' for i in range(n)
    )
    return (
        "version: 1\noperator: {name: dchat}\naccounts:\n  - name: chat\n    signing_keys:\n"
        f"      - {{role: guest, allow_sub: [lobby]}}\n    users:\n{users}\n"
        "      - {name: visitor, role: guest, expiry: 2099-01-01}\n"
    )


def test_a_plain_spec_is_built_from_events_not_by_ruamels_loader(monkeypatch):
    text = spec_text()
    want = YAML(typ="safe").load(text)

    def refuse(*a, **k):
        raise AssertionError("ruamel's loader was used")

    monkeypatch.setattr(_yaml.YAML, "load", refuse)
    got = _yaml.load_yaml(text)
    assert got == want and got["accounts"][0]["users"][-1]["expiry"].isoformat() == "2099-01-01"


def _spec(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return provision.load_spec(p)


def test_apply_records_the_state_of_what_it_wrote(tmp_path):
    store = Store(tmp_path / "home")
    spec = _spec(tmp_path, spec_text())
    provision.apply(store, spec)
    state = load_state(store)
    assert state["spec_key"] == spec.key and spec.key
    users = spec.accounts[0]["users"]
    assert sorted(state["users"]) == sorted(f"chat/{u['name']}" for u in users)
    for u in users:
        token = store.user_jwt_path("dchat", "chat", u["name"]).read_text().strip()
        assert state["users"][f"chat/{u['name']}"] == {"spec": fingerprint(u), "jwt": sha(token)}


def test_unchanged_reapply_decodes_no_jwt(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text())
    provision.apply(store, provision.load_spec(path))

    real = store_mod.decode

    def operator_and_accounts_only(token, cls=None):
        assert cls is not UserClaims, "a user JWT was decoded"
        return real(token, cls)

    def refuse(*a, **k):
        raise AssertionError("a user JWT was read through the store")

    monkeypatch.setattr(store_mod, "decode", operator_and_accounts_only)
    monkeypatch.setattr(Store, "user", refuse)
    fresh = Store(tmp_path / "home")
    before = snapshot(fresh.home)
    r = provision.apply(fresh, provision.load_spec(path))
    assert not r.plan.has_changes and r.plan.unchanged == 31 and not r.plan.state_stale
    assert snapshot(fresh.home) == before


def test_a_state_without_the_spec_key_is_upgraded_and_edits_outside_the_users_keep_users(tmp_path):
    store = Store(tmp_path / "home")
    text = spec_text()
    provision.apply(store, _spec(tmp_path, text))
    state = load_state(store)
    del state["spec_key"]  # as an older version wrote it
    state_path(store).write_text(json.dumps(state))
    p = provision.plan(store, _spec(tmp_path, text))
    assert not p.has_changes and p.unchanged == 31 and p.state_stale
    provision.apply(store, _spec(tmp_path, text))
    assert load_state(store)["spec_key"] == _spec(tmp_path, text).key
    # a comment is another text: nothing to change, but the state learns the new key
    commented = "# the network\n" + text
    p = provision.plan(store, _spec(tmp_path, commented, "v2.yaml"))
    assert not p.has_changes and p.state_stale
    provision.apply(store, _spec(tmp_path, commented, "v2.yaml"))
    p = provision.plan(store, _spec(tmp_path, commented, "v2.yaml"))
    assert not p.has_changes and not p.state_stale and p.unchanged == 31


def test_a_user_edited_by_hand_is_drift_also_when_the_spec_is_the_same(tmp_path):
    store = Store(tmp_path / "home")
    text = spec_text()
    provision.apply(store, _spec(tmp_path, text))
    admin.edit_user(store, "chat", "u4", changes=admin.UserChanges(allow_sub=["everything.>"]))
    p = provision.plan(store, _spec(tmp_path, text))
    assert [(c.action, c.name) for c in p.changes] == [("drift", "chat/u4")]
    provision.apply(store, _spec(tmp_path, text))
    assert store.user("chat", "u4").claims.permissions.sub.allow == ["room.1", "_INBOX.>"]
    assert not provision.plan(store, _spec(tmp_path, text)).has_changes


def test_users_with_the_same_fields_share_one_spec_and_get_their_own_jwts(tmp_path):
    store = Store(tmp_path / "home")
    spec = _spec(tmp_path, spec_text(n=6))
    p = provision.plan(store, spec)
    steps = {s.name: s for s in p.users_to_issue}
    assert steps["u0"].spec is steps["u3"].spec and steps["u1"].spec is steps["u4"].spec
    assert steps["u0"].spec is not steps["u1"].spec
    provision.apply(store, spec)
    for i in range(6):
        assert store.user("chat", f"u{i}").claims.permissions.sub.allow == [f"room.{i % 3}", "_INBOX.>"]
    assert store.user("chat", "visitor").claims.expires > 0


def _damaged_store(tmp_path):
    store = Store(tmp_path / "home")
    admin.init(store)
    admin.add_users(store, "chat", [f"m{i}" for i in range(20)], admin.UserSpec(sub_allow=["chat.>"]))
    users = store.user_jwt_path("dchat", "chat", "m0").parent
    (users / "m3.jwt").write_text("not a jwt")
    os.chmod(store.creds_path("dchat", "chat", "m5"), 0o644)
    store.creds_path("dchat", "chat", "m7").unlink()
    m9 = store.user("chat", "m9").public_key
    store.creds_path("dchat", "chat", "m11").write_text(store.creds_path("dchat", "chat", "m12").read_text())
    store.key_path(m9).unlink()
    store.creds_path("dchat", "chat", "m9").unlink()
    store.creds_path("dchat", "chat", "m13").unlink()
    store.creds_path("dchat", "chat", "m13").mkdir()  # not a file
    return store


def test_list_and_validate_in_processes_say_what_they_say_in_one(tmp_path, monkeypatch):
    store = _damaged_store(tmp_path)
    one_list, one_findings = describe.list_store(store, workers=1), describe.validate_store(store, workers=1)
    monkeypatch.setattr(describe, "PARALLEL_USERS", 1)
    assert describe.list_store(store, workers=3) == one_list
    assert [f.to_dict() for f in describe.validate_store(store, workers=3)] == [f.to_dict() for f in one_findings]
    chat = next(a for a in one_list["accounts"] if a["name"] == "chat")
    assert [u["name"] for u in chat["users"]] == sorted(["default", *(f"m{i}" for i in range(20))])
    assert "error" in next(u for u in chat["users"] if u["name"] == "m3")
    problems = {(f.level, f.entity.split("/")[-1], f.message.split(" (")[0]) for f in one_findings}
    assert ("error", "m5", "creds file is readable by others") in problems
    assert ("warning", "m9", "neither a creds file nor the user seed is held") in problems
    assert ("error", "m11", "creds file seed does not belong to the user") in problems
    assert ("error", "m13", "cannot read its creds file: Is a directory") in problems
    assert any(level == "error" and name == "m3" for level, name, _ in problems)
    # no creds file, though the seed is held (a command cut short before it wrote them): repairable
    assert (
        "error",
        "m7",
        "no creds file, though its seed is held; run 'dchat-ops generate creds -a chat -u m7'",
    ) in problems


def test_users_written_by_two_processes_at_once_are_whole_and_private(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    admin.init(store)
    monkeypatch.setattr(admin, "PARALLEL_THRESHOLD", 10)
    admin.add_users(store, "chat", [f"b{i}" for i in range(40)], workers=2)
    provision.apply(store, _spec(tmp_path, spec_text(n=12)), workers=2)
    assert not list(find_temps(store.home))
    for name in [f"b{i}" for i in range(40)] + [f"u{i}" for i in range(12)]:
        creds = store.creds_path("dchat", "chat", name)
        user = store.user("chat", name)
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.key_path(user.public_key).stat().st_mode) == 0o600
        assert parse_creds(creds.read_text()).jwt == user.token
    assert [f for f in describe.validate_store(store) if f.level == "error"] == []


def test_save_seed_refuses_a_malformed_public_key_and_writes_nothing(store):
    before = snapshot(store.home)
    kp = KeyPair.generate("user")
    with pytest.raises(NKeyError):
        store.save_seed("U" + kp.public_key[1:40], kp.seed)
    with pytest.raises(NKeyError):
        store.save_seed("../" + kp.public_key[3:], kp.seed)
    assert snapshot(store.home) == before
    assert store.save_seed(kp.public_key, kp.seed) == store.key_path(kp.public_key)
    assert store.load_key(kp.public_key).public_key == kp.public_key


def test_first_apply_keeps_the_validated_spec_for_the_next(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(n=3))
    home = tmp_path / "home"
    assert run_cli(cli, ["--home", str(home), "apply", "-f", str(path)]) == 0
    cached = list((home / "cache" / "specs").iterdir())
    assert len(cached) == 1 and stat.S_IMODE(cached[0].stat().st_mode) == 0o600
    assert run_cli(cli, ["--home", str(home), "plan", "-f", str(path), "--detailed-exitcode"]) == 0
    capsys.readouterr()


def test_a_creds_keypair_is_derived_once(store):
    creds = parse_creds(store.creds_path("dchat", "chat", "default").read_text())
    assert creds.keypair() is creds.keypair()
    assert creds.keypair().public_key == store.user("chat", "default").public_key


def test_a_folder_removed_after_a_write_is_made_again_by_the_next(tmp_path):
    folder = tmp_path / "creds" / "dchat"
    atomic_write(folder / "a.creds", "one", private=True)
    shutil.rmtree(tmp_path / "creds")
    assert atomic_write(folder / "b.creds", "two", private=True)  # this process saw the folder: it is gone now
    assert (folder / "b.creds").read_text() == "two"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE((tmp_path / "creds").stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "b.creds").stat().st_mode) == 0o600


def test_users_removed_from_the_spec_are_revoked_in_one_resigning_of_their_account(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    provision.apply(store, _spec(tmp_path, spec_text(n=30)))
    keys = {f"u{i}": store.user("chat", f"u{i}").public_key for i in range(30)}
    writes = []
    real = Store.write_account

    def counted(self, *a, **k):
        writes.append(a[1])
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "write_account", counted)
    smaller = _spec(tmp_path, spec_text(n=3), "v2.yaml")
    assert [c.action for c in provision.plan(store, smaller).changes] == ["revoke"] * 27
    provision.apply(store, smaller)
    assert writes == ["chat"]
    revoked = store.account("chat").claims.revocations
    assert {k for n, k in keys.items() if n not in ("u0", "u1", "u2")} <= set(revoked)
    assert not {keys["u0"], keys["u1"], keys["u2"]} & set(revoked)
    assert store.user_names("chat") == ["u0", "u1", "u2", "visitor"]
    assert not store.creds_path("dchat", "chat", "u29").exists()
    assert not provision.plan(store, smaller).has_changes


def test_users_reissued_by_a_changed_spec_keep_their_keys_and_get_newer_jwts(tmp_path):
    store = Store(tmp_path / "home")
    provision.apply(store, _spec(tmp_path, spec_text(n=8)))
    before = {f"u{i}": store.user("chat", f"u{i}").claims for i in range(8)}
    changed = _spec(tmp_path, spec_text(n=8).replace('"room.>"]', '"room.>", "extra.>"]'), "v2.yaml")
    assert [c.action for c in provision.plan(store, changed).changes] == ["reissue"] * 8
    provision.apply(Store(tmp_path / "home"), changed)
    for name, old in before.items():
        new = store.user("chat", name).claims
        assert new.subject == old.subject and new.issued_at > old.issued_at
        assert new.permissions.pub.allow == ["room.>", "extra.>"]
        creds = parse_creds(store.creds_path("dchat", "chat", name).read_text())
        assert creds.jwt == store.user("chat", name).token and creds.keypair().public_key == old.subject
    assert not provision.plan(store, changed).has_changes
