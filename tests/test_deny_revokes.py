"""A permission removal retires the JWT it replaces: creds copied before a deny-sub lose the subject on every node.

The re-issue and the account's revocation of the user's earlier JWTs (revocation time = new iat - 1) are one
unit of work; the account JWT is pushed to every running node once clients that follow their creds file moved
over.  Widening changes revoke nothing.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from click.testing import CliRunner
from conftest import snapshot, wait_for

from dchat_ops._cli.main import cli
from dchat_ops.config.node import NodeFile, inbox_prefix
from dchat_ops.nsc import admin, supersede
from dchat_ops.nsc.claims import UserClaims
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.jwt import decode
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit, apply_user_edit
from dchat_ops.permissions.policy import taken_away
from dchat_ops.runtime.client import ManagedClient, close_quietly, connect, refused
from dchat_ops.runtime.interest import route_peers
from dchat_ops.runtime.supervisor import chain

# --- what counts as taking something away --------------------------------------------------------------


@pytest.mark.parametrize(
    "before, after, expected",
    [
        ({"allow": ["a.x"]}, {"allow": ["a.x", "a.y"]}, []),  # allow added
        ({"allow": ["a.x"]}, {"allow": ["a.>"]}, []),  # replaced by a wildcard that covers it
        ({"allow": ["a.x"], "deny": ["a.y"]}, {"allow": ["a.x"]}, []),  # deny removed
        ({"allow": ["a.x"]}, {"allow": []}, []),  # no allow list: everything not denied
        ({"allow": ["a.x q"]}, {"allow": ["a.*"]}, []),  # a plain entry covers every queue group
        ({"allow": ["a.>"]}, {"allow": ["a.x"]}, ["a.> no longer allowed"]),
        ({"allow": ["a.x", "a.y"]}, {"allow": ["a.x"]}, ["a.y no longer allowed"]),
        ({"allow": ["a.x"]}, {"allow": ["a.x"], "deny": ["a.x.y"]}, ["a.x.y is denied"]),
        ({"allow": [], "deny": ["a.>"]}, {"deny": ["a.>", "a.x"]}, []),  # already denied by a.>
        ({"allow": []}, {"allow": ["a.x"]}, ["only a.x allowed (before: everything not denied)"]),
        ({"allow": ["a.*"]}, {"allow": ["a.* q"]}, ["a.* no longer allowed"]),
        ({"allow": [">"]}, {"allow": []}, []),  # both allow everything
        ({"allow": []}, {"allow": [">", "a.x"]}, []),
        ({"allow": [">"]}, {"allow": ["a.>"]}, ["only a.> allowed (before: everything not denied)"]),
    ],
)
def test_what_a_change_of_the_lists_takes_away(before, after, expected):
    assert taken_away(before, after) == expected


def pinned(store: Store) -> int:
    t = store.account("chat").claims.issued_at
    store.clock = lambda: t
    return t


def revoked(store: Store, user: str, token_iat: int) -> bool:
    acc = store.account("chat").claims
    return acc.is_revoked(store.user("chat", user).public_key, token_iat)


def test_a_deny_revokes_the_earlier_jwts_and_not_the_new_one_also_twice_in_one_second(store):
    pinned(store)
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    iats = [store.user("chat", "alice").claims.issued_at]
    for subject in ("chat.secret", "chat.other"):  # two removals within the same (pinned) second
        r = admin.edit_user(store, "chat", "alice", changes=admin.UserChanges(deny_sub=[subject]))
        iats.append(r.entity.claims.issued_at)
        assert r.taken_away == [f"{subject} is denied (subscribe)"]
        assert r.revoked_at == iats[-1] - 1
        assert r.superseded and r.superseded != r.entity.token
    assert iats[1] == iats[0] + 1 and iats[2] == iats[1] + 1  # same second: each iat one more than the last
    assert [revoked(store, "alice", i) for i in iats] == [True, True, False]
    assert store.account("chat").claims.revocations == {store.user("chat", "alice").public_key: iats[1]}


def test_widening_and_other_changes_revoke_nothing(store):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.x"], sub_deny=["chat.x.y"]))
    account = store.account("chat").token
    for changes in (
        admin.UserChanges(allow_sub=["chat.y"]),
        admin.UserChanges(add_tags=["ops"]),
        admin.UserChanges(remove=["chat.x.y"]),  # a deny taken off
    ):
        r = admin.edit_user(store, "chat", "alice", changes=changes)
        assert r.changed and r.revoked_at == 0 and r.taken_away == []
    assert store.account("chat").token == account  # the account JWT was not even re-signed


@pytest.mark.parametrize(
    "spec, change, phrase",
    [
        (admin.UserSpec(), admin.UserSpec(subs=10), "subs limit lowered"),
        (admin.UserSpec(), admin.UserSpec(source_networks=["10.0.0.0/8"]), "source networks narrowed"),
        (admin.UserSpec(pub_allow=["a.>"]), admin.UserSpec(pub_allow=["a.x"]), "a.> no longer allowed (publish)"),
        (admin.UserSpec(), admin.UserSpec(expires=4102444800), "expires earlier"),
    ],
)
def test_other_removals_also_revoke(store, spec, change, phrase):
    admin.add_user(store, "chat", "alice", spec)
    r = admin.edit_user(store, "chat", "alice", change)
    assert phrase in r.taken_away and r.revoked_at


def test_user_jwt_creds_and_revocation_are_one_unit_of_work(store, monkeypatch):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    before = snapshot(store.home)

    def fail(*_a, **_k):
        raise RuntimeError("the account could not be re-signed")

    monkeypatch.setattr(admin, "retire", fail)
    with pytest.raises(RuntimeError):
        admin.edit_user(store, "chat", "alice", changes=admin.UserChanges(deny_sub=["chat.secret"]))
    assert snapshot(store.home) == before  # the user's JWT and creds went back with the account


def test_edit_user_cli_says_what_was_revoked(store):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    run = CliRunner().invoke
    r = run(cli, ["--home", str(store.home), "edit", "user", "alice", "--allow-sub", "room.x", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["revoked_at"] == 0
    r = run(cli, ["--home", str(store.home), "edit", "user", "alice", "--deny-sub", "chat.secret"])
    assert r.exit_code == 0, r.output
    assert "its JWTs issued before this one are revoked (chat.secret is denied (subscribe))" in r.output
    assert "no node is running" in r.output


# --- on a running 3-node cluster -----------------------------------------------------------------------


def claims_of(creds_text: str) -> UserClaims:
    return decode(parse_creds(creds_text).jwt, UserClaims)


def url(store: Store, nid: str) -> str:
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


def node_creds(store: Store, nid: str) -> str:
    return store.creds_path("dchat", "chat", nid).read_text()


@pytest.fixture
def three(store):
    ids = ["a", "b", "c"]
    sups = chain(store, ids, start=False)
    for subject in ("room.secret", "room.ok"):
        apply_node_edit(store, "b", "allow-sub", subject)  # saved for the start
    apply_node_edit(store, "a", "allow-sub", "room.secret")
    try:
        for sup in sups:
            sup.up()
        assert wait_for(lambda: all(len(route_peers(s.monitor_url)[1]) == 2 for s in sups))
        yield ids
    finally:
        for sup in sups:
            sup.down()


async def receives(store: Store, nid: str, creds_text: str, subject: str, publisher) -> str:
    """Subscribe on node ``nid`` with ``creds_text``: "refused" when it cannot connect, "denied" when the
    subscription is refused, "silent" when nothing arrives, "received" when a message does."""
    errors: list[str] = []
    reason = await refused(url(store, nid), creds_text=creds_text)
    if reason is not None:
        return "refused"
    nc = await connect(url(store, nid), creds_text=creds_text, errors=errors, inbox_prefix=inbox_prefix(nid))
    try:
        got = asyncio.Event()

        async def on_msg(_msg):
            got.set()

        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        await asyncio.sleep(0.1)  # the interest reaches the publisher's node

        def denied() -> bool:
            return any("permissions violation" in e.lower() for e in errors)

        for _ in range(20):
            if denied():
                return "denied"
            await publisher.publish(subject, b"x")
            await publisher.flush()
            try:
                await asyncio.wait_for(got.wait(), 0.05)
                return "received"
            except asyncio.TimeoutError:
                continue
        return "denied" if denied() else "silent"
    finally:
        await close_quietly(nc)


async def test_creds_copied_before_deny_sub_lose_the_subject_on_every_node(store, three):
    # node a allows room.secret too: a publisher there reaches a subscriber there, whoever's creds it uses
    pub = await connect(url(store, "a"), store.creds_path("dchat", "chat", "default"))
    old = node_creds(store, "b")
    # the node's own client follows its creds file and keeps working across the change
    own = await ManagedClient(url(store, "b"), store.creds_path("dchat", "chat", "b"), inbox_prefix="_INBOX_b").start()
    own_got: list[bytes] = []

    async def on_own(msg):
        own_got.append(msg.data)

    await own.subscribe("room.ok", cb=on_own)
    # a copy in use on another node before the change: it receives the subject there
    thief_errors: list[str] = []
    thief = await connect(url(store, "a"), creds_text=old, errors=thief_errors, inbox_prefix="_INBOX_b")
    thief_got: list[bytes] = []

    async def on_thief(msg):
        thief_got.append(msg.data)

    await thief.subscribe("room.secret", cb=on_thief)
    await thief.flush()
    assert await receives(store, "a", old, "room.secret", pub) == "received"

    account_before = store.account("chat").token
    r = await asyncio.to_thread(apply_node_edit, store, "b", "allow-sub", "room.more")  # widening: nothing revoked
    assert r.outcome == "live"
    assert store.account("chat").token == account_before
    assert not any("revoked" in m for m in r.messages)
    mid = node_creds(store, "b")
    assert await refused(url(store, "c"), creds_text=old) is None

    # in a thread, as if from another process: the node's own client runs on meanwhile
    r = await asyncio.to_thread(apply_node_edit, store, "b", "deny-sub", "room.secret")
    assert r.outcome == "live", r.messages
    # it moved to the new creds before the revocation went out: no connection of it was closed
    assert not any("were closed" in m for m in r.messages), r.messages
    assert any("its JWTs issued before this one are revoked" in m for m in r.messages)
    assert any("revocation pushed: 3 running server(s)" in m for m in r.messages), r.messages
    new = node_creds(store, "b")

    # the copies are refused on every node, and the connection that used one was closed
    for nid in ("a", "b", "c"):
        for copy in (old, mid):
            assert "authorization violation" in (await refused(url(store, nid), creds_text=copy) or "")
    assert wait_for(lambda: thief.is_closed, timeout=5)
    assert "revoked" in str(thief.last_error).lower()
    n_before = len(thief_got)
    await pub.publish("room.secret", b"after")
    await pub.flush()
    await asyncio.sleep(0.1)
    assert len(thief_got) == n_before

    # the new creds work on every node, without the denied subject
    for nid in ("a", "b", "c"):
        assert await refused(url(store, nid), creds_text=new) is None
    assert await receives(store, "a", new, "room.secret", pub) == "denied"

    # the node's own client moved over to the new creds and still receives
    assert own.swaps >= 1 and not own._client().is_closed
    own_got.clear()
    for _ in range(40):
        await pub.publish("room.ok", b"still")
        await pub.flush()
        await asyncio.sleep(0.05)
        if own_got:
            break
    assert own_got
    await own.close()
    await close_quietly(thief)
    await pub.close()


async def test_two_deny_subs_within_one_second_both_take_effect(store, three):
    # every JWT signed from here on is of one second (or moved forward after it), 30 s ahead of the clock:
    # nats-server takes JWTs issued "in the future"
    t = int(time.time()) + 30
    store.clock = lambda: t
    pub = await connect(url(store, "a"), store.creds_path("dchat", "chat", "default"))
    # a client that follows the creds file, but cannot move in time: the changes below block its event loop
    own = await ManagedClient(url(store, "b"), store.creds_path("dchat", "chat", "b"), inbox_prefix="_INBOX_b").start()
    own_got: list[bytes] = []

    async def on_own(msg):
        own_got.append(msg.data)

    await own.subscribe("_INBOX_b.own", cb=on_own)
    copies = [node_creds(store, "b")]
    for subject in ("room.secret", "room.ok"):
        r = apply_node_edit(store, "b", "deny-sub", subject)
        assert r.outcome == "live" and any("revocation pushed" in m for m in r.messages), r.messages
        copies.append(node_creds(store, "b"))
        if subject == "room.secret":  # the client's connection, closed by this revocation (its loop is blocked)
            assert any(
                "node b: 1 connection(s) still presenting the superseded JWT were closed" in m for m in r.messages
            )
    iats = [claims_of(c).issued_at for c in copies]
    assert iats[1] == t and iats[2] == t + 1  # the second re-issue within the same second
    assert store.account("chat").claims.revocations[claims_of(copies[2]).subject] == t
    for nid in ("a", "b", "c"):
        for copy in copies[:2]:
            assert await refused(url(store, nid), creds_text=copy) is not None
        assert await refused(url(store, nid), creds_text=copies[2]) is None
    assert iats[2] > time.time()  # still ahead of the clock when it was accepted
    assert await receives(store, "c", copies[2], "room.ok", pub) == "denied"
    # closed by the revocation, the client moved to the creds file's new JWT all the same
    for _ in range(100):
        if own.swaps and not own._client().is_closed:
            break
        await asyncio.sleep(0.05)
    for _ in range(40):
        await pub.publish("_INBOX_b.own", b"still")
        await pub.flush()
        await asyncio.sleep(0.05)
        if own_got:
            break
    assert own_got and own.swaps == 1
    await own.close()
    await pub.close()


async def test_a_user_deny_sub_revokes_its_copied_creds_everywhere(store, three):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["room.>"]))
    old = store.creds_path("dchat", "chat", "alice").read_text()
    r = apply_user_edit(store, "chat", "alice", "deny-sub", "room.secret")
    assert any("revocation pushed: 3 running server(s)" in m for m in r.messages), r.messages
    for nid in ("a", "b", "c"):
        assert await refused(url(store, nid), creds_text=old) is not None
        assert await refused(url(store, nid), store.creds_path("dchat", "chat", "alice")) is None
    assert supersede.taken_away(claims_of(old), store.user("chat", "alice").claims) == [
        "room.secret is denied (subscribe)"
    ]


def test_a_removal_that_fails_after_the_reissue_puts_the_account_back_too(store, supervised, monkeypatch):
    from dchat_ops.config import nodes
    from dchat_ops.permissions.apply import ApplyError

    nodes.add_node(store, "a")
    apply_node_edit(store, "a", "allow-sub", "room.x")  # saved for the start
    supervised("a")
    before = {**snapshot(store.stores_dir), **snapshot(store.creds_dir)}

    written = []

    async def fail(self, **_kw):  # runs after the re-issue wrote the JWT, the creds and the revocation
        written.append(Store(store.home).account("chat").claims.revocations)
        raise RuntimeError("the peers could not be read")

    from dchat_ops.runtime.confirm import PeerCheck

    monkeypatch.setattr(PeerCheck, "run", fail)
    with pytest.raises(ApplyError) as e:
        apply_node_edit(store, "a", "deny-sub", "room.x")
    assert "every file was restored" in str(e.value)
    assert written and written[0]  # the revocation was written, then put back with the rest
    assert {**snapshot(store.stores_dir), **snapshot(store.creds_dir)} == before  # user JWT, creds and account
    assert store.account("chat").claims.revocations == {}


# --- provisioning ----------------------------------------------------------------------------------------


def _spec(alice_sub: str) -> str:
    return f"""\
