"""A live allow-sub / rm-sub takes effect on every route peer of 3+ node clusters, and says so only then.

nats-server announces the existing subscriptions that a reload makes importable (or no longer
importable) to one route peer only; apply_node_change confirms the change on every peer and
re-announces or restarts where it is missing (docs/permissions.md).
"""

import asyncio
import shutil

import pytest
from conftest import wait_for

from dchat_ops.config.node import NodeFile, node_path
from dchat_ops.errors import ServerError
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import ApplyError, apply_node_edit
from dchat_ops.runtime import interest
from dchat_ops.runtime.client import connect_node
from dchat_ops.runtime.interest import PeerReader, held_interest, route_peers
from dchat_ops.runtime.process import http_json
from dchat_ops.runtime.supervisor import Supervisor, chain

FENCE = "room.fence"  # allowed on every node: a message after it on the same route arrives after it


def cluster(store: Store, n: int) -> list[Supervisor]:
    ids = [chr(ord("a") + i) for i in range(n)]
    sups = chain(store, ids, start=False)
    for nid in ids:
        apply_node_edit(store, nid, "allow-sub", FENCE)  # saved for the start
    try:
        for sup in sups:
            sup.up()
        assert wait_for(lambda: all(len(route_peers(s.monitor_url)[1]) == n - 1 for s in sups))
    except BaseException:
        for sup in sups:
            sup.down()
        raise
    return sups


class Inbox:
    """A subscriber's messages, by payload (the publishing node's id)."""

    def __init__(self):
        self.got: dict[str, list[str]] = {}

    def cb(self, subject):
        async def on_msg(msg):
            self.got.setdefault(subject, []).append(msg.data.decode())

        return on_msg

    def of(self, subject) -> set[str]:
        return set(self.got.get(subject, []))


async def publish_from(pubs, nodes, subject, fence=True):
    """Each of ``nodes`` publishes its id on ``subject``, then (``fence``) on FENCE from the same connection."""
    for nid in nodes:
        await pubs[nid].publish(subject, nid.encode())
        if fence:
            await pubs[nid].publish(FENCE, nid.encode())
        await pubs[nid].flush()


