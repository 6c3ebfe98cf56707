"""Key rotation on a running network, in the order that keeps it working.

    >>> report = rotate_account_key(store, "chat")               # new key, users re-issued, old key retired
    >>> report = rotate_account_key(store, "chat", dry_run=True)  # the plan only; nothing written or sent
    >>> report = rotate_operator_key(store)                       # new operator signing key, accounts re-signed
    >>> report = rotate_user(store, "chat", "alice")              # new nkey and creds, the old nkey revoked

Each step is one unit of work on the store (:mod:`dchat_ops.nsc.rotate`), written before it is sent, and
the next step starts only once every running server confirmed it (the push reports per server):

* account key: the account JWT with both keys is pushed; the users the old key signed get JWTs and creds
  signed by the new key (same user nkey); clients that follow their creds file
  (:class:`~dchat_ops.runtime.client.ManagedClient`) get a moment to move to them; then the account JWT
  without the old key is pushed, and the server refuses what the old key signed.
* operator key: servers read the operator JWT only when they start (a reload refuses the change), and a
  server takes an account JWT of a key it does not trust into its resolver and then refuses the account's
  users.  So the operator JWT with both keys goes to every running node first, one node restarted after
  the other, each confirmed to trust the new key (``/varz``); then the accounts, re-signed, are pushed;
  then the old key is removed and the nodes restarted again, each confirmed to no longer trust it.
  A node's clients reconnect while it restarts (to another node of a cluster, or to it once it is back).
* user: a new nkey, JWT and creds for the same name; then (optionally once the new key has connected
  somewhere) every JWT of the old nkey is revoked and the account pushed.

A failure before anything reached a server leaves the store as it was.  Once servers hold a step, the
store keeps it (going back would leave the store behind the servers, and the servers trusting a key whose
seed is gone): the report's ``remaining`` says what is left to do, and the command exits 1.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc import rotate
from dchat_ops.nsc.store import Store
from dchat_ops.runtime import push
from dchat_ops.runtime.process import http_json
from dchat_ops.runtime.supervisor import Supervisor

__all__ = ["SWAP_GRACE", "RotationReport", "rotate_account_key", "rotate_operator_key", "rotate_user"]

SWAP_GRACE = push.SWAP_GRACE  # seconds clients that follow their creds file get to move to the new creds


@dataclass
class RotationReport:
    """What a rotation did (or, with ``dry_run``, would do), step by step, and per server."""

    kind: str
    dry_run: bool
    plan: dict[str, Any]
    servers: list[str]  # the running nodes' servers, those the steps are sent to
    steps: list[dict[str, Any]] = field(default_factory=list)
    new_key: str = ""
    remaining: str = ""  # when a step was not confirmed everywhere: what is left to do

    @property
    def ok(self) -> bool:
        return not self.remaining and all(s["ok"] for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ok": self.ok,
            "dry_run": self.dry_run,
            "plan": self.plan,
            "servers": list(self.servers),
            "new_key": self.new_key,
            "steps": self.steps,
            "remaining": self.remaining,
        }


class _Stop(Exception):
    """A step that not every running server confirmed: the rotation stops there."""


def _step(report: RotationReport, what: str, ok: bool = True, detail: str = "", results=None) -> dict[str, Any]:
    row = {"step": what, "ok": ok, "detail": detail, "results": list(results or [])}
    report.steps.append(row)
    return row


def _push(store: Store, report: RotationReport, what: str, accounts: list[str], remaining: str) -> None:
    """Push ``accounts`` to every running node as step ``what``; stop the rotation when one did not confirm."""
    if not push.running_nodes(store):
        _step(report, what, True, "no node running: nodes take the store's JWTs when they start")
        return
    try:
        pr = push.push(store, accounts)
    except DchatOpsError as exc:
        _step(report, what, False, str(exc))
        report.remaining = remaining
        raise _Stop from None
    servers = sorted({r["server"] for r in pr.results if r.get("ok")})
    _step(report, what, pr.ok, f"confirmed by {len(servers)} server(s)", pr.results)
    if not pr.ok:
        report.remaining = remaining
        raise _Stop


def _servers(sups: list[Supervisor]) -> list[str]:
    return [s.node().server_name for s in sups]


def _offline_unit(store: Store, sups: list[Supervisor]):
    """With no node running, nothing is sent between the steps: they are then one unit of work together
    (a failure in any step leaves the store as it was).  Otherwise each step is its own."""
    return store.transaction() if not sups else contextlib.nullcontext()


# --- account signing key ----------------------------------------------------------------------------------


def _old_connections(sups: list[Supervisor], account_key: str, tokens: set[str]) -> int:
    """How many open client connections of the account, on the running nodes, present one of ``tokens``."""
    query = urllib.parse.urlencode({"auth": "true", "acc": account_key, "limit": 100000})
    n = 0
    for sup in sups:
        code, body = http_json(f"{sup.monitor_url}/connz?{query}")
        conns = body.get("connections") if code == 200 else None
        n += sum(1 for c in conns or [] if isinstance(c, dict) and c.get("jwt") in tokens)
    return n


def _wait_moved(sups: list[Supervisor], account_key: str, tokens: set[str], grace: float) -> int:
    """Wait up to ``grace`` seconds until no connection presents one of ``tokens``; how many still do."""
    deadline = time.monotonic() + grace
    left = _old_connections(sups, account_key, tokens) if tokens else 0
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _old_connections(sups, account_key, tokens)
    return left


def rotate_account_key(
    store: Store,
    account: str,
    *,
    role: Optional[str] = None,
    key: Optional[str] = None,
    dry_run: bool = False,
    grace: float = SWAP_GRACE,
) -> RotationReport:
    """Replace a signing key of ``account`` (``role``, ``key``, or its plain signing key) by a new one.

    Users the old key signed keep their nkey and get a JWT and creds signed by the new key; once the old
    key is retired, nats-server refuses JWTs it signed.  See the module for the order of the steps."""
    plan = rotate.plan_account_key(store, account, role=role, key=key)
    sups = push.running_nodes(store)
    report = RotationReport("account-key", dry_run, plan.to_dict(), _servers(sups))
    kind = f"scoped key of role {plan.role!r}" if plan.role else "signing key"
    identity = plan.old_key == store.account(account).public_key
    steps = [
        f"add a new {kind} to account {account} (the old one stays) and push the account JWT",
        f"re-issue {len(plan.users)} user(s) signed by {plan.old_key} with the new key (same user nkeys)",
        "retire nothing: the users were signed by the account's identity key, which stays"
        if identity
        else f"retire {plan.old_key} and push the account JWT: what it signed is refused",
    ]
    if dry_run:
        for s in steps:
            _step(report, s, True, "planned")
        return report
    push.require_current_store(store, [account])
    acc_key = store.account(account).public_key
    old_tokens = {store.user(account, u).token for u in plan.users}
    with _offline_unit(store, sups), contextlib.suppress(_Stop):
        report.new_key = rotate.add_account_key(store, account, plan.old_key)
        _push(
            store,
            report,
            steps[0],
            [account],
            f"the new key {report.new_key} is in account {account} but signs nobody yet, and not every server "
            f"holds it: run dchat-ops push; to start over, remove it with: dchat-ops edit account {account} "
            f"--rm-sk {report.new_key}",
        )
        users = rotate.reissue_users(store, account, plan.old_key, report.new_key)
        left = _wait_moved(sups, acc_key, old_tokens, grace) if sups else 0
        detail = f"{len(users)} user(s) re-issued"
        if left:
            detail += f"; {left} connection(s) still presented an old JWT after {grace:g}s (they are closed next)"
        _step(report, steps[1], True, detail)
        if identity:
            _step(report, steps[2], True)
            return report
        rotate.retire_account_key(store, account, plan.old_key)
        _push(
            store,
            report,
            steps[2],
            [account],
            f"key {plan.old_key} is retired in the store, but not every server holds that: run dchat-ops push",
        )
    return report


# --- operator signing key -----------------------------------------------------------------------------


def _trusted(sup: Supervisor) -> Optional[set[str]]:
    """The operator keys the running server trusts (identity and signing keys), from ``/varz``."""
    code, varz = http_json(sup.monitor_url + "/varz")
    if code != 200:
        return None
    keys: set[str] = set()
    for op in varz.get("trusted_operators_claim") or []:
        keys.add(op.get("sub", ""))
        keys.update((op.get("nats") or {}).get("signing_keys") or [])
    return keys


def _restart_all(
    store: Store,
    report: RotationReport,
    sups: list[Supervisor],
    what: str,
    *,
    trusts: str = "",
    distrusts: tuple[str, ...] = (),
    remaining: str,
) -> None:
    """Restart the running nodes one after the other (so a cluster keeps serving), each confirmed to trust
    ``trusts`` and none of ``distrusts``; stop at the first that is not (the others are left running)."""
    if not sups:
        _step(report, what, True, "no node running: nodes read the operator JWT when they start")
        return
    rows = []
    for sup in sups:
        name = sup.node().server_name
        try:
            sup.down()
            sup.up()
            keys = _trusted(sup)
            if keys is None:
                raise DchatOpsError("its monitoring did not answer after the restart")
            if trusts and trusts not in keys:
                raise DchatOpsError(f"it does not trust {trusts} after the restart")
            if any(k in keys for k in distrusts):
                raise DchatOpsError("it still trusts the retired key after the restart")
            rows.append({"server": name, "ok": True, "message": "restarted with the new operator JWT"})
        except DchatOpsError as exc:
            rows.append({"server": name, "ok": False, "message": str(exc)})
            _step(report, what, False, f"node {sup.node_id} did not come back as it should", rows)
            report.remaining = remaining
            raise _Stop from None
    _step(report, what, True, f"{len(rows)} node(s) restarted one after the other", rows)


def rotate_operator_key(store: Store, *, key: Optional[str] = None, dry_run: bool = False) -> RotationReport:
    """Replace the operator's signing key (``key``, or every signing key it has) by a new one and re-sign
    every account JWT with it.  See the module for the order of the steps and the restarts it needs."""
    plan = rotate.plan_operator_key(store, key)
    sups = push.running_nodes(store)
    report = RotationReport("operator-key", dry_run, plan.to_dict(), _servers(sups))
    old = ", ".join(plan.old_keys)
    steps = [
        f"add a new operator signing key; restart {len(sups)} running node(s) one by one to trust both keys",
        f"re-sign {len(plan.accounts)} account JWT(s) ({', '.join(plan.accounts)}) with the new key and push them",
        f"retire {old}; restart {len(sups)} running node(s) one by one"
        if plan.old_keys
        else "retire nothing: the accounts were signed by the operator's identity key, which stays",
    ]
    if dry_run:
        for s in steps:
            _step(report, s, True, "planned")
        return report
    push.require_current_store(store, plan.accounts)
    with _offline_unit(store, sups), contextlib.suppress(_Stop):
        report.new_key = rotate.add_operator_key(store)
        _restart_all(
            store,
            report,
            sups,
            steps[0],
            trusts=report.new_key,
            remaining=f"the operator JWT with the new key {report.new_key} is in the store (no account is "
            "signed by it yet); start the nodes that did not take it with dchat-ops node up NODE; to start over, "
            f"remove the key with: dchat-ops edit operator --rm-sk {report.new_key}",
        )
        names = rotate.resign_accounts(store, report.new_key)
        _push(
            store,
            report,
            steps[1],
            names,
            f"the accounts are re-signed by {report.new_key} in the store, but not every server holds them: run "
            "dchat-ops push; the old key is kept"
            + (f" (retire it once they do: dchat-ops edit operator --rm-sk KEY, for {old})" if old else ""),
        )
        if plan.old_keys:
            rotate.retire_operator_key(store, plan.old_keys)
            _restart_all(
                store,
                report,
                sups,
                steps[2],
                trusts=report.new_key,
                distrusts=tuple(plan.old_keys),
                remaining=f"{old} is retired in the store; restart the nodes that did not take it "
                "(dchat-ops node up NODE)",
            )
        else:
            _step(report, steps[2], True)
    return report


# --- a user's key -------------------------------------------------------------------------------------


def _connected(sups: list[Supervisor], user_key: str) -> bool:
    query = urllib.parse.urlencode({"user": user_key, "limit": 1})
    for sup in sups:
        code, body = http_json(f"{sup.monitor_url}/connz?{query}")
        if code == 200 and body.get("connections"):
            return True
    return False


def rotate_user(
    store: Store, account: str, user: str, *, dry_run: bool = False, wait_connect: float = 0.0
) -> RotationReport:
    """Give ``user`` a new nkey (new JWT and creds, same name and claims) and revoke its old nkey.

    With ``wait_connect`` the revocation waits up to that many seconds for a connection of the new key on a
    running node; when none comes, the old key is not revoked (``remaining`` says how to).  Without it the
    old key is revoked at once; clients that follow their creds file get a moment to move first."""
    plan = rotate.plan_user_key(store, account, user)
    sups = push.running_nodes(store)
    report = RotationReport("user", dry_run, plan.to_dict(), _servers(sups))
    steps = [
        f"new nkey, JWT and creds for user {account}/{user}",
        (f"wait up to {wait_connect:g}s for the new key to connect; " if wait_connect else "")
        + f"revoke every JWT of the old key {plan.old_key} and push account {account}",
    ]
    if dry_run:
        for s in steps:
            _step(report, s, True, "planned")
        return report
    push.require_current_store(store, [account])
    old_iat = store.user(account, user).claims.issued_at
    creds = store.creds_path(store.current_operator(), account, user)
    if not sups and not wait_connect:  # nothing to send between the steps: one unit of work
        with store.transaction():
            old_key, report.new_key, _ = rotate.new_user_key(store, account, user)
            rotate.revoke_user_key(store, account, old_key, old_iat)
        _step(report, steps[0], True, f"creds: {creds}")
        _step(report, steps[1], True, "no node running: nodes take the revocation from the store when they start")
        return report
    old_key, new_key, old_token = rotate.new_user_key(store, account, user)
    report.new_key = new_key
    _step(report, steps[0], True, f"creds: {creds}")
    revoke = f"dchat-ops revoke user {old_key} --account {account}"
    if wait_connect:
        if not sups:
            _step(report, steps[1], False, "no node is running: nothing to wait for")
            report.remaining = f"the old key is not revoked: once the new creds are in use, run {revoke}"
            return report
        deadline = time.monotonic() + wait_connect
        while not _connected(sups, new_key) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _connected(sups, new_key):
            _step(report, steps[1], False, f"the new key did not connect within {wait_connect:g}s")
            report.remaining = f"the old key is not revoked: once the new creds are in use, run {revoke}"
            return report
    rotate.revoke_user_key(store, account, old_key, old_iat)
    pr, _ = push.push_revocation(store, account, old_key, old_token)
    if pr is None:
        _step(report, steps[1], True, "no node running: nodes take the revocation from the store when they start")
        return report
    servers = sorted({r["server"] for r in pr.results if r.get("ok")})
    _step(report, steps[1], pr.ok, f"confirmed by {len(servers)} server(s)", pr.results)
    if not pr.ok:
        report.remaining = "the revocation is in the store, but not every server holds it: run dchat-ops push"
    return report
