"""allow-sub on a leaf node takes effect on the hub side: from its own hub, from the other hub of the
hub cluster, and across a gateway, live and with --restart; rm-sub stops it again."""

import asyncio
import json

import pytest
from conftest import snapshot, wait_for

from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.errors import ConfigError
from dchat_ops.natsbin import free_port
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime.client import connect_node


def test_hubs_import_the_subjects_of_the_leaves_of_their_cluster(store):
    h1_leaf, gw = free_port(), free_port()
    nodes.add_node(store, "h1", cluster_name="east", leaf_port=h1_leaf)
    nodes.add_node(store, "h2", cluster_name="east", seed_routes=[nodes.route_url(store, "h1")])
    nodes.add_node(store, "w1", cluster_name="west", gateway_port=gw)
    nodes.add_node(store, "phone", cluster=False, leaf_of=[f"nats-leaf://localhost:{h1_leaf}"])
    nf = NodeFile.load(store, "phone")
    nf.add_to_list(("policy", "subscribe", "allow"), "dm.phone")
    nf.save()

    def imports(nid):
        cfg = nodes.server_config(store, NodeFile.load(store, nid).node)
        return cfg.cluster["permissions"]["import"]["allow"]

    assert nodes.leaf_hubs(store, NodeFile.load(store, "phone").node) == ["h1"]
    assert sorted(nodes.dependent_nodes(store, "phone")) == ["h1", "h2"]
    for hub in ("h1", "h2"):  # the leaf may move to h2: both carry its subjects and its inbox
        assert "dm.phone" in imports(hub) and "_INBOX_phone.>" in imports(hub)
    assert "dm.phone" not in imports("w1")  # another cluster: gateway interest is not filtered
    assert nodes.dependent_nodes(store, "h2") == []


def test_a_queue_group_entry_on_a_leaf_node_is_refused_before_anything_is_written(store):
    # the hub sends a leaf down plain subjects only: 'orders.* workers' would let nothing through
    port = free_port()
    nodes.add_node(store, "hub", cluster=False, leaf_port=port)
    nodes.add_node(store, "phone", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{port}"])
    before = snapshot(store.home)
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=r"leaf node.*allow 'orders\.\*' instead"):
            apply_node_edit(store, "phone", "allow-sub", "orders.* workers", dry_run=dry_run)
    assert snapshot(store.home) == before
    assert apply_node_edit(store, "phone", "allow-sub", "orders.*").outcome == "saved"
    assert apply_node_edit(store, "hub", "allow-sub", "orders.* workers").outcome == "saved"  # not a leaf
    # an entry already in the file (written by hand) can still be removed, and other edits go through
    nf = NodeFile.load(store, "phone")
    nf.add_to_list(("policy", "subscribe", "allow"), "jobs.* w")
    nf.save()
    assert apply_node_edit(store, "phone", "allow-sub", "dm.phone").outcome == "saved"
    assert apply_node_edit(store, "phone", "rm-sub", "jobs.* w").outcome == "saved"
    assert NodeFile.load(store, "phone").node.policy.subscribe.allow == ["orders.*", "dm.phone"]


