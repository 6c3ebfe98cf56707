"""The pieces that keep a live permission change fast, each checked for what it must still do.

Monitoring reads on a plain socket, a managed client that moves a formerly refused subscription over
at once (and still delivers nothing twice), node files read once per process, and the heavy
libraries (nats-py, X.509) imported only where they are used.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile, inbox_prefix, node_path
from dchat_ops.errors import ConfigError
from dchat_ops.nsc import admin
from dchat_ops.nsc.spec import UserSpec
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime.client import ManagedClient, _refused_by, connect
from dchat_ops.runtime.process import HEALTHZ, http_json


def _listener(answer: bytes | None):
    """A loopback TCP server that reads a request and answers ``answer`` (None: never answers)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held = []

    def serve():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        held.append(conn)
        conn.recv(4096)
        if answer is not None:
            conn.sendall(answer)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, held


def test_monitoring_reads_of_a_real_node(store, supervised):
    nodes.add_node(store, "a", cluster=False)
    sup = supervised("a")
    code, varz = http_json(sup.monitor_url + "/varz")
    assert code == 200 and varz["server_name"] == "a"
    assert http_json(sup.monitor_url + HEALTHZ) == (200, {"status": "ok"})
    assert http_json(sup.monitor_url + "/no-such-endpoint")[0] == 404
    code, routez = http_json(sup.monitor_url + "/routez?subs=1")
    assert code == 200 and "routes" in routez


