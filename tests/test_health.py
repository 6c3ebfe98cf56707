"""Health that tells the truth, on real servers: isolated nodes, partial meshes, leaf nodes behind a hub."""

import asyncio
import json
import shutil

from click.testing import CliRunner
from conftest import wait_for

from dchat_ops._cli.main import cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.natsbin import free_port
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect_node
from dchat_ops.runtime.supervisor import Supervisor, chain


def run(store, *args):
    return CliRunner().invoke(cli, ["--home", str(store.home), *args])


def links(sup):
    return sup.status().data["links"]


def test_an_isolated_node_is_warned_by_up_and_status(store):
    dead = free_port()  # nothing listens there
    nodes.add_node(store, "iso", seed_routes=[f"nats-route://127.0.0.1:{dead}"])
    sup = Supervisor(store, "iso")
    try:
        r = run(store, "node", "up", "iso", "--json")  # waits a short bound, then warns rather than fails
        assert r.exit_code == 0, r.output
        up = json.loads(r.stdout)
        assert up["running"] and up["healthy"] and up["routes"] == []
        assert up["links"]["isolated"] and not up["links"]["settled"]
        (warning,) = up["warnings"]
        assert "isolated" in warning and f"nats-route://127.0.0.1:{dead}" in warning
        assert f"127.0.0.1:{dead}: connect: connection refused" in warning  # the dial error from the log

        st = sup.status()  # the library
        assert st.healthy and st.warnings == [warning] and st.links.isolated
        assert sup.up().warnings == st.warnings  # up on a running node reports the same
        r = run(store, "node", "status", "iso", "--json")
        assert json.loads(r.stdout)["warnings"] == st.warnings
        text = run(store, "node", "status", "iso").output
        assert "healthy but isolated" in text and "WARNING: node iso: isolated" in text
    finally:
        sup.down()


def test_a_full_mesh_has_no_warnings(store, supervised):
    chain(store, ["a", "b", "c"], start=False)  # c knows only b: gossip completes the mesh
    sups = [supervised(n) for n in ("a", "b", "c")]
    for sup in sups:
        st = sup.status()
        assert st.warnings == [], st.warnings
        assert st.data["links"]["settled"] and len(st.data["links"]["servers"]) == 2
        assert st.data["route_count"] > 2  # pooled connections, counted as two servers
    text = run(store, "node", "status", "c").output
    assert "running" in text and "healthy\n" in text and "WARNING" not in text
    assert "2 of 2 servers of cluster dchat" in text


def test_a_partial_mesh_is_warned_on_both_sides(store, supervised, supervised_factory, tmp_path):
    """A public seed (a) and two nodes that joined through it; c advertises an address nobody can dial.

    a and c belong to another store (same operator and accounts): b's store only sees its own node,
    so b learns what a knows by asking through its route over the system account.
    """
    other = Store(shutil.copytree(store.home, tmp_path / "other-home"))
    up_other = supervised_factory(other)
    nodes.add_node(other, "a")
    a = up_other("a")
    seed = nodes.route_url(other, "a")
    nodes.add_node(store, "b", seed_routes=[seed])
    b = supervised("b")
    assert b.status().warnings == []  # a and b: a full mesh of two
    nodes.add_node(other, "c", seed_routes=[seed], advertise=f"127.0.0.1:{free_port()}")
    c = up_other("c")
    # the real server: a holds routes to b and c, b could not dial c's advertised address, c never dials b
    assert set(a.status().data["routes"]) == {"b", "c"}
    assert b.status().data["routes"] == ["a"] and c.status().data["routes"] == ["a"]
    assert c.status().links.missing and "b" in c.status().data["links"]["missing"]  # read on a's monitoring port
    (warning,) = c.status().warnings
    assert "routes to 1 of the 2 other servers of cluster dchat; none to b (known to a)" in warning
    assert f"Peers dial c at {nodes.route_url(other, 'c')}" in warning and "routes do not relay" in warning
    st = b.status()  # a is not in b's store: asked over the system account
    assert st.data["links"]["missing"] == ["c"] and st.data["links"]["unread"] == []
    (warning,) = st.warnings
    assert "none to c (known to a)" in warning
    assert f"dial tcp {nodes.route_url(other, 'c').split('//')[1]}" in warning  # b's dial error names c's address
    assert a.status().warnings == []
    r = run(store, "node", "status", "b", "--json")
    assert json.loads(r.stdout)["warnings"] == [warning]
    assert "healthy but no route to c" in run(store, "node", "status", "b").output


