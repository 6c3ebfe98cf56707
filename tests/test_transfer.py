"""Export / import bundles, plain nsc files, revocation and push against real servers."""

import asyncio
import json
import stat

import pytest
from click.testing import CliRunner
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.errors import DchatOpsError, StoreError
from dchat_ops.nsc import admin, revoke, transfer
from dchat_ops.nsc.bundle import BundleError, open_bundle
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store
from dchat_ops.runtime import push
from dchat_ops.runtime.client import connect, refused
from dchat_ops.runtime.supervisor import chain

PW = "correct horse battery"


def fresh_copy_of_operator(store, tmp_path, what="operator"):
    """A new store on the same operator: its operator (or whole) bundle imported into an empty home."""
    data = transfer.export_bundle(store, what, passphrase=PW)
    other = Store(tmp_path / f"second-machine-{what}")
    plan = transfer.import_bundle(other, data, passphrase=PW)
    assert plan.new_operator and "operator dchat" in plan.added
    return other


async def test_creds_round_trip_to_a_fresh_store_and_a_real_server(store, tmp_path, servers):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    bundle = tmp_path / "alice.bundle"
    env = {"DCHAT_OPS_PW": PW}
    r = CliRunner().invoke(
        cli,
        [
            "--home",
            str(store.home),
            "export",
            "creds",
            "-u",
            "alice",
            "-o",
            str(bundle),
            "--passphrase-env",
            "DCHAT_OPS_PW",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    other = fresh_copy_of_operator(store, tmp_path)
    r = CliRunner().invoke(
        cli,
        ["--home", str(other.home), "import", "creds", str(bundle), "--passphrase-env", "DCHAT_OPS_PW", "--json"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert "user chat/alice" in json.loads(r.stdout)["added"]
    assert [f for f in validate_store(other) if f.level == "error"] == []
    again = transfer.import_bundle(other, bundle.read_bytes(), passphrase=PW)
    assert not again.changes and again.unchanged  # importing what is there is a no-op
    url, _ = servers.standalone(store)
    nc = await connect(url, other.creds_path("dchat", "chat", "alice"))
    sub = await nc.subscribe("chat.x")
    await nc.publish("chat.x", b"from the second machine")
    assert (await sub.next_msg(timeout=2)).data == b"from the second machine"
    await nc.close()


def test_bundle_holds_no_seed_in_the_clear_and_is_private(store, tmp_path):
    out = tmp_path / "all.bundle"
    code = run_cli(
        cli,
        [
            "--home",
            str(store.home),
            "export",
            "keys",
            "--all",
            "-o",
            str(out),
            "--passphrase-file",
            str(_pwfile(tmp_path)),
        ],
    )
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    seeds = [p.read_text().strip() for p in (store.home / "keys").rglob("*.nk")]
    assert len(seeds) >= 5
    for seed in seeds:
        assert seed not in text and seed[:20] not in text
    payload = open_bundle(out.read_bytes(), passphrase=PW)
    assert set(payload["seeds"]) == set(seeds)


def _pwfile(tmp_path):
    p = tmp_path / "pw"
    p.write_text(PW + "\n")
    return p


def _bad_bundles(store, tmp_path):
    good = transfer.export_bundle(store, "creds", user="default", passphrase=PW)
    flipped = bytearray(good)
    i = good.index(b'"ciphertext": "') + 30
    flipped[i] = ord("A") if flipped[i] != ord("A") else ord("B")
    foreign = Store(tmp_path / "foreign")
    admin.init(foreign)
    return [
        ("wrong passphrase", good, "wrong-passphrase!", "wrong passphrase or key"),
        ("one flipped byte", bytes(flipped), PW, "wrong passphrase or key, or the file was changed"),
        ("truncated", good[: len(good) // 2], PW, "truncated"),
        # edits JSON does not see are still edits: a blank, a line end, keys in another order
        ("a blank added", good.replace(b'"format":', b'"format":  ', 1), PW, "the bundle was changed"),
        ("CRLF line ends", good.replace(b"\n", b"\r\n"), PW, "the bundle was changed"),
        ("no final newline", good.rstrip(b"\n"), PW, "the bundle was changed"),
        (
            "keys reordered",
            (json.dumps(dict(reversed(list(json.loads(good).items()))), indent=1) + "\n").encode(),
            PW,
            "the bundle was changed",
        ),
        (
            "another operator",
            transfer.export_bundle(foreign, "creds", user="default", passphrase=PW),
            PW,
            "not to this store's operator",
        ),
    ]


def test_bad_bundles_fail_clearly_and_write_nothing(store, tmp_path, capsys):
    for name, data, pw, message in _bad_bundles(store, tmp_path):
        path = tmp_path / f"{name}.bundle"
        path.write_bytes(data)
        (tmp_path / "pw").write_text(pw)
        before = snapshot(store.home)
        code = run_cli(
            cli, ["--home", str(store.home), "import", "creds", str(path), "--passphrase-file", str(tmp_path / "pw")]
        )
        err = capsys.readouterr().err
        assert code == 1, name
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert snapshot(store.home) == before, name


def test_foreign_operator_needs_trust_and_conflicts_need_force(store, tmp_path):
    foreign = Store(tmp_path / "foreign")
    admin.init(foreign, operator="other")
    data = transfer.export_bundle(foreign, "account", account="chat", passphrase=PW)
    with pytest.raises(StoreError, match="--trust-operator"):
        transfer.import_bundle(store, data, passphrase=PW)
    plan = transfer.import_bundle(store, data, passphrase=PW, trust_operator=True)
    assert plan.new_operator and "operator other" in plan.added
    assert sorted(store.operator_names()) == ["dchat", "other"]
    # same operator, same user name, different key: refused without --force
    other = fresh_copy_of_operator(store, tmp_path, "all")
    admin.add_user(other, "chat", "default", force=True)  # a different key under the same name
    data = transfer.export_bundle(other, "creds", user="default", passphrase=PW)
    before = snapshot(store.home)
    with pytest.raises(DchatOpsError, match="--force"):
        transfer.import_bundle(store, data, passphrase=PW)
    assert snapshot(store.home) == before
    plan = transfer.import_bundle(store, data, passphrase=PW, force=True)
    assert "user chat/default" in plan.replaced


def test_curve_key_bundles(store, tmp_path):
    curve = KeyPair.generate("curve")
    data = transfer.export_bundle(store, "creds", user="default", recipient=curve.public_key)
    other = fresh_copy_of_operator(store, tmp_path)
    with pytest.raises(BundleError, match="sealed to"):
        transfer.import_bundle(other, data, curve_key=KeyPair.generate("curve"))
    plan = transfer.import_bundle(other, data, curve_key=curve)
    assert "creds chat/default" in plan.added


def test_plain_export_and_nsc_files_import(store, tmp_path):
    admin.add_user(store, "chat", "bob")
    creds = tmp_path / "bob.creds"
    r = CliRunner().invoke(
        cli, ["--home", str(store.home), "export", "creds", "-u", "bob", "--plain", "-o", str(creds)]
    )
    assert r.exit_code == 0 and "warning" in r.output
    assert parse_creds(creds.read_text()).jwt == store.user("chat", "bob").token
    folder = tmp_path / "keys"
    transfer.export_plain(store, "account", folder, account="chat", include_jwts=True)
    assert list(folder.glob("*.nk")) and list(folder.glob("*.jwt"))
    other = fresh_copy_of_operator(store, tmp_path)
    plan = transfer.import_path(other, creds)
    assert "user chat/bob" in plan.added and "creds chat/bob" in plan.added
    plan = transfer.import_path(other, folder)
    assert any(a.startswith("key A") for a in plan.added)
    assert [f for f in validate_store(other) if f.level == "error"] == []


async def test_revoked_user_is_cut_off_from_all_three_nodes(store, supervised):
    chain(store, ["a", "b", "c"], start=False)
    for nid in ("a", "b", "c"):
        supervised(nid)
    admin.add_user(store, "chat", "phone")
    creds = store.creds_path("dchat", "chat", "phone")
    urls = [f"nats://127.0.0.1:{NodeFile.load(store, n).node.client_port}" for n in ("a", "b", "c")]
    conns = [await connect(u, creds, allow_reconnect=False) for u in urls]
    assert all(nc.is_connected for nc in conns)
    revoke.revoke_user(store, "chat", "phone")
    report = await asyncio.to_thread(push.push, store, ["chat"])
    assert report.ok and {r["server"] for r in report.results} == {"a", "b", "c"}
    for _ in range(100):  # the servers close the revoked connections
        if all(nc.is_closed for nc in conns):
            break
        await asyncio.sleep(0.05)
    assert all(nc.is_closed for nc in conns), [nc.is_closed for nc in conns]
    for u in urls:
        assert await refused(u, creds) is not None
    await asyncio.sleep(1.1)  # revocation covers JWTs issued up to its second
    admin.add_user(store, "chat", "new-phone")
    for u in urls:
        assert await refused(u, store.creds_path("dchat", "chat", "new-phone")) is None
    listed = revoke.list_revocations(store, "chat")
    assert [r["user"] for r in listed] == ["phone"]


async def test_push_a_changed_account_to_three_nodes(store, supervised):
    chain(store, ["a", "b", "c"], start=False)
    for nid in ("a", "b", "c"):
        supervised(nid)
    admin.add_account(store, "limited")  # the running nodes do not know it yet: push it
    admin.add_user(store, "limited", "u1")
    url_a = f"nats://127.0.0.1:{NodeFile.load(store, 'a').node.client_port}"
    creds = store.creds_path("dchat", "limited", "u1")
    assert await refused(url_a, creds) is not None
    report = await asyncio.to_thread(push.push, store, ["limited"])
    assert report.ok and len(report.results) == 3, report.results
    first = await connect(url_a, creds, allow_reconnect=False)
    second = await connect(url_a, creds, allow_reconnect=False)  # unlimited for now
    await second.close()
    admin.edit_account(store, "limited", limits={"conn": 1})
    report = await asyncio.to_thread(push.push, store, ["limited"])
    assert report.ok, report.results
    assert sorted(r["server"] for r in report.results) == ["a", "b", "c"]
    assert all(r["message"] == "jwt updated" for r in report.results)
    reason = await refused(url_a, creds)
    assert reason is not None and "maximum account active connections" in reason
    assert first.is_connected
    await first.close()
    rows = await asyncio.to_thread(push.pull, store)
    limited = next(r for r in rows if r["name"] == "limited")
    assert limited["on_server"] and limited["same"]


def test_passphrase_is_never_taken_from_the_command_line(store, tmp_path, capsys):
    code = run_cli(cli, ["--home", str(store.home), "export", "creds", "-u", "default", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1 and "--passphrase-env" in err
    assert not (tmp_path / "x").exists()


async def test_push_prune_removes_accounts_the_store_dropped(store, supervised):
    nodes.add_node(store, "a", allow_delete=True)
    supervised("a")
    admin.add_account(store, "temp")
    await asyncio.to_thread(push.push, store, ["temp"])
    temp_key = store.account("temp").public_key
    rows = await asyncio.to_thread(push.pull, store)
    assert any(r["account"] == temp_key and r["on_server"] for r in rows)
    admin.remove_account(store, "temp")
    report = await asyncio.to_thread(push.prune, store)
    assert report.ok and "deleted 1 accounts" in report.results[0]["message"], report.results
    rows = await asyncio.to_thread(push.pull, store)
    assert not any(r["account"] == temp_key for r in rows)
    sys_key = store.operator().claims.system_account
    assert any(r["account"] == sys_key and r["on_server"] for r in rows)


def test_a_backup_restores_revoked_and_expired_users_too(store, tmp_path):
    admin.add_user(store, "chat", "old", admin.UserSpec(expires=admin.now(store) - 5))
    revoke.revoke_user(store, "chat", "default")
    data = transfer.export_bundle(store, "account", account="chat", passphrase=PW)
    other = Store(tmp_path / "restored")
    plan = transfer.import_bundle(other, data, passphrase=PW, trust_operator=True)
    assert {"user chat/old", "user chat/default", "account SYS", "account chat"} <= set(plan.added)
    findings = validate_store(other)
    assert [f for f in findings if f.level == "error"] == []
    assert any("revoked" in f.message for f in findings)


def test_an_older_bundle_never_rolls_an_account_back(store, tmp_path):
    """A bundle made before a revocation, imported (with --force too) where the account moved on since:
    the store keeps its newer account JWT, revocations and all; the bundle's user comes in."""

    admin.add_user(store, "chat", "alice")
    admin.add_user(store, "chat", "mallory")
    data = transfer.export_bundle(store, "creds", user="alice", passphrase=PW)
    revoke.revoke_user(store, "chat", "mallory")
    newer = store.account("chat").token
    second = fresh_copy_of_operator(store, tmp_path, "all")  # another machine of the same operator
    for target in (store, second):
        for force in (False, True):
            plan = transfer.import_bundle(target, data, passphrase=PW, force=force)
            assert "account chat (this store's version is newer)" in plan.unchanged
            assert target.account("chat").token == newer
    assert second.user("chat", "alice").public_key == store.user("chat", "alice").public_key
