"""Atomic, private file writes and an all-or-nothing file transaction.

Every key, creds, JWT or config file dchat-ops writes goes through :func:`atomic_write`: the data
goes to a temporary file in the same folder, is flushed to disk, and replaces the target with
``os.replace``, so a reader sees the old file or the new one, never half of one.  Secrets are
written 0600 inside folders made 0700.

:class:`FileTransaction` remembers the bytes (or absence) of every file it is about to change
and puts all of them back on :meth:`~FileTransaction.rollback`.  Given a journal file, it writes
what it remembers there before each change, so that a change cut short by ``kill -9`` (or a power
loss) is put back by the next process that takes the store lock (:func:`recover`), and temporary
files of processes that died are removed then (:func:`sweep_temps`).  See docs/crash-safety.md.

Temporary files are named ``.tmp-<pid>-<n>-<name>``: they end like the file they replace, so the
keystore's ``.gitignore`` (``*.nk``, ``*.creds``) covers those that hold seeds.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import os
import re
import signal
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal, Optional

from dchat_ops.errors import DchatOpsError, ExistsError

__all__ = [
    "HOLDER_NAME",
    "JOURNAL_NAME",
    "FileTransaction",
    "active_transaction",
    "atomic_write",
    "deferred_sync",
    "die_with_parent",
    "ensure_dir",
    "find_temps",
    "journal_new_files",
    "process_gone",
    "read_bytes",
    "read_file",
    "recover",
    "recover_store",
    "store_lock",
    "sweep_temps",
    "unit_of_work",
    "untracked",
    "with_store_lock",
]

JOURNAL_NAME = ".journal"  # <home>/.journal: the rollback record of the change under way (0600)
# temporary files: .tmp-<pid>-<n>-<name> (and, from earlier versions, .<name>.<pid>.<n>.tmp)
_TEMP = re.compile(r"^\.tmp-(\d+)-\d+-.|^\..+\.(\d+)\.\d+\.tmp$")

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
    except OSError as exc:  # reading what is there is the first step of writing it
        raise DchatOpsError(f"cannot write {target}: {exc.strerror}") from None
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
            candidate = os.path.join(parent, f".tmp-{os.getpid()}-{attempt}-{name[-200:]}")
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
        number = _count_write() if _CRASH_AT else 0
        if _CRASH_AT and _crash_point(number, "temp"):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, target)
        tmp = None
        if _CRASH_AT and _crash_point(number, "file"):
            os.kill(os.getpid(), signal.SIGKILL)
    except OSError as exc:
        raise DchatOpsError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return True


# Test-only crash hook: DCHAT_OPS_TEST_CRASH_AT_WRITE=N makes a process SIGKILL itself right after its N-th
# atomic write replaced its target; N:temp, with the N-th temporary file written but not yet renamed.  The
# crash tests (tests/test_crash.py) use it to stop a command at an exact point; nothing else sets it.
_CRASH_AT = os.environ.get("DCHAT_OPS_TEST_CRASH_AT_WRITE", "")
_WRITES = [0]


_WRITES_LOCK = threading.Lock()


def _count_write() -> int:
    """The number of this write in the process (writes may run on several threads: each gets its own)."""
    with _WRITES_LOCK:
        _WRITES[0] += 1
        return _WRITES[0]


def _crash_point(number: int, where: str) -> bool:
    """True when this process is to be killed at write ``number`` here (``where``: "temp" before the
    rename, "file" after it)."""
    n, _, when = _CRASH_AT.partition(":")
    return str(number) == n and (when or "file") == where


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

    With ``journal`` (a file path), what it remembers goes to that file (0600, appended, flushed to
    disk before the change it covers) instead of memory: the original bytes and mode of a file, or
    that it did not exist.  :meth:`commit` deletes the journal; a journal left by a process that was
    killed is rolled back by :func:`recover`.  Files a bulk step creates are named in one entry per
    folder (:meth:`expect_new`), not one per file.
    """

    def __init__(self, journal: Optional[Path] = None) -> None:
        self._saved: list[tuple[Path, bytes | None, int | None]] = []  # without a journal: what was remembered
        self.journal = Path(journal) if journal is not None else None
        self._root = os.fspath(self.journal.parent) if self.journal is not None else ""
        self._seen: set[str] = set()  # the paths remembered since the start or the last savepoint
        self._fd: Optional[int] = None

    # the journal ---------------------------------------------------------------------------------
    def _rel(self, path: str) -> str:
        root = self._root + os.sep
        return path[len(root) :] if path.startswith(root) else path

    def _append(self, entries: list[dict[str, object]]) -> None:
        assert self.journal is not None
        try:
            if self._fd is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
                try:
                    fd = os.open(self.journal, flags, PRIVATE_FILE)
                except FileExistsError:  # one an earlier change could not play back: it goes first
                    recover(self.journal.parent)
                    fd = os.open(self.journal, flags, PRIVATE_FILE)
                self._fd = fd
                entries = [{"journal": 1, "pid": os.getpid()}, *entries]
            _append_lines(self._fd, entries)
        except OSError as exc:
            raise DchatOpsError(f"cannot write the journal {self.journal}: {exc.strerror}") from None

    def savepoint(self) -> int:
        """A point to roll back to: :meth:`rollback` with it puts back what changed after it (each file as it
        was at the savepoint), and leaves what changed before."""
        self._seen.clear()  # a file changed again after here is remembered again, as it is now
        if self.journal is None:
            return len(self._saved)
        return 0 if self._fd is None else os.fstat(self._fd).st_size

    def remember(self, path: Path) -> None:
        self.remember_many([path])

    def remember_many(self, paths: Iterable[Path]) -> None:
        """Remember several files (journaled: in one entry and one flush)."""
        entries: list[dict[str, object]] = []
        for path in paths:
            key = os.fspath(path)
            if key in self._seen:
                continue
            self._seen.add(key)
            try:
                data, mode = read_file(key)
            except FileNotFoundError:
                data, mode = None, None
            if self.journal is None:
                self._saved.append((Path(key), data, mode))
            elif data is None:
                entries.append({"p": self._rel(key), "d": None})
            else:
                entries.append({"p": self._rel(key), "d": base64.b64encode(data).decode(), "m": mode})
        if entries:
            self._append(entries)

    def expect_new(self, folder: Path, names: list[str]) -> None:
        """Note that the files ``folder/<name>`` do not exist and are about to be made (one journal entry:
        a bulk step journals its new files without reading or listing each one)."""
        if self.journal is None:
            self._saved.extend((Path(folder) / n, None, None) for n in names)
        elif names:
            self._append([{"n": self._rel(os.fspath(folder)), "f": names}])

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
        if self.journal is not None:
            return [p for p, _, _ in _read_journal(self.journal, self._root)] if self._fd is not None else []
        return list(dict.fromkeys(p for p, _, _ in self._saved))

    def rollback(self, since: int = 0) -> list[str]:
        """Restore every file remembered (after the savepoint ``since``); returns the problems met
        (empty when all went back).  The journal stays until :meth:`commit` or the end of the block."""
        if self.journal is None:
            return _restore(self._saved[since:])
        if self._fd is None:
            return []
        return _restore(_read_journal(self.journal, self._root, since))

    def commit(self) -> None:
        self._saved.clear()
        self._seen.clear()
        self._close(delete=True)

    def _close(self, delete: bool) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._seen.clear()
        if delete and self.journal is not None:
            if _DEFER["pending"]:  # what the journal covers reaches the disk before the journal goes
                _DEFER["pending"] = False
                os.sync()
            _unlink_durably(self.journal)

    def __enter__(self) -> FileTransaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is not None:
            problems = self.rollback()
            self._saved.clear()
            self._seen.clear()
            self._close(delete=not problems)  # a journal that could not be played back stays for the next try
        else:
            self.commit()
        return False