async def test_leaf_nodes_behind_nat_relay_through_a_public_hub(store):
    """The NAT layout of docs/topologies.md with the commands it shows: leaves talk to each other via the hub."""
    hub_leaf = free_port()
    commands = [
        ["node", "add", "hub", "--leaf-port", str(hub_leaf)],
        ["node", "add", "phone", "--no-cluster", "--leaf-of", f"nats-leaf://127.0.0.1:{hub_leaf}"],
        ["node", "add", "laptop", "--no-cluster", "--leaf-of", f"nats-leaf://127.0.0.1:{hub_leaf}"],
        ["allow-sub", "chat.>", "--node", "phone"],  # what the hub sends down to each leaf
        ["allow-sub", "chat.>", "--node", "laptop"],
    ]
    for cmd in commands:
        r = run(store, *cmd)
        assert r.exit_code == 0, r.output
    sups = {n: Supervisor(store, n) for n in ("hub", "phone", "laptop")}
    try:
        for n in ("hub", "phone", "laptop"):
            r = await asyncio.to_thread(run, store, "node", "up", n, "--json")
            assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [], r.output
        creds = store.creds_path("dchat", "chat", "default")
        phone = await connect_node(store, "phone", creds=creds)
        laptop = await connect_node(store, "laptop", creds=creds)
        to_phone = await phone.subscribe("chat.to-phone")
        to_laptop = await laptop.subscribe("chat.to-laptop")
        got = {}
        for _ in range(40):  # interest crosses two leaf connections asynchronously
            await phone.publish("chat.to-laptop", b"from phone")
            await laptop.publish("chat.to-phone", b"from laptop")
            for name, sub in (("laptop", to_laptop), ("phone", to_phone)):
                if name not in got:
                    try:
                        got[name] = (await sub.next_msg(timeout=0.1)).data
                    except Exception:
                        pass
            if len(got) == 2:
                break
        assert got == {"laptop": b"from phone", "phone": b"from laptop"}
        await phone.close()
        await laptop.close()

        sups["hub"].down()  # a leaf whose hub is down is warned
        st = await asyncio.to_thread(wait_for, lambda: (s := sups["phone"].status()).warnings and s, 10)
        assert st and st.data["links"]["leaf_remotes_down"] == [[f"nats-leaf://127.0.0.1:{hub_leaf}"]]
        (warning,) = st.warnings
        assert f"no leaf connection up to nats-leaf://127.0.0.1:{hub_leaf}" in warning
        text = run(store, "node", "status", "phone").output
        assert "healthy but leaf connection down" in text
    finally:
        for sup in sups.values():
            sup.down()


def test_a_public_hub_advertises_its_leaf_address(store):
    r = run(store, "node", "add", "hub", "--host", "0.0.0.0", "--advertise", "203.0.113.7", "--leaf-port", "7422")
    assert r.exit_code == 0 and "advertising 203.0.113.7:7422 to leaf nodes: given explicitly" in r.output
    node = NodeFile.load(store, "hub").node
    assert node.leafnodes["advertise"] == "203.0.113.7:7422"
    assert node.cluster["advertise"] == f"203.0.113.7:{node.cluster['port']}"
    conf = nodes.render_node(store, "hub").read_text()
    assert 'listen: "0.0.0.0:7422"\n  advertise: "203.0.113.7:7422"' in conf
    nodes.add_node(store, "lan-hub", leaf_port=free_port())  # a loopback hub advertises nothing
    assert not NodeFile.load(store, "lan-hub").node.leafnodes.get("advertise")


def test_a_gateway_that_is_down_is_warned_and_the_warning_goes_once_it_is_up(store, supervised):
    gw = free_port()
    nodes.add_node(store, "e1", cluster_name="east", gateway_port=gw)
    nodes.add_node(store, "w1", cluster_name="west", gateways=[("east", f"nats://127.0.0.1:{gw}")])
    w1 = supervised("w1")  # east is not running yet
    st = w1.status().data
    assert st["links"]["gateways_down"] == ["east"] and not st["links"]["settled"]
    assert any("no gateway connection to cluster east" in w for w in st["warnings"]), st["warnings"]
    assert "healthy but no gateway to east" in run(store, "node", "status", "w1").output
    supervised("e1")
    assert wait_for(lambda: w1.status().data["links"]["gateways_down"] == [], 15)
    assert not any("gateway" in w for w in w1.status().data["warnings"])
