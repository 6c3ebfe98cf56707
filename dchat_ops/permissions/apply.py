"""Applying a permission edit to a node as one transaction, live when the node runs.

For a node: the node config (comments kept), the node user's JWT and creds, and the rendered
nats-server config change together; the config is checked; a running node is reloaded (SIGHUP)
and must confirm the reload and stay healthy.  When any step fails, every file goes back byte for
byte, a running node is reloaded back onto the old config, and the error says which step failed.

    >>> r = apply_node_edit(store, "b", "allow-sub", "room.x")          # live
    >>> r = apply_node_edit(store, "b", "allow-sub", "room.y", mode="restart")
    >>> r = apply_node_edit(store, "b", "deny-sub", "room.x", dry_run=True)

What is live: the route import permissions (which subjects flow into the node from the cluster)
reload without dropping routes or clients.  The node user's own permissions live in its JWT, so a
client picks them up on its next connection with the new creds; :class:`ManagedClient` does that
for a running client without losing messages (see docs/permissions.md).

"Live" is reported once the effect is seen: the node user subscribes with its new creds, and every
route peer holds the node's interest in each newly allowed subject it has subscribers for, and no
longer holds interest it may not import.  nats-server announces existing subscriptions that a
reload makes importable (or no longer importable) to one route peer only, so the peers that missed
it are made to re-learn it (:func:`dchat_ops.runtime.interest.reannounce`); when even that is not
seen, the node is restarted, and the messages say so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from nats.aio.client import Client

from dchat_ops._fs import FileTransaction, read_bytes, with_store_lock
from dchat_ops.config.node import Node, NodeFile
from dchat_ops.config.nodes import (
    check_leaf_queue_entries,
    dependent_nodes,
    hosted_leaves,
    render_node,
    route_imports,
    run_dir,
    sync_node_user,
)
from dchat_ops.errors import ApplyError, DchatOpsError, ServerError
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.policy import Edit, parse_action, plan_edit
from dchat_ops.runtime.client import close_quietly, probe_subscriptions, run_sync
from dchat_ops.runtime.interest import (
    Interest,
    PeerReader,
    RoutePeer,
    local_interest,
    peer_interest,
    reannounce,
    route_peers,
)
from dchat_ops.runtime.leaf import confirm_leaf_interest, relink_leaves
from dchat_ops.runtime.process import HEALTHZ, http_json
from dchat_ops.runtime.supervisor import Supervisor
from dchat_ops.subjects import matches, split_queue

__all__ = [
    "ApplyError",
    "ApplyResult",
    "NodeChangeResult",
    "NodeEdit",
    "apply_node_change",
    "apply_node_edit",
    "apply_user_edit",
    "node_policy",
    "user_policy",
]


@dataclass
class ApplyResult:
    target: str
    edit: Edit
    outcome: str  # "live", "restart", "saved", "dry-run", "unchanged"
    policy: dict
    steps: list[tuple[str, float]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "outcome": self.outcome,
            **self.edit.to_dict(),
            "policy": self.policy,
            "steps": [{"step": s, "ms": round(ms, 1)} for s, ms in self.steps],
            "messages": self.messages,
        }


def node_policy(store: Store, node_id: str) -> dict:
    n = NodeFile.load(store, node_id).node
    return {
        "publish": {"allow": n.policy.publish.allow, "deny": n.policy.publish.deny},
        "subscribe": {"allow": n.policy.subscribe.allow, "deny": n.policy.subscribe.deny},
    }


def user_policy(store: Store, account: str, user: str) -> dict:
    p = store.user(account, user).claims.permissions
    return {
        "publish": {"allow": p.pub.allow, "deny": p.pub.deny},
        "subscribe": {"allow": p.sub.allow, "deny": p.sub.deny},
    }


_T = TypeVar("_T")


class _Steps:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.current = ""

    def run(self, name: str, fn, *args, **kw):
        self.current = name
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.steps.append((name, (time.perf_counter() - t0) * 1000))
        return out

    async def arun(self, name: str, fn: Callable[..., Awaitable[_T]], *args, **kw) -> _T:
        self.current = name
        t0 = time.perf_counter()
        out = await fn(*args, **kw)
        self.steps.append((name, (time.perf_counter() - t0) * 1000))
        return out


@with_store_lock
def apply_node_edit(
    store: Store,
    node_id: str,
    action: str,
    subject: str,
    *,
    mode: str = "live",
    dry_run: bool = False,
    binary: Optional[str] = None,
) -> ApplyResult:
    """Edit a node's policy and apply it (``mode``: ``live`` reload or ``restart``)."""

    if mode not in ("live", "restart"):
        raise DchatOpsError(f"unknown apply mode {mode!r}")
    direction, verb = parse_action(action)
    nf = NodeFile.load(store, node_id)
    rule = getattr(nf.node.policy, direction)
    edit = plan_edit({"allow": rule.allow, "deny": rule.deny}, verb, subject, direction)
    if edit.changed and direction == "subscribe":  # refused in a dry run too
        old = nf.node
        nf.set(("policy", "subscribe", "allow"), edit.after["allow"])
        check_leaf_queue_entries(nf.refresh(), old)
    if dry_run or not edit.changed:
        preview = node_policy(store, node_id)
        preview[direction] = edit.after
        return ApplyResult(node_id, edit, "dry-run" if dry_run else "unchanged", preview)
    r = apply_node_change(
        store,
        node_id,
        [(("policy", direction, "allow"), edit.after["allow"]), (("policy", direction, "deny"), edit.after["deny"])],
        mode=mode,
        binary=binary,
    )
    return ApplyResult(node_id, edit, r.outcome, node_policy(store, node_id), r.steps, r.messages)


