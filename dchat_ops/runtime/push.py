"""Pushing / pulling account JWTs to and from running servers over the system account.

    >>> report = push(store, ["chat"])                     # every running node answers, per server

Pushing uses a short-lived system user (two minutes), made in memory and never written, as nsc does.
Nodes with the full nats resolver get ``$SYS.REQ.CLAIMS.UPDATE``; nodes with the memory resolver get
their preload re-rendered and a reload.  The config of every running node is re-rendered, so a
restart also starts from the new JWTs; a node that is not running is listed as such (``stopped``):
nothing is sent to it, and ``node up`` renders its config from the store when it starts.

Each running node is reached on its own (:func:`dchat_ops.runtime.client.node_target`: its URL and
TLS) and asked directly, so each one either confirms or is named in the report ("no answer within
3s", "cannot connect ..."); every connect and every request is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar, Union

from dchat_ops.config.node import Node, list_nodes
from dchat_ops.config.nodes import render_node
from dchat_ops.errors import DchatOpsError, ServerError
from dchat_ops.nsc.claims import Claims
from dchat_ops.nsc.jwt import decode, encode_generic
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import NodeTarget, node_target
from dchat_ops.runtime.supervisor import Supervisor

__all__ = ["DEFAULT_TIMEOUT", "PullReport", "PushReport", "prune", "pull", "push", "running_nodes"]

DEFAULT_TIMEOUT = 3.0  # seconds for each connect and each request to one node


def running_nodes(store: Store) -> list[Supervisor]:
    return [s for s in (Supervisor(store, n) for n in list_nodes(store)) if s.running()]


def _running(store: Store) -> list[tuple[Supervisor, Node]]:
    """The running nodes with their node files, each read once."""
    return [(s, s.node()) for s in running_nodes(store)]


@dataclass
class PushReport:
    """Per server: what it answered."""

    results: list[dict] = field(default_factory=list)
    expected_servers: int = 0
    # nodes of the store that are not running: nothing was sent to them; ``node up`` renders their
    # config from the store, so they start from its JWTs
    stopped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.get("ok") for r in self.results)

    def failed_servers(self) -> list[str]:
        """The servers that did not confirm, each named once."""
        return list(dict.fromkeys(r["server"] for r in self.results if not r.get("ok")))

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "expected_servers": self.expected_servers,
            "results": self.results,
            "stopped": self.stopped,
        }


class _Session:
    """One connection to one node, asking it requests and taking that node's own answer."""

    def __init__(self, target: NodeTarget, nc, timeout: float):
        self.target = target
        self.nc = nc
        self.timeout = timeout
        info = getattr(nc, "_server_info", None) or {}
        self.names = {target.server_name, info.get("server_name")} - {None, ""}
        self.ids = {info.get("server_id")} - {None, ""}

    def _mine(self, answer: dict) -> bool:
        server = answer.get("server") or {}
        return server.get("name") in self.names or server.get("id") in self.ids

    async def ask(self, subject: str, payload: bytes = b"", *, any_answer: bool = False) -> dict:
        """This node's answer (parsed JSON, or ``{"raw": text}``); :class:`ServerError` when none comes in time.

        Servers of a cluster all answer the claims subjects; only the answer of the node asked is kept
        (``any_answer`` takes the first, for replies that do not name their server).
        """
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(subject, payload, reply=inbox)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=left)
                except Exception:  # nats-py's timeout, or the connection went away
                    break
                try:
                    answer = json.loads(msg.data)
                except ValueError:
                    answer = {"raw": msg.data.decode(errors="replace")}
                if not isinstance(answer, dict):
                    answer = {"raw": msg.data.decode(errors="replace")}
                if any_answer or "raw" in answer or self._mine(answer):
                    return answer
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is gone already
                pass
        raise ServerError(f"no answer within {self.timeout:g}s")


_T = TypeVar("_T")


