"""Chat runtime speed on real nodes.

Prints:
  plain_msgs_per_s: N   signed room messages, sent and received + verified, both users on one node
  sealed_dm_per_s: N    signed and sealed direct messages through one node, received, verified, opened
  p50_ms: N             delivery latency of sealed DMs across the 3-node cluster (alice on her node,
  p99_ms: N             carol on hers), at a steady 200 messages per second
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


def url(store, node):
    return f"nats://127.0.0.1:{NodeFile.load(store, node).node.client_port}"


async def client(store, user, node):
    return await ChatClient(ChatIdentity.load(store, user), url(store, node), replicas=3).start()


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
    # plain: signed room messages
    t0 = time.perf_counter()
    for i in range(N):
        await alice.send_room("bench", f"plain {i}")
    await drain(bob_local, N)
    out["plain_msgs_per_s"] = N / (time.perf_counter() - t0)
    # sealed DMs through the same node
    t0 = time.perf_counter()
    for i in range(N):
        await alice.send_dm("bob", f"sealed {i}")
    await drain(bob_local, N)
    out["sealed_dm_per_s"] = N / (time.perf_counter() - t0)
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
    print(f"p50_ms: {out['p50_ms']:.1f}")
    print(f"p99_ms: {out['p99_ms']:.1f}")


if __name__ == "__main__":
    main()
