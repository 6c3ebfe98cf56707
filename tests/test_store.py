import json
import stat

import pytest
from conftest import snapshot

from dchat_ops._fs import FileTransaction, atomic_write, find_temps
from dchat_ops.errors import ExistsError, StoreError
from dchat_ops.nsc import admin
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.jwt import decode, verify_chain
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store, default_home


def mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_nsc_layout(store):
    home = store.home
    op = store.operator()
    assert (home / "stores/dchat/dchat.jwt").read_text() == op.token
    assert json.loads((home / "stores/dchat/.nsc").read_text()) == {
        "managed": False,
        "name": "dchat",
        "kind": "operator",
        "version": "1",
    }
    assert (home / "stores/dchat/accounts/chat/chat.jwt").is_file()
    assert (home / "stores/dchat/accounts/SYS/SYS.jwt").is_file()
    assert (home / "stores/dchat/accounts/chat/users/default.jwt").is_file()
    assert (home / "stores/dchat/accounts/SYS/users/sys.jwt").is_file()
    for name in ("dchat/chat/default.creds", "dchat/SYS/sys.creds"):
        assert (home / "keys/creds" / name).is_file()
    pub = op.public_key
    nk = home / "keys/keys" / "O" / pub[1:3] / f"{pub}.nk"
    assert nk.read_text() == store.load_key(pub).seed
    assert "**/*.nk" in (home / "keys/.gitignore").read_text()
    assert "**/*.creds" in (home / "keys/.gitignore").read_text()


def test_secrets_are_private(store):
    keys = store.home / "keys"
    files = [p for p in keys.rglob("*") if p.suffix in (".nk", ".creds")]
    assert len(files) == 7  # 5 seeds (operator, 2 accounts, 2 users) + 2 creds
    for p in files:
        assert mode(p) == 0o600, p
        for parent in p.parents:
            if parent == store.home:
                break
            assert mode(parent) == 0o700, parent
    assert not list(find_temps(store.home))


def test_creds_match_the_store_and_the_chain(store):
    op = store.operator()
    for acc, user in (("chat", "default"), ("SYS", "sys")):
        creds = parse_creds(store.read_creds("dchat", acc, user))
        ue = store.user(acc, user)
        assert creds.jwt == ue.token and creds.keypair().public_key == ue.public_key
        verify_chain(op.token, store.account(acc).token, creds.jwt)
    assert op.claims.system_account == store.account("SYS").public_key
    assert validate_store(store) == []


def test_init_twice_changes_nothing(store):
    before = snapshot(store.home)
    r = admin.init(store)
    assert not r.created and "nothing changed" in r.message
    assert snapshot(store.home) == before


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DCHAT_OPS_HOME", str(tmp_path / "env-home"))
    assert default_home() == tmp_path / "env-home"
    monkeypatch.delenv("DCHAT_OPS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "dchat-ops"


def test_existing_user_is_not_overwritten_without_force(store):
    before = snapshot(store.home)
    old_key = store.user("chat", "default").public_key
    with pytest.raises(ExistsError, match="--force"):
        admin.add_user(store, "chat", "default")
    assert snapshot(store.home) == before
    r = admin.add_user(store, "chat", "default", force=True)
    assert r.entity.public_key == store.user("chat", "default").public_key != old_key
    assert parse_creds(store.read_creds("dchat", "chat", "default")).jwt == store.user("chat", "default").token


def test_keystore_refuses_a_different_seed_for_the_same_path(store):
    kp = KeyPair.generate("user")
    path = store.save_key(kp)
    assert store.save_key(kp) == path  # same seed again: no-op
    path.write_text(KeyPair.generate("user").seed)
    with pytest.raises(ExistsError):
        store.save_key(kp)
    with pytest.raises(StoreError, match="another key"):
        Store(store.home).load_key(kp.public_key)


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "has space", "x" * 65, "a\\b"])
def test_invalid_names_are_refused_and_nothing_is_written(store, name):
    before = snapshot(store.home)
    with pytest.raises(StoreError, match="invalid"):
        admin.add_user(store, "chat", name)
    with pytest.raises(StoreError, match="invalid"):
        admin.add_account(store, name)
    assert snapshot(store.home) == before


def test_missing_store_is_a_clear_error(tmp_path):
    s = Store(tmp_path / "nothing")
    with pytest.raises(StoreError, match="dchat-ops init"):
        s.require()
    with pytest.raises(StoreError, match="dchat-ops init"):
        s.operator()
    assert not (tmp_path / "nothing").exists()


def test_strict_store_signs_only_with_signing_keys(strict_store):
    op = strict_store.operator()
    assert op.claims.strict_signing_key_usage and op.claims.signing_keys
    for acc in strict_store.accounts():
        assert acc.claims.issuer in op.claims.signing_keys
        for u in strict_store.user_names(acc.name):
            ue = strict_store.user(acc.name, u)
            assert ue.claims.issuer in acc.claims.signing_key_map()
            assert ue.claims.issuer_account == acc.public_key
    assert validate_store(strict_store) == []


