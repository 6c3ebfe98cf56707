"""A node never serves a revoked user: ``node up`` starts from the newest account JWTs (the store's, or newer ones
its running peers hold), and ``pull`` compares every server's JWTs with the store and can take the newer ones."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal

import pytest
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.errors import ServerError
from dchat_ops.nsc import admin, revoke, transfer
from dchat_ops.nsc.jwt import encode
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime import held, push
from dchat_ops.runtime.client import connect_node, refused
from dchat_ops.runtime.supervisor import Supervisor, chain

PW = "a passphrase for the second laptop"


def url(store: Store, node_id: str) -> str:
    return nodes.client_url(NodeFile.load(store, node_id).node)


def creds(store: Store, user: str, account: str = "chat"):
    return store.creds_path("dchat", account, user)


def laptop(store: Store, tmp_path) -> Store:
    """A second store home holding the same operator, as restored on another machine from a backup."""
    other = Store(tmp_path / "laptop")
    transfer.import_bundle(other, transfer.export_bundle(store, "all", passphrase=PW), passphrase=PW)
    assert other.operator().public_key == store.operator().public_key
    return other


async def update_directly(store: Store, node_id: str, token: str, servers: int = 1) -> dict:
    """Send an account JWT through one running node over the system account, as another machine's push would;
    wait for the answers of ``servers`` servers (every full-resolver server of the cluster takes it)."""
    nc = await connect_node(store, node_id, creds_text=system_creds(store), allow_reconnect=False)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SYS.REQ.CLAIMS.UPDATE", token.encode(), reply=inbox)
        answers = [json.loads((await sub.next_msg(timeout=3)).data) for _ in range(servers)]
    finally:
        await nc.close()
    return answers[0]


def resolver_copy(store: Store, node_id: str, account: str = "chat") -> str:
    folder = held.resolver_dir(store, NodeFile.load(store, node_id).node)
    return (folder / f"{store.account(account).public_key}.jwt").read_text()


@pytest.fixture
def pair(store, supervised):
    """Nodes a and b of one cluster, both running, and a user ``phone`` that b serves."""
    chain(store, ["a", "b"], start=False)
    sups = {nid: supervised(nid) for nid in ("a", "b")}
    admin.add_user(store, "chat", "phone")
    return sups


# --- node up: the store has the revocation ------------------------------------------------------------


async def test_a_node_down_during_a_revocation_refuses_the_user_from_its_first_second(store, pair):
    assert await refused(url(store, "b"), creds(store, "phone")) is None
    pair["b"].down()
    code = await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "revoke", "user", "phone", "--json"])
    assert code == 0  # a took it; b is not running
    st = await asyncio.to_thread(pair["b"].up)
    reason = await refused(url(store, "b"), creds(store, "phone"))
    assert reason is not None and "authorization violation" in reason
    assert await refused(url(store, "b"), creds(store, "default")) is None
    assert st.data["catch_up"]["caught_up"] == []  # the store had it: nothing newer on the peers
    assert resolver_copy(store, "b") == store.account("chat").token


async def test_a_resolver_copy_that_does_not_verify_does_not_beat_the_store(store, pair):
    """A copy in the resolver folder with a later iat wins over the preload, whatever signed it: it is replaced."""
    pair["b"].down()
    acc = store.account("chat")
    forged = acc.claims.copy()
    forged.revocations.clear()
    forged_token = encode(forged, KeyPair.generate("operator"), clock=lambda: acc.claims.issued_at + 100)
    path = held.resolver_dir(store, NodeFile.load(store, "b").node) / f"{acc.public_key}.jwt"
    revoke.revoke_user(store, "chat", "phone")
    path.write_text(forged_token)
    st = await asyncio.to_thread(pair["b"].up)
    assert await refused(url(store, "b"), creds(store, "default")) is None  # the account is served, not broken
    assert await refused(url(store, "b"), creds(store, "phone")) is not None
    assert [r["name"] for r in st.data["catch_up"]["replaced"]] == ["chat"]
    assert path.read_text() == store.account("chat").token


# --- node up: only a running peer has the revocation (made on another machine) -------------------------


async def test_a_node_catches_up_a_revocation_only_a_running_peer_holds(store, pair, tmp_path, capsys):
    other = laptop(store, tmp_path)
    pair["b"].down()
    revoke.revoke_user(other, "chat", "phone")  # on the other machine, pushed to the cluster from there
    newer = other.account("chat")
    answer = await update_directly(store, "a", newer.token)
    assert answer["data"]["message"] == "jwt updated"
    assert newer.claims.issued_at > store.account("chat").claims.issued_at  # this store is behind

    capsys.readouterr()
    code = await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "node", "up", "b", "--json"])
    reason = await refused(url(store, "b"), creds(store, "phone"))  # right after up returns
    assert code == 0
    assert reason is not None and "authorization violation" in reason
    assert await refused(url(store, "b"), creds(store, "default")) is None
    out = json.loads(capsys.readouterr().out)
    assert out["healthy"] and out["catch_up"]["peers"] == [{"server": "a", "ok": True, "message": "2 accounts"}]
    assert out["catch_up"]["caught_up"] == [
        {"account": newer.public_key, "name": "chat", "from": ["a"], "issued_at": newer.claims.issued_at}
    ]
    assert resolver_copy(store, "b") == newer.token
    assert store.account("chat").token != newer.token  # node up writes nothing into the store

    # the human output says where it came from
    await asyncio.to_thread(pair["b"].down)
    capsys.readouterr()
    assert await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "node", "up", "b"]) == 0
    assert "caught up chat from a (issued " in capsys.readouterr().out


async def test_a_forged_jwt_on_a_peer_is_not_caught_up(store, pair):
    pair["b"].down()
    acc = store.account("chat")
    forged = acc.claims.copy()
    forged.tags = ["forged"]
    token = encode(forged, KeyPair.generate("operator"), clock=lambda: acc.claims.issued_at + 100)
    assert (await update_directly(store, "a", token))["data"]["message"] == "jwt updated"  # a server takes it
    st = await asyncio.to_thread(pair["b"].up)
    c = st.data["catch_up"]
    assert c["caught_up"] == [] and [(r["name"], r["server"]) for r in c["refused"]] == [("chat", "a")]
    assert "neither the operator nor one of its signing keys" in c["refused"][0]["message"]
    assert resolver_copy(store, "b") == acc.token
    assert await refused(url(store, "b"), creds(store, "default")) is None


def test_a_peer_that_does_not_answer_is_named_and_the_node_starts(store, supervised):
    for nid in ("up", "hung", "new"):
        nodes.add_node(store, nid, cluster=False)
    supervised("up")
    hung = supervised("hung")
    pid = hung.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        sup = Supervisor(store, "new")
        st = sup.up(peer_timeout=1)
        try:
            peers = {r["server"]: r for r in st.data["catch_up"]["peers"]}
            assert peers["up"]["ok"] and not peers["hung"]["ok"]
            assert re.search(r"no answer .*within 1s", peers["hung"]["message"]), peers["hung"]
            assert st.healthy
        finally:
            sup.down()
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_memory_resolver_node_does_not_start_behind_its_peers(store, supervised, tmp_path):
    chain(store, ["a"], start=False)
    supervised("a")
    nodes.add_node(store, "m", seed_routes=[nodes.route_url(store, "a")], resolver="memory")
    other = laptop(store, tmp_path)
    revoke.revoke_all(other, "chat")
    await update_directly(store, "a", other.account("chat").token)
    sup = Supervisor(store, "m")
    with pytest.raises(ServerError, match=r"chat \(from a\).*pull --update"):
        await asyncio.to_thread(sup.up)
    assert not sup.running()
    await asyncio.to_thread(push.pull, store, update=True)  # the store catches up; then m starts from it
    await asyncio.to_thread(supervised, "m")
    assert await refused(url(store, "m"), creds(store, "default")) is not None


# --- pull: per account and server -----------------------------------------------------------------------


def _row(report, name):
    return next(r for r in report.rows if r["name"] == name)


async def test_pull_reports_per_account_and_server_and_update_writes_the_newer_jwt(store, pair, tmp_path, capsys):
    other = laptop(store, tmp_path)
    revoke.revoke_user(other, "chat", "phone")
    newer = other.account("chat")
    await update_directly(store, "a", newer.token, servers=2)  # every running server of the cluster takes it
    admin.edit_account(store, "SYS", tags=["ops"])  # the store is newer for SYS: not pushed
    admin.add_account(store, "later")  # in the store only

    report = await asyncio.to_thread(push.pull, store)
    assert report.ok and report.refused == [] and report.updated == [] and report.push is None
    chat = _row(report, "chat")
    assert chat["state"] == "server newer" and not chat["same"]
    assert {e["server"]: e["state"] for e in chat["per_server"]} == {"a": "server newer", "b": "server newer"}
    assert chat["server_issued_at"] == newer.claims.issued_at > chat["store_issued_at"]
    assert _row(report, "SYS")["state"] == "store newer"
    later = _row(report, "later")
    assert later["state"] == "missing" and not later["on_server"] and later["servers"] == []
    keys = {frozenset(r) for r in report.rows}
    assert len(keys) == 1  # every row has the same keys
    assert store.account("chat").token != newer.token  # pull alone writes nothing

    capsys.readouterr()
    home = ["--home", str(store.home)]
    assert await asyncio.to_thread(run_cli, cli, [*home, "pull"]) == 0
    out = capsys.readouterr().out
    assert "chat: server newer" in out and "  a: SERVER NEWER (issued " in out and "pull --update" in out

    assert await asyncio.to_thread(run_cli, cli, [*home, "pull", "--update", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"ok", "rows", "results", "refused", "updated", "push"}
    assert data["updated"] == [
        {"account": newer.public_key, "name": "chat", "from": ["a", "b"], "issued_at": newer.claims.issued_at}
    ]
    assert data["push"]["ok"]
    mine = Store(store.home)
    assert mine.account("chat").token == newer.token
    assert mine.account("chat").claims.is_revoked(mine.user("chat", "phone").public_key, 1)

    again = await asyncio.to_thread(push.pull, store)
    assert _row(again, "chat")["same"] and _row(again, "chat")["state"] == "same"
    assert _row(again, "SYS")["state"] == "store newer"  # --update pushes what it wrote, nothing else
    assert _row(again, "later")["state"] == "missing"


async def test_pull_update_refuses_a_jwt_of_another_operator_and_names_its_server(store, pair, capsys):
    acc = store.account("chat")
    forged = acc.claims.copy()
    forged.revocations.clear()
    forged.tags = ["forged"]
    token = encode(forged, KeyPair.generate("operator"), clock=lambda: acc.claims.issued_at + 100)
    await update_directly(store, "a", token, servers=2)
    report = await asyncio.to_thread(push.pull, store)
    assert _row(report, "chat")["state"] == "refused"
    assert {r["server"] for r in report.refused} == {"a", "b"}  # the update reached both servers
    assert all("neither the operator nor one of its signing keys" in r["message"] for r in report.refused)

    before = snapshot(store.home / "stores")
    capsys.readouterr()
    assert await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "pull", "--update"]) == 1
    out = capsys.readouterr()
    assert "refused chat from a:" in out.out and "refused JWTs from: a, b" in out.err
    assert "nothing to update" in out.out
    assert snapshot(store.home / "stores") == before


# --- a change made on an older store never undoes a newer one ----------------------------------------------


async def test_a_store_behind_the_servers_refuses_to_edit_or_push_until_it_pulls(store, pair, tmp_path, capsys):
    """Another home (behind: it never saw phone's revocation) revokes someone else: that would re-sign the
    account without phone's revocation and, pushed, let phone in again.  It is refused, nothing written,
    until the home pulls; then its revocation keeps phone's."""
    other = laptop(store, tmp_path)  # restored before phone was revoked
    # the other home reaches the same cluster through a node of its own, as another machine would
    nodes.add_node(other, "x", seed_routes=[nodes.route_url(store, "a")])
    x = Supervisor(other, "x")
    try:
        await asyncio.to_thread(x.up)
        await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "revoke", "user", "phone"])
        for nc_url in (url(store, "a"), url(other, "x")):  # the cluster passes the pushed JWT on to x
            assert await refused(nc_url, creds(store, "phone")) is not None
        before = snapshot(other.home / "keys")
        capsys.readouterr()
        code = await asyncio.to_thread(run_cli, cli, ["--home", str(other.home), "revoke", "user", "default"])
        err = capsys.readouterr().err
        assert code == 1 and "the store is behind the running servers" in err and "pull --update" in err
        assert snapshot(other.home / "keys") == before  # nothing written
        # a plain push of the older JWT is refused too, per account, and says why
        report = await asyncio.to_thread(push.push, other, ["chat"])
        assert not report.ok and any("newer JWT of account chat" in r["message"] for r in report.results)
        assert await refused(url(store, "a"), creds(store, "phone")) is not None  # still revoked everywhere

        assert await asyncio.to_thread(run_cli, cli, ["--home", str(other.home), "pull", "--update"]) == 0
        code = await asyncio.to_thread(run_cli, cli, ["--home", str(other.home), "revoke", "user", "default"])
        assert code == 0
        for nid in ("a", "b"):
            assert await refused(url(store, nid), creds(store, "phone")) is not None, nid
            assert await refused(url(store, nid), creds(store, "default")) is not None, nid
    finally:
        x.down()


async def test_a_node_of_another_home_catches_up_over_the_cluster_before_up_returns(store, pair, tmp_path, capsys):
    """x's home never saw phone's revocation and holds none of the cluster's nodes: x asks the cluster
    through itself once it joined, and takes the newer JWT before node up says it is ready."""
    other = laptop(store, tmp_path)  # restored before phone was revoked
    await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "revoke", "user", "phone"])
    nodes.add_node(other, "x", seed_routes=[nodes.route_url(store, "a")])
    try:
        capsys.readouterr()
        code = await asyncio.to_thread(run_cli, cli, ["--home", str(other.home), "node", "up", "x", "--json"])
        reason = await refused(url(other, "x"), creds(store, "phone"))  # right after up returned
        assert code == 0
        assert reason is not None and "authorization violation" in reason
        out = json.loads(capsys.readouterr().out)
        assert [(c["name"], c["from"]) for c in out["catch_up"]["caught_up"]] == [("chat", ["cluster"])]
        assert await refused(url(other, "x"), creds(store, "default")) is None
    finally:
        Supervisor(other, "x").down()
