"""The minimal chat runtime: rooms, end-to-end encrypted direct and group messages, history, offline mail.

    >>> me = ChatIdentity.load(store, "alice")            # node user "alice" + her curve key
    >>> chat = await ChatClient.on_node(me, store, "a").start()   # the node's URL and TLS; publishes her entry
    >>> await chat.add_friend("bob")                      # verified against the account, kept in KV
    >>> await chat.send_dm("bob", "hello")                # sealed to bob, signed by alice
    >>> await chat.create_group("team", ["bob", "carol"])

Every envelope is signed by the sender's user nkey and carries an id and a timestamp. A direct
message is sealed with a key both ends derive from their curve keys (X25519, HKDF-SHA256,
ChaCha20-Poly1305), so only the two of them can read it and the recipient knows who wrote it. A
group message is sealed with the group's key, which its owner hands to each member sealed the same
way, in KV; adding or removing a member rotates it. Recipients reject bad signatures, unknown
senders and replays (a message id seen before).

Mail (direct and group messages) goes to a JetStream stream, so a recipient who is offline gets
it when they come back, once, in order, through their own durable consumer. Rooms are plain
subjects (signed, not sealed: a room is public), joined with allow-sub on the node the client is on
and in the user's own permissions (see ChatClient.allow_room).
History is kept per user in SQLite. See docs/runtime.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dchat_ops._fs import atomic_write, ensure_dir
from dchat_ops.config.node import inbox_prefix, read_nodes
from dchat_ops.config.nodes import CHAT_IMPORTS
from dchat_ops.errors import ChatError, DchatOpsError, JWTError
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.jwt import verify_chain
from dchat_ops.nsc.keys import KeyPair, PublicKey, x25519_public
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.runtime.client import (
    ManagedClient,
    ManagedSubscription,
    NodeTarget,
    connect,
    jwt_inbox,
    node_target,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

__all__ = [
    "MAIL_STREAM",
    "ChatClient",
    "ChatError",
    "ChatIdentity",
    "Received",
    "chat_subjects",
    "group_subject",
    "mail_subject",
    "room_subject",
]

MAIL_STREAM = "DCHAT_MAIL"
DIR_BUCKET = "dchat_dir"
FRIENDS_BUCKET = "dchat_friends"
GROUPS_BUCKET = "dchat_groups"
MAX_SKEW_MS = 5 * 60 * 1000
_T = TypeVar("_T")


def _tok(name: str) -> str:
    """A name as one subject token (dots would split it)."""
    return name.replace(".", "_")


def mail_subject(user: str) -> str:
    return f"dchat.mail.{_tok(user)}"


def group_subject(group: str) -> str:
    return f"dchat.group.{_tok(group)}"


def room_subject(room: str) -> str:
    return f"room.{room}"


def chat_subjects() -> list[str]:
    """Subjects every chat node imports over routes (end-to-end sealed store-and-forward traffic)."""

    return list(CHAT_IMPORTS)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def _loads(value: Optional[bytes]) -> Any:
    """JSON from a KV value; a missing value fails with TypeError, as ``json.loads(None)`` does."""
    if value is None:
        raise TypeError("the KV entry has no value")
    try:
        return json.loads(value)
    except RecursionError:  # written by anyone in the account: nested too deeply is malformed, not a crash
        raise ValueError("nested too deeply") from None


_ACK_SEQ = re.compile(rb'\{"stream":"[^"\\]*","seq":(\d+)[,}]')


def _stored_seq(ack: bytes) -> tuple[int, str]:
    """A JetStream publish acknowledgement: the stream sequence and ``""``, or 0 and its error.
    The usual form (``{"stream":"S","seq":N...}``, no error) is read without a JSON parse."""
    m = _ACK_SEQ.match(ack)
    if m is not None and b'"error"' not in ack:
        return int(m.group(1)), ""
    try:
        resp = json.loads(ack)
        if "error" in resp:
            err = resp["error"]
            return 0, f"{err.get('description', err)} (code {err.get('code')})" if isinstance(err, dict) else str(err)
        return int(resp["seq"]), ""
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return 0, f"unexpected acknowledgement: {exc}"


def _canonical(env: dict) -> bytes:
    return json.dumps({k: v for k, v in env.items() if k != "sig"}, sort_keys=True, separators=(",", ":")).encode()


def _with_body(header: bytes, body: str) -> bytes:
    """``_canonical`` of an envelope from that of its header (every field but body and signature) and
    its base64 body (which JSON writes as it is): ``"body"`` sorts before every header field, so it goes first."""
    return b'{"body":"' + body.encode() + b'",' + header[1:]  # base64 needs no escaping in JSON


def _header_of(env: dict, signed: Optional[bytes] = None) -> bytes:
    """``_canonical`` of an envelope without its body: the associated data of its seal. Cut from
    ``signed`` (the envelope's ``_canonical``) when that begins with the body, else made anew."""
    body = env.get("body")
    if signed is not None and isinstance(body, str):
        # a sealed body is base64, which JSON writes as it is (no quote, no backslash: anything JSON
        # would escape then shows as a backslash in ``signed`` and the head does not match)
        if '"' in body or "\\" in body:
            head = b'{"body":' + json.dumps(body).encode() + b","
        else:
            head = b'{"body":"' + body.encode() + b'",'
        if signed.startswith(head):
            return b"{" + signed[len(head) :]
    return _canonical({k: v for k, v in env.items() if k not in ("body", "sig")})


# --- identity -------------------------------------------------------------------------------------------


@dataclass
class ChatIdentity:
    """A chat user: a node user's creds, its nkey, its curve key, and the trust anchors to verify others."""

    name: str
    creds_path: Path
    user_key: KeyPair
    curve_key: KeyPair
    user_jwt: str
    operator_jwt: str
    account_jwt: str
    home: Path
    account: str = ""
    node: str = ""  # the node whose own user this is; "" for another user of the account

    @property
    def inbox_prefix(self) -> str:
        """Where replies to this user go: the one inbox prefix its JWT allows when it allows replies on one
        only (a node's own user: ``_INBOX_<node>``, imported by its node; an enrolled device's user: its
        node's), else the usual ``_INBOX``, which every node imports."""
        return jwt_inbox(self.user_jwt) or (inbox_prefix(self.node) if self.node else "_INBOX")

    @classmethod
    def load(cls, store: Store, user: str, account: Optional[str] = None) -> ChatIdentity:
        """The identity of ``user`` from the store; its curve key is made on first use and kept."""

        account = account or store.default_account()
        op = store.current_operator()
        creds_path = store.creds_path(op, account, user)
        if user not in store.user_names(account):
            raise ChatError(
                f"no user {user!r} in account {account!r}: a chat user is a node's own user "
                f"('dchat-ops node add {user} ...') or a user of the account ('dchat-ops add user {user} -a {account}')"
            )
        if not creds_path.exists():
            raise ChatError(
                f"user {user!r} of account {account!r} has no creds file: "
                f"run 'dchat-ops generate creds -a {account} -u {user}'"
            )
        creds = parse_creds(store.read_creds(op, account, user))
        folder = store.home / "chat" / user
        ensure_dir(folder, private=True)
        ident_file = folder / "identity.json"
        curve_pub = None
        if ident_file.exists():
            curve_pub = json.loads(ident_file.read_text()).get("curve_key")
        if curve_pub and store.has_key(curve_pub):
            curve = store.load_key(curve_pub)
        else:
            curve = KeyPair.generate("curve")
            store.save_key(curve)
            atomic_write(ident_file, json.dumps({"user": user, "curve_key": curve.public_key}) + "\n")
        own = sorted(n.id for n in read_nodes(store).values() if n.user == user and n.account == account)
        return cls(
            user,
            creds_path,
            creds.keypair(),
            curve,
            creds.jwt,
            store.operator().token,
            store.account(account).token,
            folder,
            account,
            own[0] if own else "",
        )

    def directory_entry(self) -> dict:
        entry = {
            "name": self.name,
            "user_key": self.user_key.public_key,
            "curve_key": self.curve_key.public_key,
            "jwt": self.user_jwt,
        }
        entry["sig"] = _b64(self.user_key.sign(_canonical(entry)))
        return entry

    def verify_entry(self, entry: dict) -> dict:
        """Check a directory entry: its JWT chains to our operator and account, and its key binds the curve key."""
        try:
            res = verify_chain(self.operator_jwt, self.account_jwt, entry["jwt"])
        except (KeyError, TypeError):
            raise ChatError("directory entry is incomplete") from None
        except JWTError as exc:
            raise ChatError(f"directory entry of {entry.get('name')!r} does not verify: {exc}") from None
        assert res.user is not None  # the chain was given a user
        if res.user.subject != entry.get("user_key") or res.user.name != entry.get("name"):
            raise ChatError(f"directory entry of {entry.get('name')!r} names another key than its JWT")
        try:
            ok = PublicKey(entry["user_key"]).verify(_canonical(entry), _unb64(entry["sig"]))
            x25519_public(entry["curve_key"])
        except (KeyError, ValueError, DchatOpsError):
            ok = False
        if not ok:
            raise ChatError(f"directory entry of {entry.get('name')!r} is not signed by its user key")
        return entry


# --- history --------------------------------------------------------------------------------------------


class History:
    """Messages in and out, decrypted, with their verification status (SQLite, one file per user)."""

    def __init__(self, path: Path):
        old = os.umask(0o077)  # the database and its -wal / -shm files hold decrypted messages
        try:
            db = sqlite3.connect(str(path))
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            os.umask(old)
        self.db: Optional[sqlite3.Connection] = db
        self._sent: list[tuple] = []
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("""CREATE TABLE IF NOT EXISTS messages (
            id TEXT PRIMARY KEY, ts INTEGER, direction TEXT, kind TEXT, peer TEXT, conversation TEXT,
            body TEXT, status TEXT, received_at INTEGER)""")
        db.execute("CREATE TABLE IF NOT EXISTS rejected (at INTEGER, reason TEXT, detail TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS left_groups (grp TEXT PRIMARY KEY, version INTEGER)")
        db.execute("""CREATE TABLE IF NOT EXISTS pending (
            id TEXT PRIMARY KEY, sender TEXT, data BLOB, reason TEXT, received_at INTEGER)""")
        db.commit()
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass

    def _open_db(self) -> sqlite3.Connection:
        assert self.db is not None, "history is closed"
        return self.db

    def seen(self, msg_id: str) -> bool:
        self._write_sent()
        return self._open_db().execute("SELECT 1 FROM messages WHERE id=?", (msg_id,)).fetchone() is not None

    def add(
        self,
        msg_id: str,
        ts: int,
        direction: str,
        kind: str,
        peer: str,
        conversation: str,
        body: str,
        status: str = "verified",
    ) -> bool:
        cur = self._open_db().execute(
            "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?)",
            (msg_id, ts, direction, kind, peer, conversation, body, status, int(time.time() * 1000)),
        )
        return cur.rowcount == 1

    def add_sent(
        self, msg_id: str, ts: int, kind: str, peer: str, conversation: str, body: str, status: str = "verified"
    ) -> None:
        """A message this user sent: written with the next batch (any read or commit writes it first)."""
        self._sent.append((msg_id, ts, "out", kind, peer, conversation, body, status, int(time.time() * 1000)))

    def _write_sent(self) -> None:
        if self._sent:
            rows, self._sent = self._sent, []
            self._open_db().executemany("INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def reject(self, reason: str, detail: str) -> None:
        self._open_db().execute("INSERT INTO rejected VALUES (?,?,?)", (int(time.time() * 1000), reason, detail))

    def commit(self) -> None:
        if self.db is not None:
            self._write_sent()
            self.db.commit()

    def messages(self, conversation: Optional[str] = None, limit: int = 50, skip: int = 0) -> list[dict]:
        """The newest ``limit`` messages (of a conversation) after skipping the ``skip`` newest, oldest first."""
        self._write_sent()
        q = "SELECT id, ts, direction, kind, peer, conversation, body, status FROM messages"
        args: tuple = ()
        if conversation:
            q += " WHERE conversation=?"
            args = (conversation,)
        q += " ORDER BY rowid DESC LIMIT ? OFFSET ?"
        rows = self._open_db().execute(q, (*args, limit, skip)).fetchall()
        keys = ("id", "ts", "direction", "kind", "peer", "conversation", "body", "status")
        return [dict(zip(keys, r, strict=False)) for r in reversed(rows)]

    def keep_pending(self, msg_id: str, sender: str, data: bytes, reason: str) -> bool:
        cur = self._open_db().execute(
            "INSERT OR IGNORE INTO pending VALUES (?,?,?,?,?)", (msg_id, sender, data, reason, int(time.time() * 1000))
        )
        self._open_db().commit()
        return cur.rowcount == 1

    def pending(self, sender: Optional[str] = None) -> list[dict]:
        q = "SELECT id, sender, data, reason FROM pending"
        args: tuple[str, ...] = ()
        if sender is not None:
            q, args = q + " WHERE sender=?", (sender,)
        rows = self._open_db().execute(q + " ORDER BY rowid", args).fetchall()
        return [{"id": i, "sender": s, "data": bytes(d), "reason": r} for i, s, d, r in rows]

    def drop_pending(self, msg_id: str) -> None:
        self._open_db().execute("DELETE FROM pending WHERE id=?", (msg_id,))
        self._open_db().commit()

    def leave(self, group: str, version: int) -> None:
        self._open_db().execute("INSERT OR REPLACE INTO left_groups VALUES (?,?)", (group, version))
        self._open_db().commit()

    def left_at(self, group: str) -> int:
        """The group version this user left at (0: never left)."""
        row = self._open_db().execute("SELECT version FROM left_groups WHERE grp=?", (group,)).fetchone()
        return int(row[0]) if row else 0

    def rejections(self) -> list[dict]:
        return [{"at": a, "reason": r, "detail": d} for a, r, d in self._open_db().execute("SELECT * FROM rejected")]

    def close(self) -> None:
        if self.db is not None:
            self._write_sent()
            self.db.commit()
            self.db.close()
            self.db = None


# --- the client -----------------------------------------------------------------------------------------


@dataclass
class Received:
    id: str
    kind: str  # dm, group, room
    sender: str
    conversation: str
    body: str
    ts: int
    request: bool = False  # a DM from someone not (yet) a friend, verified against the directory


@dataclass
class _Group:
    owner: str
    members: list[str]
    version: int
    keys: dict[int, bytes] = field(default_factory=dict)
    since: int = 0  # the mail stream sequence from which this user reads the group


# How long start() waits for JetStream: a fresh cluster answers 503 until it elects its meta leader.
# Two answers mean there is no JetStream to wait for, and are given up on sooner: nobody answers the
# JetStream API (the node has none), or "not enabled for account" (which a fresh cluster also says
# for a moment, hence a few seconds, not none).
LEADER_WAIT_S = 20.0
NO_RESPONDERS_WAIT_S = 3.0
NO_JETSTREAM_WAIT_S = 5.0
_JS_NOT_ENABLED_FOR_ACCOUNT = 10039


# Every message to mail waits for JetStream's acknowledgement; a message not confirmed within
# STORE_TIMEOUT_S (a leader election after a node left takes a few seconds) is reported to the sender.
# Retries carry the message id as Nats-Msg-Id, so a retry of a message stored already is not stored twice.
STORE_TIMEOUT_S = 15.0
STORE_ATTEMPT_S = 2.0
DEDUP_WINDOW_S = 120.0
CLUSTER_SIZE_WAIT_S = 3.0
ROOM_CONFIRM_S = 10.0
MAIL_BATCH = 500  # messages asked for per pull from the mailbox
ACK_SWEEP_S = 0.1  # how often acknowledgements past their deadline are given up on
MAIL_PULL_S = 1.0  # how long a pull request waits for messages before it is asked again


def _jsz_cluster_size(monitor_url: str) -> int:
    """``meta_cluster.cluster_size`` of a node's ``/jsz``; 0 when it cannot be read."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{monitor_url.rstrip('/')}/jsz", timeout=2) as r:
            data = json.loads(r.read())
        return int((data.get("meta_cluster") or {}).get("cluster_size") or 0)
    except Exception:  # no monitoring port, not HTTP, not JSON: the caller falls back to INFO
        return 0


def _no_jetstream(exc: BaseException) -> str:
    """``"account"`` (JetStream off for the account), ``"server"`` (nobody answers the API), or ``""``."""
    from nats.errors import NoRespondersError
    from nats.js.errors import APIError

    if isinstance(exc, NoRespondersError):
        return "server"
    if isinstance(exc, APIError):
        if exc.err_code == _JS_NOT_ENABLED_FOR_ACCOUNT:
            return "account"
        if exc.code is None and exc.err_code is None:  # nats-py's rendering of "no responders"
            return "server"
    return ""


class ChatClient:
    """One user's chat session on their node."""

    def __init__(
        self,
        identity: ChatIdentity,
        url: Union[str, NodeTarget],
        *,
        replicas: Optional[int] = None,
        on_message: Optional[Callable[[Received], Awaitable[None]]] = None,
        on_notice: Optional[Callable[[str], Awaitable[None]]] = None,
        store_timeout: float = STORE_TIMEOUT_S,
        **connect_kw,
    ):
        """``url`` is a node's :class:`NodeTarget` (its URL and TLS; see :meth:`on_node`) or a plain URL.

        ``replicas``: copies of the mail stream and of every KV bucket; by default ``min(3, N)`` with N
        the size of the JetStream cluster the node belongs to, as the node reports it.
        ``store_timeout``: how long a message to mail may take to be confirmed stored (retried meanwhile).
        """
        self.me = identity
        self.monitor_url: Optional[str] = None
        self.node_id = identity.node  # the node this client is on, when known
        if isinstance(url, NodeTarget):
            connect_kw = {**url.connect_kw(), **connect_kw}
            self.monitor_url = url.monitor_url
            self.node_id = url.node_id
            url = url.url
        self.url = url
        self.replicas = replicas
        self.store_timeout = store_timeout
        self.on_message = on_message
        self.on_notice = on_notice
        self.notices: list[str] = []
        self.connect_kw = connect_kw
        self.nc: Optional[Client] = None
        self.js: Optional[JetStreamContext] = None
        self.history = History(identity.home / "history.db")
        self.errors: list[str] = []
        self.friends: dict[str, dict] = {}
        # people who wrote first, their directory entries verified: not friends until accepted
        self.contacts: dict[str, dict] = {}
        self._knows_me: set[str] = set()
        self.groups: dict[str, _Group] = {}
        self.rooms: dict[str, ManagedSubscription] = {}
        # follows the creds file when allow-sub re-issues them
        self._rooms_client: Optional[ManagedClient] = None
        self._pair_keys: dict[str, bytes] = {}
        self._aeads: dict[bytes, ChaCha20Poly1305] = {}
        self._loop_task: Optional[asyncio.Task] = None
        self._watch_task: Optional[asyncio.Task] = None
        self._background: set[asyncio.Future] = set()
        self._groups_watch: Any = None
        self._bind_lock = asyncio.Lock()
        self._mailbox_filters: Optional[set[str]] = None
        self._ack_all = True  # the mailbox acknowledges a batch with its last message
        self._closing = False
        self._commit_pending = False
        self._ack_prefix: Optional[str] = None  # the subscription JetStream acknowledges mail on
        self._acks: dict[str, tuple[asyncio.Future, float]] = {}  # token: its waiter, its deadline
        self._ack_count = 0
        self._ack_sweeper: Optional[asyncio.Future] = None
        self.inbox: asyncio.Queue[Received] = asyncio.Queue()

    @classmethod
    def on_node(cls, identity: ChatIdentity, store: Store, node, **kw) -> ChatClient:
        """A client for ``identity`` on a node of ``store`` (by id or Node), reached the one way nodes are:
        its dialable URL, ``tls://`` and a client certificate where the node asks for them."""
        return cls(identity, node_target(store, node), **kw)

    # lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> ChatClient:

        self.nc = await connect(
            self.url,
            self.me.creds_path,
            errors=self.errors,
            inbox_prefix=self.me.inbox_prefix,
            name=f"dchat-{self.me.name}",
            **self.connect_kw,
        )
        self.js = js = self.nc.jetstream(timeout=5)
        if self.replicas is None:
            self.replicas = min(3, await self.jetstream_cluster_size())
        started = time.monotonic()
        while True:  # a fresh cluster answers 503 until JetStream has elected its meta leader
            try:
                await self._ensure_infrastructure()
                break
            except Exception as exc:
                waited = time.monotonic() - started
                why = _no_jetstream(exc)
                if why == "account" and waited > NO_JETSTREAM_WAIT_S:
                    raise ChatError(
                        f"JetStream is not enabled for {self.me.name}'s account on {self.url}: give the account "
                        f"JetStream limits ('dchat-ops edit account {self.me.account or 'ACCOUNT'} --js-mem -1 "
                        "--js-disk -1', then 'dchat-ops push')"
                    ) from None
                if why == "server" and waited > NO_RESPONDERS_WAIT_S:
                    raise ChatError(f"no JetStream answers on {self.url}: the node has no JetStream") from None
                if waited > LEADER_WAIT_S:
                    raise ChatError(f"JetStream is not available on {self.url}: {exc}") from None
                await asyncio.sleep(0.25)
        self._dir = await js.key_value(DIR_BUCKET)
        self._friends_kv = await js.key_value(FRIENDS_BUCKET)
        self._groups_kv = await js.key_value(GROUPS_BUCKET)
        await self._dir.put(self.me.name, json.dumps(self.me.directory_entry()).encode())
        await self._load_friends()
        await self._load_groups()
        await self._retrying(self._bind_mailbox)
        self._loop_task = asyncio.get_running_loop().create_task(self._mail_loop())
        # follow the groups bucket: a group this user is put in (or taken out of) counts at once
        self._groups_watch = await self._retrying(lambda: self._groups_kv.watchall())
        self._watch_task = asyncio.get_running_loop().create_task(self._follow_groups())
        return self

    async def close(self) -> None:
        if self._rooms_client is not None:
            await self._rooms_client.close()
        self._closing = True
        if self._ack_sweeper is not None:
            self._ack_sweeper.cancel()
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.wait({self._watch_task}, timeout=3)
        if self._loop_task:
            # a flag as well as cancel(): on Python 3.11 a cancel that lands as a wait times out can be
            # swallowed inside asyncio.wait_for, and the loop would go on
            self._loop_task.cancel()
            await asyncio.wait({self._loop_task}, timeout=3)
        if self.nc is not None and not self.nc.is_closed:
            # close, not drain: every delivered message is acked already, and draining a pull
            # request would wait for it to expire
            try:
                await self.nc.close()
            except (OSError, asyncio.TimeoutError):  # the node went away meanwhile: nothing left to close
                pass
        self.history.close()

    async def _ensure_infrastructure(self) -> None:
        from nats.js.api import KeyValueConfig, StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        assert self.js is not None and self.replicas is not None, "start() first"
        try:
            await self.js.add_stream(
                StreamConfig(
                    name=MAIL_STREAM,
                    subjects=chat_subjects(),
                    num_replicas=self.replicas,
                    storage=StorageType.FILE,
                    duplicate_window=DEDUP_WINDOW_S,
                )
            )
        except BadRequestError as exc:
            if "already in use" not in str(exc):
                raise
            await self._grow_replicas(MAIL_STREAM)
        for bucket in (DIR_BUCKET, FRIENDS_BUCKET, GROUPS_BUCKET):
            try:
                await self.js.key_value(bucket)
            except Exception:
                try:
                    await self.js.create_key_value(KeyValueConfig(bucket=bucket, replicas=self.replicas, history=1))
                except BadRequestError as exc:
                    if "already in use" not in str(exc):
                        raise
            else:
                await self._grow_replicas(f"KV_{bucket}")

    async def _retrying(self, step: Callable[[], Awaitable[_T]], wait: float = LEADER_WAIT_S) -> _T:
        """``step()``, again while JetStream answers 503 (a replicated asset placed a moment ago, a peer
        catching up, a leader being elected), for up to ``wait`` seconds."""
        from nats.js.errors import ServiceUnavailableError

        deadline = time.monotonic() + wait
        while True:
            try:
                return await step()
            except ServiceUnavailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    async def _grow_replicas(self, stream: str) -> None:
        """An existing stream (or bucket) with fewer copies than this client asks for gets more."""
        assert self.js is not None and self.replicas is not None, "start() first"
        info = await self.js.stream_info(stream)
        if (info.config.num_replicas or 1) < self.replicas:
            info.config.num_replicas = self.replicas
            await self.js.update_stream(info.config)

    async def jetstream_cluster_size(self) -> int:
        """How many servers the node's JetStream cluster has, as the node reports it: the meta group's
        size from its monitoring port (``/jsz``) when known, else the servers its INFO lists; 1 alone."""
        info = self.nc._server_info if self.nc is not None else {}
        if not info.get("cluster"):
            return 1
        servers = max(1, len(info.get("connect_urls") or []))
        if not self.monitor_url:
            return servers
        # a cluster that has just elected its meta leader may not count every server yet: wait a moment
        # for the meta group to reach the servers the node knows (those without JetStream never join it)
        deadline = time.monotonic() + CLUSTER_SIZE_WAIT_S
        while True:
            size = await asyncio.to_thread(_jsz_cluster_size, self.monitor_url)
            if size >= servers or time.monotonic() > deadline:
                return size or servers
            await asyncio.sleep(0.1)

    async def _bind_mailbox(self) -> None:
        """The user's durable consumer: its own mail and its groups' messages, in stream order.

        A group that joins the filter is caught up from the stream position its owner recorded when
        this user was added (``since``): what was sent to it between then and now is read once
        (messages that also come through the consumer are recognised by their id)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import BadRequestError

        async with self._bind_lock:
            filters = [mail_subject(self.me.name)] + [group_subject(g) for g in sorted(self.groups)]
            durable = f"mbox-{_tok(self.me.name)}"
            assert self.js is not None, "start() first"
            if self._mailbox_filters is None:
                try:
                    ci = await self.js.consumer_info(MAIL_STREAM, durable)
                    self._mailbox_filters = set(ci.config.filter_subjects or []) | (
                        {ci.config.filter_subject} if ci.config.filter_subject else set()
                    )
                except Exception:  # not made yet
                    self._mailbox_filters = set()
            added = [g for g in sorted(self.groups) if group_subject(g) not in self._mailbox_filters]
            if set(filters) != self._mailbox_filters:
                cfg = ConsumerConfig(
                    durable_name=durable,
                    ack_policy=AckPolicy.ALL if self._ack_all else AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    max_ack_pending=10000,
                    ack_wait=30,
                )
                if len(filters) == 1:
                    cfg.filter_subject = filters[0]
                else:
                    cfg.filter_subjects = filters
                try:
                    await self.js.add_consumer(MAIL_STREAM, cfg)
                except BadRequestError as exc:
                    if "ack policy" not in str(exc).lower() or not self._ack_all:
                        raise
                    # a mailbox made by an earlier version acknowledges each message: keep it so
                    self._ack_all = False
                    cfg.ack_policy = AckPolicy.EXPLICIT
                    await self.js.add_consumer(MAIL_STREAM, cfg)
                self._mailbox_filters = set(filters)
        for g in added:
            await self._catch_up(g)

    async def _catch_up(self, group: str) -> None:
        """Read a group's messages from where this user was added, once: each the next of the group's
        subject from the stream's leader (a replica still catching up, as on a node just back, could
        have fewer)."""
        from nats.js.errors import NotFoundError

        g = self.groups.get(group)
        js = self.js
        if g is None or not g.since or js is None:
            return
        subject, seq = group_subject(group), g.since
        while not self._closing:
            try:
                m = await self._retrying(
                    lambda seq=seq: js.get_msg(MAIL_STREAM, seq=seq, subject=subject, next=True)  # type: ignore[misc]
                )
            except NotFoundError:  # nothing more
                return
            except Exception as exc:
                self.errors.append(f"group {group}: cannot read what came before: {exc}")
                return
            if m.data:
                await self._receive(m.data, catch_up=True)
            if not m.seq:
                return
            seq = m.seq + 1

    async def _follow_groups(self) -> None:
        """Apply every change of the groups bucket as it happens."""
        assert self._groups_watch is not None
        while not self._closing:
            try:
                entry = await self._groups_watch.updates(timeout=3600)
            except asyncio.CancelledError:
                raise
            except Exception:  # nats-py's timeout: nothing changed for an hour
                continue
            if entry is None or entry.key is None:
                continue
            try:
                await self._group_changed(entry.key, None if entry.operation else entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors.append(f"group {entry.key}: {exc}")

    async def _group_changed(self, group: str, value: Optional[bytes]) -> None:
        was = self.groups.get(group)
        before = (was.version, tuple(was.members)) if was else None
        if value is None:  # deleted by its owner
            self.groups.pop(group, None)
            g = None
        else:
            g = await self._refresh_group(group, _loads(value))
        if g is None and was is not None:
            self._notice(f"you are no longer in group {group}")
        elif g is not None and was is None:
            self._notice(f"you are in group {group} (owner {g.owner}; {', '.join(g.members)})")
        elif g is not None and before != (g.version, tuple(g.members)):
            self._notice(f"group {group} now has {', '.join(g.members)} (key version {g.version})")
        if (g is None) != (was is None):
            await self._retrying(self._bind_mailbox)

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            task = asyncio.ensure_future(self.on_notice(text))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # friends -----------------------------------------------------------------------------------------
    async def lookup(self, name: str) -> dict:
        try:
            entry = _loads((await self._dir.get(name)).value)
        except Exception:
            raise ChatError(f"{name} has no directory entry (has their client started once?)") from None
        return self.me.verify_entry(entry)

    async def add_friend(self, name: str) -> dict:
        entry = await self.lookup(name)
        await self._friends_kv.put(f"{self.me.name}.{name}", json.dumps(entry).encode())
        self.friends[name] = entry
        self.contacts.pop(name, None)
        self._pair_keys.pop(name, None)
        return entry

    async def accept(self, name: str) -> list[Received]:
        """Make ``name`` a friend (their directory entry verified now), and deliver what they sent
        that could not be verified before; returns those messages."""
        await self.add_friend(name)
        out = []
        for p in self.history.pending(name):
            self.history.drop_pending(p["id"])
            r = await self._receive(p["data"])
            if r is not None:
                out.append(r)
        self.history.commit()
        return out

    async def knows_me(self, name: str) -> bool:
        """Whether ``name`` has this user as a friend (their friends list in KV)."""
        if name in self._knows_me:
            return True
        try:
            await self._friends_kv.get(f"{name}.{self.me.name}")
        except Exception:  # no such key
            return False
        self._knows_me.add(name)
        return True

    async def _load_friends(self) -> None:
        try:
            keys = await self._friends_kv.keys()
        except Exception:  # no keys yet
            keys = []
        prefix = f"{self.me.name}."
        for k in keys:
            if k.startswith(prefix):
                entry = _loads((await self._friends_kv.get(k)).value)
                try:
                    self.friends[k[len(prefix) :]] = self.me.verify_entry(entry)
                except ChatError as exc:
                    self.errors.append(str(exc))

    # crypto ------------------------------------------------------------------------------------------
    def _pair_key(self, peer: str) -> bytes:
        """The key this user and ``peer`` (a friend, or a contact who wrote first) both derive from their curve keys."""
        key = self._pair_keys.get(peer)
        if key is None:
            entry = self.friends.get(peer) or self.contacts.get(peer)
            if peer == self.me.name:
                entry = self.me.directory_entry()
            if entry is None:
                raise ChatError(f"{peer} is not a friend: add them first")
            shared = self.me.curve_key.x25519_private().exchange(x25519_public(entry["curve_key"]))
            info = b"dchat pair v1|" + "|".join(sorted([self.me.curve_key.public_key, entry["curve_key"]])).encode()
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
            self._pair_keys[peer] = key
        return key

    def _envelope(self, kind: str, to: str, body: bytes, *, key: Optional[bytes] = None, version: int = 0) -> dict:
        return self._sealed(kind, to, body, key=key, version=version)[0]

    def _sealed(
        self, kind: str, to: str, body: bytes, *, key: Optional[bytes] = None, version: int = 0
    ) -> tuple[dict, bytes]:
        """An envelope and its bytes on the wire: sealed with ``key`` (if given) and signed.

        The canonical form is made once: the seal's associated data is the header's canonical form,
        and the signed bytes are the same with ``"body"`` put first (it sorts before every header
        field). The wire form is the signed bytes with the signature added."""
        env: dict[str, Any] = {
            "v": 1,
            "id": os.urandom(16).hex(),
            "ts": int(time.time() * 1000),
            "from": self.me.name,
            "from_key": self.me.user_key.public_key,
            "kind": kind,
            "to": to,
        }
        if key is not None:
            nonce = os.urandom(12)
            if version:
                env["key_version"] = version
            env["nonce"] = _b64(nonce)
            aad = _canonical(env)
            env["body"] = _b64(self._aead(key).encrypt(nonce, body, aad))
            signed = _with_body(aad, env["body"])
        else:
            env["body"] = _b64(body)
            signed = _canonical(env)
        env["sig"] = sig = _b64(self.me.user_key.sign(signed))
        return env, signed[:-1] + b',"sig":"' + sig.encode() + b'"}'

    def _aead(self, key: bytes) -> ChaCha20Poly1305:
        aead = self._aeads.get(key)
        if aead is None:
            aead = self._aeads[key] = ChaCha20Poly1305(key)
        return aead

    def _open(self, env: dict, key: bytes, signed: Optional[bytes] = None) -> bytes:
        """The sealed body of ``env``; ``signed``: its canonical form (without the signature), if made already."""
        return self._aead(key).decrypt(_unb64(env["nonce"]), _unb64(env["body"]), _header_of(env, signed))

    # sending -----------------------------------------------------------------------------------------
    async def _store(self, subject: str, env: dict, data: bytes) -> int:
        """Publish an envelope (``data``, its wire form) to mail and wait until JetStream confirms it
        stored; retried (same message id, so stored once) until ``store_timeout``; :class:`ChatError`
        when not confirmed. Returns the stream sequence."""
        headers = {"Nats-Msg-Id": env["id"]}
        deadline = time.monotonic() + self.store_timeout
        while True:
            left = deadline - time.monotonic()
            seq, failed = await self._publish_acked(subject, data, headers, max(0.2, min(STORE_ATTEMPT_S, left)))
            if not failed:
                return seq
            if deadline - time.monotonic() <= 0.25:
                raise ChatError(
                    f"not stored: JetStream did not confirm the message to {env['to']} within "
                    f"{self.store_timeout:g}s ({failed}); it was not sent, try again"
                )
            await asyncio.sleep(0.25)

    async def _publish_acked(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, str]:
        """One publish to JetStream (``headers``: its ``Nats-Msg-Id``) and its acknowledgement: the
        stream sequence and ``""``, or 0 and why it was not confirmed (no answer in time, nobody to
        answer, an error from JetStream), to be tried again. A publish the connection refuses raises.

        Acknowledgements come to one subscription of this client (``<inbox>.<n>``); one sweeper gives up
        on those past their deadline: many messages may await theirs at once without a task, a request
        or a timer each."""
        nc = self.nc
        assert nc is not None, "start() first"
        if self._ack_prefix is None:
            prefix = nc.new_inbox() + "."
            await nc.subscribe(prefix + "*", cb=self._on_ack)
            self._ack_prefix = prefix
        self._ack_count += 1
        token = str(self._ack_count)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._acks[token] = (fut, time.monotonic() + timeout)
        if self._ack_sweeper is None or self._ack_sweeper.done():
            self._ack_sweeper = asyncio.ensure_future(self._sweep_acks())
        try:
            await nc.publish(subject, data, reply=self._ack_prefix + token, headers=headers)
            msg = await fut
        finally:
            self._acks.pop(token, None)
        if msg is None:
            return 0, "timeout"
        if msg.headers and msg.headers.get("Status") == "503":
            return 0, "no responders"
        return _stored_seq(msg.data)

    async def _on_ack(self, msg) -> None:
        assert self._ack_prefix is not None
        waiting = self._acks.get(msg.subject[len(self._ack_prefix) :])
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(msg)

    async def _sweep_acks(self) -> None:
        """Acknowledgements not come by their deadline: their waiters get None (one timer for all)."""
        while self._acks:
            await asyncio.sleep(ACK_SWEEP_S)
            now = time.monotonic()
            for fut, deadline in list(self._acks.values()):
                if deadline <= now and not fut.done():
                    fut.set_result(None)

    async def send_dm(self, to: str, text: str) -> str:
        """Seal and send; someone not yet a friend is looked up in the directory (verified) and added."""
        if to not in self.friends:
            await self.add_friend(to)
        env, data = self._sealed("dm", to, text.encode(), key=self._pair_key(to))
        await self._store(mail_subject(to), env, data)
        self.history.add_sent(env["id"], env["ts"], "dm", to, f"dm:{to}", text)
        self._commit_soon()
        return env["id"]

    async def create_group(self, group: str, members: list[str]) -> None:
        """Create a group owned by this user; its key is handed to every member (looked up in the
        directory and verified, for members not yet friends)."""
        if group in self.groups or await self._group_meta(group) is not None:
            raise ChatError(f"group {group} exists already")
        await self._publish_group(group, sorted(set(members) | {self.me.name}), version=1)

    async def add_member(self, group: str, name: str) -> None:
        g = self._owned(group)
        if name in g.members:
            raise ChatError(f"{name} is in group {group} already")
        await self._publish_group(group, sorted(set(g.members) | {name}), g.version + 1)

    async def remove_member(self, group: str, name: str) -> None:
        """Take ``name`` out of ``group``: a new key, which ``name`` is not given."""
        g = self._owned(group)
        if name not in g.members:
            raise ChatError(f"{name} is not in group {group}")
        if name == self.me.name:
            raise ChatError(f"you own {group}: leave it to delete it")
        await self._publish_group(group, [m for m in g.members if m != name], g.version + 1)

    async def leave_group(self, group: str) -> str:
        """Leave a group: its owner deletes it; a member stops reading it at once and asks the owner
        (through mail) to take them out, which rotates the key. Returns what happened."""
        g = self.groups.get(group)
        if g is None:
            raise ChatError(f"not a member of group {group}")
        if g.owner == self.me.name:
            await self._groups_kv.delete(group)
            self.groups.pop(group, None)
            await self._retrying(self._bind_mailbox)
            return f"deleted group {group} (you owned it)"
        env, data = self._sealed("group-leave", group, group.encode(), key=self._pair_key(g.owner))
        await self._store(mail_subject(g.owner), env, data)
        self.history.leave(group, g.version)
        self.groups.pop(group, None)
        await self._retrying(self._bind_mailbox)
        return f"left group {group}; {g.owner} (its owner) takes you out and changes its key"

    def group_list(self) -> list[dict]:
        return [
            {"group": name, "owner": g.owner, "members": list(g.members), "version": g.version}
            for name, g in sorted(self.groups.items())
        ]

    def _owned(self, group: str) -> _Group:
        g = self.groups.get(group)
        if g is None or g.owner != self.me.name:
            raise ChatError(f"only the owner of {group} changes its members")
        return g

    async def _group_meta(self, group: str) -> Optional[dict]:
        try:
            return _loads((await self._groups_kv.get(group)).value)
        except Exception:
            return None

    async def _publish_group(self, group: str, members: list[str], version: int) -> None:
        for m in members:
            if m != self.me.name and m not in self.friends:
                await self.add_friend(m)
        old = self.groups.get(group)
        js = self.js
        assert js is not None, "start() first"
        # where each member starts reading: kept for those in it already, the stream's end for new ones
        next_seq = (await self._retrying(lambda: js.stream_info(MAIL_STREAM))).state.last_seq + 1
        prev = (await self._group_meta(group) or {}).get("since", {}) if old else {}
        since = {m: int(prev.get(m, next_seq)) for m in members}
        key = os.urandom(32)
        sealed = {}
        for m in members:  # the owner too: a restarted client reads its own groups' keys from here
            sealed[m] = self._envelope("group-key", m, key, key=self._pair_key(m))
        meta = {
            "group": group,
            "owner": self.me.name,
            "members": members,
            "version": version,
            "keys": sealed,
            "since": since,
        }
        meta["sig"] = _b64(self.me.user_key.sign(_canonical(meta)))
        # ours before the put: the watch then sees our own change as nothing new
        self.groups[group] = _Group(
            self.me.name, members, version, {**(old.keys if old else {}), version: key}, since[self.me.name]
        )
        try:
            await self._groups_kv.put(group, json.dumps(meta).encode())
        except BaseException:
            if old is None:
                self.groups.pop(group, None)
            else:
                self.groups[group] = old
            raise
        await self._retrying(self._bind_mailbox)

    async def _load_groups(self) -> None:
        try:
            keys = await self._groups_kv.keys()
        except Exception:
            keys = []
        for k in keys:
            await self._refresh_group(k)

    async def _refresh_group(self, group: str, meta: Optional[dict] = None) -> Optional[_Group]:
        if meta is None:
            meta = await self._group_meta(group)
            if meta is None:
                return None
        if self.me.name not in meta.get("members", []) or meta.get("version", 0) <= self.history.left_at(group):
            self.groups.pop(group, None)
            return None
        owner = meta["owner"]
        owner_entry = self.friends.get(owner) if owner != self.me.name else self.me.directory_entry()
        if owner_entry is None:
            try:
                owner_entry = await self.add_friend(owner)
            except ChatError as exc:
                self.errors.append(f"group {group}: {exc}")
                return None
        if not PublicKey(owner_entry["user_key"]).verify(_canonical(meta), _unb64(meta["sig"])):
            self.errors.append(f"group {group}: metadata not signed by its owner")
            return None
        g = self.groups.get(group) or _Group(owner, meta["members"], meta["version"])
        g.members, g.version, g.owner = meta["members"], meta["version"], owner
        g.since = int((meta.get("since") or {}).get(self.me.name, 0))
        if meta["version"] not in g.keys:
            env = meta["keys"].get(self.me.name)
            if env is None:
                return None
            g.keys[meta["version"]] = self._open(env, self._pair_key(owner))
        self.groups[group] = g
        return g

    async def send_group(self, group: str, text: str) -> str:
        g = self.groups.get(group) or await self._refresh_group(group)
        if g is None:
            raise ChatError(f"not a member of group {group}")
        env, data = self._sealed("group", group, text.encode(), key=g.keys[g.version], version=g.version)
        await self._store(group_subject(group), env, data)
        self.history.add_sent(env["id"], env["ts"], "group", group, f"group:{group}", text)
        self._commit_soon()
        return env["id"]

    async def join_group(self, group: str) -> None:
        """Start receiving a group this user was added to (reads its key, widens the mailbox)."""
        if await self._refresh_group(group) is None:
            raise ChatError(f"not a member of group {group}")
        await self._retrying(self._bind_mailbox)

    # rooms -------------------------------------------------------------------------------------------
    async def join_room(self, room: str, store: Optional[Store] = None) -> None:
        """Subscribe to a public room; with ``store``, first allow it where it must be (see :meth:`allow_room`).

        Rooms live on a connection that follows the creds file, so the subscription comes alive as
        soon as the re-issued creds allow it; mail and KV stay on the main connection, undisturbed.
        """

        subject = room_subject(room)
        if room in self.rooms:
            return
        if self._rooms_client is None:
            self._rooms_client = await ManagedClient(
                self.url,
                self.me.creds_path,
                inbox_prefix=self.me.inbox_prefix,
                name=f"dchat-{self.me.name}-rooms",
                **self.connect_kw,
            ).start()
        rc = self._rooms_client
        if store is not None:
            await asyncio.to_thread(self.allow_room, store, room)
            await self._rooms_on_current_creds()
        seen = len(rc.errors)
        ms = await rc.subscribe(subject, cb=self._on_room)
        await rc.flush(timeout=ROOM_CONFIRM_S)  # the server answers a refused SUB before this PONG
        await asyncio.sleep(0)  # nats-py hands -ERR to the error callback in a task of its own
        refused = [e for e in rc.errors[seen:] if "permissions violation" in e.lower() and f'"{subject}"' in e]
        if refused:
            await ms.unsubscribe()
            raise ChatError(f"{self.me.name} may not subscribe to {subject} on {self.url}: {self._room_fix(subject)}")
        self.rooms[room] = ms

    def _room_fix(self, subject: str) -> str:
        """The commands that let this user hear ``subject`` on the node the client is on."""
        node = self.node_id or "NODE"
        cmds = [f"dchat-ops allow-sub {subject} --node {node}"]
        if self.me.node and self.me.node != node:
            cmds.append(f"dchat-ops allow-sub {subject} --node {self.me.node}")
        elif not self.me.node:
            cmds.append(f"dchat-ops allow-sub {subject} --user {self.me.name} -a {self.me.account or 'ACCOUNT'}")
        return "run " + ", then ".join(f"'{c}'" for c in cmds)

    def allow_room(self, store: Store, room: str) -> list[str]:
        """Let this user hear ``room`` on the node the client is on; what was changed, as lines.

        Two things decide it (docs/permissions.md): the node's subscribe policy, which is the list of
        subjects it lets in over its routes, and the user's JWT. So the node the client is on allows
        the room (live). The user's own permission goes with the user, to any node: a node's own user
        gets it in its node's policy (its JWT); another user of the account in its JWT, when that
        lists what it may subscribe to (a JWT without a list allows every subject already). A room
        the user's JWT denies stays denied. Runs blocking (call it in a thread from async code)."""
        from dchat_ops.permissions.apply import apply_user_edit
        from dchat_ops.subjects import covering

        subject = room_subject(room)
        node = self.node_id
        if not node:
            raise ChatError(f"which node is {self.url}? join rooms from a client made with ChatClient.on_node")
        edits: list[tuple[str, Callable[[], Any]]] = [
            (f"node {node}", lambda: apply_node_edit(store, node, "allow-sub", subject))
        ]
        if self.me.node and self.me.node != node:
            own = self.me.node
            edits.append((f"node {own}", lambda: apply_node_edit(store, own, "allow-sub", subject)))
        elif not self.me.node:
            perms = store.user(self.me.account, self.me.name).claims.permissions.sub
            denied = next((d for d in perms.deny if covering([d], subject) or d == subject), None)
            if denied:
                raise ChatError(
                    f"{self.me.name}'s permissions deny {subject} ({denied}): "
                    f"'dchat-ops rm-sub {denied} --user {self.me.name} -a {self.me.account}' lifts that"
                )
            if perms.allow and not covering(perms.allow, subject) and subject not in perms.allow:
                edits.append(
                    (
                        f"user {self.me.name}",
                        lambda: apply_user_edit(store, self.me.account, self.me.name, "allow-sub", subject),
                    )
                )
        done = []
        for what, edit in edits:
            try:
                r = edit()
            except DchatOpsError as exc:
                raise ChatError(f"could not allow {subject} on {what}: {exc}; {self._room_fix(subject)}") from None
            done.append(f"{what}: {r.outcome}")
        return done

    async def _rooms_on_current_creds(self, timeout: float = ROOM_CONFIRM_S) -> None:
        """Wait until the rooms connection runs on the creds file as it is now (re-issued by allow-sub)."""
        assert self._rooms_client is not None
        rc = self._rooms_client
        deadline = time.monotonic() + timeout
        while True:
            try:
                jwt = parse_creds(self.me.creds_path.read_text()).jwt
            except (OSError, ValueError, DchatOpsError):
                jwt = ""
            if jwt and rc._jwt == jwt:
                return
            if time.monotonic() > deadline:
                raise ChatError(f"the rooms connection of {self.me.name} did not move to its new creds in {timeout:g}s")
            await asyncio.sleep(0.01)

    async def leave_room(self, room: str) -> None:
        sub = self.rooms.pop(room, None)
        if sub is not None:
            await sub.unsubscribe()

    async def send_room(self, room: str, text: str) -> str:
        env, data = self._sealed("room", room, text.encode())
        assert self.nc is not None, "start() first"
        await self.nc.publish(room_subject(room), data)
        # kept as DMs and group messages are: a room's history holds this user's own lines too
        self.history.add_sent(env["id"], env["ts"], "room", room, f"room:{room}", text)
        self._commit_soon()
        return env["id"]

    async def _on_room(self, msg) -> None:
        await self._receive(msg.data, room=True, commit=False)
        self._commit_soon()  # a rejection too; in batches, as outgoing messages (a room has no acks to wait on)

    # receiving ---------------------------------------------------------------------------------------
    async def _mail_loop(self) -> None:
        """Read the mailbox: pull requests for up to MAIL_BATCH messages, answered to an inbox of this
        client; what has come is handled a batch at a time (one history commit, then one ack)."""
        nc = self.nc
        assert nc is not None and self._mailbox_filters is not None, "the mailbox is bound before the loop starts"
        inbox = nc.new_inbox()
        came: list = []
        wake = asyncio.Event()

        async def on_delivery(msg) -> None:
            came.append(msg)
            wake.set()

        sub = await nc.subscribe(inbox, cb=on_delivery)
        next_api = f"$JS.API.CONSUMER.MSG.NEXT.{MAIL_STREAM}.mbox-{_tok(self.me.name)}"
        ask = json.dumps({"batch": MAIL_BATCH, "expires": int(MAIL_PULL_S * 1e9)}).encode()
        left = 0  # what the open pull requests may still deliver
        ends = 0.0  # when it expires
        try:
            while not self._closing:
                # the next request goes out while half of one is still to come: deliveries do not pause
                if left <= MAIL_BATCH // 2 or time.monotonic() > ends:
                    try:
                        await nc.publish(next_api, ask, reply=inbox)
                    except Exception as exc:  # the connection is closing or reconnecting
                        if self._closing:
                            break
                        self.errors.append(f"mailbox: {exc}")
                        await asyncio.sleep(0.2)
                        continue
                    left, ends = max(left, 0) + MAIL_BATCH, time.monotonic() + MAIL_PULL_S + 0.5
                if not came:
                    try:
                        await asyncio.wait_for(wake.wait(), MAIL_PULL_S + 0.5)
                    except asyncio.TimeoutError:
                        continue
                wake.clear()
                batch = came[:]
                del came[:]
                msgs = []
                for m in batch:
                    status = m.headers.get("Status") if m.headers else None
                    if status is None:
                        msgs.append(m)
                    elif status != "100":  # the request ended (no messages, expired, ...); not a heartbeat
                        left = 0
                left -= len(msgs)
                # one commit per batch, before its acks: what is acknowledged is in the history
                for m in msgs:
                    await self._receive(m.data, commit=False)
                self.history.commit()
                if self._ack_all and msgs:  # the last one acknowledges the batch
                    await msgs[-1].ack()
                else:
                    for m in msgs:
                        await m.ack()
        finally:
            if not nc.is_closed:
                try:
                    await sub.unsubscribe()
                except Exception:  # closing meanwhile
                    pass

    async def _receive(
        self, data: bytes, room: bool = False, catch_up: bool = False, commit: bool = True
    ) -> Optional[Received]:
        try:
            env = json.loads(data)
            sender, kind, msg_id = env["from"], env["kind"], env["id"]
        except (ValueError, KeyError, TypeError, RecursionError):
            self._reject("malformed", repr(data[:60]))
            return None
        if sender == self.me.name:
            return None
        peer = self.friends.get(sender)
        if peer is None and kind in ("group", "group-leave"):
            g = self.groups.get(env.get("to", ""))
            if g is not None and sender in g.members:
                try:
                    peer = await self.add_friend(sender)
                except ChatError:
                    peer = None
        request = False
        if peer is None and kind == "dm" and not room:
            # first contact: kept either way; delivered at once when the sender's directory entry verifies
            peer = self.contacts.get(sender)
            if peer is None:
                try:
                    peer = await self.lookup(sender)
                except ChatError as exc:
                    if self.history.keep_pending(msg_id, sender, data, str(exc)):
                        self.errors.append(f"kept unverified: {sender} {msg_id}: {exc}")
                        self._notice(
                            f"a message from {sender} could not be verified ({exc}); it is kept: "
                            f"/accept {sender} once their directory entry verifies"
                        )
                    return None
                self.contacts[sender] = peer
                self._notice(
                    f"{sender} is not your friend yet; their messages are verified against the directory "
                    f"and shown as requests: /accept {sender} to add them"
                )
            request = True
        if peer is None and not room:
            self._reject("unknown sender", sender)
            return None
        if peer is None:  # a room message from someone we do not know: check their directory entry
            try:
                peer = await self.lookup(sender)
            except ChatError:
                self._reject("unknown sender", sender)
                return None
        signed = _canonical(env)
        if env.get("from_key") != peer["user_key"] or not PublicKey(peer["user_key"]).verify(
            signed, _unb64(env.get("sig", ""))
        ):
            self._reject("bad signature", f"{sender} {msg_id}")
            return None
        if self.history.seen(msg_id):  # a valid message seen before: a replay
            if not catch_up:  # catching up a group reads what the mailbox may have brought already
                self._reject("replay", msg_id)
            return None
        if env["ts"] > time.time() * 1000 + MAX_SKEW_MS:
            self._reject("from the future", msg_id)
            return None
        try:
            if kind == "dm":
                body = self._open(env, self._pair_key(sender), signed).decode()
                conv = f"dm:{sender}"
            elif kind == "group":
                group = env["to"]
                g = self.groups.get(group)
                if g is None or env.get("key_version") not in g.keys:
                    g = await self._refresh_group(group)
                if g is None or env.get("key_version") not in g.keys:
                    if not catch_up:  # a catch-up may start before the version this user was given
                        self._reject("no group key", f"{group} v{env.get('key_version')}")
                    return None
                if sender not in g.members:
                    self._reject("not a member", f"{sender} in {group}")
                    return None
                body = self._open(env, g.keys[env["key_version"]], signed).decode()
                conv = f"group:{group}"
            elif kind == "room":
                body = _unb64(env["body"]).decode()
                conv = f"room:{env['to']}"
            elif kind == "group-leave":
                self._open(env, self._pair_key(sender), signed)
                group = env["to"]
                g = self.groups.get(group)
                if g is not None and g.owner == self.me.name and sender in g.members:
                    await self.remove_member(group, sender)
                    self._notice(f"{sender} left group {group} (new key version {self.groups[group].version})")
                return None
            else:
                self._reject("unknown kind", kind)
                return None
        except (InvalidTag, ValueError, KeyError):
            self._reject("cannot decrypt", msg_id)
            return None
        status = "request" if request else "verified"
        if not self.history.add(msg_id, env["ts"], "in", kind, sender, conv, body, status):
            return None  # the same message from the mailbox and a group's catch-up: shown once
        if commit:
            self.history.commit()
        r = Received(msg_id, kind, sender, conv, body, env["ts"], request)
        await self.inbox.put(r)
        if self.on_message is not None:
            await self.on_message(r)
        return r

    def _commit_soon(self) -> None:
        """Outgoing history is committed in batches (every 50 ms); incoming, before its ack (a batch at a time)."""
        if not self._commit_pending:
            self._commit_pending = True

            def commit():
                self._commit_pending = False
                self.history.commit()

            asyncio.get_running_loop().call_later(0.05, commit)

    def _reject(self, reason: str, detail: str) -> None:
        self.history.reject(reason, detail)
        self.errors.append(f"rejected: {reason}: {detail}")

    async def next_message(self, timeout: float = 5.0) -> Received:
        return await asyncio.wait_for(self.inbox.get(), timeout)