def test_monitoring_reads_that_get_no_answer_are_bounded():
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    assert http_json(f"http://127.0.0.1:{closed}/varz") == (0, {})  # nothing listens

    srv, held = _listener(None)  # accepts, never answers
    start = time.monotonic()
    assert http_json(f"http://127.0.0.1:{srv.getsockname()[1]}/varz", timeout=0.3) == (0, {})
    assert time.monotonic() - start < 2
    srv.close()
    for c in held:
        c.close()

    srv, _ = _listener(b"SSH-2.0-OpenSSH\r\n\r\n")  # something that is not HTTP
    assert http_json(f"http://127.0.0.1:{srv.getsockname()[1]}/varz") == (0, {})
    srv.close()

    body = json.dumps({"status": "unavailable"}).encode()
    srv, _ = _listener(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n" + body)
    assert http_json(f"http://127.0.0.1:{srv.getsockname()[1]}/healthz") == (503, {"status": "unavailable"})
    srv.close()
    assert http_json("https://127.0.0.1:1/varz") == (0, {})  # only the plain-HTTP monitoring port


def test_which_subscriptions_old_creds_refused(store):
    admin.add_user(
        store,
        "chat",
        "u",
        spec=UserSpec.from_fields(
            {"allow_sub": ["room.a", "feed.>", "q.x workers"], "deny_sub": ["feed.secret"]}, now=0
        ),
    )
    token = store.user("chat", "u").token
    refused = _refused_by(token)

    class Sub:
        def __init__(self, subject, queue=""):
            self.subject, self.queue = subject, queue

    assert refused(Sub("room.b")) and refused(Sub("feed.secret")) and refused(Sub("q.x"))
    assert not refused(Sub("room.a")) and not refused(Sub("feed.news"))
    assert not refused(Sub("room.*")) and not refused(Sub("q.x", "workers"))  # not certain: counts as allowed
    admin.add_user(store, "chat", "all")
    assert not _refused_by(store.user("chat", "all").token)(Sub("anything.at.all"))
    assert not _refused_by("not a jwt")(Sub("room.b"))


async def test_a_refused_subscription_moves_over_with_nothing_lost_or_doubled(store, supervised):
    nodes.add_node(store, "a")
    supervised("a")
    nodes.add_node(store, "b", seed_routes=[nodes.route_url(store, "a")])
    apply_node_edit(store, "b", "allow-sub", "room.steady")
    supervised("b")
    b_url = f"nats://127.0.0.1:{NodeFile.load(store, 'b').node.client_port}"
    a_url = f"nats://127.0.0.1:{NodeFile.load(store, 'a').node.client_port}"
    mc = await ManagedClient(b_url, store.creds_path("dchat", "chat", "b"), inbox_prefix=inbox_prefix("b")).start()
    new: list[int] = []
    steady: list[int] = []

    async def on_new(msg):
        new.append(int(msg.data))

    async def on_steady(msg):
        steady.append(int(msg.data))

    await mc.subscribe("room.new", cb=on_new)  # refused by the node user's creds for now
    await mc.subscribe("room.steady", cb=on_steady)
    pub = await connect(a_url, store.creds_path("dchat", "chat", "default"))
    await asyncio.sleep(0.3)  # the route knows b's interest in room.steady
    sent = 0
    stop = asyncio.Event()

    async def publish():
        nonlocal sent
        while not stop.is_set():
            await pub.publish("room.new", str(sent).encode())
            await pub.publish("room.steady", str(sent).encode())
            sent += 1
            await asyncio.sleep(0.002)

    task = asyncio.get_running_loop().create_task(publish())
    await asyncio.sleep(0.1)
    await asyncio.to_thread(apply_node_edit, store, "b", "allow-sub", "room.new")
    await asyncio.wait_for(mc.swapped.wait(), 10)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    await pub.flush()
    await asyncio.sleep(0.3)
    await pub.close()
    await mc.close()
    assert mc.swaps == 1
    assert new and len(new) == len(set(new))  # delivered once each
    assert new == list(range(new[0], sent))  # from its first message on, nothing missed, in order
    assert steady == list(range(sent))  # the subscription both connections had: every one, once


def test_node_files_are_read_once_and_edited_round_trip(store):
    nodes.add_node(store, "n", cluster=False)
    path = node_path(store, "n")
    path.write_text(path.read_text().replace("policy:", "# my own note\npolicy:"))
    first = NodeFile.load(store, "n")
    again = NodeFile.load(store, "n")
    assert again.node is first.node  # the same text: not parsed again
    again.add_to_list(("policy", "subscribe", "allow"), "room.x")
    again.save()
    assert "# my own note" in path.read_text() and "room.x" in path.read_text()
    fresh = NodeFile.load(store, "n")
    assert fresh.node is not first.node and fresh.node.policy.subscribe.allow == ["room.x"]
    path.write_text(path.read_text().replace("client_port:", "client_port: [\n"))
    try:
        NodeFile.load(store, "n")
        raise AssertionError("a broken node file was read")
    except ConfigError as exc:
        assert "line" in str(exc)  # the round-trip reader says where


def test_the_live_change_path_imports_no_nats_client_or_x509_before_it_connects(store):
    nodes.add_node(store, "n", cluster=False)
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from dchat_ops.nsc.store import Store\n"
        "from dchat_ops.config.nodes import render_node\n"
        "import dchat_ops.permissions.apply\n"
        f"render_node(Store(Path({str(store.home)!r})), 'n', server_check=False)\n"
        "print(json.dumps([m for m in ('nats', 'cryptography.x509', 'urllib.request') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


def test_a_live_allow_sub_reloads_before_it_loads_the_client_library(store, supervised):
    """The reload of a live change is what people wait on: asyncio, ssl and nats-py come after it."""
    nodes.add_node(store, "n", cluster=False)
    supervised("n")
    code = (
        "import os, signal, sys, json\n"
        "seen = []\n"
        "kill = os.kill\n"
        "def spy(pid, sig):\n"
        "    if sig == signal.SIGHUP:\n"
        "        seen.append([m for m in ('asyncio', 'ssl', 'nats', 'cryptography.x509') if m in sys.modules])\n"
        "    return kill(pid, sig)\n"
        "os.kill = spy\n"
        "from dchat_ops.nsc.store import Store\n"
        "from dchat_ops.permissions.apply import apply_node_edit\n"
        f"r = apply_node_edit(Store({str(store.home)!r}), 'n', 'allow-sub', 'room.fast')\n"
        "print(json.dumps({'outcome': r.outcome, 'seen': seen, 'after': 'asyncio' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "live"
    assert result["seen"] == [[]]  # one reload, and nothing heavy loaded before it
    assert result["after"]  # the confirmation that follows does use the client library
