"""Does a running node reach the network it was told about?  Its routes, seeds and leaf connections.

    >>> links = check_links(store, node, routez=routez, leafz=leafz, peers=running_peers)
    >>> links.warnings        # lines for a person; empty when every link the node should have is up
    >>> links.settled         # False while a route or a leaf connection is missing
    >>> links.to_dict()       # {"cluster": "dchat", "servers": [...], "missing": [...], ...}

Routes do not relay: in a full mesh every node holds a route to every other one, dialled at the
address that one advertises.  The cluster a node was told about is made of

- its seed routes (its node file);
- the nodes of this store in the same cluster that are running;
- the servers its peers hold routes to.  Peers of this store are read on their monitoring port
  (``/routez``); other peers are asked through the node over the system account
  (``$SYS.REQ.SERVER.<id>.ROUTEZ``, each server by the id its peers know it by).

Servers are counted by id (``remote_id``), never by connection: with route pooling and a system
account one peer holds several route connections.  Every request here is bounded.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypeVar
from urllib.parse import urlsplit

from dchat_ops.config import nodes
from dchat_ops.config.node import Node
from dchat_ops.errors import DchatOpsError
from dchat_ops.hosts import dial_host
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import close_quietly, node_target, run_sync, system_routez
from dchat_ops.runtime.process import http_json

__all__ = ["Links", "ask_routez", "check_links", "last_error"]

IN_STORE = ""  # the source of a server that is itself a running node of this store
PEER_TIMEOUT = 1.0  # seconds for each peer's monitoring port, and for the system-account question
_ATTEMPT = re.compile(r"^Error trying to connect .*?\(attempt \d+\): ")  # the log's prefix to a dial error
NAT_HINT = (
    "routes do not relay: every node must reach every other at its advertised cluster address; "
    "nodes behind NAT belong on leaf connections to a public node, or on an overlay network "
    "(see 'Nodes behind NAT' in docs/topologies.md)"
)


@dataclass
class Links:
    """What a node is connected to, against what it should be connected to."""

    node_id: str
    cluster: str = ""
    connected: dict[str, str] = field(default_factory=dict)  # server id -> name: the node's routes
    expected: dict[str, str] = field(default_factory=dict)  # every other server of its cluster
    known_to: dict[str, list[str]] = field(default_factory=dict)  # server id -> who said it exists
    seeds: list[str] = field(default_factory=list)
    leaf_remotes_down: list[list[str]] = field(default_factory=list)  # urls of each remote without a connection
    gateways_down: list[str] = field(default_factory=list)  # configured gateways (names) with no connection out
    unread: list[str] = field(default_factory=list)  # peers whose routes could not be read, and why
    warnings: list[str] = field(default_factory=list)

    @property
    def missing(self) -> dict[str, str]:
        return {sid: name for sid, name in self.expected.items() if sid not in self.connected}

    @property
    def isolated(self) -> bool:
        """Seed routes configured and not one route up."""
        return bool(self.seeds) and not self.connected

    @property
    def settled(self) -> bool:
        """Every route and leaf connection the node should have is up (as far as could be read)."""
        return not (self.missing or self.isolated or self.leaf_remotes_down or self.gateways_down)

    def to_dict(self) -> dict:
        return {
            "cluster": self.cluster,
            "servers": sorted(self.expected.values()),
            "routes_to": sorted(self.connected.values()),
            "missing": sorted(self.missing.values()),
            "seeds": list(self.seeds),
            "isolated": self.isolated,
            "leaf_remotes_down": [list(u) for u in self.leaf_remotes_down],
            "gateways_down": list(self.gateways_down),
            "unread": list(self.unread),
            "settled": self.settled,
        }


def _remotes(routez: dict) -> dict[str, str]:
    """Distinct remote servers of a ``/routez`` answer: id -> name (several connections, one server)."""
    out: dict[str, str] = {}
    for r in routez.get("routes") or []:
        sid = r.get("remote_id")
        if sid:
            out[sid] = r.get("remote_name") or out.get(sid) or sid
    return out


def last_error(log_file: Optional[Path], about: str, max_bytes: int = 65536) -> str:
    """The last ``[ERR]`` line mentioning ``about`` since the server last started (its message only)."""
    if log_file is None:
        return ""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    found = ""
    for line in text.splitlines():
        if "Starting nats-server" in line:
            found = ""
        elif "[ERR]" in line and about in line.lower():
            found = line.split("[ERR] ", 1)[-1].strip()
    # "Error trying to connect to route (attempt 1): dial tcp ...": the dial error is what tells
    return _ATTEMPT.sub("", found)


def _netloc(url: str) -> str:
    return (urlsplit(url).netloc or url).rsplit("@", 1)[-1].lower()


def _own_route(node: Node) -> set[str]:
    """host:port forms of the node's own cluster address (a seed list may name the node itself)."""
    c = node.cluster or {}
    forms = {f"{dial_host(c.get('host') or node.host)}:{c.get('port')}", f"{c.get('host')}:{c.get('port')}"}
    if c.get("advertise"):
        forms.add(str(c["advertise"]).lower())
    return {f.lower() for f in forms}


