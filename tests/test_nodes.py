"""Node configs: defaults, comments kept, advertise choice, and a table of invalid configs refused early."""

import re

import pytest
from conftest import snapshot

from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile, inbox_prefix, node_path
from dchat_ops.config.server import Resolver, ServerConfig, semantic_check
from dchat_ops.errors import ConfigError
from dchat_ops.hosts import choose_advertise
from dchat_ops.natsbin import check_config


def test_add_node_defaults_to_default_deny(store):
    r = nodes.add_node(store, "alice")
    n = r.node
    assert n.policy.publish.allow == [">"] and n.policy.subscribe.allow == [] and n.policy.subscribe.deny == []
    assert len({p for _, p in n.ports()}) == len(n.ports()) == 3
    u = store.user("chat", "alice").claims
    assert u.permissions.sub.allow == [f"{inbox_prefix('alice')}.>"]
    assert u.permissions.pub.allow == [] and u.permissions.pub.deny == []
    r2 = nodes.add_node(store, "bob", seed_routes=[nodes.route_url(store, "alice")])
    assert not {p for _, p in r2.node.ports()} & {p for _, p in n.ports()}
    assert r2.node.cluster["routes"] == [f"nats-route://127.0.0.1:{n.cluster['port']}"]


def test_comments_and_order_survive_tool_edits(store):
    nodes.add_node(store, "alice")
    path = node_path(store, "alice")
    text = path.read_text().replace("policy:\n", "# my rooms, added by hand\npolicy:\n")
    text = text.replace("client_port:", "client_port:  # the port my app uses\nclient_port:", 0)
    path.write_text(text)
    nf = NodeFile.load(store, "alice")
    assert nf.add_to_list(("policy", "subscribe", "allow"), "room.x")
    nf.save()
    after = path.read_text()
    assert "# my rooms, added by hand" in after
    assert "- room.x" in after
    keys = [line.split(":")[0] for line in after.splitlines() if line and not line.startswith((" ", "#"))]
    assert keys[:4] == ["id", "server_name", "host", "client_port"]
    assert NodeFile.load(store, "alice").node.policy.subscribe.allow == ["room.x"]


@pytest.mark.parametrize(
    "addrs, explicit, want, why",
    [
        ([("lo", "127.0.0.1"), ("eth0", "192.168.1.20")], None, "192.168.1.20", "LAN"),
        ([("eth0", "192.168.1.20"), ("tailscale0", "100.101.1.2")], None, "100.101.1.2", "Tailscale"),
        ([("eth0", "10.0.0.5"), ("tailscale0", "100.101.1.2")], "203.0.113.7", "203.0.113.7", "explicitly"),
        ([("lo", "127.0.0.1")], None, "127.0.0.1", "loopback"),
        ([("eth0", "100.63.0.1"), ("eth1", "172.16.4.4")], None, "172.16.4.4", "LAN"),  # 100.63 is not Tailscale
    ],
)
def test_advertise_choice_says_why(addrs, explicit, want, why):
    got, reason = choose_advertise(addrs, explicit)
    assert got == want and why in reason


def test_public_node_advertises_the_detected_address(store):
    r = nodes.add_node(store, "pub", host="0.0.0.0", advertise="203.0.113.7")
    assert r.node.cluster["advertise"] == f"203.0.113.7:{r.node.cluster['port']}"
    assert any("given explicitly" in m for m in r.messages)


def _cfg(store, **kw):
    if not node_path(store, "n1").exists():
        nodes.add_node(store, "n1")
    cfg = nodes.server_config(store, NodeFile.load(store, "n1").node)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _edit(store, node_id, old, new):
    p = node_path(store, node_id)
    p.write_text(p.read_text().replace(old, new))


INVALID = [
    (
        "port clash between nodes",
        lambda s: (
            nodes.add_node(s, "a"),
            nodes.add_node(s, "b"),
            _edit(
                s,
                "b",
                f"client_port: {NodeFile.load(s, 'b').node.client_port}",
                f"client_port: {NodeFile.load(s, 'a').node.client_port}",
            ),
            nodes.render_node(s, "b"),
        ),
        "clashes with the client port of node a",
    ),
    (
        "missing system account",
        lambda s: semantic_check(ServerConfig("x", "jwt", "", Resolver(type="memory"))),
        "needs a system account",
    ),
    (
        "system account not preloaded",
        lambda s: semantic_check(ServerConfig("x", "jwt", "ASYS", Resolver(type="memory", preload={"AOTHER": "t"}))),
        "must be preloaded",
    ),
    (
        "bad resolver duration",
        lambda s: semantic_check(
            _cfg(s, resolver=Resolver("full", "/tmp/x", interval="2 minutes", preload=_cfg(s).resolver.preload))
        ),
        "not a duration",
    ),
    (
        "unknown seed route scheme",
        lambda s: nodes.add_node(s, "x", seed_routes=["http://127.0.0.1:6222"]),
        "unknown scheme 'http'",
    ),
    (
        "gateway name differs from cluster name",
        lambda s: (
            nodes.add_node(s, "g", gateway_port=None, gateways=[("west", "nats://127.0.0.1:7222")]),
            _edit(s, "g", "gateway:\n  name: dchat", "gateway:\n  name: other"),
            nodes.render_node(s, "g"),
        ),
        "must equal cluster name",
    ),
    (
        "unknown field",
        lambda s: (
            nodes.add_node(s, "u"),
            _edit(s, "u", "resolver:", "colour: blue\nresolver:"),
            NodeFile.load(s, "u"),
        ),
        "unknown field 'colour'",
    ),
    (
        "port out of range",
        lambda s: (
            nodes.add_node(s, "p"),
            _edit(s, "p", f"monitor_port: {NodeFile.load(s, 'p').node.monitor_port}", "monitor_port: 70000"),
            NodeFile.load(s, "p"),
        ),
        "monitor_port must be a port number",
    ),
    (
        "bad subject in policy",
        lambda s: (nodes.add_node(s, "q"), _edit(s, "q", "allow: []", "allow: ['room..x']"), NodeFile.load(s, "q")),
        "empty token",
    ),
    (
        "jetstream without server name",
        lambda s: semantic_check(_cfg(s, server_name="", jetstream={"store_dir": "/tmp/js"})),
        "server_name",
    ),
]


