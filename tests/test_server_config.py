"""write_and_check: the nats-server probe of a config is private to each call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from dchat_ops.config.server import standalone_config, write_and_check


def test_concurrent_write_and_check_on_one_path(store, tmp_path):
    # push and allow-sub --node render the same node config at once: each must see its own probe
    cfg = standalone_config(store, data_dir=tmp_path / "data", port=14222, http_port=18222)
    conf = tmp_path / "run" / "n" / "nats-server.conf"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: write_and_check(cfg, conf), range(16)))
    assert all(r == results[0] for r in results)
    assert conf.read_text() == results[0]
    # no probe is left behind
    assert [p.name for p in conf.parent.iterdir()] == ["nats-server.conf"]
