"""Confirming a node's permission change where it takes effect: its user's subscriptions and its route peers.

    >>> change = route_change(old_node, new_node, hosted_leaves(store, new_node))
    >>> check = PeerCheck(store, sup, new_node, change, peers, steps)
    >>> restarted = run_sync(check.run)        # True when it had to fall back to restarting the node

nats-server announces the existing subscriptions that a reload makes importable (or no longer
importable) to one route peer only; :class:`PeerCheck` finds the peers that missed it, makes them
learn it again (:func:`dchat_ops.runtime.interest.reannounce`), and restarts the node as a last
resort.  Why and what it costs: docs/permissions.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from dchat_ops.config.node import Node
from dchat_ops.config.nodes import RouteChange, route_change
from dchat_ops.errors import DchatOpsError, ServerError
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import close_quietly, probe_subscriptions
from dchat_ops.runtime.interest import (
    Interest,
    PeerReader,
    RoutePeer,
    local_interest,
    peer_interest,
    reannounce,
    route_peers,
)
from dchat_ops.runtime.steps import Steps
from dchat_ops.runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["PeerCheck", "RouteChange", "route_change"]  # the last two live in config.nodes

CONNECT_TIMEOUT = 2.0  # seconds for the node user's connection that tries the new subscriptions
# Peers get a few round trips (at least SETTLE_MIN_S, at most SETTLE_MAX_S) to show what the reload
# announced; nats-server announces it to one peer only, so the others would wait in vain: those are
# re-announced at once (re-announcing a peer that was merely slow costs nothing but its short deny).
SETTLE_MIN_S = 0.05
SETTLE_MAX_S = 0.5
CONFIRM_TIMEOUT = 3.0  # seconds peers get to show the change after a re-announce or a restart (a route
# that nats-server closed on a re-sent queue subscription reconnects within about a second)
ROUTES_TIMEOUT = 10.0  # seconds a restarted node gets to be routed again to the peers it had
REMOVE_BUDGET = 1.5  # seconds of repeated re-announce reloads on one peer to make it drop interest


@dataclass
class _Gap:
    """What one peer does not show yet: interest it misses, interest it should have dropped, or why unread."""

    missing: set[Interest] = field(default_factory=set)
    stale: set[Interest] = field(default_factory=set)
    error: str = ""

    def __bool__(self) -> bool:
        return bool(self.missing or self.stale or self.error)


class PeerCheck:
    """Confirms a node's change where it takes effect: its user's subscriptions and its route peers.

    1. The node user connects with its new creds and subscribes to each newly allowed entry (this
       proves the JWT, and announces the interest to every peer when the node had none).
    2. Every peer the node had routes with must hold the node's interest in each newly importable
       subject the node has subscriptions on (its /subsz, every account), and none in a subject it
       may no longer import.  Peers that do not within a few round trips are re-announced
       (:func:`reannounce`) and checked again within ``CONFIRM_TIMEOUT``.
    3. Still not: the node is restarted (fresh routes carry exactly what it may import) and checked
       again; still not, or the node is not routed again to its peers: :class:`DchatOpsError`.
    """

    def __init__(self, store: Store, sup: Supervisor, node: Node, change: RouteChange, peers, steps, *, binary=None):
        self.store = store
        self.sup = sup
        self.node = node
        self.change = change
        self.peers: list[RoutePeer] = list(peers)
        self.steps: Steps = steps
        self.binary = binary
        self.reader = PeerReader(store, node.id)
        self.own_id = ""
        self.messages: list[str] = []
        self._probe: Optional[Client] = None
        self._names = {a.public_key: a.name for a in store.accounts()}

    async def run(self, *, restarted_already: bool = False) -> bool:
        """True when the node had to be restarted (as a fallback)."""
        try:
            if restarted_already:
                await self.steps.arun("wait for routes", self._wait_routes)
            if self.change.probe:
                await self.steps.arun("check the node user's new subscriptions", self._try_subscriptions)
            if not self.peers:
                return False
            self.own_id = (await asyncio.to_thread(route_peers, self.sup.monitor_url))[0]
            settle = min(SETTLE_MAX_S, SETTLE_MIN_S + 4 * max(p.rtt for p in self.peers))
            gaps = await self.steps.arun(
                "confirm on peers", self._settle, CONFIRM_TIMEOUT if restarted_already else settle
            )
            if not gaps:
                return False
            unread = {p: g for p, g in gaps.items() if g.error}
            if unread:  # a restart cannot make a peer answer: say so at once, and roll back
                raise ServerError(self._describe(unread))
            after = "the restart" if restarted_already else "the reload"
            fixable = {p: self.reader.node_of(p) for p, g in gaps.items() if not g.error}
            if all(fixable.get(p) for p in gaps):
                after += " and a re-announce"
                names = ", ".join(sorted(str(n) for n in fixable.values()))
                await self.steps.arun(f"re-announce on peers {names}", self._reannounce, gaps)
                gaps = await self.steps.arun("confirm on peers after re-announce", self._settle, CONFIRM_TIMEOUT)
                if not gaps:
                    return False
            what = self._describe(gaps)
            await self._close_probe()
            await self.steps.arun("restart node (fallback)", asyncio.to_thread, self._restart)
            await self.steps.arun("wait for routes", self._wait_routes)
            if self.change.probe:
                await self._try_subscriptions()
            self.own_id = (await asyncio.to_thread(route_peers, self.sup.monitor_url))[0]
            gaps = await self.steps.arun("confirm on peers after restart", self._settle, CONFIRM_TIMEOUT)
            if gaps:
                raise ServerError(self._describe(gaps))
            self.messages.append(
                f"node {self.node.id}: {what} after {after}, so the node was restarted (its clients were "
                "disconnected and reconnect) and its peers now hold exactly its interest"
            )
            return True
        finally:
            await self._close_probe()
            await self.reader.close()

    async def _try_subscriptions(self) -> None:
        self._probe = await probe_subscriptions(self.store, self.node, self.change.probe, timeout=CONNECT_TIMEOUT)

    async def _close_probe(self) -> None:
        if self._probe is not None:
            await close_quietly(self._probe)
            self._probe = None

    async def _gaps(self) -> dict[RoutePeer, _Gap]:
        want: set[Interest] = set()
        if self.change.routes_changed:
            local = await asyncio.to_thread(local_interest, self.sup.monitor_url)
            want = {i for i in local if self.change.gained(i.subject)}

        async def one(peer: RoutePeer) -> _Gap:
            try:
                held = await self.reader.read(peer, self.own_id)
            except DchatOpsError as exc:
                return _Gap(error=str(exc))
            return _Gap(want - held, {i for i in held if self.change.lost(i.subject)})

        found = await asyncio.gather(*(one(p) for p in self.peers))
        return {p: g for p, g in zip(self.peers, found, strict=True) if g}

    async def _settle(self, timeout: float) -> dict[RoutePeer, _Gap]:
        deadline = time.monotonic() + timeout
        while True:
            gaps = await self._gaps()
            if not gaps or time.monotonic() >= deadline:
                return gaps
            await asyncio.sleep(0.02)

    async def _reannounce(self, gaps: dict[RoutePeer, _Gap]) -> None:
        jobs = []
        for peer, gap in gaps.items():
            nid = self.reader.node_of(peer)
            mon = self.reader.monitor_of(peer)
            if nid is None or mon is None:
                continue
            still_held = self._still_held(mon) if gap.stale else None
            subjects = {i.subject for i in gap.missing | gap.stale}
            jobs.append(
                asyncio.to_thread(
                    reannounce,
                    self.store,
                    nid,
                    subjects,
                    still_held=still_held,
                    budget=REMOVE_BUDGET,
                    binary=self.binary,
                )
            )
        for out in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(out, DchatOpsError):
                self.messages.append(str(out))
            elif isinstance(out, BaseException):
                raise out

    def _still_held(self, mon: str) -> Callable[[], bool]:
        own, lost = self.own_id, self.change.lost

        def still_held() -> bool:
            try:
                _, held = peer_interest(mon, own)
            except DchatOpsError:
                return False
            return any(lost(i.subject) for i in held)

        return still_held

    def _restart(self) -> None:
        self.sup.down()
        if not self.sup.up().healthy:
            raise ServerError(f"node {self.node.id} is not healthy after its restart")

    async def _wait_routes(self) -> None:
        want = {p.server_id for p in self.peers}
        deadline = time.monotonic() + ROUTES_TIMEOUT
        while True:
            try:
                _, now = await asyncio.to_thread(route_peers, self.sup.monitor_url)
            except DchatOpsError:
                now = []
            missing = want - {p.server_id for p in now}
            if not missing:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(str(p) for p in self.peers if p.server_id in missing))
                raise ServerError(f"no route to {names} within {ROUTES_TIMEOUT:g}s")
            await asyncio.sleep(0.05)

    def _describe(self, gaps: dict[RoutePeer, _Gap]) -> str:
        def subjects(items: set[Interest]) -> str:
            return ", ".join(f"{i} ({self._names.get(i.account, i.account[:8])})" for i in sorted(items))

        parts = []
        for peer, gap in sorted(gaps.items(), key=lambda kv: str(kv[0])):
            if gap.error:
                parts.append(f"peer {peer} could not be read ({gap.error})")
                continue
            if gap.missing:
                parts.append(f"peer {peer} does not hold its interest in {subjects(gap.missing)}")
            if gap.stale:
                parts.append(f"peer {peer} still holds its interest in {subjects(gap.stale)}")
        return "; ".join(parts)
