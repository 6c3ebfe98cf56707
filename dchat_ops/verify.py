"""``dchat-ops verify``: a throw-away network on loopback that proves the toolkit's promises.

In a temporary folder: a store, three chain-joined nodes (a <- b <- c, each knowing only the one
before), one chat user per node (alice, bob, carol), and the chat runtime on top.  Each check is a
real exchange through real nats-servers; it records whether it passed, its time and a detail line.
The run passes only when every check passed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dchat_ops.chat.client import ChatClient, ChatIdentity, mail_subject
from dchat_ops.config.node import NodeFile, inbox_prefix
from dchat_ops.config.nodes import client_url
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime import push
from dchat_ops.runtime.client import ManagedClient, refused
from dchat_ops.runtime.supervisor import chain, wait_jetstream_leader

__all__ = ["Check", "Report", "loopback_spec", "run_spec_verify", "run_verify"]

USERS = ("alice", "bob", "carol")  # one node per user, named after them


@dataclass
class Check:
    name: str
    passed: bool
    ms: float
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "ms": round(self.ms, 1), "detail": self.detail}


@dataclass
class Report:
    folder: str
    checks: list[Check] = field(default_factory=list)
    total_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "ms": round(self.total_ms, 1),
            "folder": self.folder,
        }


class _Failed(Exception):
    pass


class _Run:
    def __init__(self, folder: Path, progress: Optional[Callable[[str], None]]):
        self.folder = folder
        self.report = Report(str(folder))
        self.progress = progress

    @contextmanager
    def check(self, name: str):
        """Record one check; the body sets ``box[0]`` to its detail line, raises to fail."""
        box = [""]
        t0 = time.perf_counter()
        try:
            yield box
            ok, detail = True, box[0]
        except (AssertionError, DchatOpsError, _Failed) as exc:
            ok, detail = False, str(exc) or type(exc).__name__
        except Exception as exc:  # an unexpected failure is a failed check, not a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        c = Check(name, ok, (time.perf_counter() - t0) * 1000, detail)
        self.report.checks.append(c)
        if self.progress:
            self.progress(f"{'ok  ' if ok else 'FAIL'} {name:<50} {c.ms:7.0f} ms  {detail}")
        if not ok:
            raise _Failed(name)


def run_verify(
    *, keep: bool = False, folder: Optional[Path] = None, progress: Optional[Callable[[str], None]] = None
) -> Report:
    """Run every check; stops at the first failure (later checks build on earlier ones)."""
    sups: list = []
    return _run_checks(lambda run: _checks(run, sups), sups, "dchat-verify-", folder, keep, progress)


def _run_checks(checks, sups, prefix: str, folder: Optional[Path], keep: bool, progress) -> Report:
    """Run ``checks(run)`` in ``folder`` (a new temporary one by default, removed at the end unless
    ``keep``); the nodes it started (``sups``, a list or a dict of supervisors) are stopped in reverse."""
    own = folder is None
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=prefix))
    run = _Run(folder, progress)
    t0 = time.perf_counter()
    try:
        asyncio.run(checks(run))
    except _Failed:
        pass
    finally:
        for s in reversed(list(sups.values()) if isinstance(sups, dict) else sups):
            try:
                s.down()
            except DchatOpsError:
                pass
        run.report.total_ms = (time.perf_counter() - t0) * 1000
        if own and not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return run.report


async def _wait(predicate, timeout: float = 5.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        await asyncio.sleep(interval)
    return None


async def _checks(run: _Run, sups: list) -> None:

    store = Store(run.folder / "home")
    with run.check("store: operator, accounts, three node users") as box:
        admin.init(store)
        admin.edit_account(
            store, "chat", jetstream={"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        )
        sups.extend(chain(store, list(USERS), jetstream=True, start=False))
        errors = [f for f in validate_store(store) if f.level == "error"]
        assert not errors, f"validate: {errors[0].entity}: {errors[0].message}"
        box[0] = "operator dchat, accounts SYS + chat (JetStream), a node per user; store validates"

    with run.check("cluster: chain join alice <- bob <- carol") as box:
        for sup in sups:
            sup.up()
        want = {n: set(USERS) - {n} for n in USERS}
        meshed = await _wait(lambda: all(set(s.status().data["routes"]) == want[s.node_id] for s in sups), 10)
        assert meshed, {s.node_id: s.status().data["routes"] for s in sups}
        leader = await asyncio.to_thread(wait_jetstream_leader, sups[0])
        assert leader, "JetStream elected no meta leader"
        box[0] = f"carol's node knew only bob's; every node routes to the two others; JetStream leader {leader}"

    def url(nid):
        return client_url(NodeFile.load(store, nid).node)

    clients: dict[str, ChatClient] = {}
    snoop = None
    try:
        with run.check("chat: three users online, friends verified") as box:
            for user in USERS:
                clients[user] = await _start_client(ChatIdentity.load(store, user), url(user))
            for a, b in (("alice", "bob"), ("bob", "alice"), ("bob", "carol"), ("carol", "bob")):
                await clients[a].add_friend(b)
            box[0] = "directory entries verified against the account; friends kept in KV (alice and carol: not yet)"

        with run.check("first contact: a DM to a new contact") as box:
            await clients["carol"].send_dm("alice", "hello, we have not met")  # looks alice up, verified
            m = await clients["alice"].next_message(10)
            assert (m.sender, m.body, m.request) == ("carol", "hello, we have not met", True), m
            assert [h["status"] for h in clients["alice"].history.messages("dm:carol")] == ["request"]
            await clients["alice"].accept("carol")
            assert await clients["carol"].knows_me("alice"), "alice's acceptance is not in her friends"
            await clients["carol"].send_dm("alice", "thanks")
            m = await clients["alice"].next_message(10)
            assert (m.body, m.request) == ("thanks", False), m
            box[0] = (
                "carol's first DM reached alice as a contact request, verified against the directory; "
                "alice accepted and carol's next DM came as a friend's"
            )

        got: list[bytes] = []
        with run.check("default deny: carol's node refuses bob's mail") as box:
            snoop = await ManagedClient(
                url("carol"), store.creds_path("dchat", "chat", "carol"), inbox_prefix=inbox_prefix("carol")
            ).start()

            async def on_snoop(msg):
                got.append(msg.data)

            await snoop.subscribe(mail_subject("bob"), cb=on_snoop)
            await snoop.flush()
            assert await _wait(lambda: any("permissions violation" in e for e in snoop.errors), 2), snoop.errors
            box[0] = f"subscription to {mail_subject('bob')} refused on carol's node"

        with run.check("allow-sub: live on the running cluster") as box:
            t0 = time.perf_counter()
            r = await asyncio.to_thread(apply_node_edit, store, "carol", "allow-sub", mail_subject("bob"))
            assert r.outcome == "live", r.outcome
            assert await _wait(lambda: snoop.swaps >= 1, 5), "the subscriber did not pick up the new creds"
            box[0] = (
                f"carol's node reloaded, her subscriber moved to new creds in {1000 * (time.perf_counter() - t0):.0f} ms"
            )

        with run.check("dm: readable by its recipient only") as box:
            await asyncio.sleep(0.3)  # carol's new interest reaches the other nodes
            secret = "meet at noon"
            await clients["alice"].send_dm("bob", secret)
            m = await clients["bob"].next_message(10)
            assert m.kind == "dm" and m.sender == "alice" and m.body == secret, m
            assert await _wait(lambda: got, 5), "carol's allowed subscription saw nothing"
            env = json.loads(got[-1])
            assert secret.encode() not in got[-1] and secret not in base64.b64decode(env["body"]).decode(
                errors="ignore"
            )
            try:
                clients["carol"]._open(env, clients["carol"]._pair_key("alice"))
                opened = True
            except Exception:
                opened = False
            assert not opened, "carol could open a message sealed to bob"
            box[0] = "bob read it; carol, subscribed to the same subject, saw ciphertext she cannot open"

        with run.check("group: made with its members online, reaches them") as box:
            t0 = time.perf_counter()
            await clients["alice"].create_group("team", ["bob", "carol"])
            await clients["alice"].send_group("team", "standup in 5")  # at once: nothing done by bob or carol
            for u in ("bob", "carol"):
                m = await clients[u].next_message(10)
                assert m.kind == "group" and m.body == "standup in 5", (u, m)
                assert "team" in clients[u].groups, u
            box[0] = (
                "alice made team and wrote to it at once; bob and carol, following the groups bucket, "
                f"decrypted it with the group key from KV within {1000 * (time.perf_counter() - t0):.0f} ms"
            )

        with run.check("integrity: tampered and replayed messages rejected") as box:
            env = json.loads(got[0])
            nc = clients["alice"].nc
            assert nc is not None
            forged = dict(env, ts=env["ts"] + 1)
            await nc.publish(mail_subject("bob"), json.dumps(forged).encode())
            await nc.publish(mail_subject("bob"), got[0])  # the original, again
            bob = clients["bob"]
            assert await _wait(lambda: any("bad signature" in e for e in bob.errors), 5), bob.errors
            assert await _wait(lambda: any("replay" in e for e in bob.errors), 5), bob.errors
            assert bob.inbox.empty(), "a forged or replayed message was delivered"
            box[0] = "bob rejected the tampered copy (signature) and the replay (seen id)"

        with run.check("offline: mail waits and arrives once after reconnect") as box:
            await clients["bob"].close()
            for i in range(3):
                await clients["alice"].send_dm("bob", f"while you were away {i}")
            alice_nc = clients["alice"].nc
            assert alice_nc is not None
            await alice_nc.flush()
            clients["bob"] = await _start_client(ChatIdentity.load(store, "bob"), url("bob"))
            bodies = [(await clients["bob"].next_message(10)).body for _ in range(3)]
            assert bodies == [f"while you were away {i}" for i in range(3)], bodies
            await asyncio.sleep(0.3)
            assert clients["bob"].inbox.empty(), "a message was delivered twice"
            box[0] = "3 messages sent while bob was offline arrived in order, once each"

        with run.check("revocation: carol is cut off everywhere") as box:
            revoke.revoke_user(store, "chat", "carol")
            report = await asyncio.to_thread(push.push, store, ["chat"])
            assert report.ok and len(report.results) == 3, report.results
            carol_nc = clients["carol"].nc
            assert carol_nc is not None
            assert await _wait(lambda: not carol_nc.is_connected, 5), "carol is still connected"
            for nid in USERS:
                assert await refused(url(nid), store.creds_path("dchat", "chat", "carol")) is not None, nid
            box[0] = "all 3 servers took the revocation; carol was disconnected and is refused on every node"
    finally:
        if snoop is not None:
            await snoop.close()
        for c in clients.values():
            try:
                await c.close()
            except Exception:
                pass


async def _start_client(ident, url: str):

    # the stream and buckets keep a copy on each of the three nodes
    return await ChatClient(ident, url, replicas=3, max_reconnect_attempts=2, reconnect_time_wait=0.2).start()


# --- verify --spec: a spec's topology, brought up on loopback and proven ------------------------------------

_PORT_KEYS = ("client_port", "cluster_port", "monitor_port")


def loopback_spec(data: dict) -> dict:
    """The spec's network moved onto this machine: every node on 127.0.0.1, every port it gives replaced by
    a free one (URLs that point at a node of the spec follow), no advertised addresses."""
    from dchat_ops.hosts import host_port
    from dchat_ops.natsbin import free_port

    out = json.loads(json.dumps(data))
    moved: dict[int, int] = {}
    taken: set[int] = set()

    def fresh(old: int) -> int:
        if old not in moved:
            p = free_port()
            while p in taken:
                p = free_port()
            taken.add(p)
            moved[old] = p
        return moved[old]

    nodes = out.get("nodes") or []
    for n in nodes:
        n["host"] = "127.0.0.1"
        for k in ("advertise", "cluster_advertise", "monitor_host"):
            n.pop(k, None)
        for k in _PORT_KEYS:
            if k in n:
                n[k] = fresh(n[k])
        for sec in ("gateway", "leafnodes", "websocket"):
            if n.get(sec):
                n[sec].pop("advertise", None)
                if "port" in n[sec]:
                    n[sec]["port"] = fresh(n[sec]["port"])

    def follow(u: str) -> str:
        scheme, sep, rest = u.partition("://")
        port_text = rest.rsplit(":", 1)[-1].rstrip("/")
        if sep and port_text.isdigit() and int(port_text) in moved:
            return f"{scheme}://{host_port('127.0.0.1', moved[int(port_text)])}"
        return u

    for n in nodes:
        n["routes"] = [follow(u) for u in n.get("routes") or []] if "routes" in n else n.get("routes")
        if n.get("routes") is None:
            n.pop("routes", None)
        for sec in ("gateway", "leafnodes"):
            for rem in (n.get(sec) or {}).get("remotes") or []:
                rem["urls"] = [follow(u) for u in rem["urls"]]
    return out


def run_spec_verify(
    spec_path: Path,
    *,
    keep: bool = False,
    folder: Optional[Path] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> Report:
    """Apply the spec in a throw-away home on loopback, start its nodes and prove its topology: clusters
    meshed, gateways joined, leaf nodes attached, a message from one leaf (or node) to another, and a leaf
    failing over when its hub stops.  Stops at the first failure."""
    sups: dict = {}
    return _run_checks(
        lambda run: _spec_checks(run, Path(spec_path), sups), sups, "dchat-verify-spec-", folder, keep, progress
    )


def _hub_of(sups: dict, leaf_id: str) -> str:
    for hid, sup in sups.items():
        if (
            hid != leaf_id
            and sup.running()
            and any(lf.get("name") == leaf_id for lf in sup.status().data.get("leafnodes") or [])
        ):
            return hid
    return ""


def _concrete(entry: str) -> str:
    """A subject an allow-list entry matches: ``chat.>`` -> ``chat.verify``."""
    subject = entry.split(" ")[0]
    return ".".join("verify" if t in ("*", ">") else t for t in subject.split("."))


async def _spec_checks(run: _Run, spec_path: Path, sups: dict) -> None:
    from dchat_ops import provision
    from dchat_ops.runtime.client import node_target
    from dchat_ops.runtime.supervisor import Supervisor

    store = Store(run.folder / "home")
    with run.check("spec: applied on loopback (free ports)") as box:
        spec = provision.load_spec(spec_path)
        moved = provision.parse_spec(provision.dump_spec(loopback_spec(spec.data)), run.folder / "spec.yaml")
        r = provision.apply(store, moved)
        assert not r.error, r.error
        nodes = {n["id"]: n for n in moved.nodes}
        assert nodes, "the spec has no nodes"
        box[0] = f"{len(nodes)} nodes, {sum(len(a.get('users', [])) for a in moved.accounts)} users"

    with run.check("nodes: every node up and healthy") as box:
        for nid in nodes:
            sups[nid] = Supervisor(store, nid)
            sups[nid].up()
        healthy = await _wait(lambda: all(s.status().healthy for s in sups.values()), 20)
        assert healthy, [nid for nid, s in sups.items() if not s.status().healthy]
        box[0] = ", ".join(nodes)

    clusters: dict[str, list[str]] = {}
    for nid, n in nodes.items():
        if n.get("cluster", True) is not False:
            clusters.setdefault(n.get("cluster_name", "dchat"), []).append(nid)
    with run.check("clusters: every node routes to the others of its cluster") as box:
        want = {nid: set(members) - {nid} for members in clusters.values() for nid in members}
        meshed = await _wait(lambda: all(set(sups[n].status().data["routes"]) == w for n, w in want.items()), 30)
        assert meshed, {n: sups[n].status().data["routes"] for n in want}
        box[0] = "; ".join(f"{c}: {', '.join(m)}" for c, m in clusters.items())

    gateways = {
        nid: {g["name"] for g in n["gateway"].get("remotes") or []} for nid, n in nodes.items() if n.get("gateway")
    }
    if gateways:
        with run.check("gateways: every gateway node joined the clusters it names") as box:
            joined = await _wait(
                lambda: all(w <= set(sups[n].status().data["gateways"]) for n, w in gateways.items()), 30
            )
            assert joined, {n: sups[n].status().data["gateways"] for n in gateways}
            box[0] = f"{len(gateways)} gateway nodes"

    leaves = [nid for nid, n in nodes.items() if (n.get("leafnodes") or {}).get("remotes")]
    if leaves:
        with run.check("leaf nodes: each attached to a hub") as box:
            attached = await _wait(lambda: all(_hub_of(sups, leaf) for leaf in leaves), 30)
            assert attached, [leaf for leaf in leaves if not _hub_of(sups, leaf)]
            box[0] = ", ".join(f"{leaf} on {_hub_of(sups, leaf)}" for leaf in leaves)

    ends = leaves if len(leaves) >= 2 else list(nodes)
    # the two ends furthest apart: different clusters of their hubs when there are such
    src, dst = ends[-1], ends[0]
    subjects = [e for e in nodes[dst].get("policy", {}).get("subscribe", {}).get("allow", []) if " " not in e]

    async def crosses() -> str:
        subject = _concrete(subjects[0])
        got = await _send(store, node_target(store, src), src, node_target(store, dst), dst, subject)
        assert got, f"nothing published on {src} reached a subscriber on {dst} ({subject})"
        return subject

    if len(ends) >= 2:
        with run.check(f"message: {src} -> {dst}") as box:
            assert subjects, f"node {dst} allows no subject to subscribe to (policy.subscribe.allow)"
            box[0] = f"{await crosses()} crossed"

        movable = [
            leaf
            for leaf in leaves
            if (hub := _hub_of(sups, leaf)) and any(hub in m and len(m) > 1 for m in clusters.values())
        ]
        if movable:
            leaf = movable[0]
            with run.check(f"failover: {leaf}'s hub stops, it moves to another") as box:
                first = _hub_of(sups, leaf)
                sups[first].down()
                second = await _wait(lambda: (h := _hub_of(sups, leaf)) and h != first and h, 30)
                assert second, f"{leaf} did not reconnect to another hub after {first} stopped"
                if len(ends) >= 2 and leaf in (src, dst):
                    await crosses()
                box[0] = f"{first} stopped; {leaf} now on {second}" + (
                    "; messages cross again" if leaf in (src, dst) else ""
                )


async def _send(store: Store, src_t, src: str, dst_t, dst: str, subject: str) -> bool:
    """Publish on ``subject`` as ``src``'s node user on ``src``; True when ``dst``'s user, subscribed on ``dst``, gets it."""
    from dchat_ops.runtime.client import connect

    op = store.current_operator()
    acc_of = {nid: NodeFile.load(store, nid).node.account for nid in (src, dst)}
    sub_nc = await connect(
        dst_t.url,
        store.creds_path(op, acc_of[dst], dst),
        inbox_prefix=inbox_prefix(dst),
        **dst_t.connect_kw(),
    )
    pub_nc = await connect(
        src_t.url,
        store.creds_path(op, acc_of[src], src),
        inbox_prefix=inbox_prefix(src),
        **src_t.connect_kw(),
    )
    try:
        sub = await sub_nc.subscribe(subject)
        await sub_nc.flush()
        for _ in range(200):  # interest crosses leaf connections, routes and gateways
            await pub_nc.publish(subject, b"verify")
            try:
                if (await sub.next_msg(timeout=0.1)).data == b"verify":
                    return True
            except asyncio.TimeoutError:
                continue
        return False
    finally:
        await sub_nc.close()
        await pub_nc.close()
