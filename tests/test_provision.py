"""Declarative provisioning: plan / apply on real nodes, idempotence, one-user changes, drift, bad specs."""

import asyncio
from pathlib import Path

import pytest
from conftest import snapshot

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops.config.node import NodeFile
from dchat_ops.nsc import admin
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect

ROOMS = ["chat.>", "room.>", "lobby.>", "news.>", "_INBOX.>"]


def spec_text(extra_user_lines: str = "", alice_sub: str = '["chat.>", "_INBOX.>"]') -> str:
    users = "\n".join(f'      - {{name: u{i}, allow_sub: [room.{i}, "_INBOX.>"]}}' for i in range(16))
    nodes = "\n".join(
        f"  - id: n{i}\n    routes: [{'n' + str(i - 1) if i > 1 else ''}]\n"
        f"    policy: {{subscribe: {{allow: {ROOMS}}}}}".replace("routes: []", "routes: []")
        for i in range(1, 4)
    )
    return f"""\
version: 1
operator: {{name: dchat}}
accounts:
  - name: chat
    limits: {{conn: 1000}}
    signing_keys:
      - role: guest
        allow_sub: ["lobby.>", "_INBOX.>"]
    exports:
      - {{subject: "news.>", type: stream}}
    users:
      - {{name: alice, allow_sub: {alice_sub}}}
      - {{name: bob, allow_pub: ["chat.>"]}}
      - {{name: visitor, role: guest}}
{users}
{extra_user_lines}
  - name: feeds
    imports:
      - {{account: chat, subject: "news.>", type: stream}}
    users:
      - {{name: reader, allow_sub: ["news.>", "_INBOX.>"]}}
nodes:
{nodes}
"""


def write_spec(tmp_path, text, name="network.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


async def test_spec_network_on_real_nodes(tmp_path, supervised_factory):
    store = Store(tmp_path / "home")
    spec = provision.load_spec(write_spec(tmp_path, spec_text()))
    r = provision.apply(store, spec)
    assert r.written_users == 20
    assert [f for f in validate_store(store) if f.level == "error"] == []
    sup = supervised_factory(store)
    for nid in ("n1", "n2", "n3"):
        sup(nid)

    def creds(acc, u):
        return store.creds_path("dchat", acc, u)

    errors = []
    alice = await connect(url(store, "n1"), creds("chat", "alice"), errors=errors)
    bob = await connect(url(store, "n3"), creds("chat", "bob"), errors=errors)
    reader = await connect(url(store, "n3"), creds("feeds", "reader"), errors=errors)
    visitor = await connect(url(store, "n2"), creds("chat", "visitor"), errors=errors)
    u3 = await connect(url(store, "n2"), creds("chat", "u3"), errors=errors)
    a_sub = await alice.subscribe("chat.x")
    r_sub = await reader.subscribe("news.today")
    v_sub = await visitor.subscribe("lobby.main")
    await visitor.subscribe("chat.x")  # not in the guest role
    u3_ok = await u3.subscribe("room.3")
    await u3.subscribe("room.4")  # u3 may only listen to room.3
    for nc in (alice, reader, visitor, u3):
        await nc.flush()
    await asyncio.sleep(0.5)  # interest crosses the routes
    await bob.publish("chat.x", b"hi alice")
    await bob.publish("lobby.main", b"no")  # bob may publish to chat.> only
    await alice.publish("news.today", b"headline")  # chat exports news.>, feeds imports it
    await alice.publish("lobby.main", b"welcome")
    await alice.publish("room.3", b"for u3")
    assert (await a_sub.next_msg(timeout=3)).data == b"hi alice"
    assert (await r_sub.next_msg(timeout=3)).data == b"headline"
    assert (await v_sub.next_msg(timeout=3)).data == b"welcome"
    assert (await u3_ok.next_msg(timeout=3)).data == b"for u3"
    await asyncio.sleep(0.2)
    joined = " ".join(errors)
    assert 'publish to "lobby.main"' in joined
    assert 'subscription to "chat.x"' in joined and 'subscription to "room.4"' in joined
    for nc in (alice, bob, reader, visitor, u3):
        await nc.close()


def test_apply_twice_changes_nothing_and_rewrites_no_file(tmp_path):
    store = Store(tmp_path / "home")
    spec = provision.load_spec(write_spec(tmp_path, spec_text()))
    provision.apply(store, spec)
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.home.rglob("*") if p.is_file()}
    r = provision.apply(store, spec)
    assert not r.plan.has_changes and r.written_users == 0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.home.rglob("*") if p.is_file()} == files


