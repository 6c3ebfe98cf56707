"""Supervised nodes: start, stop, reload and inspect the nats-server of a node by its pid file.

    >>> sup = Supervisor(store, "a")
    >>> sup.up()          # render + check, refuse busy ports, take newer JWTs from running peers, start,
                          # wait for /healthz, confirm it holds the newest account JWTs
    >>> sup.reload()      # re-render + check, SIGHUP, confirm the server loaded the new config
    >>> sup.status().data["routes"]
    >>> sup.status().warnings   # e.g. isolated: no route to its seeds; no route to a peer; leaf down
    >>> sup.down()

Files: ``run/<id>/nats-server.conf``, ``nats-server.pid``, ``nats-server.log``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dchat_ops._fs import atomic_write, read_bytes
from dchat_ops.config import nodes
from dchat_ops.config.node import Node, NodeFile, of_current_operator, read_nodes
from dchat_ops.config.nodes import render_node, run_dir
from dchat_ops.config.tls import tls_warnings
from dchat_ops.errors import DchatOpsError, ServerError
from dchat_ops.natsbin import port_in_use
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.process import (
    HEALTHZ,
    ServerProcess,
    http_json,
    pid_alive,
    stop_pid,
)

if TYPE_CHECKING:
    from dchat_ops.runtime.health import Links

__all__ = ["LINK_WAIT", "NodeStatus", "Supervisor", "chain", "reload_running", "wait_jetstream_leader", "without_jwts"]

LINK_WAIT = 2.5  # seconds ``up`` waits for a node's routes and leaf connections before it reports


@dataclass
class NodeStatus:
    """A node as its monitoring port shows it.  ``healthy`` is ``/healthz``; ``warnings`` say what else is
    wrong (an isolated node, a missing route or leaf connection, TLS), also under ``data["warnings"]``."""

    id: str
    running: bool
    pid: Optional[int] = None
    healthy: bool = False
    data: Optional[dict] = None
    links: Optional[Links] = None

    @property
    def warnings(self) -> list[str]:
        return list((self.data or {}).get("warnings") or [])

    def to_dict(self) -> dict:
        d = {"id": self.id, "running": self.running, "pid": self.pid, "healthy": self.healthy}
        d.update(self.data or {})
        return d


class Supervisor:
    def __init__(self, store: Store, node_id: str, *, binary: Optional[str] = None):
        self.store = store
        self.node_id = node_id
        self.binary = binary
        self.dir = run_dir(store, node_id)

    @property
    def config_path(self) -> Path:
        return self.dir / "nats-server.conf"

    @property
    def pid_file(self) -> Path:
        return self.dir / "nats-server.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "nats-server.log"

    def node(self):
        return NodeFile.load(self.store, self.node_id).node

    @property
    def monitor_url(self) -> str:
        return nodes.monitor_url(self.node())

    def pid(self) -> Optional[int]:
        """The pid of the running server, or None (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:  # the pid must still be a nats-server started with our config
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(self.config_path).encode() not in cmd:
                return None
        except OSError:
            pass
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    # --- lifecycle -------------------------------------------------------------------------------
    def render(self) -> Path:
        return render_node(self.store, self.node_id, binary=self.binary)

    def up(self, timeout: float = 20.0, *, peer_timeout: float = 3.0, link_wait: float = LINK_WAIT) -> NodeStatus:
        """Start the node from the newest account JWTs; refuses busy ports before starting, so no stray process
        is left behind.

        Before it starts, the running peers (the store's other running full-resolver nodes) are asked for
        account JWTs newer than the store's (each bounded by ``peer_timeout``), and those go into its resolver
        folder (:func:`dchat_ops.runtime.held.catch_up`, :func:`~dchat_ops.runtime.held.seed_resolver`), so
        it refuses a user revoked while it was down from its first second.  It is ready once ``/healthz`` is
        ok and it holds those JWTs; otherwise it is stopped again and :class:`ServerError` says why.  A
        memory-resolver node starts from the store only: when peers hold newer JWTs it is not started.
        ``status().data["catch_up"]`` says what was caught up from which peer, and which peers did not answer.
        A node routed to servers that are not nodes of this store (another machine's) asks them too, through
        itself, once it has joined (:func:`~dchat_ops.runtime.held.catch_up_over_cluster`): until then, a
        fraction of a second, it serves the JWTs it started from.

        Once healthy, waits up to ``link_wait`` seconds for its routes and leaf connections
        (:meth:`wait_links`); what is still missing then is in the status's warnings.
        """
        if self.running():
            return self.status()
        # asking peers needs the client library (asyncio, nats-py): imported here, where a node starts, so
        # that a live permission change (which reloads) does not load it before its reload; see ADR 2
        from dchat_ops.runtime import held

        node = self.node()
        self.render()
        for what, port in node.ports():
            host = node.host if what == "client" else "127.0.0.1"
            if port_in_use(port, host if host not in ("0.0.0.0", "") else "0.0.0.0"):
                raise ServerError(f"node {self.node_id}: {what} port {port} is already in use")
        caught = held.catch_up(self.store, self.node_id, self._full_resolver_peers(), timeout=peer_timeout)
        if node.resolver == "full":
            held.seed_resolver(self.store, node, caught)
        elif caught.caught_up:
            newer = ", ".join(f"{c['name']} (from {', '.join(c['from'])})" for c in caught.caught_up)
            raise ServerError(
                f"node {self.node_id}: running peers hold newer account JWTs than the store: {newer}; a "
                "memory-resolver node starts from the store only: run 'dchat-ops pull --update' first"
            )
        self.pid_file.unlink(missing_ok=True)
        loading = read_bytes(self.config_path)
        srv = ServerProcess.start(
            self.config_path,
            monitor_url=self.monitor_url,
            log_file=self.log_file,
            pid_file=self.pid_file,
            binary=self.binary,
            timeout=timeout,
        )
        if srv.popen is not None:
            srv.popen.returncode = 0  # detached: the supervisor tracks it by pid from now on
        self._note_loaded(loading)
        if node.resolver == "full":
            try:
                held.confirm_resolver(self.store, node, caught, timeout=peer_timeout)
            except DchatOpsError:
                self.down()  # not ready: it must not serve older JWTs than it should
                raise
        st = self.wait_links(link_wait)
        mine = {n.server_name for n in read_nodes(self.store).values()}
        if node.resolver == "full" and set((st.data or {}).get("routes") or []) - mine:
            # routed to servers of other stores (another machine's nodes): they may hold newer JWTs
            held.catch_up_over_cluster(self.store, node, caught, timeout=peer_timeout)
        st.data = {**(st.data or {}), "catch_up": caught.to_dict()}
        return st

    def wait_links(self, bound: float = LINK_WAIT) -> NodeStatus:
        """The status once the node's routes and leaf connections are up, or after ``bound`` seconds
        with warnings that say which are not (a node that runs alone does not fail)."""
        deadline = time.monotonic() + bound
        while True:
            st = self.status()
            if st.links is None or st.links.settled or time.monotonic() >= deadline:
                return st
            time.sleep(0.1)

    def down(self, timeout: float = 10.0) -> bool:
        """Stop the node gracefully; False when it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        if not stop_pid(pid, timeout):
            raise ServerError(f"node {self.node_id}: pid {pid} did not stop")
        self.pid_file.unlink(missing_ok=True)
        return True

    def reload(self, timeout: float = 10.0, render: bool = True) -> dict:
        """Re-render, check, SIGHUP, and confirm the server loaded the new config; ServerError if it did not."""
        pid = self.pid()
        if pid is None:
            raise ServerError(f"node {self.node_id} is not running")
        if render:
            self.render()
        varz_url = self.monitor_url + "/varz"
        status, before = http_json(varz_url)
        if status != 200:
            raise ServerError(f"node {self.node_id}: monitoring did not answer before reload")
        log_size = self.log_file.stat().st_size if self.log_file.exists() else 0
        loading = read_bytes(self.config_path)
        os.kill(pid, signal.SIGHUP)
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            err = self._reload_error(log_size)
            if err:
                raise ServerError(f"node {self.node_id}: reload rejected: {err}")
            status, after = http_json(varz_url)
            if status == 200 and after.get("config_load_time") != before.get("config_load_time"):
                self._note_loaded(loading)
                return after
            # a reload takes the server a few milliseconds: asked often at first, then less
            time.sleep(0.002 if time.monotonic() - start < 0.2 else 0.01)
        raise ServerError(f"node {self.node_id}: the server did not confirm the reload within {timeout:.0f}s")

    @property
    def loaded_copy_path(self) -> Path:
        """A copy of the config the running server last loaded (written when a start or reload is confirmed)."""
        return self.dir / "nats-server.conf.loaded"

    def _note_loaded(self, text: Optional[bytes]) -> None:
        # a record of the server's state, not a store file: never part of a change's rollback
        if text is not None:
            atomic_write(self.loaded_copy_path, text, fsync=False)

    def config_behind(self) -> Optional[bool]:
        """Whether the running server runs another config than its config file says (a change cut short
        after its reload, a file edited or rolled back since).  None when it is not running or does not
        answer.

        The file is compared with the copy of what the server last loaded, but for the preloaded account
        JWTs (those follow the store, and reach a running server by push).  Without such a copy (a node
        started by an older version), by time: the file written after the server loaded its config."""
        if self.pid() is None:
            return None
        current = read_bytes(self.config_path)
        loaded = read_bytes(self.loaded_copy_path)
        if current is None:
            return True
        if loaded is not None:
            return without_jwts(current.decode("utf-8", "replace")) != without_jwts(loaded.decode("utf-8", "replace"))
        status, varz = http_json(self.monitor_url + "/varz")
        loaded_at = _iso_ns(str(varz.get("config_load_time") or "")) if status == 200 else None
        if loaded_at is None:
            return None
        return self.config_path.stat().st_mtime_ns > loaded_at

    def _reload_error(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        for line in text.splitlines():
            if "[ERR]" in line and "reload" in line.lower():
                if "not supported for Trusted" in line:  # the operator JWT (or trusted keys) changed
                    return (
                        "nats-server takes a changed operator JWT only when it starts: restart the node "
                        f"(dchat-ops node down {self.node_id} && dchat-ops node up {self.node_id})"
                    )
                return line.split("[ERR] ", 1)[-1]
        return ""

    # --- inspection ---------------------------------------------------------------------------------
    def status(self) -> NodeStatus:
        pid = self.pid()
        if pid is None:
            return NodeStatus(
                self.node_id, False, data={"warnings": tls_warnings(self.node(), self.store), "links": None}
            )
        node = self.node()
        base = nodes.monitor_url(node)
        code, _ = http_json(base + HEALTHZ)
        st = NodeStatus(self.node_id, True, pid, healthy=(code == 200))
        _, varz = http_json(base + "/varz")
        rcode, routez = http_json(base + "/routez")
        _, gatewayz = http_json(base + "/gatewayz")
        lcode, leafz = http_json(base + "/leafz")
        routes = routez.get("routes") or []
        st.data = {
            "server_name": varz.get("server_name"),
            "server_id": varz.get("server_id"),
            "version": varz.get("version"),
            "connections": varz.get("connections"),
            "config_load_time": varz.get("config_load_time"),
            "routes": sorted({r.get("remote_name") or r.get("remote_id") for r in routes}),
            "route_count": len(routes),
            "gateways": sorted((gatewayz.get("outbound_gateways") or {}).keys()),
            "leafnodes": [{"name": lf.get("name"), "account": lf.get("account")} for lf in (leafz.get("leafs") or [])],
            "monitor_url": base,
        }
        link_warnings: list[str]
        if rcode == 200 and lcode == 200:
            from dchat_ops.runtime.health import check_links  # the client library: see up()

            st.links = check_links(
                self.store,
                node,
                routez=routez,
                leafz=leafz,
                gatewayz=gatewayz,
                peers=self._running_peers(node),
                log_file=self.log_file,
            )
            link_warnings = st.links.warnings
        else:
            link_warnings = [
                f"WARNING: node {self.node_id}: its monitoring port did not answer; routes and leaf connections unknown"
            ]
        st.data["links"] = st.links.to_dict() if st.links else None
        st.data["warnings"] = link_warnings + tls_warnings(node, self.store)
        return st

    def _full_resolver_peers(self) -> list[Node]:
        """The store's other running nodes with the full resolver: what they hold may be newer than the store."""
        return [
            other
            for nid, other in read_nodes(self.store).items()
            if nid != self.node_id
            and other.resolver == "full"
            and of_current_operator(self.store, other)
            and Supervisor(self.store, nid).running()
        ]

    def _running_peers(self, node: Node) -> list[Node]:
        """The running nodes of this store in the same cluster as ``node``."""
        if not node.cluster:
            return []
        name = node.cluster["name"]
        return [
            other
            for nid, other in read_nodes(self.store).items()
            if nid != node.id
            and other.cluster
            and other.cluster["name"] == name
            and Supervisor(self.store, nid).running()
        ]

    def logs(self, lines: int = 50) -> list[str]:
        if not self.log_file.exists():
            return []
        return self.log_file.read_text(errors="replace").splitlines()[-lines:]


def chain(store: Store, node_ids: list[str], *, jetstream: bool = False, start: bool = True) -> list[Supervisor]:
    """Add nodes that join one after the other (each knows only the one before) and start them.

    With ``jetstream`` every node runs JetStream and this waits until the cluster has elected its
    JetStream meta leader.  Returns the supervisors, in order; stop them with ``down()``.
    """

    sups = []
    seed = None
    for nid in node_ids:
        nodes.add_node(store, nid, seed_routes=[seed] if seed else [], jetstream=jetstream)
        seed = nodes.route_url(store, nid)
        sups.append(Supervisor(store, nid))
    if start:
        try:
            for sup in sups:
                sup.up()
            if jetstream and not wait_jetstream_leader(sups[0]):
                raise ServerError("the JetStream cluster elected no meta leader within 15 s")
        except Exception:
            for sup in sups:  # no half-started chain left behind
                sup.down()
            raise
    return sups


def wait_jetstream_leader(sup: Supervisor, timeout: float = 15.0) -> Optional[str]:
    """The name of the JetStream meta leader as ``sup``'s node sees it, once there is one (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = http_json(sup.monitor_url + "/jsz")[1].get("meta_cluster", {}).get("leader")
        if leader:
            return leader
        time.sleep(0.05)
    return None


def _iso_ns(text: str) -> Optional[int]:
    """Nanoseconds since the epoch of a server time (``2026-01-02T03:04:05.123456789Z``); None if unreadable."""
    import datetime as _dt

    try:
        whole, _, frac = text.rstrip("Z").partition(".")
        t = _dt.datetime.fromisoformat(whole).replace(tzinfo=_dt.timezone.utc)
        if not text.endswith("Z"):  # an offset: parse the whole text (sub-microseconds are dropped)
            return int(_dt.datetime.fromisoformat(text).timestamp() * 1e9)
        return int(t.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])
    except ValueError:
        return None


def without_jwts(text: str) -> list[str]:
    """A rendered config's lines but those of preloaded account JWTs (which follow the store's accounts:
    a revocation changes them, and reaches a running server by push, not by its config)."""
    return [ln for ln in text.splitlines() if "eyJ" not in ln]


def reload_running(store: Store, node_ids: Iterable[str]) -> list[dict]:
    """Reload the running ones of ``node_ids`` (certificates are re-read on reload); stopped ones are skipped."""
    out = []
    for nid in dict.fromkeys(node_ids):
        sup = Supervisor(store, nid)
        try:
            if not sup.running():
                out.append({"node": nid, "running": False, "reloaded": False})
                continue
            varz = sup.reload()
            out.append(
                {"node": nid, "running": True, "reloaded": True, "config_load_time": varz.get("config_load_time")}
            )
        except DchatOpsError as exc:
            out.append({"node": nid, "running": True, "reloaded": False, "error": str(exc)})
    return out
