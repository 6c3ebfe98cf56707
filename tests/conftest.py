"""Shared fixtures: a fresh store per test, and real nats-server processes on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from dchat_ops.config.server import standalone_config, write_and_check
from dchat_ops.natsbin import free_port
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.process import ServerProcess


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home) -> Store:
    s = Store(home)
    admin.init(s)
    return s


@pytest.fixture
def strict_store(tmp_path) -> Store:
    s = Store(tmp_path / "strict-home")
    admin.init(s, strict=True)
    return s


class Servers:
    """Starts real nats-servers for a test and stops every one of them by pid afterwards."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.started: list[ServerProcess] = []

    def standalone(self, store: Store, resolver: str = "full", name: str = "s1") -> tuple[str, ServerProcess]:
        port, http = free_port(), free_port()
        cfg = standalone_config(
            store, resolver=resolver, port=port, http_port=http, data_dir=self.tmp / f"{name}-data", server_name=name
        )
        conf = self.tmp / f"{name}.conf"
        write_and_check(cfg, conf)
        srv = ServerProcess.start(conf, monitor_url=f"http://127.0.0.1:{http}", log_file=self.tmp / f"{name}.log")
        self.started.append(srv)
        return f"nats://127.0.0.1:{port}", srv

    def stop_all(self):
        for s in self.started:
            s.stop()


@pytest.fixture
def servers(tmp_path):
    s = Servers(tmp_path)
    yield s
    s.stop_all()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: compare before and after to prove nothing changed."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def supervised(store):
    """Start nodes of ``store`` with the supervisor; every one is stopped by pid at the end."""
    from dchat_ops.runtime.supervisor import Supervisor

    started: list[Supervisor] = []

    def up(node_id: str) -> Supervisor:
        sup = Supervisor(store, node_id)
        sup.up()
        started.append(sup)
        return sup

    yield up
    for sup in started:
        sup.down()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; that value, or None after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    return None


@pytest.fixture
def supervised_factory():
    """Like ``supervised``, for a store made inside the test."""
    from dchat_ops.runtime.supervisor import Supervisor

    started = []

    def for_store(store):
        def up(node_id):
            sup = Supervisor(store, node_id)
            sup.up()
            started.append(sup)
            return sup

        return up

    yield for_store
    for sup in started:
        sup.down()
