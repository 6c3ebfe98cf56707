"""Atomic, private file writes and an all-or-nothing file transaction.

Every key, creds, JWT or config file dchat-ops writes goes through :func:`atomic_write`: the data
goes to a temporary file in the same folder, is flushed to disk, and replaces the target with
``os.replace``, so a reader sees the old file or the new one, never half of one.  Secrets are
written 0600 inside folders made 0700.

:class:`FileTransaction` remembers the bytes (or absence) of every file it is about to change
and puts all of them back on :meth:`~FileTransaction.rollback`.
"""

from __future__ import annotations

import fcntl
import functools
import os
import stat
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal

from dchat_ops.errors import DchatOpsError, ExistsError

__all__ = [
    "FileTransaction",
    "atomic_write",
    "deferred_sync",
    "ensure_dir",
    "read_bytes",
    "read_file",
    "store_lock",
    "with_store_lock",
]

_DEFER = {"depth": 0, "pending": False}

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PUBLIC_FILE = 0o644
PUBLIC_DIR = 0o755


def ensure_dir(path: Path, private: bool = False, tighten: bool = True) -> None:
    """Create ``path`` and its parents; folders made private are 0700.

    ``tighten``: an existing ``path`` is made 0700 too (the store's own folders).  Writes to a place
    the user chose pass False: their folder keeps its mode.
    """
    path = Path(path)
    mode = PRIVATE_DIR if private else PUBLIC_DIR
    try:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):  # every folder this call makes gets the mode, not only the last
            try:
                d.mkdir(mode=mode)
            except FileExistsError:
                pass
            if private:
                os.chmod(d, PRIVATE_DIR)
        if private and tighten and not missing and stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR:
            os.chmod(path, PRIVATE_DIR)
    except OSError as exc:
        raise DchatOpsError(f"cannot create folder {path}: {exc.strerror}") from None


_KNOWN_DIRS: dict[str, bool] = {}  # folder -> made private by us (folders this process saw exist)


def _ensure_parent(parent: str, private: bool) -> None:
    """Make ``parent`` (0700 when ``private``) unless this process saw it already.  A folder removed
    since is made again when its temporary file cannot be created (see :func:`atomic_write`)."""
    known = _KNOWN_DIRS.get(parent)
    if known is not None and (known or not private):
        return
    ensure_dir(Path(parent), private=private, tighten=False)
    _KNOWN_DIRS[parent] = private


def atomic_write(
    path: Path,
    data: bytes | str,
    *,
    private: bool = False,
    force: bool = True,
    fsync: bool = True,
) -> bool:
    """Write ``data`` to ``path`` atomically.  Returns False when the file already held these bytes.

    ``private``: the file is 0600 and its folder 0700.  ``force=False``: refuse to replace an
    existing file whose content differs (:class:`ExistsError`).
    """
    target = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        current: bytes | None = read_file(target)[0]
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise DchatOpsError(f"cannot read {target}: {exc.strerror}") from None
    if current == data:
        if private and stat.S_IMODE(os.stat(target).st_mode) != PRIVATE_FILE:
            os.chmod(target, PRIVATE_FILE)
        return False
    if current is not None and not force:
        raise ExistsError(f"{target} already exists; use --force to replace it")
    parent, name = os.path.split(target)
    _ensure_parent(parent or ".", private)
    mode = PRIVATE_FILE if private else PUBLIC_FILE
    tmp = None
    try:
        for attempt in range(100):
            candidate = os.path.join(parent, f".{name}.{os.getpid()}.{attempt}.tmp")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                tmp = candidate
                break
            except FileExistsError:
                continue
            except FileNotFoundError:  # the folder was removed since this process saw it: make it again
                if _KNOWN_DIRS.pop(parent or ".", None) is None:
                    raise
                _ensure_parent(parent or ".", private)
        else:
            raise DchatOpsError(f"cannot write {target}: no free temporary name")
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if fsync and _DEFER["depth"]:
                _DEFER["pending"] = True
            elif fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise DchatOpsError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return True