def _append_lines(fd: int, entries: list[dict[str, object]]) -> None:
    data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
    view = memoryview(data)
    while view:  # one write for a small entry: concurrent appenders (bulk workers) never interleave
        n = os.write(fd, view)
        view = view[n:]
    if _DEFER["depth"]:
        _DEFER["pending"] = True  # flushed with the files it covers, before the journal is deleted
    else:
        os.fsync(fd)


def _unlink_durably(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _read_journal(journal: Path, root: str, since: int = 0) -> list[tuple[Path, bytes | None, int | None]]:
    """The (path, original bytes or None, mode) entries of a journal, in the order they were written.
    A line that is not whole (the process died while writing it: the change it covers was not made)
    is skipped."""
    out: list[tuple[Path, bytes | None, int | None]] = []
    with open(journal, "rb") as f:
        f.seek(since)
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            if "p" in e:
                data = None if e.get("d") is None else base64.b64decode(e["d"])
                out.append((Path(root, e["p"]), data, e.get("m")))
            elif "n" in e:
                folder = Path(root, e["n"])
                out.extend((folder / n, None, None) for n in e.get("f", []))
    return out


def _restore(entries: list[tuple[Path, bytes | None, int | None]]) -> list[str]:
    """Put each file back (the last entry first, so that a file's first entry, its original, wins)."""
    problems = []
    for path, data, mode in reversed(entries):
        try:
            if data is None:
                try:
                    os.unlink(path)
                except (FileNotFoundError, IsADirectoryError):
                    pass
            else:
                atomic_write(path, data, private=(mode == PRIVATE_FILE), force=True)
                if mode is not None and stat.S_IMODE(os.stat(path).st_mode) != mode:
                    os.chmod(path, mode)
        except (OSError, DchatOpsError) as exc:
            problems.append(f"{path}: {exc}")
    return problems


def recover(home: Path) -> list[Path]:
    """Roll back the change a killed process left unfinished in ``home`` (its journal), then delete the
    journal.  Returns the files put back.  Run with the store lock held (:class:`store_lock` does it)."""
    journal = Path(home) / JOURNAL_NAME
    try:
        entries = _read_journal(journal, os.fspath(home))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DchatOpsError(f"cannot read the journal of an interrupted change {journal}: {exc.strerror}") from None
    problems = _restore(entries)
    if problems:
        raise DchatOpsError(f"cannot roll back the interrupted change recorded in {journal}: {'; '.join(problems[:3])}")
    _unlink_durably(journal)
    return [p for p, _, _ in entries]


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs (none, or one that exited and waits to be reaped)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


# the folders of the store proper: large (a file or three per user), and written under the store lock only
_STORE_FOLDERS = ("stores", "keys")


def find_temps(home: Path, *, light: bool = False) -> Iterator[tuple[Path, int]]:
    """The temporary files of atomic writes under ``home``: (path, pid of the process that made it).

    ``light``: not in the store's JWT and key folders (written under the store lock only, so a temporary
    file there comes with a dead lock holder), nor in JetStream data (the server's own files).
    """
    top = os.fspath(home)
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        if light and ((d == top and e.name in _STORE_FOLDERS) or e.name == "jetstream"):
                            continue
                        stack.append(e.path)
                    elif e.name.startswith("."):
                        m = _TEMP.match(e.name)
                        if m:
                            yield Path(e.path), int(m.group(1) or m.group(2))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue


def sweep_temps(home: Path, *, light: bool = False) -> list[Path]:
    """Remove the temporary files under ``home`` whose process is gone (killed while writing); returns them.
    ``light``: see :func:`find_temps`."""
    gone = []
    for path, pid in find_temps(home, light=light):
        if process_gone(pid):
            try:
                os.unlink(path)
                gone.append(path)
            except FileNotFoundError:
                pass
    return gone


# the unit of work of one home: one journaled transaction at a time, which nested ones join ----------

_ACTIVE: dict[str, FileTransaction] = {}  # home (resolved) -> its transaction under way in this process
_UNTRACKED = {"depth": 0}


def active_transaction(home: str) -> Optional[FileTransaction]:
    """The transaction under way on ``home`` (a resolved path) in this process, if any."""
    if _UNTRACKED["depth"]:
        return None
    return _ACTIVE.get(home)


class untracked:
    """Within this block, store writes are not remembered one by one: the caller journaled them already
    (:meth:`FileTransaction.expect_new`, :func:`journal_new_files`)."""

    def __enter__(self):
        _UNTRACKED["depth"] += 1
        return self

    def __exit__(self, *exc):
        _UNTRACKED["depth"] -= 1
        return False


def journal_new_files(home: str, folder: str, names: list[str]) -> None:
    """Append "these files do not exist yet" to the journal of the change under way on ``home``, from any
    process that works for it (bulk workers); nothing when no change is under way."""
    try:
        fd = os.open(os.path.join(home, JOURNAL_NAME), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        root = home + os.sep
        rel = folder[len(root) :] if folder.startswith(root) else folder
        _append_lines(fd, [{"n": rel, "f": names}])
    finally:
        os.close(fd)


@contextmanager
def unit_of_work(home: Path) -> Iterator[FileTransaction]:
    """Hold the store lock on ``home`` and journal every file change made through the transaction it
    yields; commit at the end, roll back on an exception.  A nested call joins the one under way."""
    key = os.path.realpath(os.fspath(home))
    with store_lock(Path(key)):
        tx = _ACTIVE.get(key)
        if tx is not None:
            yield tx
            return
        tx = FileTransaction(Path(key) / JOURNAL_NAME)
        _ACTIVE[key] = tx
        try:
            with tx:
                yield tx
        finally:
            _ACTIVE.pop(key, None)


def die_with_parent() -> None:
    """In a worker process: be killed when the process that started it dies (Linux), so that no worker
    of a killed command goes on writing after the next command rolled its change back."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(1)


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
                _settle(self.key)
            except (OSError, DchatOpsError):
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
            try:
                os.unlink(os.path.join(self.key, HOLDER_NAME))  # let go in order: the next holder need not sweep
            except OSError:
                pass
            fcntl.flock(entry[2], fcntl.LOCK_UN)
            entry[2].close()
            entry[2] = None
        entry[0].release()
        return False


def recover_store(home: Path) -> tuple[list[Path], list[Path]]:
    """Take the store lock on ``home`` and finish what killed commands left: roll back an unfinished
    change and remove temporary files of dead processes.  Returns (files put back, temporary files removed)."""
    home = Path(os.path.realpath(os.fspath(home)))
    if not home.is_dir():
        return [], []
    _SETTLED.pop(str(home), None)
    with store_lock(home):
        rolled, removed = _SETTLED.pop(str(home), ([], []))  # what taking the lock finished already
        return rolled + recover(home), removed + sweep_temps(home)


_SETTLED: dict[str, tuple[list[Path], list[Path]]] = {}  # home -> what taking its lock rolled back and removed


HOLDER_NAME = ".lock-holder"  # <home>/.lock-holder: the pid of the process holding the store lock


def _settle(home: str) -> None:
    """Just after the lock was taken: finish what a killed holder left.  The holder of the lock keeps its
    pid in ``.lock-holder`` and removes that file when it lets go: a file found there means its holder
    died holding the lock.  Then (and whenever a journal is there) the journal is rolled back and the
    temporary files of dead processes are removed; otherwise only outside the store's JWT and key folders
    (see :func:`find_temps`)."""
    holder = os.path.join(home, HOLDER_NAME)
    died = os.path.exists(holder)
    if died or os.path.exists(os.path.join(home, JOURNAL_NAME)):
        _SETTLED[home] = (recover(Path(home)), sweep_temps(Path(home)))
    else:  # writes made without the lock (a spec's cache, a rendered config) may have been cut short too
        sweep_temps(Path(home), light=True)
    fd = os.open(holder, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)


def with_store_lock(fn):
    """Decorator: run ``fn(store, ...)`` holding :class:`store_lock` on ``store.home``."""

    @functools.wraps(fn)
    def wrapper(store, *args, **kwargs):
        with store_lock(store.home):
            return fn(store, *args, **kwargs)

    return wrapper
