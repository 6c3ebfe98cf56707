"""Key rotation without downtime, on real nats-servers: account signing keys, operator signing keys, a user's
own key; and removing a signing key that still signs something is refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import snapshot, wait_for

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config.node import NodeFile
from dchat_ops.config.nodes import add_node
from dchat_ops.errors import DchatOpsError, KeyInUseError
from dchat_ops.nsc import admin, rotate
from dchat_ops.nsc.store import Store
from dchat_ops.runtime import push
from dchat_ops.runtime.client import ManagedClient, close_quietly, connect, refused
from dchat_ops.runtime.interest import route_peers
from dchat_ops.runtime.process import http_json
from dchat_ops.runtime.rotation import rotate_account_key, rotate_operator_key, rotate_user
from dchat_ops.runtime.supervisor import Supervisor, chain


def sk_of(store: Store, account: str = "chat") -> str:
    return store.account(account).claims.signing_keys[0]  # type: ignore[return-value]


def with_users(store: Store, *users: str) -> str:
    """Account chat gets a plain signing key; ``users`` are made with it.  Returns the key."""
    admin.edit_account(store, "chat", add_signing_key=True)
    for u in users:
        admin.add_user(store, "chat", u, admin.UserSpec(pub_allow=["room.>"], sub_allow=["room.>", "_INBOX.>"]))
    key = sk_of(store)
    assert all(store.user("chat", u).claims.issuer == key for u in users)
    return key


def creds(store: Store, user: str):
    return store.creds_path("dchat", "chat", user)


def url(store: Store, nid: str) -> str:
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


def cli_run(store: Store, capsys, *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, ["--home", str(store.home), *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- removing a key that still signs is refused ---------------------------------------------------------


def test_rm_sk_of_an_account_key_that_signs_users_is_refused_in_one_line(store, capsys):
    key = with_users(store, "alice", "bob")
    before = snapshot(store.home)
    code, out, err = cli_run(store, capsys, "edit", "account", "chat", "--rm-sk", key)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "still signs 2 user(s)" in err and f"dchat-ops rotate account-key chat --key {key}" in err
    assert snapshot(store.home) == before
    with pytest.raises(KeyInUseError):  # the library refuses too
        admin.edit_account(store, "chat", remove_signing_key=key)
    assert snapshot(store.home) == before

    code, out, err = cli_run(store, capsys, "edit", "account", "chat", "--rm-sk", key, "--force")
    assert code == 0, err
    assert "warning:" in err and "still signs 2 user(s)" in err
    assert key not in store.account("chat").claims.signing_key_map()


def test_rm_sk_of_a_role_that_signs_users_is_refused_and_a_key_signing_nobody_goes(store, capsys):
    admin.edit_account(store, "chat", add_role="guest", role_spec=admin.UserSpec(sub_allow=["lobby.>"]))
    admin.add_user(store, "chat", "visitor", role="guest")
    code, _, err = cli_run(store, capsys, "edit", "account", "chat", "--rm-sk", "guest")
    assert code == 1 and "still signs 1 user(s) (visitor)" in err
    assert "dchat-ops rotate account-key chat --role guest" in err
    admin.edit_account(store, "chat", add_signing_key=True)  # signs nobody
    spare = next(k for k in store.account("chat").claims.signing_keys if isinstance(k, str))
    code, _, err = cli_run(store, capsys, "edit", "account", "chat", "--rm-sk", spare)
    assert code == 0 and "warning" not in err, err


def test_rm_sk_of_an_operator_key_that_signs_accounts_is_refused(store, capsys):
    admin.edit_operator(store, add_signing_key=True)
    op_sk = store.operator().claims.signing_keys[0]
    admin.edit_account(store, "chat", add_tags=["x"])  # re-signed: now by the operator signing key
    assert store.account("chat").claims.issuer == op_sk
    before = snapshot(store.home)
    code, out, err = cli_run(store, capsys, "edit", "operator", "--rm-sk", op_sk)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "still signs 1 account(s) (chat)" in err and "dchat-ops rotate operator-key" in err
    assert snapshot(store.home) == before
    code, _, err = cli_run(store, capsys, "edit", "operator", "--rm-sk", op_sk, "--force")
    assert code == 0 and "warning:" in err
    assert store.operator().claims.signing_keys == []


@pytest.mark.parametrize(
    "args",
    [
        ["rotate", "account-key", "chat", "--key", "AXYZ"],
        ["rotate", "account-key", "chat", "--role", "guest", "--key", "AXYZ"],
        ["rotate", "operator-key", "--key", "not-a-key"],
        ["rotate", "user", "chat", "bad name"],
        ["rotate", "user", "chat", "alice", "--wait-connect", "-1"],
        ["edit", "operator", "--rm-sk", "OXYZ"],
    ],
)
def test_a_bad_value_is_exit_2_in_one_line_and_changes_nothing(store, capsys, args):
    before = snapshot(store.home)
    code, out, err = cli_run(store, capsys, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert snapshot(store.home) == before


def test_strict_operator_keeps_a_signing_key(strict_store, capsys):
    op = strict_store.operator().claims
    code, _, err = cli_run(strict_store, capsys, "edit", "operator", "--rm-sk", op.signing_keys[0], "--force")
    assert code == 1 and "strict operator needs a signing key" in err


# --- plans change nothing; a failed step leaves the store as it was ---------------------------------------


def test_dry_runs_show_the_plan_and_change_nothing(store, capsys):
    key = with_users(store, "alice", "bob")
    before = snapshot(store.home)
    code, out, _ = cli_run(store, capsys, "rotate", "account-key", "chat", "--dry-run", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["dry_run"] and plan["plan"]["old_key"] == key and plan["plan"]["users"] == ["alice", "bob"]
    assert "re-issue 2 user(s)" in plan["steps"][1]["step"]
    code, out, _ = cli_run(store, capsys, "rotate", "operator-key", "--dry-run")
    assert code == 0 and "re-sign 2 account JWT(s) (SYS, chat)" in out and "nothing was changed" in out
    code, out, _ = cli_run(store, capsys, "rotate", "user", "chat", "alice", "--dry-run")
    assert code == 0 and store.user("chat", "alice").public_key in out
    assert snapshot(store.home) == before


def test_a_failing_step_leaves_the_store_as_it_was(store, monkeypatch):
    with_users(store, "alice")
    before = snapshot(store.home)

    def fail(*_a, **_k):
        raise RuntimeError("the old key could not be retired")

    monkeypatch.setattr(rotate, "retire_account_key", fail)
    with pytest.raises(RuntimeError):
        rotate_account_key(store, "chat")
    assert snapshot(store.home) == before
    monkeypatch.setattr(rotate, "resign_accounts", fail)
    with pytest.raises(RuntimeError):
        rotate_operator_key(store)
    assert snapshot(store.home) == before


def test_account_key_rotation_in_the_store_keeps_user_keys_and_retires_the_old_key(store):
    old = with_users(store, "alice")
    alice = store.user("chat", "alice")
    r = rotate_account_key(store, "chat")
    assert r.ok and r.new_key and r.new_key != old
    after = store.user("chat", "alice")
    assert after.public_key == alice.public_key and after.claims.issuer == r.new_key
    assert after.claims.issuer_account == store.account("chat").public_key
    assert creds(store, "alice").read_text().count(after.token) == 1
    assert old not in store.account("chat").claims.signing_key_map()
    assert rotate.account_key_users(store, "chat", old) == []


def test_users_of_the_identity_key_move_to_a_signing_key_and_the_identity_key_stays(store):
    acc = store.account("chat")
    assert acc.claims.signing_keys == [] and store.user("chat", "default").claims.issuer == acc.public_key
    r = rotate_account_key(store, "chat")
    assert r.ok and "retire nothing" in r.steps[2]["step"]
    assert store.account("chat").claims.signing_keys == [r.new_key]
    assert store.user("chat", "default").claims.issuer == r.new_key
    with pytest.raises(DchatOpsError, match="identity key of account chat"):
        rotate_account_key(store, "chat", key=acc.public_key)


def test_a_revoked_user_stays_revoked_through_a_rotation(store):
    from dchat_ops.nsc import revoke
    from dchat_ops.nsc.describe import validate_store

    with_users(store, "alice", "mallory")
    revoke.revoke_user(store, "chat", "mallory")
    r = rotate_account_key(store, "chat")
    assert r.ok and r.plan["users"] == ["alice", "mallory"]
    mallory = store.user("chat", "mallory")
    assert mallory.claims.issuer == r.new_key  # no JWT left to the retired key ...
    assert store.account("chat").claims.is_revoked(mallory.public_key, mallory.claims.issued_at)  # ... still revoked
    assert [f for f in validate_store(store) if f.level == "error"] == []
    with pytest.raises(DchatOpsError, match="is revoked: a new key would let it back in"):
        rotate_user(store, "chat", "mallory")


def test_a_role_rotation_keeps_the_role_and_its_template(store):
    admin.edit_account(store, "chat", add_role="guest", role_spec=admin.UserSpec(sub_allow=["lobby.>"]))
    admin.add_user(store, "chat", "visitor", role="guest")
    old = store.account("chat").claims.scope_for_role("guest")
    assert old is not None
    r = rotate_account_key(store, "chat", role="guest")
    new = store.account("chat").claims.scope_for_role("guest")
    assert r.ok and new is not None and new.key == r.new_key and new.key != old.key
    assert {**new.to_dict(), "key": ""} == {**old.to_dict(), "key": ""}  # same role, same template
    assert store.user("chat", "visitor").claims.issuer == new.key


# --- on running servers -----------------------------------------------------------------------------------


def test_a_client_connected_through_an_account_key_rotation_loses_no_message(store, supervised):
    old = with_users(store, "alice", "bob")
    add_node(store, "a")
    supervised("a")
    u = url(store, "a")
    old_alice = creds(store, "alice").read_text()
    alice_key = store.user("chat", "alice").public_key

    async def run() -> tuple[list[int], int, object]:
        sub = await ManagedClient(u, creds(store, "alice")).start()
        pub = await ManagedClient(u, creds(store, "bob")).start()
        got: list[int] = []

        async def on_msg(msg):
            got.append(int(msg.data))

        await sub.subscribe("room.x", cb=on_msg)
        await sub.flush()
        # a plain client on the creds file: the retirement closes its connection, and it reconnects with the
        # new JWT (the client reads the file at each connect)
        plain = await connect(u, creds(store, "alice"), max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        rotation = asyncio.ensure_future(asyncio.to_thread(rotate_account_key, store, "chat"))
        sent = 0
        while not rotation.done() or sent < 50:
            await pub.publish("room.x", str(sent).encode())
            sent += 1
            await asyncio.sleep(0.005)
        report = await rotation
        await pub.flush()
        for _ in range(200):
            if len(got) >= sent:
                break
            await asyncio.sleep(0.02)
        swaps = sub.swaps
        for _ in range(100):
            if plain.is_connected and plain.stats["reconnects"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert plain.is_connected and plain.stats["reconnects"] >= 1
        await close_quietly(plain)
        await sub.close()
        await pub.close()
        assert swaps >= 1
        return got, sent, report

    got, sent, report = asyncio.run(run())
    assert report.ok, report.to_dict()
    assert sorted(got) == list(range(sent)) and len(got) == sent  # every message, once
    # the user kept its nkey; its old creds (signed by the retired key) are refused, the new ones connect
    assert store.user("chat", "alice").public_key == alice_key
    assert asyncio.run(refused(u, creds_text=old_alice)) is not None
    assert asyncio.run(refused(u, creds(store, "alice"))) is None
    assert [r["server"] for r in report.steps[2]["results"]] == ["a"]
    assert old not in store.account("chat").claims.signing_key_map()


async def roundtrip(store: Store, nid: str, user: str) -> bool:
    """On node ``nid``, a message ``user`` publishes reaches a subscriber of ``user``."""
    a = await connect(url(store, nid), creds(store, user))
    b = await connect(url(store, nid), creds(store, user))
    try:
        sub = await a.subscribe("room.rt")
        await a.flush()
        for _ in range(40):
            await b.publish("room.rt", b"x")
            await b.flush()
            try:
                await sub.next_msg(timeout=0.1)
                return True
            except Exception:
                continue
        return False
    finally:
        await close_quietly(a)
        await close_quietly(b)


def trusted(sup) -> set[str]:
    _, varz = http_json(sup.monitor_url + "/varz")
    op = varz["trusted_operators_claim"][0]
    return {op["sub"], *op["nats"].get("signing_keys", [])}


@pytest.fixture
def two(store):
    sups = chain(store, ["a", "b"], start=False)
    try:
        for sup in sups:
            sup.up()
        assert wait_for(lambda: all(len(route_peers(s.monitor_url)[1]) == 1 for s in sups))
        yield sups
    finally:
        for sup in sups:
            sup.down()


def test_operator_key_rotation_keeps_the_network_working(store, two):
    with_users(store, "alice")
    assert push.push(store, ["chat"]).ok
    assert all(asyncio.run(roundtrip(store, nid, "alice")) for nid in ("a", "b"))
    # first rotation: the accounts were signed by the identity key; a signing key takes over, none retired
    r1 = rotate_operator_key(store)
    assert r1.ok, r1.to_dict()
    assert all(a.claims.issuer == r1.new_key for a in store.accounts())
    assert all(r1.new_key in trusted(s) for s in two)
    assert all(asyncio.run(roundtrip(store, nid, "alice")) for nid in ("a", "b"))
    # second rotation: the first key is retired everywhere
    r2 = rotate_operator_key(store)
    assert r2.ok, r2.to_dict()
    assert r2.plan["old_keys"] == [r1.new_key]
    assert store.operator().claims.signing_keys == [r2.new_key]
    assert all(a.claims.issuer == r2.new_key for a in store.accounts())
    for s in two:
        assert r2.new_key in trusted(s) and r1.new_key not in trusted(s)
    pushed = {r["server"] for r in r2.steps[1]["results"] if r["ok"]}
    assert pushed == {"a", "b"}  # both servers took the re-signed account JWTs
    assert all(asyncio.run(roundtrip(store, nid, "alice")) for nid in ("a", "b"))
    assert wait_for(lambda: all(len(route_peers(s.monitor_url)[1]) == 1 for s in two))  # the cluster re-formed
    for nid in ("a", "b"):
        assert asyncio.run(refused(url(store, nid), creds(store, "alice"))) is None


def test_user_rotation_revokes_the_old_key_once_the_new_one_connected(store, supervised):
    with_users(store, "alice")
    add_node(store, "a")
    supervised("a")
    u = url(store, "a")
    old_creds = creds(store, "alice").read_text()
    old_key = store.user("chat", "alice").public_key
    old_iat = store.user("chat", "alice").claims.issued_at

    async def run():
        mc = await ManagedClient(u, creds(store, "alice")).start()
        try:
            report = await asyncio.to_thread(rotate_user, store, "chat", "alice", wait_connect=10)
            assert mc.swaps >= 1 and not mc.nc.is_closed  # moved to the new key, still connected
            return report
        finally:
            await mc.close()

    report = asyncio.run(run())
    assert report.ok, report.to_dict()
    new_key = store.user("chat", "alice").public_key
    assert new_key != old_key and report.new_key == new_key
    assert store.account("chat").claims.is_revoked(old_key, old_iat)
    assert asyncio.run(refused(u, creds_text=old_creds)) is not None
    assert asyncio.run(refused(u, creds(store, "alice"))) is None


def test_user_rotation_waiting_for_a_connection_that_never_comes_keeps_the_old_key(store, supervised, capsys):
    with_users(store, "alice")
    add_node(store, "a")
    supervised("a")
    old_creds = creds(store, "alice").read_text()
    code, _, err = cli_run(store, capsys, "rotate", "user", "chat", "alice", "--wait-connect", "0.3")
    assert code == 1 and "dchat-ops revoke user U" in err and len(err.strip().splitlines()) == 1
    assert asyncio.run(refused(url(store, "a"), creds_text=old_creds)) is None  # not revoked


# --- the guide ---------------------------------------------------------------------------------------------


def _guide_block(heading: str) -> str:
    text = (Path(__file__).parent.parent / "docs" / "rotation.md").read_text()
    return text.split(heading, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_guide_runs_as_written(tmp_path):
    """docs/rotation.md's walk-through, pasted into a shell; then its refusal, as it shows it."""
    script = "set -euo pipefail\n" + _guide_block("## Try it") + "\n"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DCHAT_OPS_HOME", None)
    home = tmp_path / "rotation-demo"
    try:
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    finally:
        if (home / "nodes" / "a.yaml").exists():
            Supervisor(Store(home), "a").down()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("rotated: account-key") == 2 and r.stdout.count("rotated: operator-key") == 2
    assert "re-issue 2 user(s)" in r.stdout and "store is valid" in r.stdout
    refusal = _guide_block("Removing a key that still signs").splitlines()
    r = subprocess.run(
        ["bash", "-c", refusal[0]],
        cwd=tmp_path,
        env={**env, "DCHAT_OPS_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    shown = " ".join(line.lstrip("# ").strip() for line in refusal[1:] if line.strip())
    assert r.stderr.strip() == shown


def test_a_server_that_does_not_confirm_stops_the_rotation_before_the_next_step(store, two):
    """Node b frozen (SIGSTOP): the account JWT with both keys reaches a only; no user is re-issued, the old key
    stays, the store keeps what a holds, and the command names what is left."""
    import signal

    old = with_users(store, "alice")
    assert push.push(store, ["chat"]).ok
    alice = store.user("chat", "alice").token
    pid = two[1].pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        r = rotate_account_key(store, "chat")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not r.ok and len(r.steps) == 1
    rows = {x["server"]: x["ok"] for x in r.steps[0]["results"]}
    assert rows == {"a": True, "b": False}
    assert "run dchat-ops push" in r.remaining and r.new_key in r.remaining
    keys = store.account("chat").claims.signing_key_map()
    assert old in keys and r.new_key in keys  # what server a holds
    assert store.user("chat", "alice").token == alice  # not re-issued
    assert push.push(store, ["chat"]).ok  # b takes it once it answers again
