"""Pushing / pulling account JWTs to and from running servers over the system account.

    >>> report = push(store, ["chat"])                     # every running node answers, per server
    >>> report = pull(store)                               # per account and server: same, server newer, ...
    >>> report = pull(store, update=True)                  # newer, verified JWTs into the store, then pushed

Pushing uses a short-lived system user (two minutes), made in memory and never written, as nsc does.
Nodes with the full nats resolver get ``$SYS.REQ.CLAIMS.UPDATE``; nodes with the memory resolver get
their preload re-rendered and a reload.  The config of every running node is re-rendered, so a
restart also starts from the new JWTs; a node that is not running is listed as such (``stopped``):
nothing is sent to it, and ``node up`` renders its config from the store when it starts.

Each running node is reached on its own (:func:`dchat_ops.runtime.client.node_target`: its URL and
TLS) and asked directly, so each one either confirms or is named in the report ("no answer within
3s", "cannot connect ..."); every connect and every request is bounded by ``timeout``.

What the servers hold and how a node starts from the newest JWTs: :mod:`dchat_ops.runtime.held`.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

from dchat_ops.config.node import Node, list_nodes, of_current_operator
from dchat_ops.config.nodes import render_node
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc.admin import adopt_account_jwts
from dchat_ops.nsc.enroll import add_accounts, device_info
from dchat_ops.nsc.jwt import encode_generic
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.held import (
    DEFAULT_TIMEOUT,
    STATES,
    _compare,
    _held_by,
    _listed,
    _message,
    _name_in,
    _newest,
    _on_nodes,
    _Session,
    newer_on_servers,
    require_current,
)
from dchat_ops.runtime.process import http_json
from dchat_ops.runtime.supervisor import Supervisor

__all__ = [
    "DEFAULT_TIMEOUT",
    "STATES",
    "PullReport",
    "PushReport",
    "account_findings",
    "prune",
    "pull",
    "push",
    "push_revocation",
    "require_current_store",
    "running_nodes",
    "servers_behind",
]


def running_nodes(store: Store) -> list[Supervisor]:
    """The running nodes of the store's operator (a home with several operators: of the current one)."""
    running = [s for s in (Supervisor(store, n) for n in list_nodes(store)) if s.running()]
    if len(store.operator_names()) > 1:
        running = [s for s in running if _of_operator(store, s)]
    return running


