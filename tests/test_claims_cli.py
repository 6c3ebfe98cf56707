"""Account claims from the command line, against real nats-servers: subject mappings route (by weight),
default permissions apply to users without their own, a role's template change takes effect on a running
server, ``edit operator --strict`` migrates a store so its users still connect; and every bad value is one
line, exit 2, nothing written."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config.node import NodeFile
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import close_quietly, connect, refused


def ops(store: Store, *args: str) -> int:
    return run_cli(cli, ["--home", str(store.home), *args])


def errors_of(store: Store) -> list[str]:
    return [f"{f.entity}: {f.message}" for f in validate_store(store) if f.level == "error"]


def node_url(store: Store, nid: str) -> str:
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


async def count(url: str, creds, subjects: list[str], publish: str, n: int) -> dict[str, int]:
    """Subscribe to ``subjects``, publish ``n`` messages to ``publish``: how many arrived on each subject."""
    nc = await connect(url, creds)
    try:
        got = dict.fromkeys(subjects, 0)
        subs = {s: await nc.subscribe(s) for s in subjects}
        await nc.flush()
        for i in range(n):
            await nc.publish(publish, str(i).encode())
        await nc.flush()
        for s, sub in subs.items():
            while True:
                try:
                    await sub.next_msg(timeout=0.5)
                except asyncio.TimeoutError:
                    break
                got[s] += 1
        return got
    finally:
        await close_quietly(nc)


async def violation(url: str, creds, action: str, subject: str) -> bool:
    """True when the server answers a publish or subscribe to ``subject`` with a permissions violation."""
    errors: list[str] = []
    nc = await connect(url, creds, errors=errors)
    try:
        if action == "pub":
            await nc.publish(subject, b"x")
        else:
            await nc.subscribe(subject)
        await nc.flush()
        for _ in range(40):
            if any("permissions violation" in e.lower() for e in errors):
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await close_quietly(nc)


# --- subject mappings -------------------------------------------------------------------------------------------


async def test_a_mapping_routes_and_a_weighted_one_splits(store, servers, capsys):
    assert ops(store, "add", "mapping", "--from", "orders.*", "--to", "fulfil.$1") == 0
    capsys.readouterr()
    args = ["--from", "split.*", "--to", "left.{{wildcard(1)}}", "--weight", "50", "--to", "right.$1", "--weight", "50"]
    assert ops(store, "add", "mapping", *args, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["to"] == [{"subject": "left.{{wildcard(1)}}", "weight": 50}, {"subject": "right.$1", "weight": 50}]
    assert ops(store, "describe", "account", "chat") == 0
    assert "mapping      split.* -> left.{{wildcard(1)}} 50%, right.$1 50%" in capsys.readouterr().out
    assert errors_of(store) == []

    url, _ = servers.standalone(store)
    creds = store.creds_path("dchat", "chat", "default")
    got = await count(url, creds, ["orders.7", "fulfil.7"], "orders.7", 5)
    assert got == {"orders.7": 0, "fulfil.7": 5}  # all of it mapped: nothing stays on the source subject
    got = await count(url, creds, ["left.x", "right.x", "split.x"], "split.x", 200)
    assert got["left.x"] + got["right.x"] == 200 and got["split.x"] == 0
    assert got["left.x"] >= 40 and got["right.x"] >= 40  # both take a share (about half each)


async def test_a_mapping_change_is_pushed_to_running_nodes_and_removed_again(store, supervised):
    from dchat_ops.config import nodes

    nodes.add_node(store, "a")
    supervised("a")
    url = node_url(store, "a")
    creds = store.creds_path("dchat", "chat", "default")
    assert ops(store, "add", "mapping", "--from", "in.*", "--to", "out.$1", "--weight", "100") == 0
    assert await count(url, creds, ["out.1"], "in.1", 3) == {"out.1": 3}
    assert ops(store, "rm", "mapping", "--from", "in.*") == 0
    assert store.account("chat").claims.mappings == {}
    assert await count(url, creds, ["out.1", "in.1"], "in.1", 3) == {"out.1": 0, "in.1": 3}


def test_weights_add_up_per_cluster_and_a_destination_is_replaced(store):
    assert ops(store, "add", "mapping", "--from", "a", "--to", "b", "--weight", "60", "--cluster", "east") == 0
    assert ops(store, "add", "mapping", "--from", "a", "--to", "c", "--weight", "60", "--cluster", "west") == 0
    assert ops(store, "add", "mapping", "--from", "a", "--to", "b", "--weight", "70", "--cluster", "east") == 0
    assert store.account("chat").claims.mappings["a"] == [
        {"subject": "c", "weight": 60, "cluster": "west"},
        {"subject": "b", "weight": 70, "cluster": "east"},
    ]
    before = snapshot(store.home)
    assert ops(store, "add", "mapping", "--from", "a", "--to", "d", "--weight", "41", "--cluster", "west") == 2
    assert ops(store, "rm", "mapping", "--from", "a", "--to", "nope") == 1
    assert snapshot(store.home) == before
    assert ops(store, "rm", "mapping", "--from", "a", "--to", "b") == 0
    assert store.account("chat").claims.mappings["a"] == [{"subject": "c", "weight": 60, "cluster": "west"}]


# --- default permissions ------------------------------------------------------------------------------------


async def test_default_permissions_apply_to_a_user_with_none_of_its_own(store, servers, capsys):
    admin.add_user(store, "chat", "plain")
    admin.add_user(store, "chat", "own", admin.UserSpec(pub_allow=[">"]))
    args = ["--default-deny-pub", "secret.>", "--default-allow-pub", "chat.>,secret.>", "--json"]
    assert ops(store, "edit", "account", "chat", *args) == 0
    dp = json.loads(capsys.readouterr().out)["claims"]["nats"]["default_permissions"]
    assert dp == {"pub": {"allow": ["chat.>", "secret.>"], "deny": ["secret.>"]}, "sub": {}}
    url, _ = servers.standalone(store)
    plain, own = (store.creds_path("dchat", "chat", u) for u in ("plain", "own"))
    assert await violation(url, plain, "pub", "secret.x")
    assert await violation(url, plain, "pub", "other.x")  # not in the default allow list
    assert not await violation(url, plain, "pub", "chat.x")
    assert not await violation(url, own, "pub", "secret.x")  # its own permissions: the defaults do not apply

    assert ops(store, "edit", "account", "chat", "--rm-default", "secret.>") == 0
    assert store.account("chat").claims.default_permissions.pub.to_dict() == {"allow": ["chat.>"]}


# --- role templates -----------------------------------------------------------------------------------------


async def test_a_role_template_edit_takes_a_subject_away_on_a_running_server(store, supervised, capsys):
    from dchat_ops.config import nodes

    assert ops(store, "edit", "account", "chat", "--role", "reader", "--role-allow-sub", "room.>") == 0
    assert ops(store, "add", "user", "bob", "--role", "reader") == 0
    nodes.add_node(store, "a")
    supervised("a")
    url = node_url(store, "a")
    bob = store.creds_path("dchat", "chat", "bob")
    bob_jwt = store.user("chat", "bob").token
    assert not await violation(url, bob, "sub", "room.secret")

    capsys.readouterr()
    assert ops(store, "edit", "role", "chat", "reader", "--deny-sub", "room.secret", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["users"] == ["bob"] and out["push"]["ok"]
    assert out["template"]["sub"] == {"allow": ["room.>"], "deny": ["room.secret"]}
    assert out["taken_away"] == ["room.secret is denied (subscribe)"]
    assert store.user("chat", "bob").token == bob_jwt  # not re-issued: the server applies the template
    assert await violation(url, bob, "sub", "room.secret")
    assert not await violation(url, bob, "sub", "room.open")

    assert ops(store, "edit", "role", "chat", "reader", "--rm", "room.secret", "--allow-sub", "news.>") == 0
    assert not await violation(url, bob, "sub", "room.secret")
    assert not await violation(url, bob, "sub", "news.x")
    assert errors_of(store) == []


def test_edit_role_refuses_what_a_template_cannot_hold(store):
    assert ops(store, "edit", "account", "chat", "--role", "reader") == 0
    before = snapshot(store.home)
    assert ops(store, "edit", "role", "chat", "nobody", "--deny-sub", "x") == 1
    assert ops(store, "edit", "role", "chat", "reader", "--allow-sub", "a..b") == 2
    assert ops(store, "edit", "role", "chat", "reader", "--data", "-5") == 2
    assert ops(store, "edit", "role", "chat", "reader", "--source-network", "10.0.0.1") == 2
    assert ops(store, "edit", "account", "chat", "--disallow-bearer") == 0
    before = snapshot(store.home)
    assert ops(store, "edit", "role", "chat", "reader", "--bearer") == 2
    assert snapshot(store.home) == before


# --- strict signing key usage --------------------------------------------------------------------------------


async def test_strict_migration_leaves_a_valid_store_whose_users_still_connect(store, servers, capsys):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    admin.add_user(store, "chat", "carol")
    revoke.revoke_user(store, "chat", "carol")
    assert store.operator().claims.signing_keys == []
    capsys.readouterr()
    assert ops(store, "edit", "operator", "--strict", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["claims"]["nats"]["strict_signing_key_usage"] is True
    assert any("re-signed account(s)" in m for m in out["migrated"])
    assert errors_of(store) == []
    op = store.operator().claims
    assert len(op.signing_keys) == 1
    for name in ("SYS", "chat"):
        assert store.account(name).claims.issuer == op.signing_keys[0]
    for account, user in (("SYS", "sys"), ("chat", "default"), ("chat", "alice")):
        u = store.user(account, user).claims
        assert u.issuer != store.account(account).public_key and u.issuer_account == store.account(account).public_key

    url, _ = servers.standalone(store)
    for account, user in (("SYS", "sys"), ("chat", "default"), ("chat", "alice")):
        assert await refused(url, store.creds_path("dchat", account, user)) is None, user
    assert await refused(url, store.creds_path("dchat", "chat", "carol")) is not None  # still revoked
    assert ops(store, "edit", "operator", "--strict") == 0  # a second time: nothing to do
    assert "unchanged" in capsys.readouterr().out


def test_strict_migration_is_all_or_nothing(store, monkeypatch):
    from dchat_ops.nsc import accounts

    before = snapshot(store.home)

    def fail(*_a, **_k):
        raise RuntimeError("killed half way")

    monkeypatch.setattr(accounts, "format_creds", fail)
    with pytest.raises(RuntimeError):
        admin.edit_operator(store, strict=True)
    assert snapshot(store.home) == before


# --- JetStream tiers and global limits ----------------------------------------------------------------------


def test_tiers_and_account_wide_jetstream_limits_exclude_each_other(store, capsys):
    assert ops(store, "edit", "account", "chat", "--js-tier", "R1", "--js-mem", "1G", "--js-disk", "2G") == 0
    assert ops(store, "edit", "account", "chat", "--js-tier", "R3", "--js-disk", "5G", "--js-max-ack-pending", "9") == 0
    tiers = store.account("chat").claims.limits.tiers
    assert tiers["R1"].mem_storage == 1 << 30 and tiers["R3"].disk_storage == 5 << 30
    assert tiers["R3"].max_ack_pending == 9
    capsys.readouterr()
    before = snapshot(store.home)
    assert ops(store, "edit", "account", "chat", "--js-mem", "1G") == 2
    err = capsys.readouterr().err
    assert "mutually exclusive" in err and "--js-tier" in err and len(err.strip().splitlines()) == 1
    assert snapshot(store.home) == before
    assert ops(store, "edit", "account", "chat", "--rm-js-tier", "R1", "--rm-js-tier", "R3") == 0
    assert store.account("chat").claims.limits.tiers == {}
    assert ops(store, "edit", "account", "chat", "--js-mem", "1G", "--js-mem-max-stream", "64M") == 0
    before = snapshot(store.home)
    assert ops(store, "edit", "account", "chat", "--js-tier", "R1", "--js-mem", "1G") == 2
    assert "remove the account-wide limits first" in capsys.readouterr().err
    assert snapshot(store.home) == before
    assert errors_of(store) == []


def test_validate_names_tiers_beside_account_wide_limits_and_a_bad_mapping(store):
    with store.edit_account("chat") as claims:  # as another tool might have written it
        claims.limits.jetstream.mem_storage = 1 << 20
        claims.limits.tiers["R1"] = type(claims.limits.jetstream)(mem_storage=1 << 20)
        claims.mappings["a"] = [{"subject": "b", "weight": 80}, {"subject": "c", "weight": 80}]
    errors = errors_of(store)
    assert any("mutually exclusive" in e for e in errors)
    assert any("add up to 160%" in e for e in errors)


# --- bad values -------------------------------------------------------------------------------------------------

BAD = [
    (["add", "mapping", "--from", "a..b", "--to", "c"], "mapping.from"),
    (["add", "mapping", "--from", "a", "--to", "c.*"], "no '*'"),
    (["add", "mapping", "--from", "a.>", "--to", "c"], "must too"),
    (["add", "mapping", "--from", "a.*", "--to", "c.$2"], "names wildcard 2"),
    (["add", "mapping", "--from", "a.*", "--to", "c.{{nope(1)}}"], "unknown function"),
    (["add", "mapping", "--from", "a.*", "--to", "c.{{partition(3)}}"], "too few arguments"),
    (["add", "mapping", "--from", "a", "--to", "b", "--weight", "0"], "1-100"),
    (["add", "mapping", "--from", "a", "--to", "b", "--weight", "101"], "1-100"),
    (["add", "mapping", "--from", "a", "--to", "b", "--weight", "60", "--to", "c", "--weight", "50"], "110%"),
    (["add", "mapping", "--from", "a", "--to", "b", "--to", "b"], "twice"),
    (["add", "mapping", "--from", "a", "--to", "b", "--weight", "50", "--to", "c"], "one --weight per --to"),
    (["add", "mapping", "--from", "a", "--to", "b", "--cluster", "x y"], "cluster"),
    (["edit", "account", "chat", "--js-tier", "R9", "--js-mem", "1G"], "R1-R5"),
    (["edit", "account", "chat", "--js-tier", "", "--js-mem", "1G"], "R1-R5"),
    (["edit", "account", "chat", "--rm-js-tier", "R1"], "no JetStream tier"),
    (["edit", "account", "chat", "--js-max-ack-pending", "-5"], "max_ack_pending"),
    (["edit", "account", "chat", "--js-disk-max-stream", "lots"], "not a size"),
    (["edit", "account", "chat", "--default-allow-pub", "a..b"], "default_allow_pub"),
    (["edit", "account", "chat", "--default-deny-sub", "x y z"], "default_deny_sub"),
    (["edit", "account", "chat", "--info-url", "ftp://x"], "info_url"),
    (["edit", "account", "chat", "--info-url", "https://"], "info_url"),
    (["edit", "account", "chat", "--conn", "5", "--info-url", "nope"], "info_url"),  # nothing of it goes in
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_one_line_exit_2_and_writes_nothing(store, capsys, args, message):
    before = snapshot(store.home)
    code = ops(store, *args)
    out, err = capsys.readouterr()
    assert code == 2, (args, err)
    assert message in err, err
    assert "Traceback" not in err and out == ""
    assert snapshot(store.home) == before


def test_info_url_is_set_and_removed(store, capsys):
    assert ops(store, "edit", "account", "chat", "--info-url", "https://example.com/chat") == 0
    assert store.account("chat").claims.info_url == "https://example.com/chat"
    assert ops(store, "describe", "account", "chat") == 0
    assert "info url     https://example.com/chat" in capsys.readouterr().out
    assert ops(store, "edit", "account", "chat", "--info-url", "") == 0
    assert store.account("chat").claims.info_url == ""


def test_strict_is_refused_where_the_operator_seed_is_not(store, capsys):
    op = store.operator().claims
    store.key_path(op.subject).unlink()
    before = snapshot(store.home)
    assert ops(store, "edit", "operator", "--strict") == 1
    err = capsys.readouterr().err
    assert "operator identity seed" in err and len(err.strip().splitlines()) == 1
    assert snapshot(store.home) == before


async def test_a_jetstream_tier_is_what_a_real_server_enforces(store, supervised):
    from nats.js.api import StorageType
    from nats.js.errors import APIError

    from dchat_ops.config import nodes

    assert ops(store, "edit", "account", "chat", "--js-tier", "R1", "--js-mem", "1M", "--js-streams", "1") == 0
    nodes.add_node(store, "js", cluster=False, jetstream=True)
    supervised("js")
    nc = await connect(node_url(store, "js"), store.creds_path("dchat", "chat", "default"))
    try:
        js = nc.jetstream()
        await js.add_stream(name="ONE", subjects=["one.>"], storage=StorageType.MEMORY, num_replicas=1)
        with pytest.raises(APIError) as e:  # the tier allows one stream
            await js.add_stream(name="TWO", subjects=["two.>"], storage=StorageType.MEMORY, num_replicas=1)
        assert "maximum number of streams" in str(e.value).lower()
    finally:
        await close_quietly(nc)
