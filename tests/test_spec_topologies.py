"""Every node the CLI makes is described by a spec: `spec export` of a store with each kind of node,
applied in a new home, renders the same nats-server configs (checked by nats-server), the spec plans
no change on its own store, and plan notices a difference in any of a node's settings."""

import copy
import re

import pytest

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.natsbin import free_port
from dchat_ops.nsc.store import Store

KINDS = ["lone", "eu1", "eu2", "asia1", "leaf", "pub"]


def _ports(n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


def _cli(home, *args):
    code = run_cli(cli, ["--home", str(home), *args])
    assert code == 0, args


def build(home) -> Store:
    store = Store(home)
    _cli(home, "init")
    gw_eu, gw_asia, l1, l2, ws = _ports(5)
    _cli(home, "node", "add", "lone", "--no-cluster", "--jetstream")
    _cli(home, "node", "add", "eu1", "--cluster-name", "eu", "--gateway-port", str(gw_eu), "--leaf-port", str(l1))
    _cli(home, "node", "add", "asia1", "--cluster-name", "asia", "--gateway-port", str(gw_asia))
    _cli(home, "node", "add", "asia2", "--cluster-name", "asia", "--seed-route", nodes.route_url(store, "asia1"))
    _cli(
        home,
        "node",
        "add",
        "eu2",
        "--cluster-name",
        "eu",
        "--seed-route",
        nodes.route_url(store, "eu1"),
        "--leaf-port",
        str(l2),
        "--websocket-port",
        str(ws),
        "--gateway",
        f"asia=nats://127.0.0.1:{gw_asia}",
    )
    _cli(
        home,
        "node",
        "add",
        "leaf",
        "--no-cluster",
        "--leaf-of",
        f"nats-leaf://127.0.0.1:{l1}",
        "--leaf-of",
        f"nats-leaf://127.0.0.1:{l2}",
    )
    _cli(home, "node", "add", "pub", "--host", "0.0.0.0", "--advertise", "203.0.113.9", "--mem-resolver")
    _cli(home, "allow-sub", "--node", "leaf", "chat.>")
    _cli(home, "tls", "init-ca")
    _cli(home, "tls", "enable", "--node", "eu1", "--client", "--route", "--gateway", "--leafnode")
    return store


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topologies")
    a = build(tmp / "a")
    text = provision.dump_spec(provision.export_spec(a))
    spec = provision.parse_spec(text, tmp / "exported.yaml")
    b = Store(tmp / "b")
    provision.apply(b, spec)
    return a, b, spec


def _normal(text: str, store: Store) -> str:
    text = text.replace(str(store.home), "HOME")
    text = re.sub(r"eyJ[A-Za-z0-9_\-.]+", "JWT", text)
    return re.sub(r"\b[ONAUC][A-Z2-7]{55}\b", "KEY", text)


def test_export_round_trips_topology_fields(homes):
    a, _, spec = homes
    by_id = {n["id"]: n for n in spec.nodes}
    assert by_id["lone"]["cluster"] is False and by_id["lone"]["jetstream"] is True
    assert by_id["eu2"]["cluster_name"] == "eu" and by_id["eu2"]["gateway"]["remotes"][0]["name"] == "asia"
    assert len(by_id["leaf"]["leafnodes"]["remotes"][0]["urls"]) == 2  # the failover list
    assert by_id["eu2"]["websocket"]["port"] and by_id["eu1"]["tls"]["gateway"] is True
    assert by_id["pub"]["cluster_advertise"].startswith("203.0.113.9:") and by_id["pub"]["resolver"] == "memory"
    assert not provision.plan(a, spec).has_changes, [c.to_dict() for c in provision.plan(a, spec).changes]


@pytest.mark.parametrize("node_id", KINDS)
def test_exported_node_renders_the_same_config(homes, node_id):
    a, b, _ = homes
    ta = nodes.render_node(a, node_id).read_text()  # both checked by nats-server -t
    tb = nodes.render_node(b, node_id).read_text()
    assert _normal(ta, a) == _normal(tb, b)


_CHANGES = [
    ("eu2", lambda n: n["gateway"]["remotes"][0]["urls"].append("nats://127.0.0.1:1"), "gateway"),
    ("eu2", lambda n: n.pop("websocket"), "websocket"),
    ("eu1", lambda n: n["leafnodes"].update(advertise="198.51.100.1:7422"), "leafnodes"),
    ("leaf", lambda n: n["leafnodes"]["remotes"][0]["urls"].pop(), "leafnodes"),
    ("asia2", lambda n: n.update(cluster_name="asia-east"), "cluster.name"),
    ("asia2", lambda n: n.update(routes=[]), "cluster.routes"),
    ("lone", lambda n: n.update(jetstream=False), "jetstream"),
    ("pub", lambda n: n.update(monitor_host="0.0.0.0"), "monitor_host"),
    ("pub", lambda n: n.update(cluster_advertise="203.0.113.10:6222"), "cluster.advertise"),
    ("pub", lambda n: n.update(advertise="203.0.113.10"), "advertise"),
    ("pub", lambda n: n.update(resolver="full"), "resolver"),
    ("eu1", lambda n: n["tls"].update(client=False), "tls"),
]


@pytest.mark.parametrize("node_id, change, detail", _CHANGES, ids=[f"{c[0]}-{c[2]}" for c in _CHANGES])
def test_plan_notices_a_node_difference(homes, tmp_path, node_id, change, detail):
    a, _, spec = homes
    data = copy.deepcopy(spec.data)
    change(next(n for n in data["nodes"] if n["id"] == node_id))
    changed = provision.parse_spec(provision.dump_spec(data), tmp_path / "changed.yaml")
    updates = [c for c in provision.plan(a, changed).changes if c.kind == "node"]
    assert [(c.action, c.name) for c in updates] == [("update", node_id)], updates
    assert detail in updates[0].detail, updates[0].detail


def test_a_spec_with_gateways_and_leaf_nodes_by_node_id(tmp_path):
    """A spec names the nodes a gateway or a leaf dials by their ids; apply works out the URLs."""
    port = _ports(1)[0]
    text = f"""\
version: 1
accounts: [{{name: chat}}]
nodes:
  - {{id: eu1, cluster_name: eu, gateway: {{}}, leafnodes: {{port: {port}}}}}
  - {{id: eu2, cluster_name: eu, routes: [eu1], gateway: {{remotes: [{{name: asia, urls: [asia1]}}]}}}}
  - {{id: asia1, cluster_name: asia, gateway: {{remotes: [{{name: eu, urls: [eu1, eu2]}}]}}}}
  - {{id: dev, cluster: false, leafnodes: {{remotes: [{{urls: [eu1]}}]}}}}
"""
    p = tmp_path / "s.yaml"
    p.write_text(text)
    store = Store(tmp_path / "home")
    provision.apply(store, provision.load_spec(p))
    n = {i: NodeFile.load(store, i).node for i in ("eu1", "eu2", "asia1", "dev")}
    assert n["eu2"].cluster["routes"] == [f"nats-route://127.0.0.1:{n['eu1'].cluster['port']}"]
    assert n["asia1"].gateway["remotes"][0]["urls"] == [
        f"nats://127.0.0.1:{n['eu1'].gateway['port']}",
        f"nats://127.0.0.1:{n['eu2'].gateway['port']}",
    ]
    assert n["dev"].cluster is None
    assert n["dev"].leafnodes["remotes"][0]["urls"] == [f"nats-leaf://127.0.0.1:{n['eu1'].leafnodes['port']}"]
    for i in n:
        nodes.render_node(store, i)
    assert not provision.plan(store, provision.load_spec(p)).has_changes


def test_plan_refuses_to_move_a_node_to_another_account(homes, tmp_path):
    a, _, spec = homes
    data = copy.deepcopy(spec.data)
    data["accounts"].append({"name": "other"})
    next(n for n in data["nodes"] if n["id"] == "lone")["account"] = "other"
    changed = provision.parse_spec(provision.dump_spec(data), tmp_path / "changed.yaml")
    with pytest.raises(provision.SpecError, match="node lone's user is in account 'chat'"):
        provision.plan(a, changed)