version: 1
operator: {{name: dchat}}
accounts:
  - name: chat
    users:
      - {{name: alice, allow_sub: {alice_sub}}}
      - {{name: bob, allow_sub: ["chat.>"]}}
"""


def test_a_spec_that_narrows_a_user_revokes_its_earlier_jwts(tmp_path):
    from dchat_ops import provision

    store = Store(tmp_path / "home")
    provision.apply(store, provision.parse_spec(_spec('["chat.>", "room.x"]')))
    old = store.user("chat", "alice").claims.issued_at
    account = store.account("chat").token
    provision.apply(store, provision.parse_spec(_spec('["chat.>", "room.x", "room.y"]')))  # widening
    assert store.account("chat").token == account

    narrower = provision.parse_spec(_spec('["chat.>"]'))
    p = provision.plan(store, narrower)
    assert [(c.action, c.name, c.detail) for c in p.changes] == [
        (
            "reissue",
            "chat/alice",
            "permissions or limits changed; its earlier JWTs are revoked "
            "(room.x no longer allowed (subscribe); room.y no longer allowed (subscribe))",
        )
    ]
    provision.apply(store, narrower)
    new = store.user("chat", "alice")
    acc = store.account("chat").claims
    assert acc.revocations == {new.public_key: new.claims.issued_at - 1}
    assert acc.is_revoked(new.public_key, old) and not acc.is_revoked(new.public_key, new.claims.issued_at)
    assert not provision.plan(store, narrower).has_changes


async def test_a_removal_cut_short_before_its_push_is_found_by_validate_and_finished_by_the_rerun(
    store, three, monkeypatch
):
    from dchat_ops.permissions import apply as apply_mod
    from dchat_ops.runtime.push import account_findings

    old = node_creds(store, "b")

    class Killed(BaseException):  # what a kill -9 between the store's commit and the push leaves
        pass

    def killed(*_a, **_kw):
        raise Killed

    monkeypatch.setattr("dchat_ops.runtime.push.push_revocation", killed)
    with pytest.raises(Killed):
        await asyncio.to_thread(apply_node_edit, store, "b", "deny-sub", "room.secret")
    monkeypatch.undo()
    assert b"room.secret" in NodeFile.load(store, "b").path.read_bytes()  # the change is in the store...
    findings = await asyncio.to_thread(account_findings, store)
    assert [(lv, entity) for lv, entity, _ in findings] == [("error", "account chat")]
    assert "run 'dchat-ops push'" in findings[0][2]
    assert await refused(url(store, "a"), creds_text=old) is None  # ...and the old creds still work

    r = await asyncio.to_thread(apply_node_edit, store, "b", "deny-sub", "room.secret")
    assert r.outcome == "unchanged" and any("pushed" in m for m in r.messages), r.messages
    assert await asyncio.to_thread(account_findings, store) == []
    # the push re-rendered every node's config with the new account JWT: that is no lag of a node
    assert await asyncio.to_thread(apply_mod.node_findings, store) == []
    for nid in ("a", "b", "c"):
        assert await refused(url(store, nid), creds_text=old) is not None
    again = await asyncio.to_thread(apply_node_edit, store, "b", "deny-sub", "room.secret")
    assert again.outcome == "unchanged" and again.messages == []  # nothing left to push
