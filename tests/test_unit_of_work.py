"""One unit of work for every store edit: locked across processes, re-signed with a new iat, all or nothing;
and one home however it is spelled."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops.config.node import NodeFile
from dchat_ops.home import Home, default_home
from dchat_ops.nsc import admin, revoke, transfer
from dchat_ops.nsc.store import Store
from dchat_ops.runtime import push
from dchat_ops.runtime.client import refused
from dchat_ops.runtime.supervisor import Supervisor, chain


def run_cli(home, *args: str, cwd=None) -> subprocess.Popen:
    """``python -m dchat_ops --home HOME ARGS`` in its own process (not yet waited for)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dchat_ops", "--home", str(home), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_all(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (p.args, out, err)
        outs.append(out)
    return outs


def pinned(store: Store) -> int:
    """Pin the store's clock to the second the application account was last signed in."""
    t = store.account("chat").claims.issued_at
    store.clock = lambda: t
    return t


# --- many processes at once ---------------------------------------------------------------------------


def test_twelve_concurrent_revocations_all_stay(store):
    names = [f"u{i}" for i in range(12)]
    admin.add_users(store, "chat", names, workers=1)
    wait_all([run_cli(store.home, "revoke", "user", n, "--no-push") for n in names])
    keys = {store.user("chat", n).public_key for n in names}
    listed = revoke.list_revocations(store, "chat")
    assert {r["key"] for r in listed} == keys
    assert sorted(r["user"] for r in listed) == sorted(names)


def test_concurrent_add_and_edit_user_lose_nothing(store):
    adds = [run_cli(store.home, "add", "user", f"p{i}", "--allow-pub", f"p.{i}") for i in range(6)]
    edits = [run_cli(store.home, "edit", "user", "default", "--allow-pub", f"chat.{i}") for i in range(6)]
    wait_all(adds + edits)
    assert {f"p{i}" for i in range(6)} <= set(store.user_names("chat"))
    for i in range(6):
        assert store.user("chat", f"p{i}").claims.permissions.pub.allow == [f"p.{i}"]
        assert store.creds_path("dchat", "chat", f"p{i}").is_file()
    allowed = store.user("chat", "default").claims.permissions.pub.allow
    assert {f"chat.{i}" for i in range(6)} <= set(allowed), allowed
    # the creds file carries the last JWT
    assert store.user("chat", "default").token in store.read_creds("dchat", "chat", "default")


def test_concurrent_allow_sub_on_one_user_loses_nothing(store):
    """allow-sub --user plans its edit inside the unit of work: each process sees the edits before it."""
    wait_all([run_cli(store.home, "allow-sub", f"room.{i}", "--user", "default") for i in range(8)])
    allowed = store.user("chat", "default").claims.permissions.sub.allow
    assert {f"room.{i}" for i in range(8)} <= set(allowed), allowed
    assert store.user("chat", "default").token in store.read_creds("dchat", "chat", "default")


def test_concurrent_init_into_a_new_home_makes_one_operator(tmp_path):
    home = tmp_path / "new" / "home"
    outs = wait_all([run_cli(home, "init", "--json") for _ in range(4)])
    created = [json.loads(o)["created"] for o in outs]
    assert created.count(True) == 1, created
    store = Store(home)
    assert store.operator_names() == ["dchat"]
    assert store.account_names() == ["SYS", "chat"]
    assert store.operator().claims.system_account == store.account("SYS").public_key


# --- re-signing --------------------------------------------------------------------------------------


def test_resigned_twice_in_one_second_gets_new_jti_and_later_iat(store):
    t = pinned(store)
    seen = [store.account("chat").claims]
    for tag in ("one", "two"):
        with store.edit_account("chat") as claims:
            claims.tags.append(tag)
        seen.append(store.account("chat").claims)
    assert [c.issued_at for c in seen] == [t, t + 1, t + 2]
    assert len({c.jti for c in seen}) == 3

    users = [store.user("chat", "default").claims]
    for subj in ("a", "b"):
        admin.edit_user(store, "chat", "default", changes=admin.UserChanges(allow_pub=[subj]))
        users.append(store.user("chat", "default").claims)
    assert users[1].issued_at > users[0].issued_at and users[2].issued_at == users[1].issued_at + 1
    assert len({c.jti for c in users}) == 3
    assert store.user("chat", "default").token in store.read_creds("dchat", "chat", "default")

    ops = [store.operator().claims]
    for url in ("nats://a:4222", "nats://b:4222"):
        admin.edit_operator(store, service_urls=[url])
        ops.append(store.operator().claims)
    assert ops[1].issued_at > ops[0].issued_at and ops[2].issued_at == ops[1].issued_at + 1
    assert len({c.jti for c in ops}) == 3


def test_an_unchanged_edit_writes_nothing(store):
    before = snapshot(store.home)
    with store.edit_account("chat"):
        pass
    _, changed = admin.edit_account(store, "chat", tags=store.account("chat").claims.tags)
    assert not changed
    assert not admin.edit_user(store, "chat", "default").changed
    assert snapshot(store.home) == before


