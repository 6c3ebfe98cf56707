"""`generate context`: a context file for the nats tool, with which a client reaches the store's nodes
(TLS and client certificates included); bad values are exit 2 and write nothing."""

from __future__ import annotations

import contextlib
import io
import json
import ssl
import stat

from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes, pki, tls
from dchat_ops.config.context import CONTEXT_KEYS, context_dir
from dchat_ops.runtime.client import connect


def cli_run(store, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, ["--home", str(store.home), *args])
    return code, out.getvalue(), err.getvalue()


async def connect_with(ctx: dict):
    """Connect the way the nats tool would with this context: its URLs, creds, CA and client certificate."""
    context = None
    if ctx["ca"]:
        context = ssl.create_default_context(cafile=ctx["ca"])
        if ctx["cert"]:
            context.load_cert_chain(ctx["cert"], ctx["key"])
    return await connect(ctx["url"].split(","), ctx["creds"], tls=context, allow_reconnect=False)


async def test_a_context_reaches_the_nodes_plain_and_over_tls(store, supervised, tmp_path):
    nodes.add_node(store, "a", cluster=False)
    supervised("a")
    folder = tmp_path / "nats" / "context"
    code, out, err = cli_run(store, "generate", "context", "--user", "default", "--dir", str(folder), "--select")
    assert code == 0, err
    path = folder / "default.json"
    ctx = json.loads(path.read_text())
    assert set(CONTEXT_KEYS) <= set(ctx) and ctx["ca"] == "" and ctx["creds"].endswith("default.creds")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (folder.parent / "context.txt").read_text() == "default"
    assert "selected" in out and "SUA" not in out + err
    nc = await connect_with(ctx)
    sub = await nc.subscribe("chat.ctx")
    await nc.publish("chat.ctx", b"via context")
    assert (await sub.next_msg(timeout=3)).data == b"via context"
    await nc.close()

    # a node whose client port uses TLS and verifies clients: the context carries the CA and a client certificate
    pki.init_ca(store)
    nodes.add_node(store, "t", cluster=False)
    tls.enable(store, "t", ["client"], client_verify=True)
    supervised("t")
    code, out, err = cli_run(
        store,
        "generate",
        "context",
        "--user",
        "default",
        "--node",
        "t",
        "--context",
        "tls-ctx",
        "--dir",
        str(folder),
        "--json",
    )
    assert code == 0, err
    ctx = json.loads(out)["context"]
    assert ctx["url"].startswith("tls://") and ctx["ca"] and ctx["cert"] and ctx["key"]
    nc = await connect_with(ctx)
    await nc.flush()
    await nc.close()
    # without the client certificate the node refuses the connection: the context is what made it work
    try:
        bare = await connect_with(dict(ctx, cert=""))
    except Exception:
        bare = None
    assert bare is None


def test_bad_values_are_exit_2_and_write_nothing(store, tmp_path):
    folder = tmp_path / "ctx"
    folder.mkdir()
    before = snapshot(store.home), snapshot(folder)
    for args, message in [
        (["--server", "http://x:1"], "--server"),
        (["--server", "nats://host"], "--server"),
        (["--context", "../evil"], "context name"),
        (["--node", "a", "--server", "nats://127.0.0.1:4222"], "not both"),
    ]:
        code, _out, err = cli_run(store, "generate", "context", "--user", "default", "--dir", str(folder), *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    # a user with no creds, a store with no nodes: run-time failures, exit 1
    code, _, err = cli_run(store, "generate", "context", "--user", "nobody", "--dir", str(folder))
    assert code == 1 and "nobody" in err
    code, _, err = cli_run(store, "generate", "context", "--user", "default", "--dir", str(folder))
    assert code == 1 and "no nodes" in err
    assert (snapshot(store.home), snapshot(folder)) == before


def test_the_default_folder_follows_xdg_config_home(tmp_path):
    assert context_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "nats" / "context"
    assert context_dir({}).parts[-3:] == (".config", "nats", "context")
