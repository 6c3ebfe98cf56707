"""Removing a node (`node rm`, and a spec that no longer names a node): the node is stopped, its files
go, its user is revoked on the running nodes, the nodes that followed it are re-rendered; refused
while leaf nodes hang on it.  Removing a user (`rm user`: revoked everywhere by default), and
`expirations`, which lists what expires soon or is not valid yet."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil

import pytest
from conftest import snapshot

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import list_nodes, node_path
from dchat_ops.config.nodes import client_url, run_dir
from dchat_ops.errors import ApplyError
from dchat_ops.natsbin import free_port
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import remove_node
from dchat_ops.runtime.client import connect
from dchat_ops.runtime.supervisor import Supervisor


def cli_run(store: Store, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, ["--home", str(store.home), *args])
    return code, out.getvalue(), err.getvalue()


def refused_on(url: str, creds) -> bool:
    """True when the server refuses a connection with ``creds``; False when it accepts it."""

    async def attempt() -> bool:
        try:
            nc = await connect(url, str(creds), max_reconnect_attempts=0, allow_reconnect=False)
        except Exception as exc:  # nats-py raises its own errors for a refused authorization
            # refused, not unreachable: the server says why, or (a race in the client) resets the connection
            # right after saying it, before the client has read the reason
            assert "authorization" in str(exc).lower() or "reset by peer" in str(exc).lower(), exc
            return True
        await nc.close()
        return False

    return asyncio.run(attempt())


def test_node_rm_stops_the_node_revokes_its_user_and_removes_its_files(store, supervised, tmp_path):
    nodes.add_node(store, "a")
    nodes.add_node(store, "b", seed_routes=[nodes.route_url(store, "a")])
    sup_a = supervised("a")
    sup_b = supervised("b")
    op = store.current_operator()
    kept = tmp_path / "b.creds"
    shutil.copy(store.creds_path(op, "chat", "b"), kept)
    assert not refused_on(client_url(sup_a.node()), kept)  # b's user may connect to a before

    code, out, err = cli_run(store, "node", "rm", "b")
    assert code == 0, err
    assert "removed node b (stopped it first)" in out
    assert "revoked on every running node" in out
    assert not sup_b.running()
    assert not node_path(store, "b").exists() and not run_dir(store, "b").exists()
    assert not store.user_jwt_path(op, "chat", "b").exists()
    assert not store.creds_path(op, "chat", "b").exists()
    assert list_nodes(store) == ["a"]
    assert refused_on(client_url(sup_a.node()), kept)  # a copy of its creds is refused where nodes still run


def test_node_rm_keep_user_and_a_hub_with_leaves_is_refused(store, supervised):
    port = free_port()
    nodes.add_node(store, "hub", cluster=False, leaf_port=port)
    nodes.add_node(store, "leaf", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{port}"])
    before = snapshot(store.home)
    with pytest.raises(ApplyError) as e:
        remove_node(store, "hub")
    assert "hub of leaf node(s) leaf" in str(e.value)
    assert snapshot(store.home) == before  # nothing changed
    code, _, err = cli_run(store, "node", "rm", "hub")
    assert code == 1 and "remove or move them first" in err and "Traceback" not in err

    r = remove_node(store, "leaf", keep_user=True)
    assert not r.user_revoked and not r.stopped
    assert r.followers == ["hub"]  # the hub imported the leaf's subjects: re-rendered
    assert store.user_jwt_path(store.current_operator(), "chat", "leaf").exists()
    code, out, _ = cli_run(store, "node", "rm", "hub")
    assert code == 0 and "removed node hub" in out and "(stopped" not in out


def test_bad_node_ids_for_node_rm(store):
    code, _, err = cli_run(store, "node", "rm", "nope")
    assert code == 1 and "nope" in err and "Traceback" not in err
    code, _, err = cli_run(store, "node", "rm", "bad\nid")
    assert code == 2 and "Traceback" not in err


SPEC = """\
version: 1
operator: {{name: dchat}}
accounts:
  - name: chat
    users:
      - {{name: alice}}
