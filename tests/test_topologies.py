"""Real nodes on loopback: chain join, route import permissions, gateways, leaf nodes, supervision."""

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest
from conftest import wait_for

from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile, inbox_prefix
from dchat_ops.errors import ServerError
from dchat_ops.runtime.client import connect
from dchat_ops.runtime.process import http_json


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


def allow_sub(store, nid, *subjects):
    nf = NodeFile.load(store, nid)
    for s in subjects:
        nf.add_to_list(("policy", "subscribe", "allow"), s)
    nf.save()
    nodes.sync_node_user(store, nf.node)


def routes_of(sup):
    return set(sup.status().data["routes"])


async def got(sub, timeout=0.5):
    try:
        return (await sub.next_msg(timeout=timeout)).data
    except Exception:
        return None


async def test_chain_join_route_imports_and_system_account(store, supervised):
    nodes.add_node(store, "a")
    allow_sub(store, "a", "room.ok")
    a = supervised("a")
    nodes.add_node(store, "b", seed_routes=[nodes.route_url(store, "a")])
    b = supervised("b")
    nodes.add_node(store, "c", seed_routes=[nodes.route_url(store, "b")])  # C knows only B
    allow_sub(store, "c", "svc.ping")  # c serves requests on svc.ping
    c = supervised("c")
    assert wait_for(lambda: routes_of(a) == {"b", "c"} and routes_of(b) == {"a", "c"} and routes_of(c) == {"a", "b"}), (
        routes_of(a),
        routes_of(b),
        routes_of(c),
    )

    errors = []
    node_user = await connect(
        url(store, "a"), store.creds_path("dchat", "chat", "a"), errors=errors, inbox_prefix=inbox_prefix("a")
    )
    ok = await node_user.subscribe("room.ok")
    await node_user.subscribe("room.no")  # not allowed for a's local user
    # an unrestricted user on node a: only the route import permissions stand between it and room.no
    free = await connect(url(store, "a"), store.creds_path("dchat", "chat", "default"))
    free_no = await free.subscribe("room.no")
    free_ok = await free.subscribe("room.ok")
    await node_user.flush()
    await free.flush()
    pub = await connect(url(store, "c"), store.creds_path("dchat", "chat", "default"))
    await asyncio.sleep(0.3)  # let subscription interest propagate over the routes
    for i in range(3):
        await pub.publish("room.ok", b"ok%d" % i)
        await pub.publish("room.no", b"no%d" % i)
    await pub.flush()
    assert [await got(ok, 2) for _ in range(3)] == [b"ok0", b"ok1", b"ok2"]
    assert await got(free_ok, 2) == b"ok0"
    assert await got(free_no, 0.5) is None  # filtered by a's route import permissions
    assert any('subscription to "room.no"' in e for e in errors)

    # the system account still works across the routes: every server answers a ping from node a
    sys_nc = await connect(url(store, "a"), store.creds_path("dchat", "SYS", "sys"))
    inbox = sys_nc.new_inbox()
    sub = await sys_nc.subscribe(inbox)
    await sys_nc.publish("$SYS.REQ.SERVER.PING", b"", reply=inbox)
    names = set()
    for _ in range(3):
        data = await got(sub, 2)
        if data:
            names.add(json.loads(data)["server"]["name"])
    assert names == {"a", "b", "c"}
    # request/reply from node a's user to a responder on c, replies through its own inbox prefix
    responder = await connect(url(store, "c"), store.creds_path("dchat", "chat", "default"))

    async def answer(msg):
        await responder.publish(msg.reply, b"pong")

    await responder.subscribe("svc.ping", cb=answer)
    await responder.flush()
    await asyncio.sleep(0.3)
    reply = await node_user.request("svc.ping", b"", timeout=2)
    assert reply.data == b"pong"
    for nc in (node_user, free, pub, sys_nc, responder):
        await nc.close()

    # stopping B leaves A and C connected to each other
    b.down()
    assert wait_for(lambda: routes_of(a) == {"c"} and routes_of(c) == {"a"}, timeout=15), (routes_of(a), routes_of(c))


