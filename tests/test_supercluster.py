"""The super-cluster spec of docs/topologies.md, applied and run on loopback: two regions of three
gateway nodes, a leaf device per region with a failover list.  A message crosses leaf -> hub ->
gateway -> hub -> leaf, and a leaf whose hub stops fails over to its other hub."""

import asyncio
import re
from pathlib import Path

from conftest import wait_for

from dchat_ops import provision
from dchat_ops.config.node import NodeFile, inbox_prefix
from dchat_ops.natsbin import free_port
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "supercluster.yaml"
HUBS = ["eu1", "eu2", "eu3", "asia1", "asia2", "asia3"]


def supercluster_spec(tmp_path: Path) -> Path:
    """The example spec with its fixed leafnode ports swapped for free ones."""
    text = EXAMPLE.read_text()
    taken: set[int] = set()

    def free(_m) -> str:
        p = free_port()
        while p in taken:
            p = free_port()
        taken.add(p)
        return f"port: {p}"

    out = tmp_path / "supercluster.yaml"
    out.write_text(re.sub(r"port: \d+", free, text))
    return out


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


async def _crosses(store) -> bool:
    """dev-asia's user publishes on dev-asia; dev-eu's user, subscribed on dev-eu, receives it."""
    sub_nc = await connect(
        url(store, "dev-eu"), store.creds_path("dchat", "chat", "dev-eu"), inbox_prefix=inbox_prefix("dev-eu")
    )
    pub_nc = await connect(
        url(store, "dev-asia"), store.creds_path("dchat", "chat", "dev-asia"), inbox_prefix=inbox_prefix("dev-asia")
    )
    try:
        sub = await sub_nc.subscribe("chat.room")
        await sub_nc.flush()
        for _ in range(150):  # interest crosses the leaf connections, the routes and the gateways
            await pub_nc.publish("chat.room", b"across")
            try:
                if (await sub.next_msg(timeout=0.1)).data == b"across":
                    return True
            except asyncio.TimeoutError:
                continue
        return False
    finally:
        await sub_nc.close()
        await pub_nc.close()


def _hub_of(sups, leaf_id: str) -> str:
    for hub in HUBS:
        if any(lf.get("name") == leaf_id for lf in sups[hub].status().data.get("leafnodes") or []):
            return hub
    return ""


async def test_supercluster_spec_end_to_end(tmp_path, supervised_factory):
    store = Store(tmp_path / "home")
    spec = provision.load_spec(supercluster_spec(tmp_path))
    r = provision.apply(store, spec)
    assert not r.error and {n.outcome for n in r.nodes} == {"saved"}, r.nodes
    assert not provision.plan(store, spec).has_changes
    up = supervised_factory(store)
    sups = {nid: up(nid) for nid in [*HUBS, "dev-eu", "dev-asia"]}
    # the gateways: every hub has its outbound gateway to the other region
    for hub in HUBS:
        other = "asia" if hub.startswith("eu") else "eu"
        assert wait_for(lambda hub=hub, other=other: sups[hub].status().data["gateways"] == [other], 20), hub
    first = wait_for(lambda: _hub_of(sups, "dev-eu"), 20)
    assert first in ("eu1", "eu2")
    assert await _crosses(store)
    # the eu leaf's hub stops: the leaf reconnects to the other hub of its list, and messages cross again
    sups[first].down()
    second = wait_for(lambda: (h := _hub_of(sups, "dev-eu")) and h != first and h, 30)
    # a hub of its list, or another hub of the cluster: its hub told the leaf their leafnode URLs too
    assert second in ("eu1", "eu2", "eu3") and second != first
    assert await _crosses(store)
