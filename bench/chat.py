"""Chat runtime speed on real nodes.

Prints:
  plain_msgs_per_s: N   signed room messages, sent (kept in the history) and received + verified + kept,
                        both users on one node
  sealed_dm_per_s: N    signed and sealed direct messages through one node, each confirmed stored by
                        JetStream (3 copies) before it counts as sent (up to 256 awaiting their
                        confirmation at a time), received, verified, opened, kept in the history
  sealed_to_plain: R    the ratio of the two (the goal: at least 0.7)
                        The two are measured in turns, 3 rounds of 3000 messages each, so that both meet
                        the same load of the machine; each figure is the median of its rounds, the ratio
                        the median of the rounds' ratios.
  plain_cpu_us: N       CPU time of this process (sender and receiver, the servers not counted) per
  sealed_cpu_us: N      message of each kind: what the client costs, whatever the load of the machine
  p50_ms: N             delivery latency of sealed DMs across the 3-node cluster (alice on her node,
  p99_ms: N             carol on hers), at a steady 200 messages per second
  group_reach_ms: N     a new group reaching its online members: from create_group() until both members
  group_reach_max_ms: N (bob and carol, each on their own node) have read the first message sent to it
                        right after; median and maximum of 10 groups
"""

import asyncio
import shutil
import statistics
import time

from _common import work_dir

from dchat_ops.chat.client import ChatClient, ChatIdentity
from dchat_ops.config.node import NodeFile
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime.supervisor import chain, wait_jetstream_leader

USERS = ("alice", "bob", "carol")
N = 3000
ROUNDS = 3


def url(store, node):
    return f"nats://127.0.0.1:{NodeFile.load(store, node).node.client_port}"


async def client(store, user, node):
    # replicas by default: min(3, the JetStream cluster's size) = 3
    return await ChatClient.on_node(ChatIdentity.load(store, user), store, node).start()


async def send_all(c: ChatClient, to: str, n: int, prefix: str, window: int = 256) -> None:
    """``n`` DMs, up to ``window`` of them waiting for their JetStream confirmation at a time (one
    sender per slot of the window, each sending its next message once the last is confirmed)."""

    async def sender(k: int) -> None:
        for i in range(k, n, window):
            await c.send_dm(to, f"{prefix} {i}")

    await asyncio.gather(*(sender(k) for k in range(window)))


async def drain(c: ChatClient, n: int, timeout: float = 60) -> None:
    for _ in range(n):
        await c.next_message(timeout)


async def run(store) -> dict:
    out = {}
    alice = await client(store, "alice", "alice")
    bob_local = await client(store, "bob", "alice")  # bob on alice's node: one node in the path
    for a, b in (("alice", "bob"), ("bob", "alice")):
        await (alice if a == "alice" else bob_local).add_friend(b)
    await bob_local.join_room("bench")
    await asyncio.sleep(0.3)
    # plain and sealed in turns, ROUNDS of each: both meet the same load of the machine; the median of each
    plain, sealed, plain_cpu, sealed_cpu = [], [], [], []
    for r in range(ROUNDS):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(N):  # plain: signed room messages, nothing awaited but the write to the socket
            await alice.send_room("bench", f"plain {r} {i}")
        await drain(bob_local, N)
        plain.append(N / (time.perf_counter() - t0))
        plain_cpu.append((time.process_time() - c0) / N * 1e6)
        t0, c0 = time.perf_counter(), time.process_time()  # sealed DMs through the same node
        await send_all(alice, "bob", N, f"sealed {r}")
        await drain(bob_local, N)
        sealed.append(N / (time.perf_counter() - t0))
        sealed_cpu.append((time.process_time() - c0) / N * 1e6)
    out["plain_msgs_per_s"] = statistics.median(plain)
    out["sealed_dm_per_s"] = statistics.median(sealed)
    out["sealed_to_plain"] = statistics.median([s / p for s, p in zip(sealed, plain, strict=True)])
    out["plain_cpu_us"] = statistics.median(plain_cpu)
    out["sealed_cpu_us"] = statistics.median(sealed_cpu)
    await bob_local.close()
    # latency across the cluster: alice on her node, carol on hers
    bob_far = await client(store, "carol", "carol")
    await bob_far.add_friend("alice")
    await alice.add_friend("carol")
    lat = []
    sent: dict[str, float] = {}

    async def on_message(m):
        if m.id in sent:
            lat.append((time.perf_counter() - sent[m.id]) * 1000)

    bob_far.on_message = on_message
    await asyncio.sleep(0.3)
    for i in range(400):
        msg_id = await alice.send_dm("carol", f"latency {i}")
        sent[msg_id] = time.perf_counter()
        await asyncio.sleep(0.005)
    for _ in range(200):
        if len(lat) >= 400:
            break
        await asyncio.sleep(0.05)
    lat.sort()
    out["p50_ms"] = statistics.median(lat)
    out["p99_ms"] = lat[int(len(lat) * 0.99) - 1]
    bob_far.on_message = None
    # a new group reaching its online members
    bob = await client(store, "bob", "bob")
    carol = bob_far
    reach = []
    for i in range(10):
        group = f"g{i}"
        t0 = time.perf_counter()
        await alice.create_group(group, ["bob", "carol"])
        await alice.send_group(group, "first")
        for member in (bob, carol):
            while True:
                m = await member.next_message(30)
                if m.conversation == f"group:{group}":
                    break
        reach.append((time.perf_counter() - t0) * 1000)
    out["group_reach_ms"] = statistics.median(reach)
    out["group_reach_max_ms"] = max(reach)
    await bob.close()
    await bob_far.close()
    await alice.close()
    return out


def main() -> None:
    root = work_dir()
    store = Store(root / "home")
    sups = []
    try:
        admin.init(store)
        admin.edit_account(
            store, "chat", jetstream={"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        )
        sups.extend(chain(store, list(USERS), jetstream=True, start=False))
        apply_node_edit(store, "bob", "allow-sub", "room.bench")
        # bob also connects through alice's node: it must let in replies to bob's inbox
        apply_node_edit(store, "alice", "allow-sub", "_INBOX_bob.>")
        for sup in sups:
            sup.up()
        wait_jetstream_leader(sups[0])
        out = asyncio.run(run(store))
    finally:
        for sup in sups:
            sup.down()
        shutil.rmtree(root, ignore_errors=True)
    print(f"plain_msgs_per_s: {out['plain_msgs_per_s']:.0f}")
    print(f"sealed_dm_per_s: {out['sealed_dm_per_s']:.0f}")
    print(f"sealed_to_plain: {out['sealed_to_plain']:.2f}")
    print(f"plain_cpu_us: {out['plain_cpu_us']:.0f}")
    print(f"sealed_cpu_us: {out['sealed_cpu_us']:.0f}")
    print(f"p50_ms: {out['p50_ms']:.1f}")
    print(f"p99_ms: {out['p99_ms']:.1f}")
    print(f"group_reach_ms: {out['group_reach_ms']:.0f}")
    print(f"group_reach_max_ms: {out['group_reach_max_ms']:.0f}")


if __name__ == "__main__":
    main()