async def _on_node(
    target: NodeTarget, creds: str, timeout: float, work: Callable[[_Session], Awaitable[_T]]
) -> Union[_T, DchatOpsError]:
    """Connect to one node (bounded) and run ``work(session)``; a :class:`DchatOpsError` is returned, not raised."""
    try:
        nc = await target.connect(creds_text=creds, timeout=timeout, allow_reconnect=False, max_reconnect_attempts=0)
    except DchatOpsError as exc:
        return exc
    try:
        return await work(_Session(target, nc, timeout))
    except DchatOpsError as exc:
        return exc
    except Exception as exc:  # the connection failed under us: name the node, never a traceback
        return ServerError(f"{type(exc).__name__}: {exc}")
    finally:
        try:
            await asyncio.wait_for(nc.close(), 1)
        except Exception:  # a stopped server: the socket is dropped anyway
            pass


def _on_nodes(
    store: Store, nodes: list[Node], creds: str, timeout: float, work: Callable[[_Session], Awaitable[_T]]
) -> list[tuple[str, Union[_T, DchatOpsError]]]:
    """Run ``work`` on every node of ``nodes`` at once: (server name, result or error) per node, in order."""
    targets: list[tuple[str, Union[NodeTarget, DchatOpsError]]] = []
    for node in nodes:
        try:
            targets.append((node.server_name, node_target(store, node)))
        except DchatOpsError as exc:  # e.g. TLS on the node but no CA in the store
            targets.append((node.server_name, exc))

    async def run_all() -> list[Union[_T, DchatOpsError]]:
        async def one(t: Union[NodeTarget, DchatOpsError]) -> Union[_T, DchatOpsError]:
            return t if isinstance(t, DchatOpsError) else await _on_node(t, creds, timeout, work)

        return await asyncio.gather(*(one(t) for _, t in targets))

    return list(zip([n for n, _ in targets], asyncio.run(run_all()), strict=True))


def _message(exc: DchatOpsError) -> str:
    text = str(exc)
    return text if text.startswith(("no answer", "cannot connect")) else f"cannot connect: {text}"


def _row(account: str, server: str, answer: dict) -> dict:
    data, err = answer.get("data"), answer.get("error")
    return {
        "account": account,
        "server": server,
        "ok": bool(isinstance(data, dict) and data.get("code") == 200),
        "message": (data or {}).get("message") if isinstance(data, dict) else (err or {}).get("description", ""),
    }


def _full_nodes(running: list[tuple[Supervisor, Node]]) -> list[Node]:
    return [node for _, node in running if node.resolver == "full"]


def push(store: Store, accounts: Optional[list[str]] = None, *, timeout: float = DEFAULT_TIMEOUT) -> PushReport:
    """Send account JWTs to every running node of the store; report each server's answer.

    Each node with the full resolver is asked directly; a node that cannot be reached or does not
    answer within ``timeout`` gets a row with ``ok`` False that says so.
    """

    op = store.operator()
    names = accounts or store.account_names(op.name)
    running = _running(store)
    up = {s.node_id for s, _ in running}
    report = PushReport(expected_servers=len(running), stopped=[n for n in list_nodes(store) if n not in up])
    if not running:
        raise DchatOpsError("no node of this store is running; start one with 'dchat-ops node up'")
    for _, node in running:  # configs follow the store, so a restart also starts from the new JWTs
        try:
            render_node(store, node.id, node=node)
        except DchatOpsError as exc:  # the push itself can still reach this node
            report.results.append(
                {"account": ",".join(names), "server": node.server_name, "ok": False, "message": str(exc)}
            )
    tokens = [(name, store.account(name, op.name).token) for name in names]
    full = _full_nodes(running)

    async def update(session: _Session) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for name, token in tokens:
            try:
                answer = await session.ask("$SYS.REQ.CLAIMS.UPDATE", token.encode())
            except DchatOpsError as exc:  # one unanswered request: do not wait on this node again
                rows.extend(
                    {"account": n, "server": session.target.server_name, "ok": False, "message": str(exc)}
                    for n, _ in tokens[len(rows) :]
                )
                break
            rows.append(_row(name, session.target.server_name, answer))
        return rows

    if full:
        for server, out in _on_nodes(store, full, system_creds(store), timeout, update):
            if isinstance(out, DchatOpsError):
                report.results.extend(
                    {"account": name, "server": server, "ok": False, "message": _message(out)} for name in names
                )
            else:
                report.results.extend(out)
    for s, node in running:
        if node.resolver == "memory":
            try:
                s.reload(render=False)
                report.results.append(
                    {
                        "account": ",".join(names),
                        "server": node.server_name,
                        "ok": True,
                        "message": "memory resolver: preload updated and reloaded",
                    }
                )
            except DchatOpsError as exc:
                report.results.append(
                    {"account": ",".join(names), "server": node.server_name, "ok": False, "message": str(exc)}
                )
    return report


