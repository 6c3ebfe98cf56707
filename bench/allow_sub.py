"""What allow-sub costs on running clusters on loopback, and whether it takes effect everywhere.

Two-node cluster (median of 5 runs each): a receiver on node b follows its node user's creds
(ManagedClient) and listens on an already-allowed subject; a publisher on node a sends numbered
messages there every 2 ms and also publishes on a new subject.  From the moment allow-sub for the
new subject starts, we time the first message received on it, and count the numbered messages the
receiver never got.

Three-node chain (a <- b <- c, a full mesh by gossip), 50 allow-subs of fresh subjects, in turn on
each node: a subscriber on the node subscribed to the subject before its policy allowed it (its
user's JWT allows everything); after allow-sub returns, every other node publishes one message on
the subject.  nats-server announces such existing subscriptions to one route peer only; allow-sub
reports "live" only once every peer holds the interest (see docs/permissions.md).

Prints:
  live_effect_ms: N        2 nodes: command start (the dchat-ops process, its start included) -> first
                           message on the new subject, live apply
  live_lost: N             2 nodes: numbered messages lost meanwhile on the already-allowed subject
  restart_effect_ms: N     the same with --restart
  restart_lost: N
  live_confirmed_ms: N     3 nodes: command start -> allow-sub returned, confirmed on every peer (median)
  live_confirmed_max_ms: N the slowest of those
  existing_sub_misses: N   3 nodes: subjects whose pre-existing subscriber did not get the message of
                           every other node within 1 s after allow-sub returned (the bar is 0)
  live_fallbacks: N        3 nodes: allow-subs that had to fall back to restarting the node
  leaf_effect_ms: N        hubs h1, h2 (a cluster) and leaf phone on h1: command start -> first message,
                           published on h2, at a subscriber on the leaf that subscribed before the
                           allow-sub on phone (median of 5)
  leaf_lost: N             numbered messages from h2 on an already-allowed subject that the leaf's
                           subscriber never got meanwhile (its leaf connection is re-established)

Each measurement builds its own cluster; to add one, write a function returning its figures and
list it in MEASUREMENTS.
"""

import asyncio
import os
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from _common import work_dir

from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile, inbox_prefix
from dchat_ops.natsbin import free_port
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime.client import ManagedClient, connect, connect_node
from dchat_ops.runtime.interest import route_peers
from dchat_ops.runtime.supervisor import Supervisor, chain

RUNS = 5
EXISTING_RUNS = 50
MISS_AFTER_S = 1.0


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


