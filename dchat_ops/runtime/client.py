"""Connecting to a node with nats-py: the one way to reach a node, refusals, and a client that follows its creds file.

>>> nc = await connect_node(store, "a")                        # the node's own user, its URL and TLS
>>> nc = await connect_node(store, "a", creds=path, timeout=3)
>>> target = node_target(store, "a")                           # url, monitor_url, tls of a node
>>> nc = await connect("nats://127.0.0.1:4222", creds_path)    # any URL, bounded by ``timeout``
>>> reason = await refused("nats://127.0.0.1:4222", creds_text=bad_creds)   # None when it connected

Every connect is bounded: it connects within ``timeout`` seconds or raises :class:`ServerError`
("no answer from ... within Ns" or "cannot connect to ...: reason"); it never retries without end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from dchat_ops.config import nodes
from dchat_ops.config.node import Node, NodeFile, inbox_prefix
from dchat_ops.config.tls import client_tls_for
from dchat_ops.errors import DchatOpsError, ServerError
from dchat_ops.nsc.claims import UserClaims
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.jwt import decode_unverified
from dchat_ops.nsc.store import Store
from dchat_ops.subjects import inbox_prefix_of, matches, split_queue

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = [
    "DEFAULT_TIMEOUT",
    "ManagedClient",
    "ManagedSubscription",
    "NodeTarget",
    "close_quietly",
    "connect",
    "connect_node",
    "node_target",
    "probe_subscriptions",
    "refused",
    "run_sync",
    "system_routez",
]

DEFAULT_TIMEOUT = 5.0  # seconds a connect may take, the TLS handshake and the server's first PONG included
_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)
_T = TypeVar("_T")


# asyncio's SSL transport logs this warning when a TLS peer closes and the protocol (nats-py's) returns
# True from eof_received(): it is harmless, and would be printed after every connection to a TLS port
ASYNCIO_SSL_EOF = "returning true from eof_received() has no effect when using ssl"


class QuietSslEof(logging.Filter):
    """Drops asyncio's harmless SSL eof_received warning, and only that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return record.getMessage() != ASYNCIO_SSL_EOF
        except Exception:  # a record whose message cannot be formatted is not ours to hide
            return True


