"""One way to reach a node: dialable hosts, bounded connects, push / pull / revoke that never hang, client TLS."""

import asyncio
import json
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.chat.client import ChatClient, ChatIdentity
from dchat_ops.config import nodes, pki, tls
from dchat_ops.config.node import NodeFile
from dchat_ops.errors import ServerError
from dchat_ops.hosts import dial_host, host_port, url
from dchat_ops.nsc import admin
from dchat_ops.runtime import push
from dchat_ops.runtime.client import connect, connect_node, node_target, refused

# --- hosts and node URLs (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "dial"),
    [
        ("", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "127.0.0.1"),
        ("[::]", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("192.168.1.20", "192.168.1.20"),
        ("::1", "::1"),
        ("[fd00::1]", "fd00::1"),
        ("node.example.org", "node.example.org"),
    ],
)
def test_dial_host_for_a_listen_host(listen, dial):
    assert dial_host(listen) == dial


def test_urls_put_ipv6_in_brackets():
    assert url("nats", "127.0.0.2", 4222) == "nats://127.0.0.2:4222"
    assert url("tls", "::1", 4222) == "tls://[::1]:4222"
    assert host_port("[fd00::1]", 6222) == "[fd00::1]:6222"
    assert url("http", dial_host("::"), 8222) == "http://127.0.0.1:8222"


def test_node_urls_follow_host_and_tls(store):
    nodes.add_node(store, "a", host="127.0.0.2", cluster_port=None)
    n = NodeFile.load(store, "a").node
    assert nodes.client_url(n) == f"nats://127.0.0.2:{n.client_port}"
    assert nodes.monitor_url(n) == f"http://127.0.0.2:{n.monitor_port}"
    assert nodes.route_url(store, "a") == f"nats-route://127.0.0.2:{n.cluster['port']}"
    nodes.add_node(store, "w", host="0.0.0.0", advertise="10.0.0.5")
    w = NodeFile.load(store, "w").node
    assert nodes.client_url(w) == f"nats://127.0.0.1:{w.client_port}"
    assert nodes.monitor_url(w) == f"http://127.0.0.1:{w.monitor_port}"
    pki.init_ca(store)
    tls.enable(store, "a", ["client"])
    n = NodeFile.load(store, "a").node
    assert nodes.client_url(n) == f"tls://127.0.0.2:{n.client_port}"
    assert node_target(store, n).tls is not None


# --- bounded connects --------------------------------------------------------------------------------------