def test_one_user_change_reissues_only_that_user(tmp_path):
    store = Store(tmp_path / "home")
    provision.apply(store, provision.load_spec(write_spec(tmp_path, spec_text())))
    before = snapshot(store.home)
    changed = provision.load_spec(
        write_spec(tmp_path, spec_text(alice_sub='["chat.>", "room.9", "_INBOX.>"]'), "v2.yaml")
    )
    p = provision.plan(store, changed)
    assert [(c.action, c.kind, c.name) for c in p.changes] == [("reissue", "user", "chat/alice")]
    r = provision.apply(store, changed)
    after = snapshot(store.home)
    diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert diff == [
        "keys/creds/dchat/chat/alice.creds",
        "provision-state.json",
        "stores/dchat/accounts/chat/users/alice.jwt",
    ], diff
    assert store.user("chat", "alice").claims.permissions.sub.allow == ["chat.>", "room.9", "_INBOX.>"]
    assert r.written_users == 1


def test_drift_is_reported_and_removed_users_are_revoked(tmp_path):
    store = Store(tmp_path / "home")
    path = write_spec(tmp_path, spec_text())
    provision.apply(store, provision.load_spec(path))
    admin.edit_user(store, "chat", "bob", changes=admin.UserChanges(allow_sub=["everything.>"]))
    p = provision.plan(store, provision.load_spec(path))
    assert [(c.action, c.name) for c in p.changes] == [("drift", "chat/bob")]
    provision.apply(store, provision.load_spec(path))
    assert store.user("chat", "bob").claims.permissions.sub.allow == []
    smaller = spec_text().replace('      - {name: u15, allow_sub: [room.15, "_INBOX.>"]}\n', "")
    spec2 = provision.load_spec(write_spec(tmp_path, smaller, "v2.yaml"))
    kept = provision.plan(store, spec2, keep_removed=True)
    assert [(c.action, c.name) for c in kept.changes] == [("drift", "chat/u15")]
    u15_key = store.user("chat", "u15").public_key
    p = provision.plan(store, spec2)
    assert [(c.action, c.name) for c in p.changes] == [("revoke", "chat/u15")]
    provision.apply(store, spec2)
    assert u15_key in store.account("chat").claims.revocations
    assert "u15" not in store.user_names("chat")


def _invalid():
    good = spec_text()
    return [
        (
            "unknown field",
            good.replace("limits: {conn: 1000}", "limits: {conn: 1000, colour: 3}"),
            "accounts[0].limits.colour: unknown field",
        ),
        (
            "bad subject",
            good.replace('allow_pub: ["chat.>"]', 'allow_pub: ["chat..x"]'),
            "accounts[0].users[1].allow_pub[0]: empty token",
        ),
        ("duplicate user", good.replace("{name: u2,", "{name: u1,"), "duplicate user 'u1'"),
        ("unknown role", good.replace("role: guest}", "role: admin}"), "unknown signing key role 'admin'"),
        (
            "port clash",
            good.replace("  - id: n2\n", "  - id: n2\n    client_port: 4333\n").replace(
                "  - id: n3\n", "  - id: n3\n    client_port: 4333\n"
            ),
            "port 4333 clashes with nodes[1].client_port",
        ),
        (
            "missing env",
            good.replace("name: dchat}", 'name: "${DCHAT_SPEC_NOT_SET}"}'),
            "environment variable DCHAT_SPEC_NOT_SET is not set",
        ),
    ]


