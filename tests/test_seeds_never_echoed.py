"""A seed typed (or substituted) in the wrong place is never echoed: no error message carries one, and no name
may be one."""

from __future__ import annotations

import pickle

import pytest
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.errors import ChainError, DchatOpsError, FieldError, SpecError, StoreError, scrub_seeds
from dchat_ops.nsc import admin
from dchat_ops.nsc.describe import list_store, validate_store
from dchat_ops.nsc.keys import KINDS, KeyPair
from dchat_ops.nsc.spec import UserSpec
from dchat_ops.nsc.store import check_name

SEEDS = {kind: KeyPair.generate(kind).seed for kind in KINDS}
SU, SA, SO = SEEDS["user"], SEEDS["account"], SEEDS["operator"]
HIDDEN = "S…(a seed, not shown)"


def test_every_kind_of_seed_is_scrubbed_from_every_error():
    for kind, seed in SEEDS.items():
        assert seed not in scrub_seeds(f"x {seed} y"), kind
        for err in (
            DchatOpsError(f"no user named {seed!r}"),
            StoreError(f"a{seed}b"),
            FieldError("subs", f"must be a whole number, not {seed!r}"),
            FieldError(seed, "bad"),
            ChainError("user", "revoked", f"user {seed}"),
            SpecError(f"spec.yaml:3: users[0].name: {seed}"),
        ):
            assert seed not in str(err) and HIDDEN in str(err), (kind, type(err))
            assert all(seed not in str(a) for a in err.args)
    err = FieldError("subs", f"must be a whole number, not {SU!r}")
    assert SU not in err.reason and err.where == "subs" and str(err) == f"subs: must be a whole number, not '{HIDDEN}'"
    # a stray character does not make it less of a secret; public keys, JWT ids and other text stay
    assert SU[:-1] + "XQ" not in scrub_seeds(SU + "Q")
    pub = KeyPair.from_seed(SU).public_key
    assert scrub_seeds(f"user {pub} in SYS") == f"user {pub} in SYS"
    assert scrub_seeds("SUxyz is short") == "SUxyz is short"
    assert pickle.loads(pickle.dumps(StoreError(SA))).args == (HIDDEN,)


def test_a_name_that_looks_like_a_seed_is_refused_without_showing_it():
    for seed in SEEDS.values():
        with pytest.raises(StoreError) as e:
            check_name(seed, "user name")
        assert seed not in str(e.value)
        assert "looks like an nkey seed; names are public" in str(e.value)
    assert check_name("SUnny-day") == "SUnny-day"


def test_spec_field_errors_do_not_echo_a_seed():
    for fields in ({"subs": SU}, {"times_location": SU}, {"expiry": SU}, {"connection_types": [SU]}):
        with pytest.raises(FieldError) as e:
            UserSpec.from_fields(fields, now=0)
        assert SU not in str(e.value) and SU not in e.value.reason, fields


def _seed_commands(store):
    admin.edit_account(store, "chat", add_signing_key=True)
    return [
        (["revoke", "user", SU, "--no-push"], "invalid user name: it looks like an nkey seed", 2),
        (["revoke", "user", SU, "-a", "chat", "--no-push", "--json"], "looks like an nkey seed", 2),
        (["describe", "user", SU], "invalid user name: it looks like an nkey seed", 2),
        (["describe", "account", SA], "invalid account name: it looks like an nkey seed", 2),
        (["unrevoke", SA, "--no-push"], "looks like an nkey seed", 2),
        (["unrevoke", SU, "--no-push"], "looks like an nkey seed", 2),
        (["edit", "account", "chat", "--rm-sk", SA], f"account chat has no signing key or role '{HIDDEN}'", 1),
        (["edit", "operator", "--system-account", SO], f"no account named '{HIDDEN}'", 1),
        (["add", "user", SU], "invalid user name: it looks like an nkey seed; names are public", 2),
        (["add", "account", SA], "invalid account name: it looks like an nkey seed; names are public", 2),
        (["edit", "user", SU, "--tag", "x"], "looks like an nkey seed", 2),
        (["edit", "account", "chat", "--role", SA], "role: invalid role name: it looks like an nkey seed", 2),
        (["generate", "creds", "-u", SU], "looks like an nkey seed", 2),
        (["add", "user", "x", "--locale", SU], f"unknown time zone '{HIDDEN}'", 2),
        (["add", "user", "x", "--expiry", SU], HIDDEN, 2),
        (["add", "user", "x", "--signing-key", SA], "signing key: not a public nkey", 1),
        (["add", "user", "x", "--role", SA], HIDDEN, 1),
        (["add", "user", "x", "--source-network", SU], HIDDEN, 2),
        (["add", "user", "x", "-a", SA], "looks like an nkey seed", 2),
    ]


def test_no_command_echoes_a_seed_typed_by_mistake(store, capsys):
    for args, message, code in _seed_commands(store):
        before = snapshot(store.home)
        got = run_cli(cli, ["--home", str(store.home), *args])
        out, err = capsys.readouterr()
        assert got == code, (args, err)
        for seed in SEEDS.values():
            assert seed not in out and seed not in err, args
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
        assert snapshot(store.home) == before, args
    assert sorted(u["name"] for a in list_store(store)["accounts"] for u in a["users"]) == ["default", "sys"]


def test_a_seed_from_the_environment_in_a_spec_is_not_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DCHAT_SPEC_SEED", SU)
    cases = [
        "version: 1\noperator: {name: dchat}\naccounts:\n  - name: chat\n    users:\n"
        '      - {name: "${DCHAT_SPEC_SEED}"}\n',
        "version: 1\noperator: {name: dchat}\naccounts:\n  - name: chat\n    users:\n"
        '      - {name: u, times_location: "${DCHAT_SPEC_SEED}"}\n',
        'version: 1\noperator: {name: dchat}\naccounts:\n  - name: chat\n    limits: {conn: "${DCHAT_SPEC_SEED}"}\n',
    ]
    for i, text in enumerate(cases):
        path = tmp_path / f"spec{i}.yaml"
        path.write_text(text)
        code = run_cli(cli, ["--home", str(tmp_path / "home"), "plan", "-f", str(path)])
        out, err = capsys.readouterr()
        assert code == 1 and err.startswith("error: "), err
        assert SU not in out and SU not in err, err
        assert not (tmp_path / "home").exists()


def test_a_user_named_by_a_seed_in_an_older_store_is_flagged_not_shown(store, capsys):
    path = store.user_jwt_path("dchat", "chat", "default")
    path.rename(path.with_name(f"{SU}.jwt"))  # as the old 'add user SU...' left it
    findings = validate_store(store)
    assert any(f.level == "error" and "looks like an nkey seed" in f.message for f in findings)
    assert all(SU not in f.entity and SU not in f.message for f in findings)
    assert SU not in str(list_store(store))
    for args in (["validate"], ["list"], ["list", "--json"], ["validate", "--json"]):
        run_cli(cli, ["--home", str(store.home), *args])
        out, err = capsys.readouterr()
        assert SU not in out and SU not in err, args


def test_a_seed_in_a_click_usage_error_is_not_shown(store, capsys):
    """Errors raised by the command-line parser itself (a bad choice, say) are scrubbed too."""
    got = run_cli(cli, ["--home", str(store.home), "describe", SU])
    out, err = capsys.readouterr()
    assert got == 2
    assert SU not in out and SU not in err
    assert HIDDEN in err
