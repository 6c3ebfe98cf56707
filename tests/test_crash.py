"""Crash safety: a command killed (SIGKILL) at any point is finished by running it again.

Each case runs a command in a forked child of the test and kills it either at the n-th file it writes
(the test-only hook ``DCHAT_OPS_TEST_CRASH_AT_WRITE`` of ``_fs.atomic_write``: ``N`` right after the
N-th write replaced its file, ``N:temp`` with the N-th temporary file written but not yet renamed) or
after some time.  Then, as a person would, the same command runs again, and the store must be whole:
``validate`` finds no error (its node checks included), no journal and no temporary file is left.
A last case does the same with the command line itself, killed by time and by the hook.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dchat_ops import _fs, provision
from dchat_ops.config import nodes, pki
from dchat_ops.config.node import NodeFile
from dchat_ops.nsc import admin, transfer
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit, node_behind, node_findings

# --- running a command in a child that gets killed ---------------------------------------------------------


def crash(fn, *, at: str | None = None, after: float | None = None, timeout: float = 60.0) -> bool:
    """Run ``fn()`` in a forked child; kill it at write ``at`` (the hook) or ``after`` seconds (SIGKILL).
    True when the child was killed, False when it finished first (the point lies beyond its last write)."""
    pid = os.fork()
    if pid == 0:  # the child: the command, and nothing else of the test
        code = 0
        try:
            _fs._CRASH_AT = at or ""
            _fs._WRITES[0] = 0
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + (after if after is not None else timeout)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)  # our own child, by its pid
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the command failed instead of finishing or being killed"
    return False


def wait_unlocked(home: Path, timeout: float = 10.0) -> None:
    """The store lock is free: no worker of a killed command still holds it (they die with their parent)."""
    lock = home / ".lock"
    if not lock.exists():
        return
    deadline = time.monotonic() + timeout
    with open(lock, "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the store lock is still held after the command was killed"
                time.sleep(0.02)


def assert_whole(home: Path, *, with_nodes: bool = False) -> Store:
    """What a finished command leaves: validate passes, no journal, no temporary file."""
    store = Store(home)
    errors = [f"{f.entity}: {f.message}" for f in validate_store(store) if f.level == "error"]
    if with_nodes:
        errors += [f"{e}: {m}" for lv, e, m in node_findings(store) if lv == "error"]
    assert not errors, errors
    assert not (home / _fs.JOURNAL_NAME).exists()
    assert not list(_fs.find_temps(home))
    return store


def points(last: int, step: int = 1) -> list[str]:
    """Crash points: after each ``step``-th write up to ``last``, and with a temporary file not yet renamed
    at every other one of them."""
    out = []
    for n in range(1, last + 1, step):
        out.append(str(n))
        if (n // step) % 2 == 0:
            out.append(f"{n}:temp")
    return out


def count_writes(fn) -> int:
    """How many atomic writes ``fn`` makes (run in a child that is never killed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _fs._CRASH_AT = "0"  # never reached: counts the writes
        _fs._WRITES[0] = 0
        try:
            fn()
        finally:
            os.write(w, str(_fs._WRITES[0]).encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        n = int(f.read() or 0)
    os.waitpid(pid, 0)
    return n


# --- the cases --------------------------------------------------------------------------------------------


def test_init_killed_at_every_write_is_finished_by_init(tmp_path):
    total = count_writes(lambda: admin.init(Store(tmp_path / "probe")))
    assert total >= 12
    killed = 0
    for at in points(total):
        home = tmp_path / f"h{at.replace(':', '-')}"
        killed += crash(lambda home=home: admin.init(Store(home)), at=at)
        r = admin.init(Store(home))  # the same command again
        assert r.created, (at, r.message)
        store = assert_whole(home)
        assert store.account_names() == ["SYS", "chat"]
        for acc, user in (("SYS", "sys"), ("chat", "default")):
            assert parse_creds(store.read_creds("dchat", acc, user)).jwt == store.user(acc, user).token
    assert killed == len(points(total))


def test_add_user_killed_between_jwt_and_creds_is_finished_by_add_user(store):
    home = store.home
    total = count_writes(lambda: admin.add_user(Store(home), "chat", "probe"))
    Store(home).remove_user("dchat", "chat", "probe")
    for i, at in enumerate(points(total)):
        name = f"bob{i}"
        assert crash(lambda name=name: admin.add_user(Store(home), "chat", name), at=at)
        admin.add_user(Store(home), "chat", name)  # no "already exists": the partial user was rolled back
        s = assert_whole(home)
        assert parse_creds(s.read_creds("dchat", "chat", name)).jwt == s.user("chat", name).token


def test_bulk_add_users_killed_is_finished_by_the_same_call(store):
    home = store.home
    names = [f"u{i}" for i in range(40)]
    for at in ("1", "2", "3:temp", "40", "61", "119", "120:temp"):
        assert crash(lambda: admin.add_users(Store(home), "chat", names, workers=1), at=at)
        admin.add_users(Store(home), "chat", names, workers=1)
        s = assert_whole(home)
        assert set(names) <= set(s.user_names("chat"))
        for n in names:
            s.remove_user("dchat", "chat", n)


def test_bulk_add_users_in_worker_processes_killed_by_time(store, monkeypatch):
    monkeypatch.setattr(admin, "PARALLEL_THRESHOLD", 50)
    home = store.home
    names = [f"w{i}" for i in range(600)]

    def add():
        admin.add_users(Store(home), "chat", names, workers=2)

    t0 = time.monotonic()
    assert not crash(add)  # once to the end: how long the whole takes here
    took = time.monotonic() - t0
    for n in names:
        Store(home).remove_user("dchat", "chat", n)
    killed = 0
    for share in (0.2, 0.5, 0.8):  # kills spread over the command's run
        killed += crash(add, after=took * share)
        wait_unlocked(home)  # the workers died with the killed command: nothing holds the lock
        admin.add_users(Store(home), "chat", names, workers=2)
        s = assert_whole(home)
        assert len(s.user_names("chat")) == len(names) + 1  # and the first user
        for n in names:
            s.remove_user("dchat", "chat", n)
    assert killed  # at least one kill came before the end


SPEC = """\
version: 1
operator: {name: dchat}
accounts:
  - name: chat
    users:
%s
nodes:
  - {id: n1, account: chat}
"""


def _spec(tmp_path: Path, n: int, room: str = "lobby") -> Path:
    users = "\n".join(f'      - {{name: p{i}, allow_sub: ["{room}", "_INBOX.>"]}}' for i in range(n))
    path = tmp_path / f"spec-{room}.yaml"
    path.write_text(SPEC % users)
    return path


def test_apply_killed_at_many_points_is_finished_by_apply(tmp_path):
    first, second = _spec(tmp_path, 12), _spec(tmp_path, 12, room="hall")

    def apply(home, path):
        return provision.apply(Store(home), provision.load_spec(path))

    total = count_writes(lambda: apply(tmp_path / "probe", first))
    assert total > 40
    for at in points(total, step=7):
        home = tmp_path / f"h{at.replace(':', '-')}"
        assert crash(lambda home=home: apply(home, first), at=at)
        apply(home, first)
        assert not provision.plan(Store(home), provision.load_spec(first)).has_changes
        assert_whole(home, with_nodes=True)
    # a re-issue of every user (a changed spec) killed half-way: the old JWTs and creds come back whole
    home = tmp_path / "h1-temp"
    for at in ("5", "13:temp", "24"):
        assert crash(lambda: apply(home, second), at=at)
        found = [f.message for f in validate_store(Store(home)) if f.level == "error"]
        assert any("dchat-ops recover" in m for m in found), found  # validate sees the unfinished change
        rolled, _ = _fs.recover_store(home)
        assert rolled
        assert_whole(home, with_nodes=True)  # the users' old JWTs and creds, whole
        apply(home, second)
        assert not provision.plan(Store(home), provision.load_spec(second)).has_changes
        assert_whole(home, with_nodes=True)
        apply(home, first)  # back, for the next point


def test_allow_sub_on_a_running_node_killed_is_applied_by_the_rerun(store, supervised):
    nodes.add_node(store, "n1")
    sup = supervised("n1")
    home = store.home
    subjects = iter(f"room.{i}" for i in range(100))
    probe = next(subjects)
    total = count_writes(lambda: apply_node_edit(Store(home), "n1", "allow-sub", probe))
    # the probe ran for real on the running node: bring the store back in line with it
    assert apply_node_edit(store, "n1", "allow-sub", probe).outcome in ("live", "unchanged")
    assert total >= 4
    for at in points(total + 1):
        subject = next(subjects)
        killed = crash(lambda subject=subject: apply_node_edit(Store(home), "n1", "allow-sub", subject), at=at)
        r = apply_node_edit(Store(home), "n1", "allow-sub", subject)  # the same command again
        if killed:
            assert r.outcome == "live", (at, r.outcome, r.messages)
        s = assert_whole(home, with_nodes=True)
        assert node_behind(s, "n1") == []
        assert subject in NodeFile.load(s, "n1").node.policy.subscribe.allow
        assert subject in s.user("chat", "n1").claims.permissions.sub.allow
        assert subject in sup.config_path.read_text()
        assert sup.config_behind() is False  # the running server loaded what the files say


def test_a_stale_running_node_is_found_by_validate_and_applied_by_the_rerun(store, supervised):
    nodes.add_node(store, "n1")
    sup = supervised("n1")
    apply_node_edit(store, "n1", "allow-sub", "room.a")
    # killed after the reload, then rolled back by another command: the node runs more than the files say
    home = store.home
    assert crash(lambda: apply_node_edit(Store(home), "n1", "allow-sub", "room.b"), at="3")
    admin.add_user(Store(home), "chat", "someone")  # the next command on the store rolls the change back
    s = Store(home)
    assert "room.b" not in NodeFile.load(s, "n1").node.policy.subscribe.allow
    findings = [m for lv, e, m in node_findings(s) if lv == "error"]
    assert findings and all("dchat-ops node sync n1" in m for m in findings), findings
    r = apply_node_edit(s, "n1", "allow-sub", "room.b")
    assert r.outcome == "live"
    assert_whole(home, with_nodes=True)
    assert sup.config_behind() is False


def test_import_killed_is_all_or_nothing_and_finished_by_the_rerun(store, tmp_path):
    admin.add_users(store, "chat", [f"i{i}" for i in range(15)], workers=1)
    bundle = transfer.export_bundle(store, "all", passphrase="crash-test-pw")

    def imp(home):
        return transfer.import_bundle(Store(home), bundle, passphrase="crash-test-pw", trust_operator=True)

    total = count_writes(lambda: imp(tmp_path / "probe"))
    assert total > 40
    for at in points(total, step=11):
        home = tmp_path / f"h{at.replace(':', '-')}"
        assert crash(lambda home=home: imp(home), at=at)
        _fs.recover_store(home)  # the next command on the store: nothing of the import is left
        s = Store(home)
        assert not s.exists() and not list(_fs.find_temps(home))
        imp(home)
        s = assert_whole(home)
        assert len(s.user_names("chat")) == 16


def _key_matches(key_path: Path, crt_path: Path) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def test_tls_renew_killed_is_all_or_nothing_and_finished_by_the_rerun(store):
    pki.init_ca(store)
    for nid in ("t1", "t2"):
        nodes.add_node(store, nid)
        for kind in ("server", "route"):
            pki.issue(store, nid, kind)
    home = store.home
    total = count_writes(lambda: pki.renew(Store(home)))
    assert total == 8
    for at in points(total):
        before = {p: p.read_bytes() for p in (home / "pki").rglob("*") if p.is_file()}
        assert crash(lambda: pki.renew(Store(home)), at=at)
        _fs.recover_store(home)
        after = {p: p.read_bytes() for p in (home / "pki").rglob("*") if p.is_file()}
        assert after == before, at  # none renewed: all or nothing
        renewed = pki.renew(Store(home))
        assert len(renewed) == 4
        for d in renewed:
            key_path, crt_path = pki.cert_paths(store, d["node"], d["kind"])
            assert _key_matches(key_path, crt_path)
            assert crt_path.read_bytes() != before[crt_path]
        assert_whole(home)


# --- the command line, killed by time and by the hook ------------------------------------------------------


def _cli(home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "dchat-ops")
    return subprocess.Popen(
        [exe, "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def _finish(p: subprocess.Popen) -> tuple[int, str]:
    out, err = p.communicate(timeout=60)
    return p.returncode, (out + err).decode()


@pytest.mark.parametrize("kill", ["time", "hook"])
def test_cli_apply_killed_then_run_again_leaves_a_whole_store(tmp_path, kill):
    spec = _spec(tmp_path, 30)
    home = tmp_path / "home"
    t0 = time.monotonic()
    assert _finish(_cli(tmp_path / "probe", "apply", "-f", str(spec)))[0] == 0
    took = time.monotonic() - t0  # the whole command, start included: kills are spread over it
    killed = 0
    for i, when in enumerate((0.3, 0.6, 0.9) if kill == "time" else ("9", "25:temp", "60")):
        env = {"DCHAT_OPS_TEST_CRASH_AT_WRITE": str(when)} if kill == "hook" else None
        p = _cli(home, "apply", "-f", str(spec), env=env)
        if kill == "time":
            try:
                p.wait(timeout=took * float(when))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)  # the child we started, by its pid
        code, text = _finish(p)
        killed += code == -signal.SIGKILL
        code, text = _finish(_cli(home, "apply", "-f", str(spec)))
        assert code == 0, text
        code, text = _finish(_cli(home, "validate"))
        assert code == 0 and "store is valid" in text, text
        assert not list(_fs.find_temps(home))
        if i < 2:  # start again from nothing for the next point
            import shutil

            shutil.rmtree(home)
    assert killed >= (1 if kill == "time" else 3)


# --- the journal itself -------------------------------------------------------------------------------------


def test_a_journal_left_by_a_killed_process_puts_every_file_back(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.txt").write_text("one")
    os.chmod(home / "a.txt", 0o640)
    (home / "gone.nk").write_text("SUSEED")
    os.chmod(home / "gone.nk", 0o600)

    def change():
        with _fs.unit_of_work(home) as tx:
            tx.write(home / "a.txt", "two")
            tx.delete(home / "gone.nk")
            tx.expect_new(home / "new", ["x.jwt", "y.jwt"])
            for n in ("x.jwt", "y.jwt"):
                _fs.atomic_write(home / "new" / n, "token")
            tx.write(home / "b.txt", "new")
            os.kill(os.getpid(), signal.SIGKILL)

    assert crash(change)
    journal = home / _fs.JOURNAL_NAME
    assert journal.exists() and journal.stat().st_mode & 0o777 == 0o600
    with open(journal, "ab") as f:
        f.write(b'{"p": "a.txt", "d"')  # a line cut short: the change it was to cover was not made
    with _fs.store_lock(home):  # the next command
        pass
    assert (home / "a.txt").read_text() == "one" and (home / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (home / "gone.nk").read_text() == "SUSEED" and (home / "gone.nk").stat().st_mode & 0o777 == 0o600
    assert not (home / "b.txt").exists() and not list((home / "new").iterdir())
    assert not journal.exists() and not (home / _fs.HOLDER_NAME).exists()


def test_a_savepoint_puts_back_only_what_came_after_it(tmp_path):
    home = tmp_path / "home"
    with _fs.unit_of_work(home) as tx:
        tx.write(home / "a", "a1")
        mark = tx.savepoint()
        tx.write(home / "b", "b1")
        tx.write(home / "a", "a2")
        assert tx.rollback(mark) == []
        assert (home / "a").read_text() == "a1" and not (home / "b").exists()
    assert (home / "a").read_text() == "a1" and not (home / _fs.JOURNAL_NAME).exists()


def test_temporary_files_end_like_their_target_and_the_next_command_removes_them(store):
    import fnmatch

    home = store.home
    assert crash(lambda: admin.add_user(Store(home), "chat", "carol"), at="1:temp")  # the seed, not yet renamed
    (temp, pid), *_ = list(_fs.find_temps(home))
    assert temp.name.startswith(f".tmp-{pid}-") and fnmatch.fnmatch(temp.name, "*.nk")  # keys/.gitignore: **/*.nk
    assert temp.stat().st_mode & 0o777 == 0o600
    assert "carol" not in Store(home).user_names("chat")
    found = [f.message for f in validate_store(Store(home)) if f.level == "error"]
    assert any(temp.name in m and "dchat-ops recover" in m for m in found), found
    # a temporary file of a live process is left alone
    live = temp.parent / f".tmp-{os.getpid()}-0-x.nk"
    live.write_text("")
    admin.add_user(Store(home), "chat", "carol")
    assert not temp.exists() and live.exists()
    live.unlink()
    assert_whole(home)


def test_rm_account_killed_half_way_puts_the_account_back(store):
    admin.add_account(store, "temp")
    admin.add_users(store, "temp", [f"t{i}" for i in range(5)], workers=1)
    home = store.home

    def remove_killed_at_the_fourth_file():
        unlink, count = Path.unlink, [0]

        def counting(self, *a, **kw):
            count[0] += 1
            if count[0] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return unlink(self, *a, **kw)

        Path.unlink = counting  # in the child only
        admin.remove_account(Store(home), "temp")

    assert crash(remove_killed_at_the_fourth_file)
    assert "temp" not in Store(home).account_names() or len(Store(home).user_names("temp")) < 5
    _fs.recover_store(home)
    s = assert_whole(home)
    assert "temp" in s.account_names() and len(s.user_names("temp")) == 5
    admin.remove_account(Store(home), "temp")
    assert "temp" not in assert_whole(home).account_names()


def test_a_re_issue_of_many_users_written_on_threads_killed_comes_back_whole(tmp_path):
    """40 users (80 files: written on several threads) re-issued by a changed spec, killed half-way:
    the journal puts every old JWT and creds back, and apply finishes the job."""
    first, second = _spec(tmp_path, 40), _spec(tmp_path, 40, room="hall")

    def apply(home, path):
        return provision.apply(Store(home), provision.load_spec(path))

    home = tmp_path / "many"
    apply(home, first)
    for at in ("20", "45:temp", "70"):
        assert crash(lambda: apply(home, second), at=at)
        rolled, _ = _fs.recover_store(home)
        assert rolled
        assert_whole(home, with_nodes=True)
        apply(home, second)
        assert not provision.plan(Store(home), provision.load_spec(second)).has_changes
        assert_whole(home, with_nodes=True)
        apply(home, first)
