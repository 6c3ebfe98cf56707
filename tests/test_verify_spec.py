"""`verify --spec FILE`: a spec's topology brought up on loopback in a throw-away home and proven."""

import json

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.provision import parse_spec
from dchat_ops.verify import loopback_spec

SPEC = """\
version: 1
accounts: [{name: chat}]
nodes:
  - {id: h1, host: 0.0.0.0, advertise: 203.0.113.1, client_port: 4222, routes: [h0], leafnodes: {port: 7422}}
  - {id: h2, routes: ["nats-route://127.0.0.1:6222"], leafnodes: {port: 7423}}
  - {id: h0, cluster_port: 6222}
  - id: phone
    cluster: false
    leafnodes: {remotes: [{urls: ["nats-leaf://127.0.0.1:7422", h2]}]}
    policy: {subscribe: {allow: ["dm.phone"]}}
  - id: laptop
    cluster: false
    leafnodes: {remotes: [{urls: [h2]}]}
    policy: {subscribe: {allow: ["dm.laptop"]}}
"""


def test_loopback_spec_moves_every_listener_and_the_urls_follow(tmp_path):
    data = loopback_spec(parse_spec(SPEC, tmp_path / "spec.yaml").data)
    n = {x["id"]: x for x in data["nodes"]}
    assert n["h1"]["host"] == "127.0.0.1" and "advertise" not in n["h1"]
    assert n["h1"]["client_port"] != 4222 and n["h1"]["leafnodes"]["port"] != 7422
    assert n["h2"]["routes"] == [f"nats-route://127.0.0.1:{n['h0']['cluster_port']}"]
    assert n["phone"]["leafnodes"]["remotes"][0]["urls"] == [
        f"nats-leaf://127.0.0.1:{n['h1']['leafnodes']['port']}",
        "h2",
    ]


def test_verify_spec_proves_a_topology(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    code = run_cli(cli, ["verify", "--spec", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    names = [c["name"] for c in report["checks"]]
    assert names[:5] == [
        "spec: applied on loopback (free ports)",
        "nodes: every node up and healthy",
        "clusters: every node routes to the others of its cluster",
        "leaf nodes: each attached to a hub",
        "message: laptop -> phone",
    ], names
    assert names[5].startswith("failover: "), names
    assert all(c["passed"] for c in report["checks"])


def test_verify_spec_fails_when_nothing_may_be_received(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace('policy: {subscribe: {allow: ["dm.phone"]}}', "policy: {}"))
    code = run_cli(cli, ["verify", "--spec", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["passed"]
    assert "allows no subject" in report["checks"][-1]["detail"], report["checks"][-1]
