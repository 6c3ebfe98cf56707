"""Leaf connections: re-establish them with the creds on disk, and see what their hubs hold.

A hub applies the permissions of the JWT a leaf connection presented when it connected, for as long
as that connection lives: a re-issued JWT takes effect on the hub only with a new connection.  A
live reload of the leaf keeps the connection, so :func:`relink_leaves` reloads the node once with
its leafnode remotes disabled (the server closes those connections) and once as it should be (the
server dials them again at once, reading the creds file anew), then waits until every remote is
connected again.

    >>> relink_leaves(store, "phone")              # ["h1"]: the hubs it is connected to again
    >>> hub_leaf_interest(store, "h1", "phone")    # {"chat.room", ...}: what h1 holds from phone

Every wait is bounded; a remote that does not come back is named in the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Optional

from dchat_ops._fs import atomic_write
from dchat_ops.config.node import Node
from dchat_ops.config.nodes import dependent_nodes, render_node
from dchat_ops.errors import ServerError
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import close_quietly, probe_subscriptions, run_sync
from dchat_ops.runtime.interest import PeerReader, route_peers
from dchat_ops.runtime.process import http_json
from dchat_ops.runtime.supervisor import Supervisor
from dchat_ops.subjects import split_queue

__all__ = ["confirm_leaf_interest", "hub_leaf_interest", "leaf_links", "relink_leaves"]


def leaf_links(sup: Supervisor) -> dict[int, str]:
    """The node's solicited leaf connections (those it dialled): connection id -> the hub's name."""
    code, leafz = http_json(sup.monitor_url + "/leafz")
    if code != 200:
        raise ServerError(f"node {sup.node_id}: monitoring did not answer /leafz")
    return {int(lf["id"]): str(lf.get("name") or "") for lf in leafz.get("leafs") or [] if lf.get("is_spoke")}


def relink_leaves(store: Store, node_id: str, *, binary: Optional[str] = None, timeout: float = 10.0) -> list[str]:
    """Close and re-open a running node's leaf connections so that its hubs see the creds now on disk.

    Returns the names of the hubs it is connected to again ([] when none of its leaf connections was
    up: each one presents the creds on disk when it connects); ServerError names what did not come
    back within ``timeout`` seconds.  The node's config file is left as it should be either way.
    """
    sup = Supervisor(store, node_id, binary=binary)
    node = sup.node()
    before = leaf_links(sup)
    # as many as were up: a remote whose hub is down now connects with the new creds when it comes back
    wanted = min(len((node.leafnodes or {}).get("remotes") or []), len(before))
    if not wanted:
        return []
    # both configs are rendered and checked before the first reload: the connections are down only for
    # the second reload and the reconnect
    normal = render_node(store, node_id, binary=binary, node=node, server_check=False)
    text = normal.read_text()
    try:
        render_node(store, node_id, binary=binary, node=node, leaf_remotes_disabled=True, server_check=False)
        sup.reload(render=False, timeout=timeout)
    finally:
        atomic_write(normal, text, force=True)
    sup.reload(render=False, timeout=timeout)
    deadline = time.monotonic() + timeout
    links: dict[int, str] = {}
    while time.monotonic() < deadline:
        links = {cid: hub for cid, hub in leaf_links(sup).items() if cid not in before}
        if len(links) >= wanted:
            return sorted(links.values())
        time.sleep(0.02)
    raise ServerError(
        f"node {node_id}: {wanted - len(links)} of its {wanted} leaf connection(s) did not come back within "
        f"{timeout:.0f}s (connected again: {', '.join(sorted(links.values())) or 'none'})"
    )


def hub_leaf_interest(store: Store, hub_id: str, leaf_server_name: str) -> Optional[set[str]]:
    """The subjects hub ``hub_id`` holds from the leaf connection(s) of ``leaf_server_name``; None when
    no such leaf is connected to it."""
    code, leafz = http_json(Supervisor(store, hub_id).monitor_url + "/leafz?subs=1")
    if code != 200:
        raise ServerError(f"node {hub_id}: monitoring did not answer /leafz")
    found: Optional[set[str]] = None
    for lf in leafz.get("leafs") or []:
        if lf.get("name") == leaf_server_name and not lf.get("is_spoke"):
            found = (found or set()) | set(lf.get("subscriptions_list") or [])
    return found


def confirm_leaf_interest(store: Store, leaf: Node, subjects: Sequence[str], *, timeout: float = 5.0) -> list[str]:
    """Subscribe to ``subjects`` on ``leaf`` as its own user, and wait until the hub of this store it
    is connected to holds that interest, and every route peer of that hub holds it from the hub.
    Returns the hubs; ServerError says which hub or peer did not within ``timeout`` seconds.

    The subscriptions prove the leaf's user may make them, and create the interest if no client of
    the leaf had it yet.  A leaf attached to no hub of this store confirms nothing: [] is returned.
    """
    wanted = {split_queue(entry)[0] for entry in subjects}
    account = store.account(leaf.account).public_key

    async def run() -> list[str]:
        nc = await probe_subscriptions(store, leaf, list(subjects), timeout=timeout)
        try:
            deadline = time.monotonic() + timeout
            hubs = await _hubs_holding(store, leaf, wanted, deadline)
            for hub in hubs:
                await _peers_holding(store, hub, account, wanted, deadline)
            return hubs
        finally:
            await close_quietly(nc)

    return run_sync(run)


async def _hubs_holding(store: Store, leaf: Node, wanted: set[str], deadline: float) -> list[str]:
    """The running hubs of this store that ``leaf`` is connected to, once they hold ``wanted``."""
    # a leaf learns the other hubs of its hub's cluster and may connect to any of them
    hubs = [h for h in dependent_nodes(store, leaf.id) if Supervisor(store, h).running()]
    if not hubs:
        return []
    while True:
        held = {h: await asyncio.to_thread(hub_leaf_interest, store, h, leaf.server_name) for h in hubs}
        attached = [h for h, subs in held.items() if subs is not None]
        missing = {h: wanted - (held[h] or set()) for h in attached if wanted - (held[h] or set())}
        if attached and not missing:
            return attached
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    if not missing:
        raise ServerError(f"node {leaf.id} is not connected to any of its hubs in this store ({', '.join(hubs)})")
    what = "; ".join(f"{h} lacks {', '.join(sorted(m))}" for h, m in missing.items())
    raise ServerError(f"node {leaf.id}: its hub did not take its interest in time: {what}")


async def _peers_holding(store: Store, hub: str, account: str, wanted: set[str], deadline: float) -> None:
    """Wait until every route peer of ``hub`` holds ``wanted`` (in ``account``) from it."""
    own_id, peers = await asyncio.to_thread(route_peers, Supervisor(store, hub).monitor_url)
    reader = PeerReader(store, hub)
    try:
        while True:
            missing = {}
            for peer in peers:
                held = {i.subject for i in await reader.read(peer, own_id) if i.account == account}
                if wanted - held:
                    missing[str(peer)] = wanted - held
            if not missing:
                return
            if time.monotonic() > deadline:
                what = "; ".join(f"{p} lacks {', '.join(sorted(m))}" for p, m in missing.items())
                raise ServerError(f"the route peers of hub {hub} did not take the leaf's interest in time: {what}")
            await asyncio.sleep(0.02)
    finally:
        await reader.close()