NodeEdit = tuple[tuple[str, ...], Any]  # (key path in the node file, new value)


@dataclass
class NodeChangeResult:
    """What happened to one node: ``outcome`` is ``live`` (reloaded and confirmed, on its route peers
    too), ``restart`` (asked for, or the fallback when the peers did not show a reload's effect: the
    messages say which), ``saved`` (not running: written for its next start) or ``unchanged``."""

    node: str
    outcome: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "outcome": self.outcome,
            "steps": [{"step": s, "ms": round(ms, 1)} for s, ms in self.steps],
            "messages": self.messages,
        }


@with_store_lock
def apply_node_change(
    store: Store,
    node_id: str,
    edits: Sequence[NodeEdit] = (),
    *,
    mode: str = "live",
    binary: Optional[str] = None,
    follow: bool = True,
) -> NodeChangeResult:
    """Apply edits of a node's file, and whatever else changed in what its config renders (account
    JWTs, for instance), as one transaction.

    Writes the node file, renders and checks the server config, reloads a running node (or restarts
    it with ``mode="restart"``) and confirms it loaded the new config and is healthy, then re-issues
    the node user's JWT and creds when the policy changed them (first, for a leaf node: its leaf
    connections present them).  When the subscribe policy changed, the effect is then confirmed: the
    node user subscribes with its new creds, and every route peer shows the node's new interest
    (re-announced, or the node restarted, where it does not; see :class:`_PeerCheck`).  A node that
    is not running keeps the written files for its next start.  On any failure every file goes back
    byte for byte, a running node is put back onto the old config, and :class:`ApplyError` names the
    failed step.

    When a leaf node's policy changed (``follow``), its hubs and their cluster peers are then
    re-rendered and reloaded to import its subjects, its leaf connections are re-established with
    the new creds, and its hubs' interest is confirmed (:func:`_follow_leaf_change`).
    """
    if mode not in ("live", "restart"):
        raise DchatOpsError(f"unknown apply mode {mode!r}")
    nf = NodeFile.load(store, node_id)
    old_node = nf.node
    for keys, value in edits:
        nf.set(keys, value)
    node = nf.refresh()  # an invalid node file is refused before anything is written
    check_leaf_queue_entries(node, old_node)
    text = nf.text()
    change = _route_change(old_node, node, hosted_leaves(store, node))
    # A leaf node's remotes present its user's creds to the hub when they connect: those must be
    # current before the node (re)connects, so they are re-issued first.
    leaf = bool((node.leafnodes or {}).get("remotes"))

    sup = Supervisor(store, node_id, binary=binary)
    running = sup.running()
    op = store.current_operator()
    conf = run_dir(store, node_id) / "nats-server.conf"
    tx = FileTransaction()
    for p in (
        nf.path,
        store.user_jwt_path(op, node.account, node.user),
        store.creds_path(op, node.account, node.user),
        conf,
    ):
        tx.remember(p)
    before = read_bytes(conf)
    steps = _Steps()
    reissued = restarted = False
    messages: list[str] = []
    try:
        peers: list[RoutePeer] = []
        if running and change.routes_changed:
            peers = steps.run("read route peers", lambda: route_peers(sup.monitor_url)[1])
        if text != nf.original_text:
            steps.run("write node config", tx.write, nf.path, text)
        if leaf:
            reissued = steps.run("re-issue user JWT and creds", sync_node_user, store, node).changed
        steps.run("render and check config", render_node, store, node_id, binary=binary, node=node)
        changed = text != nf.original_text or read_bytes(conf) != before
        if running and changed and mode == "live":
            steps.run("reload node", sup.reload, render=False)
        elif running and changed:
            steps.run("stop node", sup.down)
            steps.run("start node", sup.up)
        if running and changed:
            steps.run("check health", _check_healthy, sup)
        if not leaf:
            # last: clients that follow the creds file move over once the node already runs the new policy
            reissued = steps.run("re-issue user JWT and creds", sync_node_user, store, node).changed
        if running and (changed or reissued) and change.needs_check:
            check = _PeerCheck(store, sup, node, change, peers, steps, binary=binary)
            restarted = run_sync(lambda: check.run(restarted_already=(changed and mode == "restart")))
            messages.extend(check.messages)
    except Exception as exc:
        failed = steps.current
        problems = tx.rollback()
        restored = _restore_running(sup, running, mode)
        detail = str(exc) if isinstance(exc, DchatOpsError) else f"{type(exc).__name__}: {exc}"
        msg = f"{failed} failed: {detail}; every file was restored"
        if running:
            msg += f", and the node {restored}"
        if problems:
            msg += f" (could not restore: {'; '.join(problems)})"
        raise ApplyError(msg, node=node_id, step=failed) from None
    tx.commit()
    if not changed and not reissued:
        outcome = "unchanged"
    elif running and changed:
        outcome = "live" if mode == "live" and not restarted else "restart"
    elif running:
        outcome = "live"  # only the node user's JWT and creds changed: the server config did not
        messages.append(f"node {node_id}: only its user's JWT and creds changed; clients get them on reconnect")
    else:
        outcome = "saved"
        messages.append(f"node {node_id} is not running: the change is saved and applies at its next start")
    result = NodeChangeResult(node_id, outcome, steps.steps, messages)
    if follow and leaf and outcome != "unchanged" and old_node.policy != node.policy:
        _follow_leaf_change(store, old_node, node, result, steps, running=running, binary=binary)
    return result