async def until(predicate, timeout=2.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("size, changes", [(3, 10), (5, 10)])
async def test_existing_subscriptions_hear_every_peer_after_live_allow_sub_and_none_after_rm_sub(store, size, changes):
    sups = cluster(store, size)
    ids = [s.node_id for s in sups]
    creds = store.creds_path("dchat", "chat", "default")  # a user whose JWT allows every subject
    conns = []
    try:
        subs = {nid: await connect_node(store, nid, creds=creds) for nid in ids}
        pubs = {nid: await connect_node(store, nid, creds=creds) for nid in ids}
        conns = [*subs.values(), *pubs.values()]
        inbox = {nid: Inbox() for nid in ids}
        for nid in ids:
            await subs[nid].subscribe(FENCE, cb=inbox[nid].cb(FENCE))
        misses, leaks = [], []
        for k in range(changes):
            node = ids[k % size]
            others = [n for n in ids if n != node]
            subject = f"room.pre{k}"
            # subscribed before the node's policy allows it: its route imports keep the interest home
            await subs[node].subscribe(subject, cb=inbox[node].cb(subject))
            await subs[node].flush()

            r = await asyncio.to_thread(apply_node_edit, store, node, "allow-sub", subject)
            assert r.outcome == "live", (r.steps, r.messages)  # confirmed without a restart
            await publish_from(pubs, others, subject, fence=False)
            if not await until(lambda: inbox[node].of(subject) == set(others)):  # noqa: B023
                misses.append((subject, node, sorted(set(others) - inbox[node].of(subject))))

            r = await asyncio.to_thread(apply_node_edit, store, node, "rm-sub", subject)
            assert r.outcome == "live", (r.steps, r.messages)
            before = len(inbox[node].got.get(subject, []))
            inbox[node].got.pop(FENCE, None)
            await publish_from(pubs, others, subject)
            # the fence is published after the subject on the same connection and route: once every
            # fence arrived, a message on the subject that was forwarded would have arrived too
            assert await until(lambda: inbox[node].of(FENCE) == set(others))  # noqa: B023
            if len(inbox[node].got.get(subject, [])) != before:
                leaks.append(subject)
            # the subscription itself is alive (its connection keeps the JWT it connected with):
            # what stopped is the interest the node announces to its peers
            await pubs[node].publish(subject, node.encode())
            await pubs[node].flush()
            assert await until(lambda: node in inbox[node].of(subject))  # noqa: B023
        assert misses == [] and leaks == []

        if size == 3:
            # a queue subscription from before: nats-server re-sends it without its queue weight,
            # which the peer refuses by closing that route; the route reconnects with the full
            # interest, and allow-sub waits for that
            node, others = ids[0], ids[1:]
            await subs[node].subscribe("orders.*", queue="workers", cb=inbox[node].cb("orders"))
            await subs[node].flush()
            r = await asyncio.to_thread(apply_node_edit, store, node, "allow-sub", "orders.*")
            assert r.outcome == "live", (r.steps, r.messages)
            await publish_from(pubs, others, "orders.new", fence=False)
            assert await until(lambda: inbox[node].of("orders") == set(others)), inbox[node].got
    finally:
        for nc in conns:
            await nc.close()
        for sup in sups:
            sup.down()


def route_names(sup):
    return {p.name for p in route_peers(sup.monitor_url)[1]}


def hide_node_files(store, *node_ids):
    """Make running nodes strangers to the store: their node files move away (they keep running)."""
    away = store.home / "away"
    away.mkdir(exist_ok=True)
    for nid in node_ids:
        shutil.move(node_path(store, nid), away / f"{nid}.yaml")


async def test_peers_outside_the_store_are_read_over_the_system_account_and_confirmed_after_a_restart(
    store, monkeypatch
):
    sups = cluster(store, 3)
    creds = store.creds_path("dchat", "chat", "default")
    conns = []
    try:
        c = sups[2]
        sub = await connect_node(store, "c", creds=creds)
        pubs = {nid: await connect_node(store, nid, creds=creds) for nid in ("a", "b")}
        conns = [sub, *pubs.values()]
        inbox = Inbox()
        await sub.subscribe("room.pre", cb=inbox.cb("room.pre"))
        await sub.flush()
        a_monitor = sups[0].monitor_url
        hide_node_files(store, "a", "b")

        r = await asyncio.to_thread(apply_node_edit, store, "c", "allow-sub", "room.pre")
        steps = [s for s, _ in r.steps]
        # the peer that missed the interest cannot be re-announced (not a node of this store):
        # the node was restarted, and its fresh routes carry the interest to every peer
        assert r.outcome == "restart", steps
        assert "restart node (fallback)" in steps and "confirm on peers after restart" in steps
        assert any("restarted" in m and "does not hold its interest in room.pre" in m for m in r.messages)

        # the restart dropped the subscriber (nats-py reconnects it to any node of the cluster): a
        # subscription on c now hears both peers
        fresh = await connect_node(store, "c", creds=creds)
        conns.append(fresh)
        await fresh.subscribe("room.pre", cb=inbox.cb("fresh"))
        await fresh.flush()
        assert await until(lambda: {"a", "b"} <= route_names(c))
        for _ in range(20):
            await publish_from(pubs, ["a", "b"], "room.pre", fence=False)
            if await until(lambda: inbox.of("fresh") == {"a", "b"}, timeout=0.2):
                break
        assert inbox.of("fresh") == {"a", "b"}

        # the system account reads a stranger's route interest as its monitoring port shows it
        own, peers = route_peers(c.monitor_url)
        reader = PeerReader(store, "c")
        try:
            a_peer = next(p for p in peers if p.name == "a")
            assert reader.node_of(a_peer) is None
            held = await reader.read(a_peer, own)
        finally:
            await reader.close()
        _, direct = http_json(a_monitor + "/routez?subs=detail")
        chat = store.account("chat").public_key

        def rooms(items):  # the reader's own reply inbox comes and goes with its connection
            return {i for i in items if i.subject.startswith("room.")}

        assert rooms(held) == rooms(held_interest(direct, own))
        assert interest.Interest(chat, "room.pre") in held

        # a peer whose interest cannot be read at all: a restart would not make it answer, so the
        # change is refused at once (no restart) and rolled back, naming the peer
        async def unreadable(self, peer, from_id):
            if peer.name == "b":
                raise ServerError("no answer within 2s")
            return await real_read(self, peer, from_id)

        real_read = interest.PeerReader.read
        monkeypatch.setattr(interest.PeerReader, "read", unreadable)
        before = node_path(store, "c").read_bytes()
        pid = c.pid()
        with pytest.raises(ApplyError) as e:
            await asyncio.to_thread(apply_node_edit, store, "c", "allow-sub", "room.other")
        assert "peer b could not be read" in str(e.value) and "every file was restored" in str(e.value)
        assert "restart" not in e.value.step and pid == c.pid()  # failed fast: the node was not restarted
        assert node_path(store, "c").read_bytes() == before
        assert "room.other" not in NodeFile.load(store, "c").node.policy.subscribe.allow
        assert c.running()
    finally:
        for nc in conns:
            await nc.close()
        for sup in sups:
            sup.down()