nodes:
  - id: n1
{more}"""


def test_a_node_dropped_from_the_spec_is_removed_or_kept(tmp_path, supervised_factory):
    store = Store(tmp_path / "home")
    both = tmp_path / "both.yaml"
    both.write_text(SPEC.format(more="  - id: n2\n    routes: [n1]\n"))
    one = tmp_path / "one.yaml"
    one.write_text(SPEC.format(more=""))
    r = provision.apply(store, provision.load_spec(both))
    assert not r.error and list_nodes(store) == ["n1", "n2"]
    up = supervised_factory(store)
    up("n1")
    n2 = up("n2")
    creds = tmp_path / "n2.creds"
    shutil.copy(store.creds_path(store.current_operator(), "chat", "n2"), creds)

    kept = provision.plan(store, provision.load_spec(one), keep_removed=True)
    assert [(c.action, c.kind, c.name) for c in kept.changes] == [("drift", "node", "n2")]
    p = provision.plan(store, provision.load_spec(one))
    assert [(c.action, c.kind, c.name) for c in p.changes] == [("remove", "node", "n2")]

    r = provision.apply(store, provision.load_spec(one))
    assert not r.error, r.error
    assert [(n.node, n.outcome) for n in r.nodes if n.outcome == "removed"] == [("n2", "removed")]
    assert not n2.running() and list_nodes(store) == ["n1"]
    assert refused_on(client_url(Supervisor(store, "n1").node()), creds)
    assert not provision.plan(store, provision.load_spec(one)).has_changes  # settled


def test_rm_user_revokes_everywhere_and_deletes_its_files(store, supervised, tmp_path):
    from dchat_ops.nsc import admin

    nodes.add_node(store, "a")
    sup = supervised("a")
    admin.add_user(store, "chat", "bob")
    op = store.current_operator()
    kept = tmp_path / "bob.creds"
    shutil.copy(store.creds_path(op, "chat", "bob"), kept)
    assert not refused_on(client_url(sup.node()), kept)

    code, out, err = cli_run(store, "rm", "user", "bob")
    assert code == 0, err
    assert "removed user chat/bob (revoked)" in out and "revoked on every running node" in out
    assert not store.user_jwt_path(op, "chat", "bob").exists() and not store.creds_path(op, "chat", "bob").exists()
    assert refused_on(client_url(sup.node()), kept)  # a copy of its creds no longer connects
    assert store.account("chat").claims.revocations  # the revocation stays in the account


def test_rm_user_refusals_change_nothing(store):
    nodes.add_node(store, "a")
    before = snapshot(store.home)
    for args, code_wanted, words in (
        (("rm", "user", "a"), 1, "local user of node a"),
        (("rm", "user", "sys", "-a", "SYS"), 1, "system account"),
        (("rm", "user", "nobody"), 1, "nobody"),
        (("rm", "user", "bad\nname"), 2, ""),
    ):
        code, _, err = cli_run(store, *args)
        assert code == code_wanted and words in err and "Traceback" not in err, (args, err)
        assert snapshot(store.home) == before, args


def test_rm_user_no_revoke_only_deletes(store):
    from dchat_ops.nsc import admin

    admin.add_user(store, "chat", "carol")
    code, out, _ = cli_run(store, "rm", "user", "carol", "--no-revoke")
    assert code == 0 and "(not revoked)" in out and "copies of its creds still work" in out
    assert store.account("chat").claims.revocations == {}


def test_expirations_lists_what_expires_within_the_window_and_what_is_not_valid_yet(store):
    import json

    for args in (
        ("add", "user", "soon", "--expiry", "2d"),
        ("add", "user", "later", "--expiry", "60d"),
        ("add", "user", "notyet", "--start", "10d"),
        ("add", "user", "forever"),
    ):
        assert cli_run(store, *args)[0] == 0, args
    code, out, err = cli_run(store, "expirations", "--within", "7d", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["name"], r["state"]) for r in rows] == [("soon", "expires"), ("notyet", "not yet valid")]
    assert all(r["kind"] == "user" and r["account"] == "chat" for r in rows)
    code, out, _ = cli_run(store, "expirations", "--within", "90d")
    assert code == 0
    lines = out.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["user chat/soon", "user chat/notyet", "user chat/later"]
    assert "not valid until" in lines[1]
    code, _, err = cli_run(store, "expirations", "--within", "soon")
    assert code == 2 and "--within" in err and "Traceback" not in err
    code, out, err = cli_run(store, "validate")
    assert code == 0, err  # not valid yet is a state, like expired: a warning with the date
    assert "warning: user chat/notyet" in out + err and "not valid before" in out + err


def test_describe_names_the_account_the_times_and_what_an_account_exports_and_imports(store, tmp_path):
    import json

    from dchat_ops.nsc import admin
    from dchat_ops.nsc.claims import Export, Import

    assert cli_run(store, "add", "user", "later", "--start", "10d")[0] == 0
    code, out, _ = cli_run(store, "describe", "user", "later")
    assert code == 0
    assert "  account      chat" in out and "not before" in out and "NOT YET VALID" in out
    d = json.loads(cli_run(store, "describe", "user", "later", "--json")[1])
    assert d["account"] == "chat" and d["validity"] == "not yet valid" and d["not_before"]

    admin.add_account(store, "feeds")
    with store.edit_account("feeds") as claims:
        claims.exports.append(Export("news.>", "stream", "news"))
    feeds_key = store.account("feeds").public_key
    with store.edit_account("chat") as claims:
        claims.imports.append(Import("news.>", feeds_key, "stream", "news", local_subject="feeds.news.>"))
    out = cli_run(store, "describe", "account", "feeds")[1]
    assert "export       news.> (stream) news" in out
    out = cli_run(store, "describe", "account", "chat")[1]
    assert f"import       news.> as feeds.news.> (stream) from {feeds_key}" in out

    old = tmp_path / "old.creds"
    admin.add_user(store, "chat", "brief", admin.UserSpec(expires=int(__import__("time").time()) + 1))
    shutil.copy(store.creds_path(store.current_operator(), "chat", "brief"), old)
    __import__("time").sleep(1.1)
    code, out, _ = cli_run(store, "describe", "file", str(old))
    assert code == 0 and "EXPIRED" in out


def test_a_user_of_a_role_shows_the_roles_template_in_describe_and_perms_show(store):
    import json

    assert cli_run(store, "edit", "account", "chat", "--role", "reader", "--role-allow-sub", "news.>")[0] == 0
    assert cli_run(store, "add", "user", "r1", "--role", "reader")[0] == 0
    out = cli_run(store, "describe", "user", "r1")[1]
    assert "role         reader" in out and "sub allow    news.>" in out
    code, out, _ = cli_run(store, "perms", "show", "--user", "r1")
    assert code == 0 and "from role reader" in out and "subscribe: allow ['news.>']" in out
    d = json.loads(cli_run(store, "perms", "show", "--user", "r1", "--json")[1])
    assert d["role"] == "reader" and d["subscribe"]["allow"] == ["news.>"]
    out = cli_run(store, "perms", "show", "--user", "default")[1]
    assert "publish: allow (all)" in out and "role" not in out


def test_a_re_issue_in_the_second_of_a_revocation_is_not_covered_by_it_and_says_so(tmp_path):
    from dchat_ops.nsc import admin, revoke

    now = [1_900_000_000]
    store = Store(tmp_path / "h", clock=lambda: now[0])
    admin.init(store)
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    now[0] += 5
    revoke.revoke_all(store, "chat")  # covers every JWT issued until now
    r = admin.edit_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>", "room.x"]))  # the same second
    acc = store.account("chat").claims
    assert not acc.is_revoked(r.entity.public_key, r.entity.claims.issued_at)
    assert r.entity.claims.issued_at > acc.revocations["*"]
    assert any("was revoked" in w for w in r.warnings)


def test_a_reload_after_the_operator_changed_says_to_restart(store, supervised):
    from dchat_ops.config import nodes

    nodes.add_node(store, "a", cluster=False)
    supervised("a")
    assert cli_run(store, "edit", "operator", "--sk")[0] == 0  # a new operator JWT
    code, out, err = cli_run(store, "node", "reload", "a")
    assert code == 1, (out, err)
    assert "takes a changed operator JWT only when it starts" in err and "node down a && dchat-ops node up a" in err
    assert len(err.strip().splitlines()) == 1