def _follow_leaf_change(
    store: Store, old: Node, node: Node, result: NodeChangeResult, steps: _Steps, *, running: bool, binary
) -> None:
    """After a leaf node's policy changed: its hubs (and their cluster peers) import its subscribe
    subjects, its leaf connections present the new creds, and the hubs hold its new interest.

    The leaf's own change is already in force when this runs; a failure here names the hub or the
    connection that did not follow, and says so.
    """
    done = []
    try:
        for hub in steps.run("find hubs", dependent_nodes, store, node.id):
            r = steps.run(
                f"apply on hub {hub}", apply_node_change, store, hub, mode="live", binary=binary, follow=False
            )
            if r.outcome != "unchanged":
                done.append(hub)
                result.messages.append(f"hub {hub}: {r.outcome} (imports the leaf's subjects from its cluster)")
        if not running or not (node.leafnodes or {}).get("remotes"):
            return
        hubs = steps.run("re-establish leaf connections", relink_leaves, store, node.id, binary=binary)
        if not hubs:
            result.messages.append(
                f"node {node.id} has no leaf connection up: its hub applies the new creds when it connects"
            )
            return
        result.messages.append(
            f"leaf connections of {node.id} re-established with its new creds (connected to {', '.join(hubs)})"
        )
        added = [s for s in node.policy.subscribe.allow if s not in old.policy.subscribe.allow]
        if added:
            confirmed = steps.run("confirm on hubs", confirm_leaf_interest, store, node, added)
            if confirmed:
                result.messages.append(
                    f"confirmed: hub {', '.join(confirmed)} and its route peers hold its interest in {', '.join(added)}"
                )
            else:
                result.messages.append(
                    f"not confirmed: node {node.id} is attached to no running hub of this store, so nothing here "
                    f"can show that its hub holds its interest in {', '.join(added)}"
                )
    except DchatOpsError as exc:
        detail = f"; hubs already updated: {', '.join(done)}" if done else ""
        raise ApplyError(
            f"the change is in force on node {node.id}, but {steps.current} failed: {exc}{detail}",
            node=node.id,
            step=steps.current,
        ) from None


# --- confirming a change on the node's route peers ----------------------------------------------------

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


def _imports(node: Node, leaves: Sequence[Node]) -> Optional[list[str]]:
    perms = route_imports(node, leaves)
    return None if perms is None else list(perms["import"]["allow"])