class deferred_sync:
    """Within this block, atomic writes skip their per-file fsync; one ``os.sync()`` runs at the end.

    Each file still replaces its target atomically; only the flush to disk is batched.  Used by
    bulk operations (thousands of users) where a flush per file would dominate.
    """

    def __init__(self, flush: bool = True):
        self.flush = flush  # False: leave the flush to whoever started this work (bulk worker processes)

    def __enter__(self):
        _DEFER["depth"] += 1
        return self

    def __exit__(self, *exc):
        _DEFER["depth"] -= 1
        if _DEFER["depth"] == 0 and _DEFER["pending"]:
            _DEFER["pending"] = False
            if self.flush:
                os.sync()
        return False


def read_file(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """(bytes, permission bits) of a file, with plain system calls (many small files: a JWT, creds):
    OSError (FileNotFoundError...) as ``open`` raises it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        parts = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            parts.append(chunk)
    finally:
        os.close(fd)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), mode


def read_bytes(path: Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


class FileTransaction:
    """Remember files before changing them; ``rollback()`` restores every one byte for byte.

    with FileTransaction() as tx:
        tx.write(path, data)           # remembered, then written atomically
        ...                            # an exception here rolls everything back
    """

    def __init__(self) -> None:
        self._saved: dict[Path, tuple[bytes | None, int | None]] = {}

    def remember(self, path: Path) -> None:
        path = Path(path)
        if path in self._saved:
            return
        try:
            st = path.stat()
            self._saved[path] = (path.read_bytes(), stat.S_IMODE(st.st_mode))
        except FileNotFoundError:
            self._saved[path] = (None, None)

    def write(self, path: Path, data: bytes | str, *, private: bool = False) -> bool:
        self.remember(path)
        return atomic_write(path, data, private=private, force=True)

    def delete(self, path: Path) -> None:
        self.remember(path)
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass

    @property
    def paths(self) -> list[Path]:
        return list(self._saved)

    def rollback(self) -> list[str]:
        """Restore every remembered file; returns the problems met (empty when all went back)."""
        problems = []
        for path, (data, mode) in reversed(list(self._saved.items())):
            try:
                if data is None:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
                else:
                    atomic_write(path, data, private=(mode == PRIVATE_FILE), force=True)
                    if mode is not None:
                        os.chmod(path, mode)
            except (OSError, DchatOpsError) as exc:
                problems.append(f"{path}: {exc}")
        return problems

    def commit(self) -> None:
        self._saved.clear()

    def __enter__(self) -> FileTransaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is not None:
            self.rollback()
        self._saved.clear()
        return False


_LOCKS: dict[str, list] = {}  # home -> [threading.RLock, depth, open file]
_LOCKS_GUARD = threading.Lock()


class store_lock:
    """Serialise read-modify-write changes to one store, across processes (flock) and threads.

    Re-entrant in one process, so a locked operation may call another one.  The home is made when it
    does not exist yet (a first ``init`` or import), so two first writers meet on the same lock too.

        with store_lock(store.home):
            ...read a JWT, change it, write it...
    """

    def __init__(self, home: Path):
        self.key = os.path.realpath(os.fspath(home))

    def __enter__(self):
        with _LOCKS_GUARD:
            entry = _LOCKS.setdefault(self.key, [threading.RLock(), 0, None])
        entry[0].acquire()
        if entry[1] == 0:  # a home that does not exist yet is made: two first writers must meet on its lock too
            try:
                ensure_dir(Path(self.key), private=True, tighten=False)
                f = open(os.path.join(self.key, ".lock"), "a+")
            except (OSError, DchatOpsError):
                entry[0].release()
                raise
            try:
                fcntl.flock(f, fcntl.LOCK_EX)
            except OSError:
                f.close()
                entry[0].release()
                raise
            entry[2] = f
        entry[1] += 1
        return self

    def __exit__(self, *exc):
        entry = _LOCKS[self.key]
        entry[1] -= 1
        if entry[1] == 0 and entry[2] is not None:
            fcntl.flock(entry[2], fcntl.LOCK_UN)
            entry[2].close()
            entry[2] = None
        entry[0].release()
        return False


def with_store_lock(fn):
    """Decorator: run ``fn(store, ...)`` holding :class:`store_lock` on ``store.home``."""

    @functools.wraps(fn)
    def wrapper(store, *args, **kwargs):
        with store_lock(store.home):
            return fn(store, *args, **kwargs)

    return wrapper