async def test_gateway_joins_two_clusters(store, supervised):
    east = nodes.add_node(
        store, "e1", cluster_name="east", gateway_port=None, gateways=[("west", "nats://127.0.0.1:1")]
    )  # placeholder replaced below
    # east accepts gateways on its port; west dials east
    nf = NodeFile.load(store, "e1")
    nf.set(("gateway", "remotes"), [])
    nf.save()
    e_gw = NodeFile.load(store, "e1").node.gateway["port"]
    nodes.add_node(store, "w1", cluster_name="west", gateway_port=None, gateways=[("east", f"nats://127.0.0.1:{e_gw}")])
    allow_sub(store, "e1", "news.>")
    e = supervised("e1")
    w = supervised("w1")
    assert wait_for(lambda: "east" in w.status().data["gateways"] and "west" in e.status().data["gateways"], 15)
    sub_nc = await connect(url(store, "e1"), store.creds_path("dchat", "chat", "e1"), inbox_prefix=inbox_prefix("e1"))
    sub = await sub_nc.subscribe("news.today")
    await sub_nc.flush()
    pub = await connect(url(store, "w1"), store.creds_path("dchat", "chat", "default"))
    data = None
    for _ in range(40):  # gateway interest propagates asynchronously
        await pub.publish("news.today", b"hello east")
        data = await got(sub, 0.25)
        if data:
            break
    assert data == b"hello east"
    await sub_nc.close()
    await pub.close()
    assert east.node.gateway["name"] == "east"


async def test_leaf_node_relays_both_ways(store, supervised):
    nodes.add_node(store, "hub", cluster=False, leaf_port=None)
    nf = NodeFile.load(store, "hub")
    from dchat_ops.natsbin import free_port

    nf.set(("leafnodes",), {"port": free_port()})
    nf.save()
    hub_leaf_port = NodeFile.load(store, "hub").node.leafnodes["port"]
    nodes.add_node(store, "leaf", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{hub_leaf_port}"])
    allow_sub(store, "leaf", "chat.>")  # what the hub may send down to the leaf's user
    hub = supervised("hub")
    supervised("leaf")
    assert wait_for(lambda: hub.status().data["leafnodes"], 15)
    on_hub = await connect(url(store, "hub"), store.creds_path("dchat", "chat", "default"))
    on_leaf = await connect(url(store, "leaf"), store.creds_path("dchat", "chat", "default"))
    hub_sub = await on_hub.subscribe("chat.up")
    leaf_sub = await on_leaf.subscribe("chat.down")
    await on_hub.flush()
    await on_leaf.flush()
    up = down = None
    for _ in range(40):
        await on_leaf.publish("chat.up", b"from leaf")
        await on_hub.publish("chat.down", b"from hub")
        up = up or await got(hub_sub, 0.1)
        down = down or await got(leaf_sub, 0.1)
        if up and down:
            break
    assert (up, down) == (b"from leaf", b"from hub")
    await on_hub.close()
    await on_leaf.close()


def test_up_on_a_busy_port_fails_clearly_and_leaves_no_process(store):
    from dchat_ops.runtime.supervisor import Supervisor

    n = nodes.add_node(store, "busy").node
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", n.client_port))
    blocker.listen()
    try:
        sup = Supervisor(store, "busy")
        with pytest.raises(ServerError, match=f"client port {n.client_port} is already in use"):
            sup.up()
        assert not sup.running() and not sup.pid_file.exists()
        conf = str(sup.config_path).encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                assert conf not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                pass
    finally:
        blocker.close()


def test_down_on_a_stopped_node_says_so(store):
    from click.testing import CliRunner

    from dchat_ops._cli.main import cli

    nodes.add_node(store, "idle")
    r = CliRunner().invoke(cli, ["--home", str(store.home), "node", "down", "idle"])
    assert r.exit_code == 0 and "not running" in r.output


def test_reload_is_confirmed_and_status_reports(store, supervised):
    sup = supervised(nodes.add_node(store, "r").node.id)
    before = sup.status().data["config_load_time"]
    varz = sup.reload()
    assert varz["config_load_time"] != before
    st = sup.status().to_dict()
    assert st["running"] and st["healthy"] and st["server_name"] == "r"
    code, _ = http_json(st["monitor_url"] + "/healthz")
    assert code == 200
    assert any("Server is ready" in line for line in sup.logs(200))