@pytest.mark.parametrize("name, text, message", _invalid(), ids=[i[0] for i in _invalid()])
def test_invalid_specs_name_file_line_and_field(tmp_path, name, text, message, capsys):
    from dchat_ops._cli.output import run_cli

    home = tmp_path / "home"
    path = write_spec(tmp_path, text)
    code = run_cli(cli, ["--home", str(home), "apply", "-f", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{path}:" in err and message in err, err
    line = int(err.split(f"{path}:")[1].split(":")[0])
    assert line > 1
    assert not home.exists()  # nothing applied


def test_env_substitution_and_cli_exit_codes(tmp_path, monkeypatch, capsys):
    from dchat_ops._cli.output import run_cli

    monkeypatch.setenv("DCHAT_OPERATOR", "dchat")
    path = write_spec(tmp_path, spec_text().replace("name: dchat}", 'name: "${DCHAT_OPERATOR}"}'))
    home = str(tmp_path / "home")
    assert run_cli(cli, ["--home", home, "plan", "-f", str(path), "--detailed-exitcode"]) == 3
    assert run_cli(cli, ["--home", home, "apply", "-f", str(path), "--json"]) == 0
    capsys.readouterr()
    assert run_cli(cli, ["--home", home, "plan", "-f", str(path), "--detailed-exitcode", "--json"]) == 0
    assert '"changes": []' in capsys.readouterr().out


def test_spec_export_round_trips(tmp_path):
    store = Store(tmp_path / "home")
    provision.apply(store, provision.load_spec(write_spec(tmp_path, spec_text())))
    text = provision.dump_spec(provision.export_spec(store))
    exported = provision.parse_spec(text, tmp_path / "exported.yaml")
    assert not provision.plan(store, exported).has_changes


# --- what plan accepts, apply accepts -------------------------------------------------------------------

_PLAN_REFUSES = [
    (
        "system account in accounts",
        "accounts:\n  - {name: SYS}\n  - {name: chat}\n",
        2,
        "need different names",
    ),
    ("host not a host", 'nodes:\n  - {id: n1, host: "not a host"}\n', 2, "not an IP address or a host name"),
    ("advertise with a space", 'nodes:\n  - {id: n1, advertise: "x y"}\n', 2, "not an IP address or a host name"),
    ("advertise port out of range", 'nodes:\n  - {id: n1, advertise: "a.example:99999"}\n', 2, "out of range"),
    (
        "user named like a node",
        "accounts:\n  - name: chat\n    users:\n      - {name: n1, allow_sub: [foo]}\nnodes:\n  - {id: n1}\n",
        6,
        "rename the user or the node",
    ),
    ("gateway TLS on a spec node", "nodes:\n  - {id: n1, tls: {gateway: true}}\n", 2, "no gateway listener"),
    ("leafnode TLS on a spec node", "nodes:\n  - {id: n1, tls: {leafnode: true}}\n", 2, "no leafnode listener"),
]


@pytest.mark.parametrize("name, text, line, message", _PLAN_REFUSES, ids=[c[0] for c in _PLAN_REFUSES])
def test_plan_refuses_what_apply_would_reject(tmp_path, name, text, line, message, capsys):
    from dchat_ops._cli.output import run_cli

    home = str(tmp_path / "home")
    path = write_spec(tmp_path, text, "s.yaml")
    code = run_cli(cli, ["--home", home, "plan", "-f", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{path}:{line}:" in err and message in err, err
    assert not (tmp_path / "home").exists()


def test_user_named_like_a_node_of_the_stores_default_account_is_refused(tmp_path):
    # the node names no account: its user goes to the store's default account, not the spec's first one
    store = Store(tmp_path / "home")
    admin.init(store)  # default account: chat
    text = "accounts:\n  - {name: other}\n  - name: chat\n    users:\n      - {name: n1}\nnodes:\n  - {id: n1}\n"
    spec = provision.load_spec(write_spec(tmp_path, text, "s.yaml"))
    with pytest.raises(provision.SpecError, match=r"s\.yaml:7: nodes\[0\]\.id: .*rename the user or the node"):
        provision.plan(store, spec)


def test_spec_tls_without_a_ca_plans_and_applies(tmp_path):
    from dchat_ops._cli.output import run_cli

    home = str(tmp_path / "home")
    path = write_spec(tmp_path, "nodes:\n  - {id: n1, tls: {client: true}}\n", "s.yaml")
    assert run_cli(cli, ["--home", home, "plan", "-f", str(path)]) == 0
    assert run_cli(cli, ["--home", home, "apply", "-f", str(path)]) == 0
    assert run_cli(cli, ["--home", home, "plan", "-f", str(path), "--detailed-exitcode"]) == 0
    store = Store(tmp_path / "home")
    from dchat_ops.config import nodes, pki

    assert pki.ca_paths(store)[1].is_file() and pki.cert_paths(store, "n1", "server")[1].is_file()
    assert nodes.render_node(store, "n1").is_file()


def test_spec_system_account_name_is_made_and_kept(tmp_path):
    store = Store(tmp_path / "home")
    spec = provision.parse_spec("operator: {name: dchat, system_account: SYSTEM}\naccounts:\n  - {name: chat}\n")
    provision.apply(store, spec)
    op = store.operator()
    assert store.find_account(op.claims.system_account).name == "SYSTEM"
    assert not provision.plan(store, spec).has_changes
    other = provision.parse_spec("operator: {name: dchat, system_account: SYS2}\naccounts:\n  - {name: chat}\n")
    with pytest.raises(provision.SpecError, match="cannot be renamed"):
        provision.plan(store, other)
