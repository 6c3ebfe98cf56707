"""A spec change of a running node goes live through the allow-sub transaction: reload, confirm, rollback."""

import asyncio
import json

from conftest import wait_for

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config.node import NodeFile, inbox_prefix, node_path
from dchat_ops.natsbin import free_port
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect


def spec(n2_allow: str, n2_extra: str = "") -> str:
    return f"""\
version: 1
operator: {{name: dchat}}
accounts:
  - name: chat
    users:
      - {{name: poster}}
nodes:
  - id: n1
    policy: {{subscribe: {{allow: ["room.>"]}}}}
  - id: n2
    routes: [n1]
{n2_extra}    policy: {{subscribe: {{allow: {n2_allow}}}}}
"""


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


async def _received(store, subject: str, tries: int = 60) -> tuple[bool, list[str]]:
    """Subscribe as node n2's user on n2, publish as poster on n1: did it arrive, and the errors seen."""
    errors: list[str] = []
    sub_nc = await connect(
        url(store, "n2"), store.creds_path("dchat", "chat", "n2"), errors=errors, inbox_prefix=inbox_prefix("n2")
    )
    pub_nc = await connect(url(store, "n1"), store.creds_path("dchat", "chat", "poster"))
    sub = await sub_nc.subscribe(subject)
    await sub_nc.flush()
    got = False
    for _ in range(tries):
        await pub_nc.publish(subject, b"hello")
        try:
            got = (await sub.next_msg(timeout=0.1)).data == b"hello"
            break
        except asyncio.TimeoutError:
            continue
    await sub_nc.close()
    await pub_nc.close()
    return got, errors


async def test_spec_policy_change_of_running_node_goes_live(tmp_path, supervised_factory):
    store = Store(tmp_path / "home")
    path = tmp_path / "network.yaml"
    path.write_text(spec('["chat.>"]'))
    r = provision.apply(store, provision.load_spec(path))
    assert {(n.node, n.outcome) for n in r.nodes} == {("n1", "saved"), ("n2", "saved")}
    up = supervised_factory(store)
    up("n1")
    n2 = up("n2")
    assert wait_for(lambda: n2.status().data["routes"] == ["n1"])
    pid = n2.pid()
    got, errors = await _received(store, "room.x", tries=5)
    assert not got and any('subscription to "room.x"' in e for e in errors)

    path.write_text(spec('["chat.>", "room.x"]'))
    p = provision.plan(store, provision.load_spec(path))
    assert [(c.action, c.kind, c.name) for c in p.changes] == [("update", "node", "n2")]
    r = provision.apply(store, provision.load_spec(path))
    outcomes = {n.node: n.outcome for n in r.nodes}
    assert outcomes == {"n1": "unchanged", "n2": "live"}, r.nodes
    assert n2.pid() == pid  # reloaded, not restarted
    assert "room.x" in (store.home / "run" / "n2" / "nats-server.conf").read_text()
    got, errors = await _received(store, "room.x")
    assert got, errors
    assert not provision.plan(store, provision.load_spec(path)).has_changes


async def test_failing_live_apply_rolls_files_back(tmp_path, supervised_factory, capsys):
    store = Store(tmp_path / "home")
    path = tmp_path / "network.yaml"
    path.write_text(spec('["room.>"]'))
    provision.apply(store, provision.load_spec(path))
    up = supervised_factory(store)
    up("n1")
    n2 = up("n2")
    pid = n2.pid()
    watched = [
        node_path(store, "n2"),
        store.user_jwt_path("dchat", "chat", "n2"),
        store.creds_path("dchat", "chat", "n2"),
        store.home / "run" / "n2" / "nats-server.conf",
    ]
    before = {p: p.read_bytes() for p in watched}
    # a new client port cannot be reloaded: the server refuses, and everything goes back
    path.write_text(spec('["room.>", "chat.>"]', f"    client_port: {free_port()}\n"))
    code = run_cli(cli, ["--home", str(store.home), "apply", "-f", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    n2_out = next(n for n in out["nodes"] if n["node"] == "n2")
    assert n2_out["outcome"] == "rolled-back"
    assert "reload node failed" in n2_out["detail"] and "previous config" in n2_out["detail"], n2_out
    assert {p: p.read_bytes() for p in watched} == before
    assert n2.pid() == pid and n2.status().healthy
    # still serving the old policy, and the next plan shows the node's update again
    got, _ = await _received(store, "room.y")
    assert got
    assert ("update", "node", "n2") in [
        (c.action, c.kind, c.name) for c in provision.plan(store, provision.load_spec(path)).changes
    ]
    # the text output says what happened per node
    run_cli(cli, ["--home", str(store.home), "apply", "-f", str(path)])
    text = capsys.readouterr().out
    assert "node n2: rolled back: reload node failed" in text and "node n1: unchanged" in text, text