_T = TypeVar("_T")


def ask_routez(store: Store, node: Node, want: set[str], timeout: float = PEER_TIMEOUT) -> tuple[dict[str, dict], str]:
    """``/routez`` of the servers ``want`` (ids), asked through ``node`` over the system account.

    Returns the answers by server id, and why none came when none did.  Connect and wait are bounded.
    """
    try:
        creds = system_creds(store)
        target = node_target(store, node)
    except DchatOpsError as exc:
        return {}, f"cannot ask over the system account: {exc}"

    async def ask() -> dict[str, dict]:
        nc = await target.connect(creds_text=creds, timeout=timeout, allow_reconnect=False, max_reconnect_attempts=0)
        try:
            ids = sorted(want)
            answers = await asyncio.gather(
                *(system_routez(nc, sid, timeout=timeout) for sid in ids), return_exceptions=True
            )
        finally:
            await close_quietly(nc)
        return {sid: a for sid, a in zip(ids, answers, strict=True) if isinstance(a, dict)}

    try:
        got = run_sync(ask)
    except DchatOpsError as exc:
        return {}, str(exc)
    return got, "" if got else f"no answer over the system account within {timeout:g}s"


def _route_links(store: Store, node: Node, links: Links, routez: dict, peers: list[Node], timeout: float) -> None:
    me = routez.get("server_id") or ""
    links.connected = _remotes(routez)
    known: dict[str, str] = dict(links.connected)
    told: dict[str, list[str]] = {}

    def learn(sid: str, name: str, source: str) -> None:
        known.setdefault(sid, name)
        if source not in told.setdefault(sid, []):
            told[sid].append(source)

    read: set[str] = set()
    for peer in peers:
        code, rz = http_json(nodes.monitor_url(peer) + "/routez", timeout=timeout)
        sid = rz.get("server_id") if code == 200 else None
        if not sid:
            links.unread.append(f"{peer.id} (its monitoring port did not answer)")
            continue
        read.add(sid)
        learn(sid, rz.get("server_name") or peer.server_name, IN_STORE)
        for rid, rname in _remotes(rz).items():
            learn(rid, rname, rz.get("server_name") or peer.server_name)
    others = set(links.connected) - read
    if others:
        answers, why = ask_routez(store, node, others, timeout)
        for sid, rz in answers.items():
            for rid, rname in _remotes(rz).items():
                learn(rid, rname, links.connected[sid])
        for sid in sorted(others - answers.keys(), key=lambda s: links.connected[s]):
            links.unread.append(f"{links.connected[sid]} ({why or 'no answer over the system account'})")
    links.expected = {sid: name for sid, name in known.items() if sid != me}
    links.known_to = {sid: src for sid, src in told.items() if sid != me}
    own = _own_route(node)
    links.seeds = [u for u in (node.cluster or {}).get("routes") or [] if _netloc(u) not in own]


