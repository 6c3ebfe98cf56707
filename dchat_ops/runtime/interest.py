"""Route interest: the subscriptions a node's route peers hold on its behalf, read and repaired.

A node announces to each route peer the subjects it has subscribers for (``RS+`` / ``RS-``), as
far as its route import permissions let it; a peer forwards a message over that route only for
interest it holds from it.  This module reads that state from the servers themselves:

    >>> own_id, peers = route_peers(monitor_url(node))        # the node's server id and its route peers
    >>> local_interest(monitor_url(node))                     # its own subscriptions (/subsz)
    >>> peer_interest(monitor_url(peer), own_id)              # what a peer holds from it (/routez)
    >>> reader = PeerReader(store, "c")                       # any peer: monitoring port, else $SYS
    >>> await reader.read(peer, own_id)

and repairs it: :func:`reannounce` reloads a peer of the store with a temporary route export deny
of some subjects and then back onto its config, which makes every node routed to it announce its
interest in those subjects to it again (and, repeated, lets it forget interest nobody may send).
Why this is needed and what it costs: docs/permissions.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from dchat_ops._fs import atomic_write, read_bytes
from dchat_ops.config.node import Node, NodeFile, list_nodes
from dchat_ops.config.nodes import monitor_url, render_node
from dchat_ops.errors import ConfigError, DchatOpsError, ServerError
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import close_quietly, node_target, system_routez
from dchat_ops.runtime.process import RoutePeer, get_json, route_peers
from dchat_ops.runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "Interest",
    "PeerReader",
    "RoutePeer",
    "held_interest",
    "local_interest",
    "peer_interest",
    "reannounce",
    "route_peers",
]

_PAGE = 1024  # nats-server's default page of /subsz
# A subject no client uses: the second variant of a temporary export deny, so that each reload of a
# repeated re-announce changes the route permissions (an unchanged reload does nothing to routes).
_MARKER = "_DCHAT_OPS.reannounce"


@dataclass(frozen=True, order=True)
class Interest:
    """One subscription interest: account (public key), subject, queue group ("" for none)."""

    account: str
    subject: str
    queue: str = ""

    def __str__(self) -> str:
        return f"{self.subject}{' ' + self.queue if self.queue else ''}"


def local_interest(monitor: str, *, timeout: float = 2.0) -> set[Interest]:
    """Every local subscription of the node (its clients', leaf nodes' and internal ones), all accounts.

    These are the subscriptions a node announces over its routes, as far as its route imports allow.
    """
    out: set[Interest] = set()
    offset = 0
    while True:
        body = get_json(f"{monitor}/subsz?subs=1&offset={offset}&limit={_PAGE}", timeout)
        page = body.get("subscriptions_list") or []
        for d in page:
            out.add(Interest(d.get("account") or "", d.get("subject") or "", d.get("qgroup") or ""))
        offset += len(page)
        if not page or offset >= int(body.get("total") or 0):
            return out


def _account_of(sid: str, subject: str) -> str:
    """The account named in a routed subscription's sid (``R <account> <subject> [<queue>]``)."""
    tokens = sid.split(" ")
    for i in range(1, len(tokens)):
        if tokens[i] == subject:
            return "" if tokens[i - 1] in ("R", "L") else tokens[i - 1]
    return ""


def held_interest(routez: dict, from_id: str) -> set[Interest]:
    """What a server holds from server ``from_id``, read from its ``/routez?subs=detail`` JSON.

    A route dedicated to one account names it (``account``); on the shared (pooled) routes the
    account is the second word of each subscription's ``sid``.
    """
    out: set[Interest] = set()
    for r in routez.get("routes") or []:
        if r.get("remote_id") != from_id:
            continue
        for d in r.get("subscriptions_list_detail") or []:
            subject = d.get("subject") or ""
            account = r.get("account") or d.get("account") or _account_of(d.get("sid") or "", subject)
            out.add(Interest(account, subject, d.get("qgroup") or ""))
    return out


def peer_interest(monitor: str, from_id: str, *, timeout: float = 2.0) -> tuple[str, set[Interest]]:
    """A peer's own server id and the interest it holds from server ``from_id`` (its monitoring port)."""
    body = get_json(monitor + "/routez?subs=detail", timeout)
    return body.get("server_id") or "", held_interest(body, from_id)