@pytest.mark.parametrize("name, action, message", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_node_configs_are_refused_before_any_server_starts(store, name, action, message):
    with pytest.raises(ConfigError) as e:
        action(store)
    assert message in str(e.value), str(e.value)
    assert not list((store.home / "run").rglob("nats-server.pid")) if (store.home / "run").exists() else True


def test_unknown_field_names_file_and_line(store):
    nodes.add_node(store, "u")
    _edit(store, "u", "resolver:", "colour: blue\nresolver:")
    with pytest.raises(ConfigError) as e:
        NodeFile.load(store, "u")
    assert str(node_path(store, "u")) in str(e.value) and "(line " in str(e.value)


def test_every_topology_renders_and_passes_nats_server_check(store):
    a = nodes.add_node(store, "a", jetstream=True, websocket_port=None)
    nodes.add_node(
        store,
        "b",
        seed_routes=[nodes.route_url(store, "a")],
        gateway_port=None,
        gateways=[("west", "nats://127.0.0.1:7999")],
    )
    nodes.add_node(store, "hub", leaf_port=None, cluster=False)
    hub_leaf = nodes.add_node(store, "hub2", cluster=False, leaf_port=17422)
    nodes.add_node(store, "leaf", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{hub_leaf.node.leafnodes['port']}"])
    nodes.add_node(store, "mem", resolver="memory")
    for nid in ("a", "b", "hub", "hub2", "leaf", "mem"):
        path = nodes.render_node(store, nid)
        check_config(path)
        text = path.read_text()
        assert "operator:" in text and "resolver_preload" in text and "system_account" in text
    text = (store.home / "run" / "a" / "nats-server.conf").read_text()
    assert "jetstream" in text and 'server_name: "a"' in text
    assert 'name: "west"' in (store.home / "run" / "b" / "nats-server.conf").read_text()
    assert "credentials" in (store.home / "run" / "leaf" / "nats-server.conf").read_text()
    assert "resolver: MEMORY" in (store.home / "run" / "mem" / "nats-server.conf").read_text()
    assert a.node.jetstream is not None


def test_failed_add_node_leaves_nothing(store):
    before = snapshot(store.home)
    with pytest.raises(ConfigError):
        nodes.add_node(store, "x", seed_routes=["nats-route://nohost"])
    assert snapshot(store.home) == before


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('host: "127.0.0.1"', 'host: "not a host"', "host 'not a host' is not an IP address or a host name"),
        ("resolver: full", 'resolver: full\nadvertise: "x y"', "is not an IP address or a host name"),
        ("resolver: full", 'resolver: full\ncluster: {port: 14248, advertise: "a b:99999"}', "not an IP address"),
        ("resolver: full", "resolver: full\ncluster: {port: 14248, advertise: 'h.example:99999'}", "out of range"),
        ("resolver: full", "resolver: full\ncluster: {port: 14248, advertise: 'fd00::1:7422'}", "in brackets"),
    ],
)
def test_node_file_hosts_and_advertise_are_checked(store, old, new, message):
    nodes.add_node(store, "hx", cluster=False)
    path = store.nodes_dir / "hx.yaml"
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=r"hx\.yaml \(line \d+\): .*" + re.escape(message)):
        NodeFile.load(store, "hx")


def test_node_add_refuses_bad_hosts_and_advertise(store):
    for kw in ({"host": "not a host"}, {"advertise": "x y"}, {"advertise": "a b:99999"}, {"advertise": "h:0"}):
        with pytest.raises(ConfigError):
            nodes.add_node(store, "bad", **kw)
        assert not (store.nodes_dir / "bad.yaml").exists()
    r = nodes.add_node(store, "good", host="0.0.0.0", advertise="[fd00::1]:7422")
    assert r.node.cluster["advertise"] == "[fd00::1]:7422"