@contextmanager
def silent_listener():
    """A TCP port that accepts connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        srv.close()


async def test_connect_to_a_silent_port_gives_up_within_its_timeout(store):
    creds = store.creds_path("dchat", "chat", "default")
    with silent_listener() as port:
        for kw in ({}, {"max_reconnect_attempts": -1}):  # even a client told to retry forever
            t0 = time.monotonic()
            with pytest.raises(ServerError, match=r"no answer from nats://127\.0\.0\.1:\d+ within 1s"):
                await connect(f"nats://127.0.0.1:{port}", creds, timeout=1, **kw)
            assert time.monotonic() - t0 < 3
        t0 = time.monotonic()
        assert "no answer" in await refused(f"nats://127.0.0.1:{port}", creds, timeout=1)
        assert time.monotonic() - t0 < 3


async def test_connect_to_a_closed_port_says_so_quickly(store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"cannot connect to nats://127\.0\.0\.1"):
        await connect(f"nats://127.0.0.1:{port}", store.creds_path("dchat", "chat", "default"), timeout=2)
    assert time.monotonic() - t0 < 3


# --- push / revoke / pull on other hosts, and nodes that do not answer ---------------------------------------


async def test_push_and_revoke_reach_a_node_on_another_loopback_address(store, supervised):
    nodes.add_node(store, "far", host="127.0.0.2", cluster=False)
    supervised("far")
    admin.add_user(store, "chat", "phone")
    phone = await connect_node(store, "far", creds=store.creds_path("dchat", "chat", "phone"), allow_reconnect=False)
    assert phone.connected_url.hostname == "127.0.0.2"
    admin.edit_account(store, "chat", limits={"conn": 50})
    report = await asyncio.to_thread(push.push, store, ["chat"])
    assert report.ok and [(r["server"], r["message"]) for r in report.results] == [("far", "jwt updated")]
    code = await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "revoke", "user", "phone", "--json"])
    assert code == 0
    for _ in range(100):
        if phone.is_closed:
            break
        await asyncio.sleep(0.05)
    assert phone.is_closed
    rows = await asyncio.to_thread(push.pull, store)
    assert rows.ok and any(r["name"] == "chat" and r["same"] and r["servers"] == ["far"] for r in rows)


@pytest.fixture
def stopped(request):
    """SIGSTOP a node's server for the test; SIGCONT it afterwards so it can be stopped."""
    pids: list[int] = []

    def stop(sup) -> int:
        pid = sup.pid()
        os.kill(pid, signal.SIGSTOP)
        pids.append(pid)
        return pid

    yield stop
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_push_pull_and_revoke_name_a_node_that_does_not_answer(store, supervised, stopped, capsys):
    nodes.add_node(store, "up", cluster=False)
    nodes.add_node(store, "hung", cluster=False)
    supervised("up")
    stopped(supervised("hung"))
    admin.edit_account(store, "chat", limits={"conn": 40})

    t0 = time.monotonic()
    report = push.push(store, ["chat"], timeout=2)
    assert time.monotonic() - t0 < 6
    by_server = {r["server"]: r for r in report.results}
    assert not report.ok and report.failed_servers() == ["hung"]
    assert by_server["up"]["ok"] and by_server["up"]["message"] == "jwt updated"
    assert not by_server["hung"]["ok"] and "no answer" in by_server["hung"]["message"]

    t0 = time.monotonic()
    rows = push.pull(store, timeout=2)
    assert time.monotonic() - t0 < 6
    assert {r["server"]: r["ok"] for r in rows.results} == {"up": True, "hung": False}
    assert any(r["name"] == "chat" and r["same"] and r["servers"] == ["up"] for r in rows)

    home = ["--home", str(store.home)]
    capsys.readouterr()
    t0 = time.monotonic()
    assert run_cli(cli, [*home, "push"]) == 1
    out = capsys.readouterr()
    assert "chat -> up: ok" in out.out and "chat -> hung: FAILED no answer" in out.out
    assert "not confirmed by: hung" in out.err
    assert run_cli(cli, [*home, "pull"]) == 1
    assert "node hung: FAILED no answer" in capsys.readouterr().out
    assert run_cli(cli, [*home, "revoke", "user", "default", "--json"]) == 1
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert {r["server"]: r["ok"] for r in data["push"]["results"]} == {"up": True, "hung": False}
    assert "not confirmed: hung" in out.err and "Traceback" not in out.err
    assert time.monotonic() - t0 < 30  # three commands, each bounded by its default timeout


# --- nodes that verify client certificates -------------------------------------------------------------------


def verifying_node(store, supervised, nid="v", jetstream=False):
    pki.init_ca(store)
    nodes.add_node(store, nid, cluster=False, jetstream=jetstream)
    tls.enable(store, nid, ["client"], client_verify=True)
    assert not pki.cert_paths(store, nid, "client")[1].exists()
    return supervised(nid)


async def test_push_pull_and_revoke_on_a_node_with_client_verify(store, supervised):
    verifying_node(store, supervised)
    admin.add_user(store, "chat", "phone")
    creds = store.creds_path("dchat", "chat", "phone")
    n = NodeFile.load(store, "v").node
    assert await refused(nodes.client_url(n), creds, tls=pki.client_ssl_context(store)) is not None  # CA alone
    report = await asyncio.to_thread(push.push, store, ["chat"])
    assert report.ok and [r["server"] for r in report.results] == ["v"], report.results
    assert pki.cert_paths(store, "v", "client")[1].exists()  # issued from the store's CA on first use
    rows = await asyncio.to_thread(push.pull, store)
    assert rows.ok and any(r["name"] == "chat" and r["same"] for r in rows)
    phone = await connect_node(store, "v", creds=creds, allow_reconnect=False)
    assert phone.connected_url.scheme == "tls"
    code = await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "revoke", "user", "phone"])
    assert code == 0
    for _ in range(100):
        if phone.is_closed:
            break
        await asyncio.sleep(0.05)
    assert phone.is_closed