def test_scoped_role_users_carry_no_permissions(store):
    admin.edit_account(store, "chat", add_role="guest", role_spec=admin.UserSpec(sub_allow=["lobby.>"]))
    r = admin.add_user(store, "chat", "visitor", role="guest")
    u = r.entity.claims
    assert not u.limits.has_limits_or_permissions()
    assert u.issuer == store.account("chat").claims.scope_for_role("guest").key
    with pytest.raises(StoreError, match="role"):
        admin.add_user(store, "chat", "v2", admin.UserSpec(sub_allow=["x"]), role="guest")
    with pytest.raises(StoreError, match="no signing key with role"):
        admin.add_user(store, "chat", "v3", role="nope")
    assert validate_store(store) == []


def test_edit_user_adds_removes_and_is_idempotent(store):
    admin.add_user(store, "chat", "bob", admin.UserSpec(sub_allow=["chat.>"]))
    r = admin.edit_user(store, "chat", "bob", changes=admin.UserChanges(allow_sub=["room.x"], deny_pub=["admin.>"]))
    assert r.changed
    u = store.user("chat", "bob").claims
    assert u.permissions.sub.allow == ["chat.>", "room.x"] and u.permissions.pub.deny == ["admin.>"]
    before = snapshot(store.home)
    r = admin.edit_user(store, "chat", "bob", changes=admin.UserChanges(allow_sub=["room.x"]))
    assert not r.changed and snapshot(store.home) == before
    admin.edit_user(store, "chat", "bob", changes=admin.UserChanges(remove=["room.x"]))
    assert store.user("chat", "bob").claims.permissions.sub.allow == ["chat.>"]
    creds = parse_creds(store.read_creds("dchat", "chat", "bob"))
    assert creds.jwt == store.user("chat", "bob").token


def test_edit_account_limits_and_jetstream(store):
    e, changed = admin.edit_account(
        store, "chat", limits={"conn": 10}, jetstream={"mem_storage": -1, "disk_storage": -1}
    )
    assert changed and e.claims.limits.conn == 10 and e.claims.limits.jetstream.enabled()
    assert decode(store.account("chat").token).limits.conn == 10
    _, changed = admin.edit_account(store, "chat", limits={"conn": 10})
    assert not changed
    with pytest.raises(StoreError, match="unknown account limit"):
        admin.edit_account(store, "chat", limits={"bogus": 1})


def test_atomic_write_and_transaction_rollback(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    atomic_write(a, "one")
    with pytest.raises(RuntimeError), FileTransaction() as tx:
        tx.write(a, "two")
        tx.write(b, "new")
        assert a.read_text() == "two" and b.exists()
        raise RuntimeError("boom")
    assert a.read_text() == "one" and not b.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.conf"]
    with pytest.raises(ExistsError):
        atomic_write(a, "three", force=False)
    assert atomic_write(a, "one", force=False) is False


def test_bulk_issue_in_parallel_matches_the_chain(store, monkeypatch):
    monkeypatch.setattr(admin, "PARALLEL_THRESHOLD", 10)
    acc = store.account("chat")
    signer = store.load_key(acc.public_key)
    rows = admin.issue_users(
        [f"b{i}" for i in range(40)], acc.public_key, signer, admin.UserSpec(sub_allow=["chat.>"]), workers=2
    )
    assert [r[0] for r in rows] == [f"b{i}" for i in range(40)]
    op = store.operator()
    for _name, pub, seed, token, creds in rows:
        res = verify_chain(op.token, acc.token, token)
        assert res.user.subject == pub and res.user.permissions.sub.allow == ["chat.>"]
        assert parse_creds(creds).keypair().public_key == pub and KeyPair.from_seed(seed).public_key == pub


def test_add_users_checks_everything_before_writing(store):
    before = snapshot(store.home)
    with pytest.raises(StoreError, match="invalid user name"):
        admin.add_users(store, "chat", ["ok1", "bad/name"])
    with pytest.raises(StoreError, match="twice"):
        admin.add_users(store, "chat", ["dup", "dup"])
    with pytest.raises(ExistsError):
        admin.add_users(store, "chat", ["new", "default"])
    assert snapshot(store.home) == before
    keys = admin.add_users(store, "chat", [f"m{i}" for i in range(25)])
    assert len(set(keys)) == 25
    assert validate_store(store) == []


def _edit_many(home, prefix, n):
    from dchat_ops.nsc import admin as adm
    from dchat_ops.nsc.store import Store as S

    s = S(home)
    for i in range(n):
        adm.edit_user(s, "chat", "default", changes=adm.UserChanges(allow_sub=[f"{prefix}.{i}"]))


def test_concurrent_edits_from_two_processes_lose_nothing(store):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_edit_many, args=(store.home, p, 8)) for p in ("left", "right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    allowed = set(Store(store.home).user("chat", "default").claims.permissions.sub.allow)
    assert allowed == {f"{p}.{i}" for p in ("left", "right") for i in range(8)}