def _allows(allow: Optional[list[str]], subject: str) -> bool:
    """Whether route imports ``allow`` (None: everything) let a subscription on ``subject`` be announced.

    nats-server matches the subscription subject as it is written against the allow list
    (``room.*`` allows a subscription on ``room.>``; ``room.x`` does not allow one on ``room.*``).
    """
    return allow is None or any(matches(a, subject) for a in allow)


@dataclass
class _RouteChange:
    """What a node's change does to the interest it announces over its routes, and what to try."""

    before: Optional[list[str]]  # route import allow list before (None: everything)
    after: Optional[list[str]]
    probe: list[str]  # subscribe entries the node user may use now and could not before
    routes_changed: bool

    @property
    def needs_check(self) -> bool:
        return self.routes_changed or bool(self.probe)

    def gained(self, subject: str) -> bool:
        return _allows(self.after, subject) and not _allows(self.before, subject)

    def lost(self, subject: str) -> bool:
        return _allows(self.before, subject) and not _allows(self.after, subject)


def _route_change(old: Node, new: Node, leaves: Sequence[Node] = ()) -> _RouteChange:
    """``leaves``: the leaf nodes hosted by the node's cluster, whose subjects it imports too."""
    deny = [split_queue(d)[0] for d in new.policy.subscribe.deny]
    probe = [
        e
        for e in new.policy.subscribe.allow
        if e not in old.policy.subscribe.allow and not any(matches(d, split_queue(e)[0]) for d in deny)
    ]
    before, after = _imports(old, leaves), _imports(new, leaves)
    return _RouteChange(before, after, probe, routes_changed=bool(new.cluster) and before != after)


@dataclass
class _Gap:
    """What one peer does not show yet: interest it misses, interest it should have dropped, or why unread."""

    missing: set[Interest] = field(default_factory=set)
    stale: set[Interest] = field(default_factory=set)
    error: str = ""

    def __bool__(self) -> bool:
        return bool(self.missing or self.stale or self.error)


class _PeerCheck:
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

    def __init__(self, store: Store, sup: Supervisor, node: Node, change: _RouteChange, peers, steps, *, binary=None):
        self.store = store
        self.sup = sup
        self.node = node
        self.change = change
        self.peers: list[RoutePeer] = list(peers)
        self.steps: _Steps = steps
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
        self.sup.up()
        _check_healthy(self.sup)

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


def _check_healthy(sup) -> None:

    code, _ = http_json(sup.monitor_url + HEALTHZ)
    if code != 200 or not sup.running():
        raise DchatOpsError(f"node {sup.node_id} is not healthy after the change")


def _restore_running(sup, was_running: bool, mode: str) -> str:
    """Put a node that ran before back onto its (restored) config; a phrase for the error message."""
    if not was_running:
        return "was not running"
    try:
        if sup.running():
            sup.reload(render=False)
            return "was reloaded onto the previous config"
        sup.up()
        return "was restarted on the previous config"
    except DchatOpsError as exc:
        return f"could not be put back onto the previous config ({exc})"


@with_store_lock
def apply_user_edit(
    store: Store, account: str, user: str, action: str, subject: str, *, dry_run: bool = False
) -> ApplyResult:
    """Edit a user's JWT permissions and re-issue its JWT and creds (all or nothing).

    The edit is planned and made inside one unit of work on the store, so concurrent edits of the
    same user (from other processes too) each see the one before.
    """
    direction, verb = parse_action(action)
    with store.transaction():
        claims = store.user(account, user).claims
        perm = claims.permissions.pub if direction == "publish" else claims.permissions.sub
        edit = plan_edit({"allow": perm.allow, "deny": perm.deny}, verb, subject, direction)
        if dry_run or not edit.changed:
            preview = user_policy(store, account, user)
            preview[direction] = edit.after
            return ApplyResult(f"{account}/{user}", edit, "dry-run" if dry_run else "unchanged", preview)
        if direction == "publish":
            spec = admin.UserSpec(pub_allow=edit.after["allow"], pub_deny=edit.after["deny"])
        else:
            spec = admin.UserSpec(sub_allow=edit.after["allow"], sub_deny=edit.after["deny"])
        steps = _Steps()
        try:
            issued = steps.run("re-issue user JWT and creds", admin.edit_user, store, account, user, spec)
        except Exception as exc:  # the unit of work puts every file back
            raise ApplyError(f"{steps.current} failed: {exc}; every file was restored") from None
    return ApplyResult(
        f"{account}/{user}",
        edit,
        "saved",
        user_policy(store, account, user),
        steps.steps,
        [
            "connected clients of this user get the new permissions when they reconnect with the new creds",
            *issued.warnings,
        ],
    )