def test_chat_on_a_node_with_client_verify(store, supervised):
    admin.edit_account(store, "chat", jetstream={"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
    verifying_node(store, supervised, "v", jetstream=True)

    async def runtime():
        client = await ChatClient.on_node(ChatIdentity.load(store, "v"), store, "v").start()
        try:
            assert client.url.startswith("tls://") and client.nc.is_connected
        finally:
            await client.close()

    asyncio.run(runtime())
    r = CliRunner().invoke(cli, ["--home", str(store.home), "chat", "-n", "v"], input="/friends\n/quit\n")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "connected as v to node v" in r.output and "no friends yet" in r.output


@pytest.mark.parametrize(
    "a, b, overlap",
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "localhost", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("0.0.0.0", "127.0.0.2", True),
        ("::", "127.0.0.1", True),
        ("", "10.0.0.1", True),
        ("10.0.0.1", "10.0.0.2", False),
    ],
)
def test_listeners_overlap_is_one_rule(a, b, overlap):
    from dchat_ops.hosts import listeners_overlap

    assert listeners_overlap(a, b) is overlap
    assert listeners_overlap(b, a) is overlap


def test_a_spec_plan_accepts_with_one_port_on_two_hosts_applies(tmp_path):
    """plan, node add and render share the port-clash rule: the same port on two loopback addresses is fine,
    on the same address it is refused by plan (before anything is written)."""
    from dchat_ops import provision
    from dchat_ops.errors import SpecError
    from dchat_ops.natsbin import free_port
    from dchat_ops.nsc.store import Store

    ports = [free_port() for _ in range(5)]
    text = (
        "accounts:\n  - name: chat\nnodes:\n"
        f"  - {{id: p, host: 127.0.0.2, client_port: {ports[0]}, cluster_port: {ports[1]}, monitor_port: {ports[2]}}}\n"
        f"  - {{id: q, host: 127.0.0.1, client_port: {ports[0]}, cluster_port: {ports[3]}, monitor_port: {ports[4]}}}\n"
    )
    store = Store(tmp_path / "home")
    spec = provision.parse_spec(text, tmp_path / "s.yaml")
    assert provision.plan(store, spec).has_changes
    provision.apply(store, spec)
    assert not provision.plan(store, spec).has_changes
    clash = text.replace("host: 127.0.0.2", "host: 127.0.0.1")
    with pytest.raises(SpecError, match="clashes"):
        provision.parse_spec(clash, tmp_path / "c.yaml")


async def test_revoke_names_a_stopped_node_and_it_starts_refusing_the_user(store, supervised, capsys):
    from dchat_ops.runtime.supervisor import Supervisor

    nodes.add_node(store, "a", cluster=False)
    nodes.add_node(store, "b", cluster=False)
    supervised("a")
    b = supervised("b")
    admin.add_user(store, "chat", "lost", admin.UserSpec(sub_allow=["x"]))
    creds = store.creds_path("dchat", "chat", "lost")
    Supervisor(store, "b").down()
    assert await asyncio.to_thread(run_cli, cli, ["--home", str(store.home), "revoke", "user", "lost"]) == 0
    out = capsys.readouterr().out
    assert "a: ok" in out and "b: not running (takes the store's JWTs when it starts)" in out
    await asyncio.to_thread(b.up)
    for nid in ("a", "b"):
        assert await refused(nodes.client_url(NodeFile.load(store, nid).node), creds) is not None, nid


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_a_node_on_ipv6_loopback_starts_and_takes_a_push(store, supervised):
    result = nodes.add_node(store, "v6", host="::1")
    assert nodes.client_url(result.node).startswith("nats://[::1]:")
    supervised("v6")
    report = push.push(store, ["chat"], timeout=3)
    assert report.ok and [r["server"] for r in report.results] == ["v6"]