async def test_a_server_that_missed_the_first_push_takes_the_second(store, supervised):
    chain(store, ["a"], start=False)
    supervised("a")
    admin.add_user(store, "chat", "phone")
    url = f"nats://127.0.0.1:{NodeFile.load(store, 'a').node.client_port}"
    creds = store.creds_path("dchat", "chat", "phone")
    assert await refused(url, creds) is None
    t = pinned(store)  # the server holds the account as signed in second t; everything below is in that second
    admin.edit_account(store, "chat", tags=["first"])  # this version never reaches the server
    revoke.revoke_user(store, "chat", "phone")
    acc = store.account("chat")
    assert acc.claims.issued_at == t + 2
    report = await asyncio.to_thread(push.push, store, ["chat"])
    assert report.ok, report.results
    rows = {r["name"]: r for r in await asyncio.to_thread(push.pull, store)}
    assert rows["chat"]["same"] and rows["chat"]["server_issued_at"] == t + 2
    assert await refused(url, creds) is not None
    assert await refused(url, store.creds_path("dchat", "chat", "default")) is None


# --- all or nothing ---------------------------------------------------------------------------------


def test_an_error_inside_the_unit_of_work_writes_nothing(store):
    before = snapshot(store.home)
    with pytest.raises(RuntimeError), store.edit_account("chat") as claims:
        claims.revocations["*"] = 1
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), store.edit_user("chat", "default") as claims:
        claims.tags.append("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), store.edit_operator() as claims:
        claims.tags.append("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), store.transaction():
        admin.add_user(store, "chat", "later")
        admin.edit_account(store, "chat", add_signing_key=True)
        raise RuntimeError("boom")
    with pytest.raises(admin.StoreError):
        admin.edit_account(store, "chat", add_role="r", remove_signing_key="no-such-key")
    assert snapshot(store.home) == before


def test_a_failed_init_leaves_no_half_store(tmp_path):
    store = Store(tmp_path / "home")
    with pytest.raises(admin.StoreError):
        admin.init(store, user_spec=admin.UserSpec(source_networks=["not-a-network"]))
    assert not store.exists()
    left = [p.name for p in store.home.rglob("*") if p.suffix in (".jwt", ".nk", ".creds")]
    assert left == []
    assert admin.init(store).created


def test_import_into_a_new_home_holds_the_lock(store, tmp_path):
    data = transfer.export_payload(store, "all")
    other = Store(tmp_path / "not" / "yet")
    plan = transfer.import_payload(other, data)
    assert plan.new_operator and other.operator().public_key == store.operator().public_key
    assert (other.home / ".lock").is_file()


# --- revoke at 0 ------------------------------------------------------------------------------------


def test_revoke_at_zero_means_now(store):
    t = pinned(store)
    acc = revoke.revoke_user(store, "chat", "default", at=0)
    key = store.user("chat", "default").public_key
    assert acc.claims.revocations[key] >= t > 0
    latest = max(store.user("chat", n).claims.issued_at for n in store.user_names("chat"))
    assert revoke.revoke_all(store, "chat", at=0).claims.revocations["*"] == max(t, latest)
    admin.add_user(store, "chat", "cli")
    r = CliRunner().invoke(cli, ["--home", str(store.home), "revoke", "user", "cli", "--at", "0", "--no-push"])
    assert r.exit_code == 0, r.output
    assert Store(store.home).account("chat").claims.revocations[store.user("chat", "cli").public_key] >= t


def test_revoke_now_covers_a_user_signed_ahead_of_the_clock(store):
    t = pinned(store)
    for subj in ("a", "b", "c"):  # three re-signs in one second: the user's iat runs ahead of the clock
        admin.edit_user(store, "chat", "default", changes=admin.UserChanges(allow_pub=[subj]))
    user = store.user("chat", "default")
    assert user.claims.issued_at > t
    acc = revoke.revoke_user(store, "chat", "default")
    assert acc.claims.revocations[user.public_key] >= user.claims.issued_at


# --- the home, however it is spelled ---------------------------------------------------------------


def test_every_spelling_of_a_home_is_the_same_home(tmp_path, monkeypatch):
    real = tmp_path / "h"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    spellings = ["h", str(real), str(tmp_path / "x" / ".." / "h"), str(tmp_path / "link"), "./h/"]
    homes = {Home(s) for s in spellings}
    assert homes == {Home(real)}
    assert Home("h").path == real.resolve() and Home("h").path.is_absolute()
    assert Store("h").home == real.resolve() and Store(Home("h")).home == real.resolve()
    assert Home("h").run_dir == real.resolve() / "run"
    monkeypatch.setenv("DCHAT_OPS_HOME", "h")
    assert Home().path == real.resolve() and default_home() == Path("h")


def test_a_node_started_under_one_spelling_is_found_and_stopped_under_another(tmp_path):
    (tmp_path / "x").mkdir()
    wait_all([run_cli("h", "init", cwd=tmp_path)])
    wait_all([run_cli("h", "node", "add", "a", cwd=tmp_path)])
    absolute = Store(tmp_path / "h")
    try:
        wait_all([run_cli("h", "node", "up", "a", cwd=tmp_path)])
        pid = int((tmp_path / "h" / "run" / "a" / "nats-server.pid").read_text())
        other = str(tmp_path / "x" / ".." / "h")
        (status,) = wait_all([run_cli(other, "node", "status", "a", "--json")])
        assert json.loads(status)["running"] and json.loads(status)["pid"] == pid
        (down,) = wait_all([run_cli(str(tmp_path / "h"), "node", "down", "a", "--json")])
        assert json.loads(down)["stopped"] is True
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        Supervisor(absolute, "a").down()
