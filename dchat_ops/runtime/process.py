"""A real nats-server process: start, wait until healthy, reload, stop by pid.

    >>> srv = ServerProcess.start(config_path, log_file=..., pid_file=..., monitor_url="http://127.0.0.1:8222")
    >>> srv.varz()["server_name"]
    >>> srv.stop()

Processes are stopped by pid; nothing here ever targets an address other than the ones in the
config it is given.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional
from urllib.parse import urlsplit

from dchat_ops.errors import ServerError
from dchat_ops.natsbin import find_nats_server

__all__ = [
    "HEALTHZ",
    "RoutePeer",
    "ServerProcess",
    "get_json",
    "go_duration_seconds",
    "http_json",
    "pid_alive",
    "route_peers",
    "stop_pid",
]

# Ready to serve clients.  A JetStream node of a cluster reports "still recovering" until a meta
# leader is elected, which needs its peers: readiness must not wait for them.
HEALTHZ = "/healthz?js-enabled-only=true"


def http_json(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    """GET a monitoring endpoint (``http://host:port/path``): (status, JSON body).  Status 0 when
    nothing answers within ``timeout`` seconds, or the answer is not HTTP.

    A plain HTTP/1.0 request on a socket: the monitoring port of a node is plain HTTP and answers
    JSON, and this is asked on every step of a live change, so it skips ``urllib`` (about 7 ms to
    import, and it would send a loopback request through any proxy the environment names).
    """
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    try:
        if parts.scheme != "http" or not parts.hostname:
            return 0, {}
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
            request = f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n\r\n"
            sock.sendall(request.encode("ascii"))
            chunks = []
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        version, status = head.split(b" ", 2)[:2]
        if not version.startswith(b"HTTP/"):
            return 0, {}
        try:
            return int(status), json.loads(body or b"{}")
        except ValueError:
            return int(status), {}
    except (OSError, ValueError, UnicodeError):
        return 0, {}


# --- what the monitoring port says about routes ---------------------------------------------------------


def get_json(url: str, timeout: float = 2.0) -> dict:
    """GET a monitoring endpoint that must answer: its JSON body, or :class:`ServerError` naming it."""
    status, body = http_json(url, timeout=timeout)
    if status != 200:
        raise ServerError(f"{url} did not answer (status {status})" if status else f"no answer from {url}")
    return body


@dataclass(frozen=True)
class RoutePeer:
    """A server a node has routes with, as the node's /routez names it (``rtt``: the slowest of its
    routes' round trips, in seconds)."""

    server_id: str
    name: str
    rtt: float = field(default=0.0, compare=False)

    def __str__(self) -> str:
        return self.name or self.server_id


def route_peers(monitor: str, *, timeout: float = 2.0) -> tuple[str, list[RoutePeer]]:
    """The node's own server id and the distinct servers it has routes with (pooled routes counted once).

    Plain HTTP, no client library: a live permission change reads this before its reload."""
    body = get_json(monitor + "/routez", timeout)
    peers: dict[str, RoutePeer] = {}
    for r in body.get("routes") or []:
        rid = r.get("remote_id") or ""
        if not rid:
            continue
        rtt = max(go_duration_seconds(r.get("rtt") or ""), peers[rid].rtt if rid in peers else 0.0)
        peers[rid] = RoutePeer(rid, r.get("remote_name") or "", rtt)
    return body.get("server_id") or "", sorted(peers.values(), key=lambda p: (p.name, p.server_id))


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def go_duration_seconds(duration: str) -> float:
    """A Go duration as nats-server prints it ("165µs", "1.2ms", "1m3s") in seconds; 0 when unreadable."""
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(duration))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL after ``timeout``) a process; True when it is gone."""
    if not pid_alive(pid):
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


@dataclass
class ServerProcess:
    """A running nats-server started from a config file."""

    pid: int
    config_path: Path
    monitor_url: str
    log_file: Optional[Path] = None
    popen: Optional[subprocess.Popen] = None

    @classmethod
    def start(
        cls,
        config_path: Path,
        *,
        monitor_url: str,
        log_file: Optional[Path] = None,
        pid_file: Optional[Path] = None,
        binary: Optional[str] = None,
        timeout: float = 15.0,
        wait: bool = True,
    ) -> ServerProcess:
        """Start nats-server detached (its own session) and wait for ``/healthz`` to answer 200."""
        exe = find_nats_server(binary)
        args = [exe, "-c", str(config_path)]
        if pid_file is not None:
            args += ["-P", str(pid_file)]
        out: IO[bytes] | int
        if log_file is not None:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            out = open(log_file, "ab")  # noqa: SIM115 - handed to the child, closed after Popen
        else:
            out = subprocess.DEVNULL
        try:
            popen = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            if not isinstance(out, int):
                out.close()
        srv = cls(popen.pid, Path(config_path), monitor_url.rstrip("/"), Path(log_file) if log_file else None, popen)
        if wait:
            try:
                srv.wait_healthy(timeout)
            except ServerError:
                srv.stop()
                raise
        return srv

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise ServerError(f"nats-server exited with code {self.popen.returncode}: {self.last_log_line()}")
            if self.popen is None and not pid_alive(self.pid):
                raise ServerError(f"nats-server (pid {self.pid}) exited: {self.last_log_line()}")
            status, _ = http_json(self.monitor_url + HEALTHZ, timeout=0.5)
            if status == 200:
                return
            time.sleep(0.02)
        raise ServerError(f"nats-server did not become healthy within {timeout:.0f}s: {self.last_log_line()}")

    def last_log_line(self) -> str:
        if self.log_file and self.log_file.exists():
            lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
            for ln in reversed(lines):
                if "[FTL]" in ln or "[ERR]" in ln:
                    return ln.split("] ", 1)[-1]
            if lines:
                return lines[-1].split("] ", 1)[-1]
        return "no log"

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def varz(self) -> dict:
        return self.monitor("varz")

    def monitor(self, endpoint: str) -> dict:
        status, body = http_json(f"{self.monitor_url}/{endpoint}")
        if status != 200:
            raise ServerError(f"monitoring endpoint /{endpoint} did not answer (status {status})")
        return body

    def reload(self) -> None:
        try:
            os.kill(self.pid, signal.SIGHUP)
        except ProcessLookupError:
            raise ServerError(f"nats-server (pid {self.pid}) is not running") from None

    def stop(self, timeout: float = 10.0) -> bool:
        ok = stop_pid(self.pid, timeout)
        if self.popen is not None:
            try:
                self.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return ok
