"""``dchat-ops verify``: a throw-away network on loopback that proves the toolkit's promises.

In a temporary folder: a store is made with ``init``, users with narrow permissions are added,
a server config is rendered and checked, a real nats-server is started, and each promise is
tested through real nats-py connections.  Each check records whether it passed, its time and a
detail line; the run passes only when every check passed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..config.render import standalone_config, write_and_check
from ..errors import DchatOpsError
from ..nsc import admin
from ..nsc.inspect import validate_store
from ..nsc.store import Store
from .client import ManagedClient, connect, refused
from .server import ServerProcess, free_port

__all__ = ["Check", "Report", "run_verify"]


@dataclass
class Check:
    name: str
    passed: bool
    ms: float
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "ms": round(self.ms, 1), "detail": self.detail}


@dataclass
class Report:
    folder: str
    checks: list[Check] = field(default_factory=list)
    total_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": [c.to_dict() for c in self.checks],
                "ms": round(self.total_ms, 1), "folder": self.folder}


class _Failed(Exception):
    pass


class _Run:
    def __init__(self, folder: Path, progress: Optional[Callable[[str], None]]):
        self.folder = folder
        self.report = Report(str(folder))
        self.progress = progress

    @contextmanager
    def check(self, name: str):
        """Record one check; the body sets ``box[0]`` to its detail line, raises to fail."""
        box = [""]
        t0 = time.perf_counter()
        try:
            yield box
            ok, detail = True, box[0]
        except (AssertionError, DchatOpsError, _Failed) as exc:
            ok, detail = False, str(exc) or type(exc).__name__
        except Exception as exc:  # an unexpected failure is a failed check, not a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        c = Check(name, ok, (time.perf_counter() - t0) * 1000, detail)
        self.report.checks.append(c)
        if self.progress:
            self.progress(f"{'ok  ' if ok else 'FAIL'} {name:<50} {c.ms:7.0f} ms  {detail}")
        if not ok:
            raise _Failed(name)


def run_verify(*, keep: bool = False, folder: Optional[Path] = None,
               progress: Optional[Callable[[str], None]] = None) -> Report:
    """Run every check; stops at the first failure that later checks depend on."""
    own = folder is None
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="dchat-verify-"))
    run = _Run(folder, progress)
    t0 = time.perf_counter()
    servers: list = []  # ServerProcess or Supervisor: both stop by pid
    try:
        asyncio.run(_checks(run, servers))
        asyncio.run(_cluster_checks(run, servers))
    except _Failed:
        pass
    finally:
        for s in reversed(servers):
            if hasattr(s, "down"):
                s.down()
            else:
                s.stop()
        run.report.total_ms = (time.perf_counter() - t0) * 1000
        if own and not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return run.report


async def _checks(run: _Run, servers: list[ServerProcess]) -> None:
    folder = run.folder
    store = Store(folder / "home")
    with run.check("store: init operator, accounts, users") as box:
        r = admin.init(store)
        admin.add_user(store, r.account, "alice", admin.UserSpec(sub_allow=["chat.>", "_INBOX.>"]))
        admin.add_user(store, r.account, "short-lived", admin.UserSpec(expires=admin.now(store) + 2))
        errors = [f for f in validate_store(store) if f.level == "error"]
        assert not errors, f"validate: {errors[0].entity}: {errors[0].message}"
        box[0] = f"operator {r.operator}, accounts {r.system_account} + {r.account}; store validates"

    port, http = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    with run.check("server: render, check and start") as box:
        cfg = standalone_config(store, resolver="full", data_dir=folder / "data", port=port, http_port=http)
        conf = folder / "server.conf"
        write_and_check(cfg, conf)
        srv = ServerProcess.start(conf, monitor_url=f"http://127.0.0.1:{http}", log_file=folder / "server.log")
        servers.append(srv)
        box[0] = f"nats-server {srv.varz().get('version')} healthy on 127.0.0.1:{port}"

    default_creds = store.creds_path(r.operator, r.account, r.user)
    with run.check("creds: connect and exchange a message") as box:
        nc = await connect(url, default_creds)
        try:
            sub = await nc.subscribe("chat.hello")
            await nc.publish("chat.hello", b"hello")
            msg = await sub.next_msg(timeout=2)
            assert msg.data == b"hello", "message body changed in transit"
        finally:
            await nc.close()
        box[0] = f"user {r.user} sent and received on chat.hello"

    with run.check("permissions: subscribe outside allow list refused") as box:
        errors: list[str] = []
        nc = await connect(url, store.creds_path(r.operator, r.account, "alice"), errors=errors)
        try:
            ok_sub = await nc.subscribe("chat.room")
            await nc.subscribe("secret.room")
            await nc.flush()
            await asyncio.sleep(0.1)
            assert any('permissions violation for subscription to "secret.room"' in e for e in errors), \
                f"no permissions violation (errors: {errors})"
            await nc.publish("chat.room", b"x")
            assert (await ok_sub.next_msg(timeout=2)).data == b"x", "allowed subject did not deliver"
        finally:
            await nc.close()
        box[0] = "alice (sub chat.>) refused secret.room, served chat.room"

    with run.check("auth: tampered JWT refused") as box:
        text = default_creds.read_text()
        token = text.split("\n")[1]
        h, p, s = token.split(".")
        payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        payload["name"] = "mallory"
        p2 = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        reason = await refused(url, creds_text=text.replace(token, f"{h}.{p2}.{s}"))
        assert reason is not None, "server accepted a tampered JWT"
        box[0] = f"refused: {reason[:60]}"

    with run.check("auth: expired user refused") as box:
        deadline = admin.now(store) + 5
        creds = store.creds_path(r.operator, r.account, "short-lived")
        user_exp = store.user(r.account, "short-lived").claims.expires
        while admin.now(store) <= user_exp and admin.now(store) < deadline:
            await asyncio.sleep(0.1)
        reason = await refused(url, creds)
        assert reason is not None, "server accepted an expired user"
        box[0] = f"refused: {reason[:60]}"


async def _cluster_checks(run: _Run, servers: list) -> None:
    """A 3-node chain-joined cluster: gossip mesh, default deny, allow-sub live."""
    from ..config import nodes
    from ..config.node import NodeFile, inbox_prefix
    from ..permissions.apply import apply_node_edit
    from .supervisor import Supervisor

    store = Store(run.folder / "home")
    for s in servers:  # the single server's job is done
        s.stop()
    servers.clear()
    sups = {}
    with run.check("cluster: chain join a <- b <- c") as box:
        seed = None
        for nid in ("a", "b", "c"):
            nodes.add_node(store, nid, seed_routes=[seed] if seed else [])
            sups[nid] = Supervisor(store, nid)
            sups[nid].up()
            servers.append(sups[nid])
            seed = nodes.route_url(store, nid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            meshes = {n: set(s.status().data["routes"]) for n, s in sups.items()}
            if all(meshes[n] == {"a", "b", "c"} - {n} for n in meshes):
                break
            await asyncio.sleep(0.05)
        assert all(meshes[n] == {"a", "b", "c"} - {n} for n in meshes), f"routes: {meshes}"
        box[0] = "c knew only b; all three nodes see each other"

    def url(nid):
        return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"

    got: list[bytes] = []
    receiver = await ManagedClient(url("c"), store.creds_path("dchat", "chat", "c"), inbox_prefix=inbox_prefix("c")).start()
    pub = await connect(url("a"), store.creds_path("dchat", "chat", "default"))
    try:
        with run.check("default deny: node c refuses room.x") as box:
            async def on_msg(msg):
                got.append(msg.data)

            await receiver.subscribe("room.x", cb=on_msg)
            for _ in range(5):
                await pub.publish("room.x", b"early")
                await asyncio.sleep(0.02)
            assert any('subscription to "room.x"' in e for e in receiver.errors), "no permissions violation"
            assert not got, "a refused subscription received messages"
            box[0] = "subscription refused, nothing delivered from node a"

        with run.check("allow-sub: live on the running cluster") as box:
            t0 = time.perf_counter()
            r = await asyncio.to_thread(apply_node_edit, store, "c", "allow-sub", "room.x")
            assert r.outcome == "live", f"outcome {r.outcome}"
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                await pub.publish("room.x", b"hello c")
                await asyncio.sleep(0.01)
            assert got and got[0] == b"hello c", "no message on room.x after allow-sub"
            box[0] = f"first message on room.x {1000 * (time.perf_counter() - t0):.0f} ms after the command started"
    finally:
        await pub.close()
        await receiver.close()
