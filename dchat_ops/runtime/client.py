"""Connecting to a node with nats-py: plain connections, refusals, and a client that follows its creds file.

>>> nc = await connect("nats://127.0.0.1:4222", creds_path)
>>> reason = await refused("nats://127.0.0.1:4222", creds_text=bad_creds)   # None when it connected
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Optional

import nats
from nats.aio.client import Client, RawCredentials

from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc.creds import parse_creds

__all__ = ["ManagedClient", "ManagedSubscription", "connect", "refused"]


async def connect(
    url: str,
    creds_path: Optional[Path] = None,
    *,
    creds_text: Optional[str] = None,
    errors: Optional[list] = None,
    name: str = "dchat-ops",
    **kw,
) -> Client:
    """Connect with a creds file (re-read at each reconnect) or creds text; errors are appended to ``errors``."""

    async def on_error(e):
        if errors is not None:
            errors.append(str(e))

    creds = RawCredentials(creds_text) if creds_text is not None else str(creds_path)
    kw.setdefault("connect_timeout", 2)
    return await nats.connect(url, user_credentials=creds, error_cb=on_error, name=name, **kw)


async def refused(
    url: str, creds_path: Optional[Path] = None, *, creds_text: Optional[str] = None, timeout: float = 3.0
) -> Optional[str]:
    """Try to connect once; the server's reason (lower case) when refused, None when it connected."""
    errors: list[str] = []
    try:
        nc = await asyncio.wait_for(
            connect(
                url, creds_path, creds_text=creds_text, errors=errors, allow_reconnect=False, max_reconnect_attempts=0
            ),
            timeout,
        )
    except Exception as exc:  # nats-py raises several types for an auth refusal
        return (" ".join(errors) or str(exc) or type(exc).__name__).lower()
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
        self.sub = None
        self._new_sub = None
        # during a swap: what the old connection delivered, and what the new one queued
        self._seen_old: Optional[Counter] = None
        self._queued: Optional[list] = None
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


class ManagedClient:
    """A connection through a creds file that follows the file.

    When the JWT in the creds file changes (``allow-sub`` re-issued it), the client opens a new
    connection with the new creds, subscribes everything there, then drains the old connection:
    make before break, so no connection is dropped and nothing published meanwhile is lost.
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
        poll_interval: float = 0.05,
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

    async def start(self) -> ManagedClient:
        self._jwt = self._read_jwt()
        self.nc = await self._connect()
        self._watch = asyncio.get_running_loop().create_task(self._watch_creds())
        return self

    async def subscribe(self, subject: str, queue: str = "", cb=None) -> ManagedSubscription:
        ms = ManagedSubscription(self, subject, queue, cb)
        async with self._lock:
            self._subs.append(ms)
            ms.sub = await self.nc.subscribe(subject, queue=queue, cb=ms.handler(self.nc))
        return ms

    async def publish(self, subject: str, data: bytes = b"", **kw) -> None:
        await self.nc.publish(subject, data, **kw)

    async def request(self, subject: str, data: bytes = b"", timeout: float = 2.0, **kw):
        return await self.nc.request(subject, data, timeout=timeout, **kw)

    async def flush(self, timeout: float = 2.0) -> None:
        await self.nc.flush(timeout=timeout)

    async def _watch_creds(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_interval)
            jwt = self._read_jwt()
            if jwt and jwt != self._jwt:
                try:
                    await asyncio.wait_for(self.swap(), 10)
                except Exception as exc:  # keep the old connection; the next poll tries again
                    self.errors.append(f"credential swap failed: {type(exc).__name__}: {exc}")

    async def swap(self) -> None:
        """Move to a new connection with the creds file's current content (make before break)."""
        async with self._lock:
            self._jwt = self._read_jwt()
            new = await self._connect()
            old = self.nc
            for ms in self._subs:
                ms._seen_old = Counter()
                ms._queued = []
                ms._incoming = new
            for ms in self._subs:
                ms._new_sub = await new.subscribe(ms.subject, queue=ms.queue, cb=ms.handler(new))
            await new.flush()
            # let the new interest reach the other nodes before the old one goes away
            await asyncio.sleep(0.05)
            self.nc = new
            await old.drain()
            for ms in self._subs:
                seen, queued = ms._seen_old, ms._queued
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
