"""Contexts for the ``nats`` command line tool: a user's creds and the store's nodes, as ``nats`` reads them.

A context is a JSON file in ``$XDG_CONFIG_HOME/nats/context/<name>.json`` (``~/.config`` when the
variable is not set), with the keys every ``nats`` context has: the server URLs, the creds file and, when
the nodes' client ports use TLS, the CA (and a client certificate when a node verifies clients).  The
selected context is the name in ``nats/context.txt``.  The creds file is referred to by its path in the
store, never copied: a re-issued user is picked up by the next ``nats`` command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from dchat_ops._fs import atomic_write
from dchat_ops.config.node import NodeFile, list_nodes
from dchat_ops.config.nodes import client_url
from dchat_ops.config.tls import client_cert_for, tls_flags
from dchat_ops.errors import ConfigError, StoreError
from dchat_ops.hosts import check_url
from dchat_ops.nsc.store import Store, check_name

__all__ = ["CLIENT_SCHEMES", "CONTEXT_KEYS", "context_dir", "nats_context", "write_context"]

CLIENT_SCHEMES = ("nats", "tls", "ws", "wss")

# Every key of a nats context (all are written, empty when unused, so that a person editing the file
# sees them all, as the nats tool itself writes them).
CONTEXT_KEYS = (
    "description",
    "url",
    "token",
    "user",
    "password",
    "creds",
    "nkey",
    "cert",
    "key",
    "ca",
    "nsc",
    "jetstream_domain",
    "jetstream_api_prefix",
    "jetstream_event_prefix",
    "inbox_prefix",
    "user_jwt",
)


def context_dir(environ: Optional[dict[str, str]] = None) -> Path:
    """Where ``nats`` keeps its contexts: ``$XDG_CONFIG_HOME/nats/context`` (``~/.config/...`` by default)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats" / "context"


def nats_context(
    store: Store,
    account: str,
    user: str,
    *,
    nodes: Optional[list[str]] = None,
    servers: Optional[list[str]] = None,
) -> dict[str, Any]:
    """The context for ``user`` of ``account``: the client URLs of ``nodes`` (default: every node of the
    store) or the given ``servers``, the user's creds file in the store, and the store's CA when a node's
    client port uses TLS (and that node's client certificate when it verifies clients)."""
    op = store.current_operator()
    store.user(account, user, op)  # StoreError naming what is missing
    creds = store.creds_path(op, account, user)
    if not creds.is_file():
        raise StoreError(
            f"user {user} of account {account} has no creds file in this store: "
            f"run 'dchat-ops generate creds --account {account} --user {user}'"
        )
    ctx: dict[str, Any] = dict.fromkeys(CONTEXT_KEYS, "")
    ctx["tls_first"] = False
    ctx["description"] = f"dchat-ops: user {user} of account {account} (operator {op})"
    ctx["creds"] = str(creds.resolve())
    if servers:
        ctx["url"] = ",".join(check_url(s, CLIENT_SCHEMES, "server URL") for s in servers)
        return ctx
    ids = nodes if nodes else list_nodes(store)
    if not ids:
        raise ConfigError("this store has no nodes: add one (dchat-ops node add) or give --server URL")
    urls = []
    for node_id in ids:
        node = NodeFile.load(store, check_name(node_id, "node id")).node
        urls.append(client_url(node))
        flags = tls_flags(node)
        if flags["client"]:
            from dchat_ops.config import pki

            ctx["ca"] = str(pki.ca_paths(store)[1].resolve())
            if flags["client"] == "verify" and not ctx["cert"]:
                key, cert = client_cert_for(store, node)
                ctx["cert"], ctx["key"] = str(cert.resolve()), str(key.resolve())
    ctx["url"] = ",".join(urls)
    return ctx


def write_context(
    name: str, context: dict[str, Any], *, directory: Optional[Path] = None, select: bool = False
) -> dict[str, Any]:
    """Write ``context`` as the nats context ``name`` (atomically, 0600 in a 0700 folder); with ``select``
    make it the selected one.  Returns the path, whether it changed, and whether it was selected."""
    check_name(name, "context name")
    folder = directory if directory is not None else context_dir()
    path = folder / f"{name}.json"
    changed = atomic_write(path, json.dumps(context, indent=2) + "\n", private=True)
    if select:
        atomic_write(folder.parent / "context.txt", name, private=True)
    return {"name": name, "path": str(path), "changed": changed, "selected": select, "context": context}
