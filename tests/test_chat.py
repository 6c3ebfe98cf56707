"""The chat runtime through real nodes: sealing, groups and key rotation, rooms, rejections, history."""

import asyncio
import base64
import json

import pytest
from conftest import wait_for

from dchat_ops.chat.client import ChatClient, ChatError, ChatIdentity, mail_subject
from dchat_ops.config.node import NodeFile
from dchat_ops.nsc import admin
from dchat_ops.runtime.supervisor import chain, wait_jetstream_leader

USERS = ("alice", "bob", "carol")


@pytest.fixture
def chat_net(store, supervised):
    admin.edit_account(store, "chat", jetstream={"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
    chain(store, list(USERS), jetstream=True, start=False)
    sups = [supervised(u) for u in USERS]
    assert wait_jetstream_leader(sups[0])
    return store


async def online(store, *users, **kw):
    """Each user's client on their own node, with the defaults a person gets (replicas from the cluster)."""
    out = {}
    for u in users:
        out[u] = await ChatClient.on_node(ChatIdentity.load(store, u), store, u, **kw).start()
    return out


async def befriend(clients):
    for a in clients:
        for b in clients:
            if a != b:
                await clients[a].add_friend(b)


async def close(clients):
    for c in clients.values():
        await c.close()


async def test_dm_history_and_first_contact(chat_net):
    c = await online(chat_net, *USERS)
    try:
        await c["alice"].add_friend("bob")
        await c["bob"].add_friend("alice")
        await c["alice"].send_dm("bob", "hi bob")
        m = await c["bob"].next_message(10)
        assert (m.sender, m.body, m.kind, m.request) == ("alice", "hi bob", "dm", False)
        # carol is not bob's friend: her message is verified against the directory and shown as a request
        assert not await c["carol"].knows_me("bob")
        await c["carol"].send_dm("bob", "let me in")  # looks bob up in the directory first
        m = await c["bob"].next_message(10)
        assert (m.sender, m.body, m.request) == ("carol", "let me in", True)
        assert any("carol is not your friend yet" in n for n in c["bob"].notices)
        hist = c["bob"].history.messages("dm:carol")
        assert [(h["direction"], h["body"], h["status"]) for h in hist] == [("in", "let me in", "request")]
        await c["bob"].accept("carol")
        assert await c["carol"].knows_me("bob")
        await c["carol"].send_dm("bob", "thanks")
        assert (await c["bob"].next_message(10)).request is False
        hist = c["bob"].history.messages("dm:alice")
        assert [(h["direction"], h["body"], h["status"]) for h in hist] == [("in", "hi bob", "verified")]
        assert c["alice"].history.messages("dm:bob")[0]["direction"] == "out"
    finally:
        await close(c)


async def test_first_contact_that_does_not_verify_is_kept_until_accepted(chat_net):
    from dchat_ops.nsc.keys import KeyPair

    c = await online(chat_net, *USERS)
    try:
        await c.pop("alice").close()  # alice is offline while carol writes to her
        await c["carol"].send_dm("alice", "first words")
        # and carol's directory entry is replaced by a forged one meanwhile
        genuine = (await c["carol"]._dir.get("carol")).value
        forged = dict(json.loads(genuine), curve_key=KeyPair.generate("curve").public_key)
        await c["carol"]._dir.put("carol", json.dumps(forged).encode())
        c.update(await online(chat_net, "alice"))
        alice = c["alice"]
        for _ in range(200):  # the history is read on the loop's thread
            if alice.history.pending("carol"):
                break
            await asyncio.sleep(0.05)
        assert "not signed by its user key" in alice.history.pending("carol")[0]["reason"]
        assert any("could not be verified" in n and "/accept carol" in n for n in alice.notices)
        assert alice.inbox.empty()
        # the genuine entry is back: accepting shows what was kept
        await c["carol"]._dir.put("carol", genuine)
        kept = await alice.accept("carol")
        assert [(m.sender, m.body, m.request) for m in kept] == [("carol", "first words", False)]
        assert alice.history.pending() == []
    finally:
        await close(c)


async def test_group_key_rotates_when_a_member_leaves(chat_net):
    from dchat_ops.chat.client import MAIL_STREAM, group_subject

    c = await online(chat_net, *USERS)
    try:
        await befriend(c)
        await c["alice"].create_group("team", ["bob", "carol"])
        await c["alice"].send_group("team", "v1 message")
        for u in ("bob", "carol"):  # online members need nothing more: they follow the groups bucket
            assert (await c[u].next_message(10)).body == "v1 message"
        await c["alice"].remove_member("team", "carol")
        assert c["alice"].groups["team"].version == 2
        await c["alice"].send_group("team", "v2 secret")
        assert (await c["bob"].next_message(10)).body == "v2 secret"
        assert await asyncio.to_thread(wait_for, lambda: "team" not in c["carol"].groups, 5)
        # carol can still read the ciphertext from the stream, but has no key for version 2
        raw = await c["carol"].js.get_last_msg(MAIL_STREAM, group_subject("team"))
        assert await c["carol"]._receive(raw.data) is None
        assert any("no group key: team v2" in e for e in c["carol"].errors)
        assert c["carol"].inbox.empty()
        with pytest.raises(ChatError):
            await c["carol"].send_group("team", "am I still in?")
        # adding her back rotates again and she reads what comes next
        await c["alice"].add_member("team", "carol")
        await c["alice"].send_group("team", "v3 welcome back")
        assert (await c["carol"].next_message(10)).body == "v3 welcome back"
    finally:
        await close(c)


async def test_forged_directory_entry_is_refused(chat_net, tmp_path):
    from dchat_ops.nsc.keys import KeyPair
    from dchat_ops.nsc.store import Store

    c = await online(chat_net, "alice", "bob")
    try:
        entry = json.loads((await c["alice"]._dir.get("bob")).value)
        # the same name, with a curve key of the attacker's: the entry signature no longer holds
        forged = dict(entry, curve_key=KeyPair.generate("curve").public_key)
        await c["alice"]._dir.put("bob", json.dumps(forged).encode())
        with pytest.raises(ChatError, match="not signed by its user key"):
            await c["alice"].add_friend("bob")
        # a user of another operator: the JWT does not chain to our account
        other = Store(tmp_path / "other")
        admin.init(other)
        stranger = dict(entry, jwt=other.user("chat", "default").token)
        await c["alice"]._dir.put("bob", json.dumps(stranger).encode())
        with pytest.raises(ChatError, match="does not verify"):
            await c["alice"].add_friend("bob")
    finally:
        await close(c)


async def test_joining_a_room_allows_it_live_on_the_node(chat_net):
    c = await online(chat_net, "alice", "bob")
    try:
        await c["bob"].join_room("lobby", store=chat_net)  # allow-sub room.lobby on bob's node, live
        assert "room.lobby" in NodeFile.load(chat_net, "bob").node.policy.subscribe.allow
        await c["alice"].send_room("lobby", "hello room")  # joined means live: the first message arrives
        m = await c["bob"].next_message(10)
        assert (m.kind, m.body, m.sender) == ("room", "hello room", "alice")
        # anyone in the room can send anything: JSON nested too deeply is rejected as malformed, not a crash
        await c["alice"].nc.publish("room.lobby", b'{"from":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        await c["alice"].send_room("lobby", "still here")
        m = await c["bob"].next_message(10)
        assert (m.body, m.sender) == ("still here", "alice")
        assert [r["reason"] for r in c["bob"].history.rejections()] == ["malformed"]
        # the sender's own lines are in its history of the room, as they are for DMs and groups
        mine = c["alice"].history.messages("room:lobby")
        assert [(m["direction"], m["body"]) for m in mine] == [("out", "hello room"), ("out", "still here")]
    finally:
        await close(c)


async def test_another_users_mail_is_refused_by_default(chat_net):
    c = await online(chat_net, "alice", "bob")
    try:
        await c["alice"].nc.subscribe(mail_subject("bob"))
        await c["alice"].nc.flush()
        assert await asyncio.to_thread(
            wait_for, lambda: any('subscription to "dchat.mail.bob"' in e for e in c["alice"].errors), 3
        )
    finally:
        await close(c)


async def test_terminal_client_sends_and_shows_history(chat_net):
    import os
    import sys

    c = await online(chat_net, "bob")
    try:
        exe = os.path.join(os.path.dirname(sys.executable), "dchat-ops")
        script = b"/add-friend bob\n/friends\n/dm bob hello from the terminal\n/history dm:bob\n/quit\n"
        proc = await asyncio.create_subprocess_exec(
            exe,
            "--home",
            str(chat_net.home),
            "chat",
            "--node",
            "alice",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(script), 60)
        text = out.decode()
        assert proc.returncode == 0, err.decode()
        assert "connected as alice" in text and "bob is a friend" in text
        assert "dm:bob -> bob: hello from the terminal" in text
        # bob had not added alice: she is told, and he gets it as a contact request
        assert "* stored for bob, who has not added you yet: it reaches them as a contact request" in text
        m = await c["bob"].next_message(10)
        assert (m.sender, m.body, m.request) == ("alice", "hello from the terminal", True)
    finally:
        await close(c)


def _exe():
    import os
    import sys

    return os.path.join(os.path.dirname(sys.executable), "dchat-ops")


def _chat_cli(store, node_id, *args):
    import subprocess
    import time

    t0 = time.monotonic()
    p = subprocess.run(
        [_exe(), "--home", str(store.home), "chat", "--node", node_id, *args],
        input="/quit\n",
        capture_output=True,
        text=True,
    )
    return p, time.monotonic() - t0


def _cli(store, *args):
    import subprocess

    p = subprocess.run([_exe(), "--home", str(store.home), *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_chat_without_jetstream_says_how_to_turn_it_on_and_the_fixes_work(store, supervised):
    from dchat_ops.config import nodes

    nodes.add_node(store, "plain", cluster=False)
    supervised("plain")
    p, took = _chat_cli(store, "plain")
    assert p.returncode == 1 and took < 8, (p.returncode, took, p.stderr)
    path = NodeFile.load(store, "plain").path
    assert p.stderr.strip().splitlines() == [
        f"error: node plain has no JetStream, which the chat needs: add 'jetstream: {{enabled: true}}' "
        f"to {path} and run 'dchat-ops node reload plain'"
    ]
    # a user that does not exist: what to do, not a wrong creds hint
    p, _ = _chat_cli(store, "plain", "--user", "zed")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "error: no user 'zed' in account 'chat': a chat user is a node's own user ('dchat-ops node add zed ...')"
        " or a user of the account ('dchat-ops add user zed -a chat')"
    ]
    # the first fix, as the message gives it
    with open(path, "a") as f:
        f.write("jetstream: {enabled: true}\n")
    _cli(store, "node", "reload", "plain")
    p, took = _chat_cli(store, "plain")
    assert p.returncode == 1 and took < 10, (p.returncode, took, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "'dchat-ops edit account chat --js-mem -1 --js-disk -1', then 'dchat-ops push'" in p.stderr
    # the second fix, as that message gives it: now the chat starts
    _cli(store, "edit", "account", "chat", "--js-mem", "-1", "--js-disk", "-1")
    _cli(store, "push")
    p, _ = _chat_cli(store, "plain")
    assert p.returncode == 0 and "connected as plain to node plain" in p.stdout, p.stderr


async def test_mail_has_three_copies_and_survives_its_leader_leaving(chat_net):
    from dchat_ops.chat.client import MAIL_STREAM
    from dchat_ops.runtime.supervisor import Supervisor

    c = await online(chat_net, *USERS)
    try:
        await befriend(c)
        await c["alice"].create_group("all", ["bob", "carol"])
        js = c["alice"].js
        assert c["alice"].replicas == 3  # min(3, the cluster's JetStream size), asked of the node
        for stream in (MAIL_STREAM, "KV_dchat_dir", "KV_dchat_friends", "KV_dchat_groups"):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            assert len(info.cluster.replicas) == 2, stream  # the leader and two copies, on three nodes
        # the node that leads the mail stream leaves while the other two users chat
        gone = (await js.stream_info(MAIL_STREAM)).cluster.leader
        x, y = [u for u in USERS if u != gone]
        await c.pop(gone).close()
        await asyncio.to_thread(Supervisor(chat_net, gone).down)
        for i in range(10):
            await c[x].send_dm(y, f"x{i}")
            await c[y].send_dm(x, f"y{i}")
            await c[x].send_dm(gone, f"while you were away {i}")
        await c[x].send_group("all", "the group still works")
        assert [(await c[y].next_message(20)).body for _ in range(11)] == [f"x{i}" for i in range(10)] + [
            "the group still works"
        ]
        # groups are made and changed meanwhile too: the groups bucket keeps working on two nodes of three
        await c[x].create_group("made-while-down", [y, gone])
        await c[x].send_group("made-while-down", "a new group, one node down")
        assert (await c[y].next_message(20)).body == "a new group, one node down"
        assert [(await c[x].next_message(20)).body for _ in range(10)] == [f"y{i}" for i in range(10)]
        # it comes back: its user gets everything sent meanwhile, once, in order
        await asyncio.to_thread(Supervisor(chat_net, gone).up)
        c[gone] = (await online(chat_net, gone))[gone]
        got = []
        try:
            for _ in range(12):
                got.append((await c[gone].next_message(20)).body)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{gone} got {got}; errors {c[gone].errors}; groups {c[gone].group_list()}; notices {c[gone].notices}"
            ) from None
        assert sorted(got) == sorted(
            [f"while you were away {i}" for i in range(10)] + ["the group still works", "a new group, one node down"]
        )
        assert sorted(c[gone].groups) == ["all", "made-while-down"]
        # two of three gone: nothing can be stored, and the sender is told so
        await c.pop(y).close()
        await c.pop(gone).close()
        await asyncio.to_thread(Supervisor(chat_net, y).down)
        await asyncio.to_thread(Supervisor(chat_net, gone).down)
        c[x].store_timeout = 2
        with pytest.raises(ChatError, match=f"not stored: JetStream did not confirm the message to {y}"):
            await c[x].send_dm(y, "lost?")
        assert [m["body"] for m in c[x].history.messages(f"dm:{y}") if m["direction"] == "out"][-1] == "x9"
    finally:
        await close(c)


class Term:
    """The terminal client as a person uses it: a line typed, then what it prints is read."""

    def __init__(self, proc):
        self.proc = proc
        self.seen: list[str] = []  # everything it printed
        self.unread: list[str] = []  # what no expect() has matched yet (output order across tasks may vary)

    @classmethod
    async def open(cls, store, node, *args):
        proc = await asyncio.create_subprocess_exec(
            _exe(),
            "--home",
            str(store.home),
            "chat",
            "--node",
            node,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        t = cls(proc)
        user = args[args.index("--user") + 1] if "--user" in args else node
        await t.expect(f"connected as {user} to node {node}")
        return t

    async def type(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, text: str, timeout: float = 20) -> str:
        for i, line in enumerate(self.unread):
            if text in line:
                return self.unread.pop(i)

        async def read():
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"the client ended before printing {text!r}: {self.seen}")
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                if text in line:
                    return line
                self.unread.append(line)

        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {text!r} within {timeout}s: {self.seen}") from None

    async def quit(self) -> int:
        if self.proc.returncode is None:
            try:
                await self.type("/quit")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


async def test_joined_room_means_the_next_message_arrives(chat_net):
    c = await online(chat_net, "alice")
    bob = await Term.open(chat_net, "bob")
    try:
        for room in ("r1", "r2", "r3"):
            await bob.type(f"/join {room}")
            await bob.expect(f"joined room {room}")
            await c["alice"].send_room(room, f"first in {room}")  # at once: no wait, no retry
            await bob.expect(f"alice: first in {room}")
        assert await bob.quit() == 0
    finally:
        await bob.quit()
        await close(c)


async def test_two_users_of_one_node_join_rooms_and_the_permission_follows_the_user(chat_net):
    from dchat_ops.nsc.admin import UserSpec, add_user

    # dave is a user of the account, not a node's: his JWT lists what he may subscribe to
    add_user(chat_net, "chat", "dave", UserSpec(sub_allow=["_INBOX.>"], sub_deny=["room.secret"]))
    c = await online(chat_net, "alice", "carol")
    bob = await Term.open(chat_net, "bob")
    dave = await Term.open(chat_net, "bob", "--user", "dave")  # a second user on bob's node
    try:
        for t in (bob, dave):
            await t.type("/join lobby")
            await t.expect("joined room lobby")
        # bob's node lets the room in; dave's own JWT allows it (bob's node policy is not his)
        assert "room.lobby" in NodeFile.load(chat_net, "bob").node.policy.subscribe.allow
        assert "room.lobby" in chat_net.user("chat", "dave").claims.permissions.sub.allow
        await c["carol"].send_room("lobby", "hello both")  # from another node, at once
        for t in (bob, dave):
            await t.expect("[room:lobby] carol: hello both")
        await dave.type("/say lobby dave here")
        await bob.expect("[room:lobby] dave: dave here")
        # mail for a user who is not a node's own: replies come to his inbox from any node
        await dave.type("/dm alice hi alice, dave on bob's node")
        m = await c["alice"].next_message(10)
        assert (m.sender, m.body) == ("dave", "hi alice, dave on bob's node")
        await c["alice"].send_dm("dave", "hi dave")
        await dave.expect("[dm:alice] alice: hi dave")
        # what his JWT denies stays denied, and he is told what lifts it
        await dave.type("/join secret")
        await dave.expect("error: dave's permissions deny room.secret (room.secret): 'dchat-ops rm-sub room.secret")
        assert await dave.quit() == 0
        # the permission follows dave to another node: there, only that node's policy is added
        dave = await Term.open(chat_net, "carol", "--user", "dave")
        await dave.type("/join lobby")
        await dave.expect("joined room lobby")
        assert "room.lobby" in NodeFile.load(chat_net, "carol").node.policy.subscribe.allow
        await c["alice"].send_room("lobby", "dave, now on carol's node")
        await dave.expect("[room:lobby] alice: dave, now on carol's node")
        await bob.expect("[room:lobby] alice: dave, now on carol's node")
        for t in (bob, dave):
            assert await t.quit() == 0
    finally:
        await bob.quit()
        await dave.quit()
        await close(c)


async def test_groups_reach_online_members_at_once_from_the_terminal(chat_net):
    import sqlite3

    t = {u: await Term.open(chat_net, u) for u in USERS}
    try:
        a, b, cl = t["alice"], t["bob"], t["carol"]
        await a.type("/mkgroup team bob")
        await a.expect("created group team: alice, bob")
        await a.type("/group team hello team")  # at once: bob's client learns of the group meanwhile
        await b.expect("* you are in group team (owner alice; alice, bob)")
        await b.expect("[group:team] alice: hello team")
        await a.type("/add-member team carol")
        await a.expect("added carol to group team (new key version 2)")
        await a.type("/group team welcome carol")
        await cl.expect("[group:team] alice: welcome carol")
        await b.expect("[group:team] alice: welcome carol")
        await cl.type("/members team")
        await cl.expect("alice (owner), bob, carol")
        await cl.type("/group team thanks")
        await a.expect("[group:team] carol: thanks")
        await b.expect("[group:team] carol: thanks")
        # carol is taken out: a new key she is not given, and she reads nothing sent after
        await a.type("/remove-member team carol")
        await a.expect("removed carol from group team (new key version 3)")
        await cl.expect("* you are no longer in group team")
        await a.type("/group team after carol")
        await b.expect("[group:team] alice: after carol")
        # bob leaves: the owner takes him out and rotates the key
        await b.type("/leave-group team")
        await b.expect("left group team; alice (its owner) takes you out")
        await a.expect("* bob left group team (new key version 4)")
        await a.type("/groups")
        await a.expect("team: owner alice, 1 members, key version 4")
        await b.type("/groups")
        await b.expect("no groups yet")
        for u in USERS:
            assert await t[u].quit() == 0
        db = sqlite3.connect(str(chat_net.home / "chat" / "carol" / "history.db"))
        bodies = [r[0] for r in db.execute("SELECT body FROM messages WHERE conversation='group:team'")]
        db.close()
        assert "welcome carol" in bodies and "after carol" not in bodies
    finally:
        for term in t.values():
            await term.quit()


async def test_first_contact_from_the_terminal(chat_net):
    t = {u: await Term.open(chat_net, u) for u in ("alice", "carol")}
    try:
        a, cl = t["alice"], t["carol"]
        await cl.type("/dm alice hello, we have not met")  # no /add-friend first
        await cl.expect("* stored for alice, who has not added you yet: it reaches them as a contact request")
        await a.expect("* carol is not your friend yet")
        await a.expect("[dm:carol] carol (contact request: /accept carol): hello, we have not met")
        await a.type("/accept carol")
        await a.expect("carol is a friend (verified)")
        await cl.type("/dm alice glad to be friends")
        await a.expect("[dm:carol] carol: glad to be friends")
        await cl.type("/history dm:alice")
        await cl.expect("dm:alice -> alice: glad to be friends")
        assert sum("has not added you" in line for line in cl.seen) == 1  # the second DM: no such note
        for term in t.values():
            assert await term.quit() == 0
    finally:
        for term in t.values():
            await term.quit()


async def test_terminal_echo_unread_paging_help_and_ctrl_c(chat_net):
    import re
    import signal

    a, b = await Term.open(chat_net, "alice"), await Term.open(chat_net, "bob")
    try:
        await a.type("/dm bob hi")
        echo = await a.expect("[dm:bob] alice: hi")  # local echo, with the time
        assert re.fullmatch(r"\d\d:\d\d:\d\d \[dm:bob\] alice: hi", echo), echo
        line = await b.expect("[dm:alice] alice (contact request: /accept alice): hi")
        assert re.match(r"\d\d:\d\d:\d\d ", line) and line.endswith("(1 unread)"), line
        await b.type("/unread")
        await b.expect("dm:alice 1")
        for i in range(24):
            await a.type(f"/dm bob n{i}")
        await b.expect("alice (contact request: /accept alice): n23")
        await b.type("/history dm:alice")
        await b.expect("dm:alice <- alice: n23")
        await b.expect("-- page 1; older: /history dm:alice 2")
        await b.type("/unread")
        await b.expect("nothing unread")
        b.unread.clear()  # page 1 as printed: not looked at further
        await b.type("/history dm:alice 2")
        first = await b.expect("dm:alice <- alice:")
        assert first.endswith("dm:alice <- alice: hi"), first
        await b.expect("dm:alice <- alice: n3")
        await b.type("/help")
        await b.expect("/history [CONVERSATION [PAGE]]")
        await b.type("/nonsense")
        await b.expect("unknown command or missing arguments: /nonsense (/help lists the commands)")
        # Ctrl-C at the prompt: the client ends without waiting for another line
        b.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(b.proc.wait(), 15) == 130
        rest = (await b.proc.stdout.read()).decode()
        assert "Traceback" not in rest and "Aborted" not in rest, rest
        assert await a.quit() == 0
    finally:
        await a.quit()
        await b.quit()


def test_envelope_is_made_once_and_reads_as_its_canonical_form(store):
    """The fast path of sealing (canonical form made once, the wire form cut from it) gives what the
    canonical form of every field says: the seal's associated data and the signed bytes alike."""
    from dchat_ops.chat.client import _canonical, _header_of, _stored_seq
    from dchat_ops.nsc.keys import PublicKey

    me = ChatIdentity.load(store, "default")
    c = ChatClient(me, "nats://127.0.0.1:1")
    try:
        key = bytes(range(32))
        for kind, version in (("dm", 0), ("group", 3)):
            env, wire = c._sealed(kind, "bob", 'héllo "quoted"'.encode(), key=key, version=version)
            assert json.loads(wire) == env
            signed = _canonical(env)
            assert PublicKey(me.user_key.public_key).verify(signed, base64.b64decode(env["sig"]))
            header = _canonical({k: v for k, v in env.items() if k not in ("body", "sig")})
            assert _header_of(env, signed) == header == _header_of(env)
            assert c._open(json.loads(wire), key, signed).decode() == 'héllo "quoted"'
        # a field that sorts before the body: the associated data is made anew, and still opens
        odd = dict(env, aaa=1)
        assert _header_of(odd, _canonical(odd)) == _canonical(
            {k: v for k, v in odd.items() if k not in ("body", "sig")}
        )
        from cryptography.exceptions import InvalidTag

        with pytest.raises(InvalidTag):  # it is not part of what was sealed
            c._open(odd, key, _canonical(odd))
        # a body JSON has to escape (not one a client makes, but anyone may send one): cut as JSON writes it
        for body in ('a\\"b', 'x",\\"y', "é\\"):
            odd = dict(env, body=body)
            assert _header_of(odd, _canonical(odd)) == header
        # what JetStream answers a publish with: the sequence, or why it was not stored
        assert _stored_seq(b'{"stream":"DCHAT_MAIL","seq":12}') == (12, "")
        assert _stored_seq(b'{"stream":"DCHAT_MAIL", "seq":7,"duplicate":true}') == (7, "")
        seq, why = _stored_seq(b'{"error":{"code":503,"err_code":10077,"description":"busy"},"stream":"x","seq":1}')
        assert seq == 0 and "busy" in why
        assert _stored_seq(b"nonsense")[0] == 0
        env, wire = c._sealed("room", "lobby", b"plain")
        assert json.loads(wire) == env and PublicKey(me.user_key.public_key).verify(
            _canonical(env), base64.b64decode(env["sig"])
        )
    finally:
        c.history.close()


async def test_chat_on_nodes_with_client_tls(store, supervised):
    """Every node of the cluster takes clients over TLS only (alice's also verifies their certificates):
    the terminal client and the library reach them with the store's CA, and DMs, groups and rooms flow."""
    from dchat_ops.config import pki, tls
    from dchat_ops.runtime.process import http_json

    admin.edit_account(store, "chat", jetstream={"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
    chain(store, list(USERS), jetstream=True, start=False)
    pki.init_ca(store)
    for u in USERS:
        tls.enable(store, u, ["client"], client_verify=u == "alice")
    sups = [supervised(u) for u in USERS]
    assert wait_jetstream_leader(sups[0])
    c = await online(store, "bob", "carol")
    alice = await Term.open(store, "alice")  # the terminal client, over TLS with a client certificate
    try:
        await alice.type("/dm bob hello over tls")
        await alice.expect("[dm:bob] alice: hello over tls")
        m = await c["bob"].next_message(20)
        assert (m.sender, m.body) == ("alice", "hello over tls")
        await c["bob"].send_dm("alice", "and back")
        await alice.expect("[dm:bob] bob: and back")  # she wrote first: bob is her friend
        await alice.type("/mkgroup tls bob carol")
        await alice.expect("created group tls: alice, bob, carol")
        await alice.type("/group tls to both")
        for u in ("bob", "carol"):
            assert (await c[u].next_message(20)).body == "to both"
        await alice.type("/join lobby")
        await alice.expect("joined room lobby")
        await c["carol"].send_room("lobby", "room over tls")
        await alice.expect("[room:lobby] carol: room over tls")
        for sup in sups:  # each node has its user's client, and none without TLS
            _, connz = http_json(sup.monitor_url + "/connz")
            assert connz["connections"] and all(x.get("tls_version") for x in connz["connections"])
        assert await alice.quit() == 0
    finally:
        await alice.quit()
        await close(c)


def _doc_block(heading: str, nth: int = 0) -> str:
    """The ``nth`` sh block under ``heading`` in docs/runtime.md, as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "runtime.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)[nth]


def _run_as_pasted(store, block: str) -> str:
    """A doc block run by bash as a person pastes it, ``dchat-ops`` working on the test's store."""
    import shlex
    import subprocess

    prelude = f'dchat-ops() {{ {shlex.quote(_exe())} --home {shlex.quote(str(store.home))} "$@"; }}\nset -e\n'
    p = subprocess.run(["bash", "-c", prelude + block], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


async def test_runtime_md_commands_work_as_written(chat_net):
    c = await online(chat_net, "alice", "bob")
    try:
        # the terminal client's piped script
        out = await asyncio.to_thread(_run_as_pasted, chat_net, _doc_block("## The terminal client", 1))
        assert "bob is a friend" in out and "dm:bob -> bob: hello" in out
        assert (await c["bob"].next_message(10)).body == "hello"
        # a second user on bob's node
        out = await asyncio.to_thread(_run_as_pasted, chat_net, _doc_block("## A second user on a node"))
        assert "connected as dave to node bob" in out and "joined room lobby" in out
        assert "subscribe: allow ['_INBOX.>', 'room.lobby']" in out
        m = await c["alice"].next_message(10)
        assert (m.sender, m.body, m.request) == ("dave", "hi alice, dave here", True)
    finally:
        await close(c)