async def cli(store, *args: str) -> None:
    """Run the dchat-ops command line as a user would (its start included); fails loudly on a bad exit."""
    exe = Path(sys.executable).with_name("dchat-ops")
    # as an installed package runs: with its compiled bytecode kept (the first run, not counted, makes it)
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(store.home.parent / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "--home",
        str(store.home),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        raise RuntimeError(f"dchat-ops {' '.join(args)} exited {proc.returncode}: {err.decode().strip()}")


async def one_run(store, mode: str, k: int) -> tuple[float, int]:
    new_subject = f"room.{mode}{k}"
    receiver = await ManagedClient(
        url(store, "b"), store.creds_path("dchat", "chat", "b"), inbox_prefix=inbox_prefix("b")
    ).start()
    steady: set[int] = set()
    first_new = asyncio.get_running_loop().create_future()

    async def on_steady(msg):
        steady.add(int(msg.data))

    async def on_new(msg):
        if not first_new.done():
            first_new.set_result(time.perf_counter())

    await receiver.subscribe("room.steady", cb=on_steady)
    await receiver.subscribe(new_subject, cb=on_new)
    pub = await connect(
        url(store, "a"),
        store.creds_path("dchat", "chat", "default"),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
    )
    await asyncio.sleep(0.3)
    sent = 0
    stop = asyncio.Event()

    async def publisher():
        nonlocal sent
        while not stop.is_set():
            await pub.publish("room.steady", str(sent).encode())
            sent += 1
            await pub.publish(new_subject, b"x")
            await asyncio.sleep(0.002)

    task = asyncio.get_running_loop().create_task(publisher())
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    await cli(store, "allow-sub", new_subject, "--node", "b", *(["--restart"] if mode == "restart" else []))
    t_first = await asyncio.wait_for(first_new, 30)
    await asyncio.sleep(0.5)
    stop.set()
    await task
    await pub.flush()
    await asyncio.sleep(0.5)
    lost = sent - len(steady)
    await pub.close()
    await receiver.close()
    return (t_first - t0) * 1000, lost


async def two_node_runs(store) -> dict:
    await cli(store, "allow-sub", "room.warm", "--node", "b", "--dry-run")  # not counted: makes the bytecode
    out = {}
    for mode in ("live", "restart"):
        effects, losses = [], []
        for k in range(RUNS):
            e, lost = await one_run(store, mode, k)
            effects.append(e)
            losses.append(lost)
        out[f"{mode}_effect_ms"] = statistics.median(effects)
        out[f"{mode}_lost"] = statistics.median(losses)
    return out


def two_nodes() -> dict:
    with cluster(["a", "b"], allow={"b": ["room.steady"]}) as store:
        return asyncio.run(two_node_runs(store))


async def existing_runs(store, ids: list[str]) -> dict:
    creds = store.creds_path("dchat", "chat", "default")  # a user whose JWT allows every subject
    subs = {n: await connect_node(store, n, creds=creds) for n in ids}
    pubs = {n: await connect_node(store, n, creds=creds) for n in ids}
    confirmed, misses, fallbacks = [], 0, 0
    for k in range(EXISTING_RUNS):
        node = ids[k % len(ids)]
        others = [n for n in ids if n != node]
        subject = f"room.pre{k}"
        heard: set[str] = set()
        done = asyncio.Event()

        async def on_msg(msg, heard=heard, done=done, others=others):
            heard.add(msg.data.decode())
            if heard >= set(others):
                done.set()

        await subs[node].subscribe(subject, cb=on_msg)
        await subs[node].flush()
        t0 = time.perf_counter()
        r = await asyncio.to_thread(apply_node_edit, store, node, "allow-sub", subject)
        confirmed.append((time.perf_counter() - t0) * 1000)
        fallbacks += r.outcome != "live"
        for n in others:
            await pubs[n].publish(subject, n.encode())
            await pubs[n].flush()
        try:
            await asyncio.wait_for(done.wait(), MISS_AFTER_S)
        except asyncio.TimeoutError:
            misses += 1
    for nc in (*subs.values(), *pubs.values()):
        await nc.close()
    return {
        "live_confirmed_ms": statistics.median(confirmed),
        "live_confirmed_max_ms": max(confirmed),
        "existing_sub_misses": misses,
        "live_fallbacks": fallbacks,
    }


def existing_subscriptions() -> dict:
    ids = ["a", "b", "c"]
    with cluster(ids) as store:
        return asyncio.run(existing_runs(store, ids))


@contextmanager
def cluster(ids: list[str], allow: Optional[dict[str, list[str]]] = None):
    """A fresh store with a started chain of ``ids`` (``allow``: subjects allowed before the start)."""
    root = work_dir()
    store = Store(root / "home")
    sups = []
    try:
        admin.init(store)
        sups.extend(chain(store, ids, start=False))
        for nid, subjects in (allow or {}).items():
            for s in subjects:
                apply_node_edit(store, nid, "allow-sub", s)
        for sup in sups:
            sup.up()
        deadline = time.monotonic() + 10
        while any(len(route_peers(s.monitor_url)[1]) < len(ids) - 1 for s in sups):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not form within 10 s")
            time.sleep(0.05)
        yield store
    finally:
        for sup in sups:
            sup.down()
        shutil.rmtree(root, ignore_errors=True)


async def leaf_run(store, k: int) -> tuple[float, int]:
    creds = store.creds_path("dchat", "chat", "default")
    subject = f"dm.leaf{k}"
    on_leaf = await connect_node(store, "phone", creds=creds)
    first = asyncio.get_running_loop().create_future()
    steady: set[int] = set()

    async def on_new(msg):
        if not first.done():
            first.set_result(time.perf_counter())

    async def on_steady(msg):
        steady.add(int(msg.data))

    await on_leaf.subscribe(subject, cb=on_new)  # before the allow: the hub does not send it down yet
    await on_leaf.subscribe("dm.steady", cb=on_steady)
    await on_leaf.flush()
    pub = await connect_node(store, "h2", creds=creds)
    sent = 0
    stop = asyncio.Event()

    async def publisher():
        nonlocal sent
        while not stop.is_set():
            await pub.publish("dm.steady", str(sent).encode())
            sent += 1
            await pub.publish(subject, b"x")
            await asyncio.sleep(0.002)

    task = asyncio.get_running_loop().create_task(publisher())
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    await asyncio.to_thread(apply_node_edit, store, "phone", "allow-sub", subject)
    t_first = await asyncio.wait_for(first, 30)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    await pub.flush()
    await asyncio.sleep(0.5)
    await pub.close()
    await on_leaf.close()
    return (t_first - t0) * 1000, sent - len(steady)


async def leaf_runs(store) -> dict:
    runs = [await leaf_run(store, k) for k in range(RUNS)]
    return {
        "leaf_effect_ms": statistics.median(e for e, _ in runs),
        "leaf_lost": statistics.median(lost for _, lost in runs),
    }


def leaf() -> dict:
    root = work_dir()
    store = Store(root / "home")
    sups: list[Supervisor] = []
    try:
        admin.init(store)
        h1_leaf = free_port()
        nodes.add_node(store, "h1", cluster_name="east", leaf_port=h1_leaf)
        nodes.add_node(
            store, "h2", cluster_name="east", leaf_port=free_port(), seed_routes=[nodes.route_url(store, "h1")]
        )
        nodes.add_node(store, "phone", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{h1_leaf}"])
        apply_node_edit(store, "phone", "allow-sub", "dm.steady")
        for nid in ("h1", "h2", "phone"):
            sups.append(Supervisor(store, nid))
            sups[-1].up()
        deadline = time.monotonic() + 10
        while not (sups[2].status().data["leafnodes"] and route_peers(sups[0].monitor_url)[1]):
            if time.monotonic() > deadline:
                raise RuntimeError("the leaf network did not form within 10 s")
            time.sleep(0.05)
        return asyncio.run(leaf_runs(store))
    finally:
        for sup in sups:
            sup.down()
        shutil.rmtree(root, ignore_errors=True)


MEASUREMENTS = [two_nodes, existing_subscriptions, leaf]


def main() -> None:
    for measure in MEASUREMENTS:
        for name, value in measure().items():
            print(f"{name}: {value:.0f}", flush=True)


if __name__ == "__main__":
    main()
