"""Pushing / pulling account JWTs to and from running servers over the system account.

    >>> report = push(store, ["chat"])                     # every running node answers, per server

Pushing uses a short-lived system user (two minutes), made in memory and never written, as nsc does.
Nodes with the full nats resolver get ``$SYS.REQ.CLAIMS.UPDATE``; nodes with the memory resolver get
their preload re-rendered and a reload.  Every node config is re-rendered so a restart also starts
from the new JWTs.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Optional

from dchat_ops.config.node import list_nodes
from dchat_ops.config.nodes import render_node
from dchat_ops.config.tls import client_tls_for
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc.claims import Claims
from dchat_ops.nsc.jwt import decode, encode_generic
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect
from dchat_ops.runtime.supervisor import Supervisor

__all__ = ["PushReport", "prune", "pull", "push", "running_nodes"]


def running_nodes(store: Store) -> list:

    return [s for s in (Supervisor(store, n) for n in list_nodes(store)) if s.running()]


@dataclass
class PushReport:
    """Per server: what it answered."""

    results: list[dict] = field(default_factory=list)
    expected_servers: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.get("ok") for r in self.results)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "expected_servers": self.expected_servers, "results": self.results}


async def _collect(
    url: str, creds: str, subject: str, payload: bytes, want: int, timeout: float, tls=None
) -> list[dict]:

    kw = {"tls": tls} if tls is not None else {}
    nc = await connect(url, creds_text=creds, allow_reconnect=False, max_reconnect_attempts=0, **kw)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, payload, reply=inbox)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(0.01, deadline - time.monotonic()))
            except Exception:
                break
            try:
                out.append(json.loads(msg.data))
            except ValueError:
                out.append({"raw": msg.data.decode(errors="replace")})
        return out
    finally:
        await nc.close()


def _target(store: Store, sup) -> tuple:
    """URL and TLS context to reach a running node's client port."""

    node = sup.node()
    return f"nats://127.0.0.1:{node.client_port}", client_tls_for(store, node)


def _full_nodes(sups) -> list:
    return [s for s in sups if s.node().resolver == "full"]


def push(store: Store, accounts: Optional[list[str]] = None, *, timeout: float = 3.0) -> PushReport:
    """Send account JWTs to every running node of the store; report each server's answer."""

    op = store.operator()
    names = accounts or store.account_names(op.name)
    sups = running_nodes(store)
    report = PushReport(expected_servers=len(sups))
    if not sups:
        raise DchatOpsError("no node of this store is running; start one with 'dchat-ops node up'")
    for s in sups:  # configs follow the store, so a restart also starts from the new JWTs
        render_node(store, s.node_id)
    full = _full_nodes(sups)
    creds = system_creds(store)
    for name in names:
        acc = store.account(name, op.name)
        if full:
            url, tls = _target(store, full[0])
            answers = asyncio.run(
                _collect(url, creds, "$SYS.REQ.CLAIMS.UPDATE", acc.token.encode(), len(full), timeout, tls)
            )
            for a in answers:
                server = (a.get("server") or {}).get("name", "?")
                data, err = a.get("data"), a.get("error")
                report.results.append(
                    {
                        "account": name,
                        "server": server,
                        "ok": bool(data and data.get("code") == 200),
                        "message": (data or {}).get("message") or (err or {}).get("description", ""),
                    }
                )
            answered = {r["server"] for r in report.results if r["account"] == name}
            for s in full:
                if s.node().server_name not in answered:
                    report.results.append(
                        {"account": name, "server": s.node().server_name, "ok": False, "message": "no answer"}
                    )
    for s in sups:
        if s.node().resolver == "memory":
            try:
                s.reload(render=False)
                report.results.append(
                    {
                        "account": ",".join(names),
                        "server": s.node().server_name,
                        "ok": True,
                        "message": "memory resolver: preload updated and reloaded",
                    }
                )
            except DchatOpsError as exc:
                report.results.append(
                    {"account": ",".join(names), "server": s.node().server_name, "ok": False, "message": str(exc)}
                )
    return report


def _server_accounts(url: str, creds: str, timeout: float, tls=None) -> list[str]:
    listed = asyncio.run(_collect(url, creds, "$SYS.REQ.CLAIMS.LIST", b"", 1, timeout, tls))
    return list((listed[0].get("data") if listed else None) or [])


def prune(store: Store, *, timeout: float = 3.0) -> PushReport:
    """Delete from the servers' full resolvers every account the store no longer has (needs allow_delete)."""

    sups = _full_nodes(running_nodes(store))
    if not sups:
        raise DchatOpsError("no running node with the full resolver to prune")
    op = store.operator()
    url, tls = _target(store, sups[0])
    creds = system_creds(store)
    ours = {e.public_key for e in store.accounts(op.name)}
    gone = [a for a in _server_accounts(url, creds, timeout, tls) if a not in ours and a != op.claims.system_account]
    report = PushReport(expected_servers=len(sups))
    if not gone:
        return report
    signer = next((store.load_key(k) for k in op.claims.signing_keys if store.has_key(k)), None)
    if signer is None:
        signer = store.load_key(op.public_key)
    req = encode_generic({"accounts": gone}, signer, clock=store.clock)
    for a in asyncio.run(_collect(url, creds, "$SYS.REQ.CLAIMS.DELETE", req.encode(), len(sups), timeout, tls)):
        data, err = a.get("data"), a.get("error")
        report.results.append(
            {
                "account": ",".join(gone),
                "server": (a.get("server") or {}).get("name", "?"),
                "ok": bool(data and data.get("code") == 200),
                "message": (data or {}).get("message") or (err or {}).get("description", ""),
            }
        )
    return report


def pull(store: Store, *, timeout: float = 2.0) -> list[dict]:
    """What the running servers hold, compared with the store: one row per account."""
    sups = _full_nodes(running_nodes(store))
    if not sups:
        raise DchatOpsError("no running node with the full resolver to pull from")
    url, tls = _target(store, sups[0])
    creds = system_creds(store)
    ids = _server_accounts(url, creds, timeout, tls)
    rows = []
    op = store.operator()
    ours = {e.public_key: e for e in store.accounts(op.name)}
    for acc_id in sorted(set(ids) | set(ours)):
        server_jwt = ""
        if acc_id in ids:
            got = asyncio.run(_collect(url, creds, f"$SYS.REQ.ACCOUNT.{acc_id}.CLAIMS.LOOKUP", b"", 1, timeout, tls))
            server_jwt = got[0].get("raw", "") if got else ""
        mine = ours.get(acc_id)
        row = {
            "account": acc_id,
            "name": mine.name if mine else "",
            "in_store": bool(mine),
            "on_server": bool(server_jwt),
        }
        if mine and server_jwt:
            try:
                theirs: Claims = decode(server_jwt)
                row["same"] = theirs.jti == mine.claims.jti
                row["server_issued_at"] = theirs.issued_at
                row["store_issued_at"] = mine.claims.issued_at
            except DchatOpsError:
                row["same"] = False
        rows.append(row)
    return rows