def _listed(answer: dict) -> list[str]:
    data = answer.get("data")
    return [a for a in data if isinstance(a, str)] if isinstance(data, list) else []


def prune(store: Store, *, timeout: float = DEFAULT_TIMEOUT) -> PushReport:
    """Delete from the servers' full resolvers every account the store no longer has (needs allow_delete).

    Each node is asked what it holds and told to delete what the store dropped; one row per node
    that held such accounts, and one per node that could not be reached or did not answer.
    """

    full = _full_nodes(_running(store))
    if not full:
        raise DchatOpsError("no running node with the full resolver to prune")
    op = store.operator()
    creds = system_creds(store)
    ours = {e.public_key for e in store.accounts(op.name)} | {op.claims.system_account}
    signer = next((store.load_key(k) for k in op.claims.signing_keys if store.has_key(k)), None)
    if signer is None:
        signer = store.load_key(op.public_key)
    report = PushReport(expected_servers=len(full))

    async def delete(session: _Session) -> Optional[dict]:
        gone = [a for a in _listed(await session.ask("$SYS.REQ.CLAIMS.LIST")) if a not in ours]
        if not gone:
            return None
        req = encode_generic({"accounts": gone}, signer, clock=store.clock)
        answer = await session.ask("$SYS.REQ.CLAIMS.DELETE", req.encode())
        return _row(",".join(gone), session.target.server_name, answer)

    for server, out in _on_nodes(store, full, creds, timeout, delete):
        if isinstance(out, DchatOpsError):
            report.results.append({"account": "", "server": server, "ok": False, "message": _message(out)})
        elif out is not None:
            report.results.append(out)
    return report


@dataclass
class PullReport:
    """What the running servers hold, compared with the store: ``rows`` (one per account; iterating
    the report yields them) and ``results`` (one per node: did it answer)."""

    rows: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.get("ok") for r in self.results)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "results": self.results}


def pull(store: Store, *, timeout: float = DEFAULT_TIMEOUT) -> PullReport:
    """What the running servers hold, compared with the store: one row per account, one result per node."""
    full = _full_nodes(_running(store))
    if not full:
        raise DchatOpsError("no running node with the full resolver to pull from")
    creds = system_creds(store)

    async def fetch(session: _Session) -> dict[str, str]:
        held = {}
        for acc_id in _listed(await session.ask("$SYS.REQ.CLAIMS.LIST")):
            got = await session.ask(f"$SYS.REQ.ACCOUNT.{acc_id}.CLAIMS.LOOKUP", any_answer=True)
            held[acc_id] = got.get("raw", "")
        return held

    report = PullReport()
    held_by: dict[str, dict[str, str]] = {}
    for server, out in _on_nodes(store, full, creds, timeout, fetch):
        if isinstance(out, DchatOpsError):
            report.results.append({"server": server, "ok": False, "message": _message(out)})
            continue
        report.results.append({"server": server, "ok": True, "message": f"{len(out)} accounts"})
        for acc_id, token in out.items():
            held_by.setdefault(acc_id, {})[server] = token
    op = store.operator()
    ours = {e.public_key: e for e in store.accounts(op.name)}
    for acc_id in sorted(set(held_by) | set(ours)):
        tokens = {srv: t for srv, t in held_by.get(acc_id, {}).items() if t}
        mine = ours.get(acc_id)
        row: dict = {
            "account": acc_id,
            "name": mine.name if mine else "",
            "in_store": bool(mine),
            "on_server": bool(tokens),
            "servers": sorted(tokens),
        }
        if mine and tokens:
            same = True
            for token in tokens.values():
                try:
                    theirs: Claims = decode(token)
                except DchatOpsError:
                    same = False
                    continue
                same = same and theirs.jti == mine.claims.jti
                row["server_issued_at"] = max(row.get("server_issued_at", 0), theirs.issued_at)
            row["same"] = same
            row["store_issued_at"] = mine.claims.issued_at
        report.rows.append(row)
    return report