def _leaf_links(store: Store, node: Node, links: Links, leafz: dict) -> None:
    remotes = (node.leafnodes or {}).get("remotes") or []
    spokes: dict[str, int] = {}
    for lf in leafz.get("leafs") or []:
        if lf.get("is_spoke"):
            spokes[lf.get("account") or ""] = spokes.get(lf.get("account") or "", 0) + 1
    unmatched = sum(spokes.values())
    for rem in remotes:
        try:
            key = store.account(rem.get("account") or node.account).public_key
        except DchatOpsError:
            key = ""
        if spokes.get(key, 0) > 0:
            spokes[key] -= 1
            unmatched -= 1
        else:
            links.leaf_remotes_down.append(list(rem.get("urls") or []))
    # a remote whose account could not be matched still counts when a connection is otherwise unexplained
    while unmatched > 0 and links.leaf_remotes_down:
        links.leaf_remotes_down.pop()
        unmatched -= 1


def _warnings(store: Store, node: Node, links: Links, log_file: Optional[Path]) -> list[str]:
    out: list[str] = []
    who = f"WARNING: node {node.id}"
    names = []
    for sid, name in sorted(links.missing.items(), key=lambda kv: kv[1]):
        src = links.known_to.get(sid) or []
        why = ["a running node of this store"] if IN_STORE in src else []
        if [s for s in src if s != IN_STORE]:
            why.append("known to " + ", ".join(s for s in src if s != IN_STORE))
        names.append(f"{name} ({'; '.join(why)})" if why else name)
    route_err = last_error(log_file, "route") if links.isolated or names else ""
    if links.isolated:
        out.append(
            f"{who}: isolated: no route to any of its seed routes ({', '.join(links.seeds)}); "
            f"it runs alone, outside cluster {links.cluster}"
            + (f", without {', '.join(names)}" if names else "")
            + (f"; last route error: {route_err}" if route_err else "")
        )
    elif names:
        try:
            addr = nodes.route_url(store, node.id)
        except DchatOpsError:
            addr = ""
        out.append(
            f"{who}: routes to {len(links.connected)} of the {len(links.expected)} other servers of cluster "
            f"{links.cluster}; none to {', '.join(names)}. Peers dial {node.id} at {addr or 'its cluster address'}; "
            + NAT_HINT
            + (f"; last route error: {route_err}" if route_err else "")
        )
    for urls in links.leaf_remotes_down:
        err = last_error(log_file, "leaf")
        out.append(
            f"{who}: no leaf connection up to {', '.join(urls) or 'its hub'} "
            "(is the hub running, and reachable from here?)" + (f"; last leafnode error: {err}" if err else "")
        )
    for name in links.gateways_down:
        err = last_error(log_file, "gateway")
        out.append(
            f"{who}: no gateway connection to cluster {name} (are its gateway nodes running, and reachable "
            "from here?)" + (f"; last gateway error: {err}" if err else "")
        )
    if links.unread:
        out.append(f"{who}: could not read which servers these peers know: {'; '.join(links.unread)}")
    return out


def check_links(
    store: Store,
    node: Node,
    *,
    routez: dict,
    leafz: dict,
    peers: list[Node],
    gatewayz: Optional[dict] = None,
    log_file: Optional[Path] = None,
    timeout: float = PEER_TIMEOUT,
) -> Links:
    """The routes and leaf connections of a running ``node`` against what it was told about.

    ``routez``, ``leafz`` and ``gatewayz`` are the node's own monitoring answers; ``peers`` are the running nodes of
    this store in the same cluster (read on their monitoring ports, each bounded by ``timeout``).
    ``log_file`` lends the last dial error to a warning.
    """
    links = Links(node.id, cluster=(node.cluster or {}).get("name", ""))
    if node.cluster:
        _route_links(store, node, links, routez, peers, timeout)
    if node.leafnodes:
        _leaf_links(store, node, links, leafz)
    if node.gateway and gatewayz is not None:
        out = (gatewayz.get("outbound_gateways") or {}).keys()
        links.gateways_down = [g["name"] for g in node.gateway.get("remotes") or [] if g["name"] not in out]
    links.warnings = _warnings(store, node, links, log_file)
    return links
