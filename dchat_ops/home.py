"""The home folder: where one store, its keys, node files and running nodes live.

    >>> home = Home("h")                      # resolved once: absolute, ~ expanded, symlinks and .. followed
    >>> home.run_dir / "a" / "nats-server.pid"
    >>> with home.lock():                     # the store lock (made on a home that does not exist yet)
    ...     ...

Every spelling of a home (relative, absolute, with ``..``, through a symlink) resolves to the same
:class:`Home`, so the pid files of running nodes, the lock and the store are found whichever
spelling a command was given.

The home folder is, in order: the ``path`` argument, ``$DCHAT_OPS_HOME``,
``$XDG_DATA_HOME/dchat-ops``, ``~/.local/share/dchat-ops``.

    <home>/
      .lock             the store lock (flock)
      context.json      current operator and account
      stores/           nsc's store: operators, accounts, users (JWTs)
      keys/             nsc's keystore: seeds (keys/keys) and creds (keys/creds)
      nodes/            node files (<id>.yaml)
      run/              per node: rendered config, pid file, log, resolver and JetStream data
      pki/              the CA and node certificates
      data/             resolver data of standalone servers
      cache/            cached specs
      chat/             chat identities and history
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from dchat_ops._fs import store_lock

__all__ = ["Home", "default_home"]


def default_home() -> Path:
    """The home when none is given: ``$DCHAT_OPS_HOME``, ``$XDG_DATA_HOME/dchat-ops``, ``~/.local/share/dchat-ops``."""
    env = os.environ.get("DCHAT_OPS_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "dchat-ops"


class Home:
    """A home folder, resolved once to an absolute path, and the paths directly under it."""

    __slots__ = ("path",)

    def __init__(self, path: Optional[Union[Home, os.PathLike, str]] = None):
        if isinstance(path, Home):
            self.path: Path = path.path
            return
        raw = Path(path) if path else default_home()
        self.path = raw.expanduser().resolve()

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Home({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Home) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def exists(self) -> bool:
        return self.path.is_dir()

    def lock(self) -> store_lock:
        """The store lock: serialises read-modify-write changes across processes and threads (re-entrant)."""
        return store_lock(self.path)

    # paths directly under the home ---------------------------------------------------------------
    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def context_file(self) -> Path:
        return self.path / "context.json"

    @property
    def stores_dir(self) -> Path:
        return self.path / "stores"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @property
    def nodes_dir(self) -> Path:
        return self.path / "nodes"

    @property
    def run_dir(self) -> Path:
        return self.path / "run"

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def chat_dir(self) -> Path:
        return self.path / "chat"
