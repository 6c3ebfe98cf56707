"""apply is all or nothing (a node that fails puts back every file the apply wrote, identities
included, and the running nodes it changed go back onto their previous config), and removes the
accounts a spec no longer names."""

import json

import pytest
from conftest import snapshot, wait_for

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.supervisor import Supervisor


def spec(*, n1_allow='["room.>"]', extra_user="", conn=100, creds="", feeds=True) -> str:
    leaf = f"\n    leafnodes: {{remotes: [{{urls: [hub], credentials: {json.dumps(creds)}}}]}}" if creds else ""
    feeds_text = "\n  - name: feeds\n    users:\n      - {name: reader, allow_sub: [news.>]}" if feeds else ""
    return f"""\
version: 1
operator: {{name: dchat}}
accounts:
  - name: chat
    limits: {{conn: {conn}}}
    users:
      - {{name: poster}}{extra_user}{feeds_text}
nodes:
  - id: hub
    cluster: false
    leafnodes: {{port: HUB_PORT}}
  - id: n1
    policy: {{subscribe: {{allow: {n1_allow}}}}}
  - id: n2
    cluster: false{leaf}
"""


def _write(tmp_path, text, name="network.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return provision.load_spec(p)


@pytest.fixture
def applied(tmp_path):
    store = Store(tmp_path / "home")
    from dchat_ops.natsbin import free_port

    port = free_port()

    def make(**kw) -> str:
        return spec(**kw).replace("HUB_PORT", str(port))

    r = provision.apply(store, _write(tmp_path, make()))
    assert not r.error, r.error
    return store, make


def test_a_failing_node_puts_back_every_file_of_the_apply(tmp_path, applied, capsys):
    store, make = applied
    before = snapshot(store.home)
    # a new user, an account change, a node policy change, and a node whose config cannot be made
    bad = make(
        n1_allow='["room.>", "chat.>"]',
        extra_user="\n      - {name: newcomer}",
        conn=5,
        creds=str(tmp_path / "missing.creds"),
    )
    path = tmp_path / "v2.yaml"
    path.write_text(bad)
    p = provision.plan(store, provision.load_spec(path))
    assert {(c.action, c.kind, c.name) for c in p.changes} >= {
        ("create", "user", "chat/newcomer"),
        ("update", "account", "chat"),
        ("update", "node", "n1"),
        ("update", "node", "n2"),
    }
    code = run_cli(cli, ["--home", str(store.home), "apply", "-f", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert "node n2:" in out["error"] and "every file it wrote was restored" in out["error"], out["error"]
    outcomes = {n["node"]: n["outcome"] for n in out["nodes"]}
    assert outcomes == {"hub": "rolled-back", "n1": "rolled-back", "n2": "rolled-back"}, out[
        "nodes"
    ]  # hub: its preload
    # every file as it was (but the validated spec the CLI keeps in its cache)
    after = {k: v for k, v in snapshot(store.home).items() if not k.startswith("cache/specs/")}
    assert after == {k: v for k, v in before.items() if not k.startswith("cache/specs/")}
    assert "newcomer" not in store.user_names("chat")
    # the next plan shows the same changes again
    assert provision.plan(store, provision.load_spec(path)).changes == p.changes


def test_a_failing_node_reloads_the_running_nodes_it_changed_back(tmp_path, applied, supervised_factory):
    store, make = applied
    sup = supervised_factory(store)("n1")
    conf = store.home / "run" / "n1" / "nats-server.conf"
    before = conf.read_bytes()
    r = provision.apply(
        store, _write(tmp_path, make(n1_allow='["room.>", "chat.>"]', creds=str(tmp_path / "x.creds")), "v2.yaml")
    )
    assert r.error and "n1" in r.error.split("rolled back", 1)[1], r.error
    assert {n.node: n.outcome for n in r.nodes}["n1"] == "rolled-back"
    assert conf.read_bytes() == before
    assert wait_for(lambda: Supervisor(store, "n1").config_behind() is False)
    assert sup.status().healthy
    assert "chat.>" not in str(NodeFile.load(store, "n1").node.policy.subscribe.allow)


def test_apply_removes_accounts_the_spec_no_longer_names(tmp_path, applied, capsys):
    store, make = applied
    assert "feeds" in store.account_names()
    feeds_key = store.account("feeds").public_key
    assert feeds_key in nodes.render_node(store, "n1").read_text()
    path = tmp_path / "v2.yaml"
    path.write_text(make(feeds=False))
    code = run_cli(cli, ["--home", str(store.home), "plan", "-f", str(path), "--keep-removed", "--json"])
    assert code == 0
    changes = json.loads(capsys.readouterr().out)["changes"]
    assert [(c["action"], c["kind"], c["name"]) for c in changes] == [("drift", "account", "feeds")]
    p = provision.plan(store, provision.load_spec(path))
    assert [(c.action, c.kind, c.name) for c in p.changes] == [("remove", "account", "feeds")]
    provision.apply(store, provision.load_spec(path), keep_removed=True)
    assert "feeds" in store.account_names()
    r = provision.apply(store, provision.load_spec(path))
    assert not r.error
    assert "feeds" not in store.account_names()
    assert not store.creds_path("dchat", "feeds", "reader").exists()
    assert not provision.plan(store, provision.load_spec(path)).has_changes
    # the nodes no longer preload it
    assert feeds_key not in (store.home / "run" / "n1" / "nats-server.conf").read_text()


def test_an_account_a_node_lives_in_is_not_removed(tmp_path, applied):
    store, make = applied
    nodes.add_node(store, "side", account="feeds")
    with pytest.raises(provision.SpecError, match="node side's user is in it"):
        provision.plan(store, _write(tmp_path, make(feeds=False), "v2.yaml"))
