"""A revocation "now" covers every JWT that exists, also one signed ahead of the clock; re-issuing a revoked
user is allowed (as in nsc) but said out loud."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.errors import StoreError
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import refused


def pinned(store: Store) -> int:
    """Pin the store's clock to the second the application account was last signed in."""
    t = store.account("chat").claims.issued_at
    store.clock = lambda: t
    return t


def ahead(store: Store, name: str, times: int = 8) -> int:
    """Add ``name`` and re-sign it ``times`` within one (pinned) second: its iat runs ahead of the clock."""
    t = pinned(store)
    admin.add_user(store, "chat", name)
    for i in range(times):
        admin.edit_user(store, "chat", name, changes=admin.UserChanges(add_tags=[f"t{i}"]))
    iat = store.user("chat", name).claims.issued_at
    assert iat >= t + times
    return iat


def cli_run(store: Store, *args: str):
    return CliRunner().invoke(cli, ["--home", str(store.home), *args])


def test_revoke_all_users_covers_a_user_signed_ahead_of_the_clock(store):
    iat = ahead(store, "v")
    acc = revoke.revoke_all(store, "chat")
    assert acc.claims.revocations["*"] >= iat
    assert acc.claims.is_revoked(store.user("chat", "v").public_key, iat)
    assert acc.claims.is_revoked(
        store.user("chat", "default").public_key, store.user("chat", "default").claims.issued_at
    )


def test_revoke_all_users_at_zero_also_covers_it(store):
    iat = ahead(store, "v")
    assert revoke.revoke_all(store, "chat", at=0).claims.revocations["*"] >= iat


def test_revoke_by_public_key_covers_the_held_user_signed_ahead(store):
    iat = ahead(store, "v")
    key = store.user("chat", "v").public_key
    acc = revoke.revoke_user(store, "chat", key)
    assert acc.claims.revocations[key] >= iat
    r = cli_run(store, "revoke", "user", key, "--no-push")  # the CLI too (real clock, iat still ahead)
    assert r.exit_code == 0, r.output
    assert Store(store.home).account("chat").claims.revocations[key] >= iat


def test_revoke_by_public_key_of_a_user_the_store_never_held_is_now(store):
    from dchat_ops.nsc.keys import KeyPair

    t = pinned(store)
    key = KeyPair.generate("user").public_key
    assert revoke.revoke_user(store, "chat", key).claims.revocations[key] == t


def test_an_explicit_at_is_kept(store):
    iat = ahead(store, "v")
    t = store.clock()
    assert revoke.revoke_all(store, "chat", at=t + 100).claims.revocations["*"] == t + 100
    key = store.user("chat", "v").public_key
    assert revoke.revoke_user(store, "chat", key, at=iat + 50).claims.revocations[key] == iat + 50
    assert revoke.revoke_user(store, "chat", "v", at=iat).claims.revocations[key] == iat  # covers it, just


def test_an_at_before_every_jwt_is_refused_and_nothing_is_written(store):
    iat = ahead(store, "v")
    first = min(store.user("chat", n).claims.issued_at for n in store.user_names("chat"))
    before = snapshot(store.home)
    with pytest.raises(StoreError, match="would revoke nothing"):
        revoke.revoke_user(store, "chat", "v", at=iat - 1)
    with pytest.raises(StoreError, match="would revoke nothing"):
        revoke.revoke_user(store, "chat", store.user("chat", "v").public_key, at=iat - 1)
    with pytest.raises(StoreError, match="would revoke nothing"):
        revoke.revoke_all(store, "chat", at=first - 1)
    assert snapshot(store.home) == before
    assert revoke.uncovered(store, "chat", "v", 0) is None  # 0 is now
    assert revoke.uncovered(store, "chat", revoke.ALL_USERS, first) is None  # covers the first user
    # a user the store never held: nothing is known against any time
    from dchat_ops.nsc.keys import KeyPair

    stranger = KeyPair.generate("user").public_key
    assert revoke.revoke_user(store, "chat", stranger, at=1000).claims.revocations[stranger] == 1000


def test_cli_at_that_would_revoke_nothing_is_a_usage_error(store, capsys):
    home = ["--home", str(store.home)]
    before = snapshot(store.home)
    for args in (["revoke", "user", "default"], ["revoke", "--all-users"]):
        assert run_cli(cli, [*home, *args, "--at", "2020-01-01", "--no-push"]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.lower().startswith("error:")]
        assert len(errors) == 1 and "would revoke nothing" in errors[0] and "Traceback" not in err, err
    assert run_cli(cli, [*home, "revoke", "user", "default", "--at", "soon", "--no-push"]) == 2
    assert "invalid time 'soon'" in capsys.readouterr().err
    assert snapshot(store.home) == before


def test_cli_at_zero_is_now_and_covers_the_jwt(store):
    iat = ahead(store, "v")
    r = cli_run(store, "revoke", "user", "v", "--at", "0", "--no-push", "--json")
    assert r.exit_code == 0, r.output
    acc = Store(store.home).account("chat")
    assert acc.claims.is_revoked(store.user("chat", "v").public_key, iat)
    assert [row["at"] >= iat for row in json.loads(r.stdout)["revocations"]] == [True]


def test_cli_revoke_all_users_covers_it(store):
    iat = ahead(store, "v")
    r = cli_run(store, "revoke", "--all-users", "--no-push", "--json")
    assert r.exit_code == 0, r.output
    assert Store(store.home).account("chat").claims.revocations["*"] >= iat
    findings = validate_store(Store(store.home))
    assert any(f.entity == "user chat/v" and "revoked" in f.message for f in findings), findings


async def test_a_user_signed_ahead_is_refused_by_the_server_after_revoke_all_users(store, servers):
    ahead(store, "v")
    r = cli_run(store, "revoke", "--all-users", "--no-push")
    assert r.exit_code == 0, r.output
    url, _ = servers.standalone(Store(store.home))
    assert await refused(url, store.creds_path("dchat", "chat", "v")) is not None
    assert await refused(url, store.creds_path("dchat", "chat", "default")) is not None


def test_reissuing_a_revoked_user_warns(store):
    admin.add_user(store, "chat", "v")
    # revoked at its issue time exactly: the re-issue below (iat at least one second later) is not covered,
    # whichever second the test runs in
    revoke.revoke_user(store, "chat", "v", at=store.user("chat", "v").claims.issued_at)
    assert any(f.entity == "user chat/v" and "revoked" in f.message for f in validate_store(store))
    r = admin.edit_user(store, "chat", "v", changes=admin.UserChanges(add_tags=["back"]))
    assert r.changed
    assert r.warnings and "user v was revoked; the re-issued JWT is not covered by that revocation" in r.warnings[0]
    assert r.to_dict()["warnings"] == r.warnings
    # nothing to say when nothing was revoked or nothing changed
    assert admin.edit_user(store, "chat", "v", changes=admin.UserChanges(add_tags=["back"])).warnings == []
    assert admin.edit_user(store, "chat", "default", changes=admin.UserChanges(add_tags=["x"])).warnings == []


def test_reissuing_after_revoke_all_users_warns_on_stderr(store):
    # revoked until the user's iat: its re-issue (iat + 1 at least) is then outside the revocation, also
    # within the same second (revoked "now", a re-issue in that second would stay revoked, and say nothing)
    revoke.revoke_all(store, "chat", at=store.user("chat", "default").claims.issued_at)
    r = cli_run(store, "edit", "user", "default", "--tag", "again", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["warnings"]
    assert "user default was revoked; the re-issued JWT is not covered by that revocation" in r.stderr
    assert "warning" not in r.stdout.replace('"warnings"', "")