def test_a_leaf_url_matches_a_hub_by_its_advertised_address(store):
    port = free_port()
    nodes.add_node(store, "hub", cluster=False, leaf_port=port, host="0.0.0.0")
    nf = NodeFile.load(store, "hub")
    nf.set(("leafnodes", "advertise"), "hub.example.net:443")
    nf.save()
    nodes.add_node(store, "far", cluster=False, leaf_of=["nats-leaf://hub.example.net:443"])
    nodes.add_node(store, "near", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{port}"])
    nodes.add_node(store, "other", cluster=False, leaf_of=[f"nats-leaf://hub.example.net:{port}"])
    for leaf, hubs in (("far", ["hub"]), ("near", ["hub"]), ("other", [])):
        assert nodes.leaf_hubs(store, NodeFile.load(store, leaf).node) == hubs, leaf


@pytest.fixture
def hub_network(store, supervised):
    """East hubs h1, h2 (a cluster, both accept leaves), west w1 behind a gateway, leaf phone on h1."""
    h1_leaf, gw = free_port(), free_port()
    nodes.add_node(store, "h1", cluster_name="east", gateway_port=gw, leaf_port=h1_leaf)
    nodes.add_node(
        store,
        "h2",
        cluster_name="east",
        seed_routes=[nodes.route_url(store, "h1")],
        gateway_port=free_port(),
        leaf_port=free_port(),
    )
    nodes.add_node(store, "w1", cluster_name="west", gateways=[("east", f"nats://127.0.0.1:{gw}")])
    nodes.add_node(store, "phone", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{h1_leaf}"])
    sups = {n: supervised(n) for n in ("h1", "h2", "w1", "phone")}

    def linked():
        st = {n: s.status().data for n, s in sups.items()}
        return (
            st["phone"]["leafnodes"]
            and all("west" in st[h]["gateways"] for h in ("h1", "h2"))
            and "east" in st["w1"]["gateways"]
            and st["h1"]["routes"] == ["h2"]
        )

    assert wait_for(linked, 20)
    return sups


async def reaches(store, subscriber, sources, subject, attempts=100) -> dict[str, bool]:
    """Publish on ``subject`` from each source node until the subscriber on the leaf gets that node's message.

    100 attempts cover a client of a restarted leaf reconnecting (nats-py waits up to 2 s)."""
    creds = store.creds_path("dchat", "chat", "default")
    out = {}
    for src in sources:
        nc = await connect_node(store, src, creds=creds)
        ok = False
        for _ in range(attempts):
            await nc.publish(subject, src.encode())
            await nc.flush()
            try:
                while not ok:
                    ok = (await subscriber.next_msg(timeout=0.05)).data == src.encode()
            except Exception:  # nothing (more) arrived this round
                pass
            if ok:
                break
        out[src] = ok
        await nc.close()
    return out


@pytest.mark.parametrize("mode", ["live", "restart"])
async def test_allow_sub_on_a_leaf_reaches_it_from_every_hub_and_across_the_gateway(store, hub_network, mode):
    creds = store.creds_path("dchat", "chat", "default")
    on_phone = await connect_node(store, "phone", creds=creds)
    sub = await on_phone.subscribe(f"dm.{mode}")  # before the allow: the hub does not send it down yet
    await on_phone.flush()
    everywhere = ["h1", "h2", "w1"]
    assert await reaches(store, sub, everywhere, f"dm.{mode}", attempts=3) == dict.fromkeys(everywhere, False)

    r = await asyncio.to_thread(apply_node_edit, store, "phone", "allow-sub", f"dm.{mode}", mode=mode)
    assert r.outcome == mode
    assert any("re-established" in m for m in r.messages), r.messages
    assert any(m.startswith("confirmed:") for m in r.messages), r.messages
    # the leaf's client kept its subscription across the leaf reconnect (a restart reconnects it too)
    assert await reaches(store, sub, everywhere, f"dm.{mode}") == dict.fromkeys(everywhere, True)

    r = await asyncio.to_thread(apply_node_edit, store, "phone", "rm-sub", f"dm.{mode}", mode=mode)
    # a removal revokes the leaf user's earlier JWTs: pushed once its leaf connections present the new one
    assert any(m.startswith("revocation pushed") for m in r.messages), r.messages
    assert not any("were closed" in m for m in r.messages), r.messages
    for _ in range(100):  # a restart disconnected the client: the check below means something once it is back
        if on_phone.is_connected:
            break
        await asyncio.sleep(0.05)
    await on_phone.flush()
    assert await reaches(store, sub, ["h1", "h2"], f"dm.{mode}", attempts=5) == {"h1": False, "h2": False}
    await on_phone.close()


def test_cli_allow_sub_on_a_leaf_says_what_followed(store, hub_network):
    from click.testing import CliRunner

    from dchat_ops._cli.main import cli

    r = CliRunner().invoke(cli, ["--home", str(store.home), "allow-sub", "dm.cli", "--node", "phone", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["outcome"] == "live"
    steps = [s["step"] for s in out["steps"]]
    assert steps.index("re-issue user JWT and creds") < steps.index("re-establish leaf connections")
    assert "apply on hub h1" in steps and "apply on hub h2" in steps and "confirm on hubs" in steps


async def test_allow_sub_on_a_leaf_whose_hub_is_down_applies_when_the_hub_returns(store, supervised):
    hub_leaf = free_port()
    nodes.add_node(store, "hub", cluster=False, leaf_port=hub_leaf)
    nodes.add_node(store, "phone", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{hub_leaf}"])
    hub, phone = supervised("hub"), supervised("phone")
    assert wait_for(lambda: phone.status().data["leafnodes"], 15)
    hub.down()
    assert wait_for(lambda: not phone.status().data["leafnodes"], 10)

    r = await asyncio.to_thread(apply_node_edit, store, "phone", "allow-sub", "dm.later")
    assert r.outcome == "live"
    assert any("no leaf connection up" in m for m in r.messages), r.messages

    hub.up()
    assert wait_for(lambda: phone.status().data["leafnodes"], 15)
    creds = store.creds_path("dchat", "chat", "default")
    on_phone = await connect_node(store, "phone", creds=creds)
    sub = await on_phone.subscribe("dm.later")
    await on_phone.flush()
    assert await reaches(store, sub, ["hub"], "dm.later") == {"hub": True}
    await on_phone.close()
