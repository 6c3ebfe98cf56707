"""The CLI against a node with client TLS: push and pull print nothing on stderr when they succeed."""

import os
import subprocess
import sys

from dchat_ops.config import nodes, pki, tls


def _cli(store, *args):
    exe = os.path.join(os.path.dirname(sys.executable), "dchat-ops")
    return subprocess.run([exe, "--home", str(store.home), *args], capture_output=True, text=True, timeout=60)


def test_push_and_pull_on_a_client_tls_node_are_quiet(store, supervised):
    pki.init_ca(store)
    nodes.add_node(store, "q", cluster=False)
    tls.enable(store, "q", ["client"])
    supervised("q")
    for args in (("push", "--json"), ("pull", "--json")):
        p = _cli(store, *args)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        assert "eof_received" not in p.stderr, (args, p.stderr)
        assert p.stderr.strip() == "", (args, p.stderr)


def test_only_the_ssl_eof_warning_is_hidden(caplog):
    import logging

    from dchat_ops.runtime.client import quiet_asyncio_ssl_eof

    quiet_asyncio_ssl_eof()  # what every connect does
    quiet_asyncio_ssl_eof()  # once only
    log = logging.getLogger("asyncio")
    assert len(log.filters) == 1
    log.warning("returning true from eof_received() has no effect when using ssl")
    log.warning("Task exception was never retrieved")
    logging.getLogger("other").warning("returning true from eof_received() has no effect when using ssl")
    kept = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("asyncio", "Task exception was never retrieved") in kept
    assert [n for n, m in kept if "eof_received" in m] == ["other"]  # another logger's record is kept