class PeerReader:
    """Reads what each route peer of ``node_id`` holds from it.

    A peer that is a node of the store is asked on its monitoring port; any other peer (or one whose
    monitoring port does not answer as that server) through the system account, connected to
    ``node_id`` (``$SYS.REQ.SERVER.<id>.ROUTEZ``).  Every request is bounded by ``timeout``.
    """

    def __init__(self, store: Store, node_id: str, *, timeout: float = 2.0):
        self.store = store
        self.node_id = node_id
        self.timeout = timeout
        self._nodes: dict[str, Node] = {}
        for nid in list_nodes(store):
            if nid == node_id:
                continue
            try:
                n = NodeFile.load(store, nid).node
            except ConfigError:
                continue
            self._nodes.setdefault(n.server_name, n)
        self._sys: Optional[Client] = None
        self._seen: set[str] = set()  # server ids whose store node's monitoring port answered as them

    def node_of(self, peer: RoutePeer) -> Optional[str]:
        """The store's node id of ``peer``: by server name, once its monitoring port answered as that
        server (:meth:`read`); None for a peer that is not (known to be) a node of the store."""
        n = self._nodes.get(peer.name)
        return n.id if n and peer.server_id in self._seen else None

    def monitor_of(self, peer: RoutePeer) -> Optional[str]:
        n = self._nodes.get(peer.name)
        return monitor_url(n) if n else None

    async def read(self, peer: RoutePeer, from_id: str) -> set[Interest]:
        """What ``peer`` holds from server ``from_id``; :class:`ServerError` when it cannot be read."""
        mon = self.monitor_of(peer)
        if mon is not None:
            try:
                own, held = await asyncio.to_thread(peer_interest, mon, from_id, timeout=self.timeout)
                if own == peer.server_id:
                    self._seen.add(own)
                    return held
            except ServerError:
                pass
        return held_interest(await self._system_routez(peer), from_id)

    async def _system_routez(self, peer: RoutePeer) -> dict:
        if self._sys is None or self._sys.is_closed:
            self._sys = await node_target(self.store, self.node_id).connect(
                creds_text=system_creds(self.store),
                timeout=self.timeout,
                allow_reconnect=False,
                max_reconnect_attempts=0,
            )
        return await system_routez(self._sys, peer.server_id, timeout=self.timeout, name=str(peer), detail=True)

    async def close(self) -> None:
        if self._sys is not None:
            await close_quietly(self._sys)
            self._sys = None


def reannounce(
    store: Store,
    node_id: str,
    subjects: Iterable[str],
    *,
    still_held: Optional[Callable[[], bool]] = None,
    budget: float = 1.5,
    binary: Optional[str] = None,
) -> int:
    """Make the nodes routed to ``node_id`` announce their interest in ``subjects`` to it again.

    The node is reloaded with a temporary route export deny of ``subjects``, then put back onto the
    config it ran (the same bytes) and reloaded again: on that second change every server routed to
    it re-sends its subscriptions on ``subjects`` that it may import.  While the deny is in force
    (two reloads) this node's publishers reach no other node's subscribers on ``subjects``.

    With ``still_held`` (true while the node still holds interest it must drop) the deny reload is
    repeated, alternating two variants, until ``still_held()`` is false or ``budget`` seconds have
    passed: each such reload drops the routed interest in ``subjects`` of one route peer, which
    nats-server picks at random.  Returns the number of deny reloads; raises
    :class:`DchatOpsError` when a reload fails (the node is put back onto its config first).
    """
    subjects = sorted(set(subjects))
    sup = Supervisor(store, node_id, binary=binary)
    conf = sup.config_path
    before = read_bytes(conf)
    if before is None:
        raise ServerError(f"node {node_id} has no rendered config to put back")
    variants: list[bytes] = []
    rounds = 0
    deadline = time.monotonic() + budget
    try:
        while True:
            if len(variants) < 2:
                extra = [_MARKER] if variants else []
                render_node(store, node_id, binary=binary, route_export_deny=[*subjects, *extra], server_check=False)
                variants.append(conf.read_bytes())
            else:
                atomic_write(conf, variants[rounds % 2], force=True)
            sup.reload(render=False)
            rounds += 1
            if still_held is None or not still_held() or time.monotonic() >= deadline:
                return rounds
    finally:
        changed = atomic_write(conf, before, force=True)
        try:
            if rounds or changed:
                sup.reload(render=False)
        except DchatOpsError as exc:
            raise ServerError(
                f"node {node_id}: could not be reloaded back onto its config after a re-announce: {exc}"
            ) from None