def _of_operator(store: Store, sup: Supervisor) -> bool:
    try:
        return of_current_operator(store, sup.node())
    except DchatOpsError:  # a damaged node file: reported where it is read
        return True


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
    answer within ``timeout`` gets a row with ``ok`` False that says so.  An account of which a
    server holds a newer JWT than the store's is not sent at all (a row says so): it would undo the
    newer one, a revocation made from another home for instance.
    """

    op = store.operator()
    names = accounts or store.account_names(op.name)
    running = _running(store)
    up = {s.node_id for s, _ in running}
    stopped = [n for n in list_nodes(store) if n not in up]
    if len(store.operator_names()) > 1:  # nodes of other operators are not this push's
        stopped = [n for n in stopped if _of_operator(store, Supervisor(store, n))]
    report = PushReport(expected_servers=len(running), stopped=stopped)
    if not running:
        raise DchatOpsError("no node of this store is running; start one with 'dchat-ops node up'")
    for _, node in running:  # configs follow the store, so a restart also starts from the new JWTs
        try:
            render_node(store, node.id, node=node)
        except DchatOpsError as exc:  # the push itself can still reach this node
            report.results.append(
                {"account": ",".join(names), "server": node.server_name, "ok": False, "message": str(exc)}
            )
    full = _full_nodes(running)
    # never send a JWT older than one a server holds: it would undo what the newer one holds
    stale = {b["name"]: b for b in newer_on_servers(store, list(names), full, timeout=timeout)}
    for name, b in stale.items():
        report.results.append(
            {
                "account": name,
                "server": b["server"],
                "ok": False,
                "message": f"not pushed: this server holds a newer JWT of account {name} than the store "
                "(run 'dchat-ops pull --update', then make the change again)",
            }
        )
    tokens = [(name, store.account(name, op.name).token) for name in names if name not in stale]

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


SWAP_GRACE = 2.0  # seconds clients that follow their creds file get to move off a superseded JWT


def _presenting(running: list[tuple[Supervisor, Node]], user_key: str, tokens: set[str]) -> dict[str, int]:
    """Per running node: how many open client connections of ``user_key`` present one of ``tokens``
    (its ``/connz`` with ``auth``; a node that does not answer counts none)."""
    query = urllib.parse.urlencode({"auth": "true", "user": user_key, "limit": 4096})
    out = {}
    for sup, node in running:
        code, body = http_json(f"{sup.monitor_url}/connz?{query}")
        conns = body.get("connections") if code == 200 else None
        n = sum(1 for c in conns or [] if isinstance(c, dict) and c.get("jwt") in tokens)
        if n:
            out[node.id] = n
    return out


def push_revocation(
    store: Store,
    account: str,
    user_key: str,
    superseded: str,
    *,
    grace: float = SWAP_GRACE,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Optional[PushReport], dict[str, int]]:
    """Push ``account`` after a re-issue revoked the user's earlier JWT ``superseded``; returns the push
    report (None when no node runs) and, per node, the connections that still presented the superseded
    JWT when it was pushed (the revocation closed them).

    nats-server closes every connection presenting a revoked JWT when the account update arrives, and
    nats-py does not reconnect after that.  So clients that follow their creds file
    (:class:`~dchat_ops.runtime.client.ManagedClient`) first get up to ``grace`` seconds to move to the
    new creds: the push waits until no running node shows a connection of the user with the superseded
    JWT, or the grace is over.
    """
    running = _running(store)
    if not running:
        return None, {}
    deadline = time.monotonic() + grace
    lingering = _presenting(running, user_key, {superseded})
    while lingering and time.monotonic() < deadline:
        time.sleep(0.05)
        lingering = _presenting(running, user_key, {superseded})
    return push(store, [account], timeout=timeout), lingering


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
    """What the running servers hold, compared with the store.

    ``rows``: one per account (iterating the report yields them): ``state`` and, in ``per_server``, one entry
    per server that answered (``state`` one of :data:`STATES`, ``issued_at``, ``message``).  ``results``: one
    per node (did it answer).  ``refused``: server JWTs that do not verify against the store's operator (never
    written).  With ``update``: ``updated`` (the accounts written into the store, and from which servers) and
    ``push`` (the push of those accounts to the running nodes).
    """

    rows: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    updated: list[dict] = field(default_factory=list)
    push: Optional[PushReport] = None

    @property
    def ok(self) -> bool:
        return all(r.get("ok") for r in self.results) and (self.push is None or self.push.ok)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "results": self.results,
            "refused": self.refused,
            "updated": self.updated,
            "push": self.push.to_dict() if self.push is not None else None,
        }


def pull(store: Store, *, update: bool = False, timeout: float = DEFAULT_TIMEOUT) -> PullReport:
    """Compare what every running full-resolver node holds with the store, per account and server.

    Whole JWTs are compared (the same token, else the larger ``iat`` is the newer).  With ``update``, every
    account some server holds newer, verified JWT of is written into the store (its newest, in one unit of
    work: :func:`dchat_ops.nsc.admin.adopt_account_jwts`) and pushed to the running nodes, which also
    re-renders their configs.  A JWT that does not verify against the store's operator is listed in
    ``refused`` and never written; neither is one of two different JWTs issued in the same second.
    """
    full = _full_nodes(_running(store))
    if not full:
        raise DchatOpsError("no running node with the full resolver to pull from")
    report = PullReport()
    held = _held_by(store, full, timeout, report.results)
    answered = [r["server"] for r in report.results if r["ok"]]
    op = store.operator()
    ours = {e.public_key: e for e in store.accounts(op.name)}
    newer: list[tuple[str, str, str, int, list[str]]] = []  # key, name, token, iat, servers
    # an enrolled device takes accounts its store does not hold yet, too (it cannot make them itself)
    device = device_info(store) is not None
    for key in sorted(set(held) | set(ours)):
        mine = ours.get(key)
        theirs = held.get(key, {})
        stored = (mine.token, mine.claims.issued_at) if mine else None
        name = mine.name if mine else next((n for n in map(_name_in, theirs.values()) if n), "")
        per_server = []
        candidates: list[tuple[int, str, str]] = []
        for server in answered:
            if mine is None and server not in theirs:
                continue
            state, iat, message = _compare(op.claims, key, stored, theirs.get(server, ""))
            per_server.append({"server": server, "state": state, "issued_at": iat, "message": message})
            if state == "refused":
                report.refused.append({"account": key, "name": name, "server": server, "message": message})
            elif state == "server newer" or (state == "not in store" and device):
                candidates.append((iat, theirs[server], server))
        states = {e["state"] for e in per_server}
        verified = [e["issued_at"] for e in per_server if e["state"] not in ("refused", "missing")]
        report.rows.append(
            {
                "account": key,
                "name": name,
                "state": next((s for s in STATES if s in states), "unknown"),
                "in_store": mine is not None,
                "on_server": bool(set(theirs) & set(answered)),
                "servers": sorted(s for s in theirs if s in answered),
                "same": mine is not None and states == {"same"},
                "store_issued_at": mine.claims.issued_at if mine else 0,
                "server_issued_at": max(verified, default=0),
                "per_server": per_server,
            }
        )
        newest = _newest(candidates, key, name, report.refused) if candidates else None
        if newest is not None:
            newer.append((key, name, *newest))
    if update and newer:
        with store.transaction():
            adopt_account_jwts(store, [token for key, _, token, _, _ in newer if key in ours])
            add_accounts(store, [token for key, _, token, _, _ in newer if key not in ours])
        report.updated = [
            {"account": key, "name": name, "from": servers, "issued_at": iat} for key, name, _, iat, servers in newer
        ]
        report.push = push(store, [u["name"] for u in report.updated], timeout=timeout)
    return report


def require_current_store(store: Store, accounts: list[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Before an edit of ``accounts`` that is to be pushed: :class:`~dchat_ops.errors.StoreBehindError`
    when a running node of the store holds a newer JWT of one of them (nothing is known, and nothing
    refused, when no node runs)."""
    require_current(store, accounts, _full_nodes(_running(store)), timeout=timeout)


def servers_behind(store: Store, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, list[str]]:
    """Account name -> the running servers that hold an older JWT of it than the store: a change (a
    revocation, say) written into the store but not pushed, for instance by a command killed between
    the two.  Empty when none is behind, or no node with the full resolver runs."""
    if not _full_nodes(_running(store)):
        return {}
    out: dict[str, list[str]] = {}
    for row in pull(store, timeout=timeout):
        behind = [e["server"] for e in row["per_server"] if e["state"] == "store newer"]
        if behind and row["in_store"]:
            out[row["name"]] = behind
    return out


def account_findings(store: Store, *, timeout: float = DEFAULT_TIMEOUT) -> list[tuple[str, str, str]]:
    """(level, entity, message) for every account a running server holds an older JWT of than the store,
    naming the command that repairs it."""
    return [
        (
            "error",
            f"account {name}",
            f"server(s) {', '.join(servers)} hold an older JWT of it than the store (a change or revocation "
            "not pushed); run 'dchat-ops push'",
        )
        for name, servers in sorted(servers_behind(store, timeout=timeout).items())
    ]