def quiet_asyncio_ssl_eof() -> None:
    """Install :class:`QuietSslEof` on the ``asyncio`` logger (once); :func:`connect` does."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, QuietSslEof) for f in logger.filters):
        logger.addFilter(QuietSslEof())


def run_sync(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine ``make()`` to completion from synchronous code: the one bridge from the
    library's synchronous calls to nats-py.  Called from code inside an event loop (a node started
    from async code), it runs on a loop of its own in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def close_quietly(nc: Client) -> None:
    """Close a connection without waiting more than a second on a server that went away (or a
    connection that never came up)."""
    try:
        await asyncio.wait_for(nc.close(), 1)
    except Exception:  # already closed, or the socket is gone: nothing left to release
        pass


async def connect(
    url: str,
    creds_path: Optional[Path] = None,
    *,
    creds_text: Optional[str] = None,
    tls: Optional[ssl.SSLContext] = None,
    timeout: float = DEFAULT_TIMEOUT,
    errors: Optional[list] = None,
    name: str = "dchat-ops",
    **kw,
) -> Client:
    """Connect with a creds file (re-read at each reconnect) or creds text; errors are appended to ``errors``.

    The connect is bounded by ``timeout`` (also nats-py's ``connect_timeout`` for each step); a server
    that does not answer or refuses raises :class:`ServerError`.  ``tls`` is the context for a TLS port.
    Other keywords go to nats-py (``allow_reconnect``, ``max_reconnect_attempts`` apply once connected).
    """

    seen: list[BaseException] = []
    fatal = asyncio.Event()  # the server answered and said no: retrying until the timeout would not help

    async def on_error(e):
        seen.append(e)
        if errors is not None:
            errors.append(str(e))
        if isinstance(e, ssl.SSLError) or not isinstance(e, (OSError, *_TIMEOUTS)):
            fatal.set()

    # nats-py is imported at the first connect, not with this module: it costs about 40 ms (most of
    # it JetStream code), which would come before the first step of every command that changes a node
    from nats.aio.client import Client, RawCredentials
    from nats.errors import NoServersError  # nats-py's last word after the real reason was reported

    quiet_asyncio_ssl_eof()
    creds = RawCredentials(creds_text) if creds_text is not None else str(creds_path)
    if "inbox_prefix" not in kw and (own := own_inbox(creds_path, creds_text)):
        kw["inbox_prefix"] = own  # a user allowed replies on its own prefix only: nats-py must use it
    if tls is not None:
        kw["tls"] = tls
    kw.setdefault("connect_timeout", timeout)
    nc = Client()
    task = asyncio.ensure_future(nc.connect(url, user_credentials=creds, error_cb=on_error, name=name, **kw))
    refusal = asyncio.ensure_future(fatal.wait())
    try:
        await asyncio.wait({task, refusal}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refusal.cancel()
    if task.done() and not task.cancelled() and task.exception() is None:
        return nc
    if task.done() and not task.cancelled():
        failure = task.exception()
        if failure is not None:  # always: a connect that did not fail returned above
            seen.append(failure)
    else:
        task.cancel()
        try:
            await task
        except BaseException:  # cancelled, or it failed while being cancelled: the reason is in ``seen``
            pass
    await close_quietly(nc)
    last = next((e for e in reversed(seen) if not isinstance(e, NoServersError)), seen[-1] if seen else None)
    if last is None or isinstance(last, _TIMEOUTS):
        raise ServerError(f"no answer from {url} within {timeout:g}s")
    reason = f"TLS: {last}" if isinstance(last, ssl.SSLError) else (str(last) or type(last).__name__)
    raise ServerError(f"cannot connect to {url}: {reason}")


@dataclass(frozen=True)
class NodeTarget:
    """How this machine reaches a node: its client URL, monitoring URL and the TLS context of its client port."""

    node_id: str
    server_name: str
    url: str
    monitor_url: str
    tls: Optional[ssl.SSLContext] = None

    def connect_kw(self) -> dict:
        """The keywords that make :func:`connect` (or a client built on it) reach this node."""
        return {"tls": self.tls} if self.tls is not None else {}

    async def connect(
        self,
        creds_path: Optional[Path] = None,
        *,
        creds_text: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kw,
    ) -> Client:
        return await connect(self.url, creds_path, creds_text=creds_text, tls=self.tls, timeout=timeout, **kw)


def node_target(store: Store, node: Union[str, Node]) -> NodeTarget:
    """The :class:`NodeTarget` of a node (by id or :class:`Node`).

    When the node verifies its clients' certificates and the store has no client certificate for it
    yet, one is issued from the store's CA.
    """
    if isinstance(node, str):
        node = NodeFile.load(store, node).node
    return NodeTarget(
        node_id=node.id,
        server_name=node.server_name,
        url=nodes.client_url(node),
        monitor_url=nodes.monitor_url(node),
        tls=client_tls_for(store, node),
    )


def jwt_inbox(token: str) -> str:
    """The inbox prefix the user of this JWT must use (:func:`dchat_ops.subjects.inbox_prefix_of` of its
    subscribe permissions), or "" for the default one (also for a token that cannot be read)."""
    try:
        claims = decode_unverified(token)
    except (ValueError, DchatOpsError):
        return ""
    return inbox_prefix_of(claims.permissions.sub.allow) if isinstance(claims, UserClaims) else ""


def own_inbox(creds_path: Optional[Path], creds_text: Optional[str]) -> str:
    """:func:`jwt_inbox` of the JWT in these creds ("" when they cannot be read: the connect says why)."""
    try:
        text = creds_text if creds_text is not None else Path(str(creds_path)).read_text()
        return jwt_inbox(parse_creds(text).jwt)
    except (OSError, ValueError, DchatOpsError):
        return ""


async def connect_node(
    store: Store,
    node: Union[str, Node],
    *,
    creds: Optional[Path] = None,
    creds_text: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    **kw,
) -> Client:
    """Connect to a node of the store: the one way to reach a node (its URL, TLS, a bounded connect).

    Without ``creds`` or ``creds_text`` it connects as the node's own user.
    """
    target = node_target(store, node)
    if creds is None and creds_text is None:
        n = node if not isinstance(node, str) else NodeFile.load(store, node).node
        creds = store.creds_path(store.current_operator(), n.account, n.user)
    return await target.connect(creds, creds_text=creds_text, timeout=timeout, **kw)


async def refused(
    url: str,
    creds_path: Optional[Path] = None,
    *,
    creds_text: Optional[str] = None,
    timeout: float = 3.0,
    **kw,
) -> Optional[str]:
    """Try to connect once; the server's reason (lower case) when refused, None when it connected.

    ``tls=`` (and other :func:`connect` keywords) pass through.
    """
    errors: list[str] = []
    try:
        nc = await connect(
            url,
            creds_path,
            creds_text=creds_text,
            errors=errors,
            timeout=timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            **kw,
        )
    except DchatOpsError as exc:
        return (" ".join(errors) or str(exc)).lower()
    try:
        await nc.flush(timeout=1)
    except Exception as exc:
        return (" ".join(errors) or str(exc)).lower()
    finally:
        await nc.close()
    return None


class ManagedSubscription:
    """A subscription of a :class:`ManagedClient`; survives credential swaps."""

    def __init__(self, client: ManagedClient, subject: str, queue: str, cb):
        self.client = client
        self.subject = subject
        self.queue = queue
        self.cb = cb
        self.sub: Optional[Subscription] = None
        self._new_sub: Optional[Subscription] = None
        # during a swap: what the old connection delivered, and what the new one queued
        self._seen_old: Optional[Counter[str]] = None
        self._queued: Optional[list[Msg]] = None
        self._incoming: Optional[Client] = None  # the connection being swapped in

    def handler(self, conn: Client):
        """The message callback for this subscription on connection ``conn``."""

        async def on_msg(msg):
            if self._queued is not None and conn is self._incoming:
                self._queued.append(msg)  # new connection, swap in progress: hold back
                return
            if self._seen_old is not None:
                self._seen_old[_fingerprint(msg)] += 1
            await self.cb(msg)

        return on_msg

    async def unsubscribe(self):
        self.client._subs.remove(self)
        if self.sub is not None:
            await self.sub.unsubscribe()


def _fingerprint(msg) -> str:
    h = hashlib.sha256()
    h.update(msg.subject.encode())
    h.update(b"\0")
    h.update(msg.data)
    if msg.headers:
        h.update(repr(sorted(msg.headers.items())).encode())
    return h.hexdigest()


def _refused_by(token: str) -> Callable[[ManagedSubscription], bool]:
    """Which subscriptions the server refused to a connection with the user JWT ``token``: a plain
    subscription to a literal subject that no plain entry of a non-empty subscribe allow list
    matches, or that a deny entry matches.  Anything less certain counts as allowed."""
    try:
        claims = decode_unverified(token)
    except (DchatOpsError, ValueError):
        return lambda ms: False
    if not isinstance(claims, UserClaims):
        return lambda ms: False
    perms = claims.permissions.sub
    allow = [e for e in perms.allow if " " not in e]
    deny = [e for e in perms.deny if " " not in e]

    def refused(ms: ManagedSubscription) -> bool:
        if ms.queue or "*" in ms.subject.split(".") or ">" in ms.subject.split("."):
            return False
        if any(matches(e, ms.subject) for e in deny):
            return True
        return bool(perms.allow) and not any(matches(e, ms.subject) for e in allow)

    return refused


class ManagedClient:
    """A connection through a creds file that follows the file.

    When the JWT in the creds file changes (``allow-sub`` re-issued it), the client opens a new
    connection with the new creds, subscribes everything there, then drains the old connection:
    make before break, so no connection is dropped and nothing published meanwhile is lost.  A
    change that takes something away also revokes the old JWT; its push waits (briefly) for such
    clients to move over, and should the server close the old connection first, the client moves
    over all the same (what was published meanwhile on that connection is lost).
    Messages that reach both connections during the overlap are delivered once (recognised by
    subject, payload and headers, so identical payloads sent within the overlap count as one:
    chat envelopes carry unique ids).  Subscriptions the old credentials refused come alive on
    the new connection when the new credentials allow them.

        mc = ManagedClient(url, creds_path, inbox_prefix="_INBOX_alice")
        await mc.start()
        await mc.subscribe("room.x", cb=handler)
    """

    def __init__(
        self,
        url: str,
        creds_path: Path,
        *,
        inbox_prefix: Optional[str] = None,
        poll_interval: float = 0.01,
        name: str = "dchat-ops",
        **connect_kw,
    ):
        self.url = url
        self.creds_path = Path(creds_path)
        self.inbox_prefix = inbox_prefix
        self.poll_interval = poll_interval
        self.name = name
        connect_kw.setdefault("reconnect_time_wait", 0.25)
        connect_kw.setdefault("max_reconnect_attempts", -1)
        self.connect_kw = connect_kw
        self.nc: Optional[Client] = None
        self.errors: list[str] = []
        self.swaps = 0
        self.duplicates_dropped = 0
        self._subs: list[ManagedSubscription] = []
        self._jwt = ""
        self._stamp = (0, 0, 0)  # the creds file as last seen: inode, size, modification time
        self._watch: Optional[asyncio.Task] = None
        self._lock = asyncio.Lock()
        self._closing = False
        self.swapped = asyncio.Event()

    def _read_jwt(self) -> str:

        try:
            return parse_creds(self.creds_path.read_text()).jwt
        except (OSError, ValueError, DchatOpsError):
            return self._jwt

    async def _connect(self) -> Client:
        kw = dict(self.connect_kw)
        if self.inbox_prefix:
            kw["inbox_prefix"] = self.inbox_prefix
        return await connect(self.url, self.creds_path, errors=self.errors, name=self.name, **kw)

    def _client(self) -> Client:
        """The current connection (made by :meth:`start`)."""
        if self.nc is None:
            raise RuntimeError("the ManagedClient is not started: await start() first")
        return self.nc

    async def start(self) -> ManagedClient:
        self._stamp = self._creds_stamp()
        self._jwt = self._read_jwt()
        self.nc = await self._connect()
        self._watch = asyncio.get_running_loop().create_task(self._watch_creds())
        return self

    async def subscribe(self, subject: str, queue: str = "", cb=None) -> ManagedSubscription:
        ms = ManagedSubscription(self, subject, queue, cb)
        async with self._lock:
            self._subs.append(ms)
            nc = self._client()
            ms.sub = await nc.subscribe(subject, queue=queue, cb=ms.handler(nc))
        return ms

    async def publish(self, subject: str, data: bytes = b"", **kw) -> None:
        await self._client().publish(subject, data, **kw)

    async def request(self, subject: str, data: bytes = b"", timeout: float = 2.0, **kw):
        return await self._client().request(subject, data, timeout=timeout, **kw)

    async def flush(self, timeout: float = 2.0) -> None:
        # nats-py annotates flush's timeout as int; it hands it to asyncio.wait_for, which takes float seconds
        seconds: Any = timeout
        await self._client().flush(timeout=seconds)

    def _creds_stamp(self) -> tuple[int, int, int]:
        try:
            st = self.creds_path.stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    async def _watch_creds(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_interval)
            # a stat per poll; the file is read when it was replaced or changed (creds are written
            # by rename, so a new file is a new inode)
            stamp = self._creds_stamp()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            jwt = self._read_jwt()
            if jwt and jwt != self._jwt:
                try:
                    await asyncio.wait_for(self.swap(), 10)
                except Exception as exc:  # keep the old connection; the next poll tries again
                    self.errors.append(f"credential swap failed: {type(exc).__name__}: {exc}")
                    self._stamp = (0, 0, 0)

    async def swap(self) -> None:
        """Move to a new connection with the creds file's current content (make before break).

        Also when the old connection is closed already: a permission removal revokes the JWT it
        presented, and nats-server then closes it (nats-py does not reconnect after that).
        """
        async with self._lock:
            old_jwt, jwt = self._jwt, self._read_jwt()
            refused = _refused_by(old_jwt)
            new = await self._connect()
            old = self._client()
            try:
                for ms in self._subs:
                    if refused(ms):  # the old connection delivers none of it: nothing to hold back or drop twice
                        continue
                    ms._seen_old = Counter()
                    ms._queued = []
                    ms._incoming = new
                for ms in self._subs:
                    ms._new_sub = await new.subscribe(ms.subject, queue=ms.queue, cb=ms.handler(new))
                await new.flush()
                # let the new interest reach the other nodes before the old one goes away
                await asyncio.sleep(0.05)
            except BaseException:  # stay on the old connection; the next poll tries again
                for ms in self._subs:
                    ms._seen_old = ms._queued = ms._incoming = ms._new_sub = None
                await close_quietly(new)
                raise
            self._jwt = jwt  # only once moved: a failed swap is tried again at the next poll
            self.nc = new
            if not old.is_closed:
                try:
                    await old.drain()
                except Exception:  # closed meanwhile (its JWT revoked): nothing left to drain
                    pass
            for ms in self._subs:
                seen, queued = ms._seen_old or Counter(), ms._queued or []
                ms._seen_old = ms._queued = ms._incoming = None
                ms.sub = ms._new_sub
                for msg in queued:
                    fp = _fingerprint(msg)
                    if seen.get(fp):
                        seen[fp] -= 1
                        self.duplicates_dropped += 1
                        continue
                    await ms.cb(msg)
            self.swaps += 1
            self.swapped.set()

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait({self._watch}, timeout=3)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()


async def system_routez(nc: Client, server_id: str, *, timeout: float, name: str = "", detail: bool = False) -> dict:
    """The ``/routez`` of server ``server_id``, asked over the system-account connection ``nc``
    (``$SYS.REQ.SERVER.<id>.ROUTEZ``: only that server answers); with ``detail``, the subscriptions
    each route carries.  :class:`ServerError` when no answer comes within ``timeout`` seconds."""
    req = json.dumps({"subscriptions_detail": True} if detail else {}).encode()
    try:
        msg = await nc.request(f"$SYS.REQ.SERVER.{server_id}.ROUTEZ", req, timeout=timeout)
        answer: Any = json.loads(msg.data)
    except Exception as exc:  # nats-py's timeout / no responders, or a reply that is not JSON
        raise ServerError(f"server {name or server_id} did not answer its routes within {timeout:g}s") from exc
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise ServerError(f"server {name or server_id} answered no routes")
    return data


async def probe_subscriptions(
    store: Store, node: Node, entries: list[str], *, timeout: float = DEFAULT_TIMEOUT, name: str = "dchat-ops-check"
) -> Client:
    """Connect to ``node`` as its own user and subscribe to each entry (``subject`` or ``subject queue``).

    Proves that the node user's creds allow them (:class:`ServerError` with the server's words when
    one is refused), and holds the interest while the caller looks for it elsewhere: the caller
    closes the returned connection (:func:`close_quietly`).
    """
    errors: list[str] = []
    nc = await connect_node(
        store,
        node,
        timeout=timeout,
        errors=errors,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        inbox_prefix=inbox_prefix(node.id),
        name=name,
    )
    try:
        for entry in entries:
            subject, queue = split_queue(entry)
            await nc.subscribe(subject, queue=queue)
        seconds: Any = timeout  # nats-py annotates flush's timeout as int; it takes float seconds
        await nc.flush(timeout=seconds)  # the server reports a refused SUB before the PONG
    except BaseException:
        await close_quietly(nc)
        raise
    refused = [e for e in errors if "permissions violation" in e.lower()]
    if refused:
        await close_quietly(nc)
        raise ServerError(f"node {node.id}: its user cannot subscribe with its new creds: {'; '.join(refused)}")
    return nc
