"""What allow-sub costs on a running 2-node cluster, live (reload) and with --restart (the original way).

A receiver on node b follows its node user's creds (ManagedClient) and listens on an already-allowed
subject; a publisher on node a sends numbered messages there every 2 ms and also publishes on a new
subject.  From the moment allow-sub for the new subject starts, we time the first message received on
it, and count the numbered messages the receiver never got.

Prints (median of 5 runs each):
  live_effect_ms: N      command start -> first message on the new subject, live apply
  live_lost: N           numbered messages lost meanwhile on the already-allowed subject
  restart_effect_ms: N   the same with --restart
  restart_lost: N
"""

import asyncio
import shutil
import statistics
import time

from _common import work_dir

from dchat_ops.config.node import NodeFile, inbox_prefix
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime.client import ManagedClient, connect
from dchat_ops.runtime.supervisor import chain

RUNS = 5


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


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
    await asyncio.to_thread(apply_node_edit, store, "b", "allow-sub", new_subject, mode=mode)
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


async def main_async(store) -> dict:
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


def main() -> None:
    root = work_dir()
    store = Store(root / "home")
    sups = []
    try:
        admin.init(store)
        sups.extend(chain(store, ["a", "b"], start=False))
        apply_node_edit(store, "b", "allow-sub", "room.steady")
        for sup in sups:
            sup.up()
        time.sleep(1.0)
        out = asyncio.run(main_async(store))
    finally:
        for sup in sups:
            sup.down()
        shutil.rmtree(root, ignore_errors=True)
    print(f"live_effect_ms: {out['live_effect_ms']:.0f}")
    print(f"live_lost: {out['live_lost']:.0f}")
    print(f"restart_effect_ms: {out['restart_effect_ms']:.0f}")
    print(f"restart_lost: {out['restart_lost']:.0f}")


if __name__ == "__main__":
    main()
