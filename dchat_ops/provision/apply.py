"""Apply: execute a plan.  Identities first (operator, accounts, users, revocations), then nodes.

Every node of the spec goes through :func:`~dchat_ops.permissions.apply.apply_node_change`, the
same transaction ``allow-sub`` uses: its node file edits, render and check, a reload of a running
node confirmed by the server, the node user's JWT re-issued last, and every file put back when a
step fails.  A node that is not running keeps the written files for its next start.  What happened
to each node is in :attr:`ApplyResult.nodes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dchat_ops._fs import deferred_sync, with_store_lock
from dchat_ops.config import nodes as nodes_mod
from dchat_ops.config import pki
from dchat_ops.config import tls as tls_mod
from dchat_ops.config.node import NodeFile, list_nodes
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.claims import ScopedSigningKey, UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store
from dchat_ops.nsc.supersede import retire
from dchat_ops.permissions.apply import apply_node_change, remove_node
from dchat_ops.provision.plan import (
    Plan,
    UserStep,
    account_desired,
    activation_tokens,
    node_edits,
    plan,
    role_template,
    spec_ports,
    spec_uses_tls,
)
from dchat_ops.provision.schema import Spec
from dchat_ops.provision.state import UserState, fingerprint, sha, write_state

__all__ = ["ApplyResult", "NodeOutcome", "apply"]


@dataclass
class NodeOutcome:
    node: str
    outcome: str  # live, saved, unchanged, rolled-back
    detail: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ApplyResult:
    plan: Plan
    written_users: int = 0
    nodes: list[NodeOutcome] = field(default_factory=list)
    error: str = ""  # the failure that rolled the whole apply back

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def rolled_back(self) -> list[NodeOutcome]:
        return [n for n in self.nodes if n.outcome == "rolled-back"]

    def to_dict(self) -> dict:
        return {
            **self.plan.to_dict(),
            "changed": self.plan.has_changes,
            "users_written": self.written_users,
            "nodes": [n.to_dict() for n in self.nodes],
            **({"error": self.error} if self.error else {}),
        }


@with_store_lock
def apply(
    store: Store,
    spec: Spec,
    *,
    keep_removed: bool = False,
    workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ApplyResult:
    """Make the store and its nodes what the spec says; a second apply of the same spec changes nothing.

    All or nothing: identities and node files are one unit of work.  When a node's change fails
    (its config refused, a reload the server rejects), every file the apply wrote is restored, the
    running nodes it had already changed are reloaded onto their previous config, and the result
    says so (``result.error``; each node's outcome in ``result.nodes``).
    """
    p = plan(store, spec, keep_removed=keep_removed)
    result = ApplyResult(p)
    if not p.has_changes:
        if p.state_stale:
            write_state(store, spec, p.user_state, p.accounts_kept, p.nodes_kept)
        return result
    try:
        with store.transaction():  # one unit of work (journaled: also across a kill)
            with deferred_sync():
                _apply_operator(store, spec, p)
                _apply_accounts(store, spec, p)
                users = dict(p.user_state)
                _issue(store, p, users, workers, progress)
                result.written_users = len(p.users_to_issue)
                _revoke(store, p)
                _remove_accounts(store, p)
                write_state(store, spec, users, p.accounts_kept, p.nodes_kept)
            _apply_nodes(store, spec, p, result)
            _remove_nodes(store, p, result)
    except _NodeFailed as failed:
        result.written_users = 0
        reloaded = _back_to_files(store)
        result.error = (
            f"node {failed.node}: {failed.detail}; the whole apply was rolled back: every file it wrote was restored"
            + (f", and node(s) {', '.join(reloaded)} reloaded onto their previous config" if reloaded else "")
        )
    return result


class _NodeFailed(Exception):
    def __init__(self, node: str, detail: str):
        super().__init__(node, detail)
        self.node, self.detail = node, detail


def _back_to_files(store: Store) -> list[str]:
    """Reload the running nodes whose config file was restored under them; their ids."""
    from dchat_ops.runtime.supervisor import Supervisor

    out = []
    for nid in list_nodes(store):
        sup = Supervisor(store, nid)
        try:
            if sup.running() and sup.config_behind():
                sup.reload(render=False)
                out.append(nid)
        except DchatOpsError:
            continue
    return out


def _remove_nodes(store: Store, p: Plan, result: ApplyResult) -> None:
    """Last, once every other change is in: the nodes the spec no longer names (a removal stops the node)."""
    for nid in p.nodes_to_remove:
        try:
            r = remove_node(store, nid)
        except DchatOpsError as exc:
            result.nodes.append(NodeOutcome(nid, "rolled-back", str(exc)))
            raise _NodeFailed(nid, str(exc)) from None
        result.nodes.append(NodeOutcome(nid, "removed", "; ".join(r.messages)))


def _remove_accounts(store: Store, p: Plan) -> None:
    for name in p.accounts_to_remove:
        admin.remove_account(store, name)


def _apply_operator(store: Store, spec: Spec, p: Plan) -> None:
    strict = p.operator.get("strict")
    if p.create_operator:
        op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
        first = next((a["name"] for a in spec.accounts), admin.DEFAULT_ACCOUNT)
        admin.init(
            store,
            op_name,
            first,
            None,
            system_account=p.operator.get("system_account", admin.SYSTEM_ACCOUNT),
            strict=bool(strict),
        )
    elif strict is not None:
        if strict and not store.operator().claims.signing_keys:
            admin.edit_operator(store, add_signing_key=True)
        admin.edit_operator(store, strict=strict)
    while len(store.operator().claims.signing_keys) < p.operator.get("plain_signing_keys", 0):
        admin.edit_operator(store, add_signing_key=True)
    if "service_urls" in p.operator:
        admin.edit_operator(store, service_urls=p.operator["service_urls"])
    if "account_server_url" in p.operator or "tags" in p.operator:
        admin.edit_operator(store, account_server_url=p.operator.get("account_server_url"), tags=p.operator.get("tags"))


def _apply_accounts(store: Store, spec: Spec, p: Plan) -> None:
    op = store.operator()
    for step in p.accounts:  # create first, so imports can name them
        if step.create and step.name not in store.account_names(op.name):
            admin.add_account(store, step.name, signing_key=bool(spec.operator.get("strict")))
    keys = {n: store.account(n).public_key for n in store.account_names(op.name)}
    for step in p.accounts:
        e = store.account(step.name)
        if step.desired is not None:
            desired, missing_roles, missing_plain = step.desired, step.missing_roles, step.missing_plain
        else:  # created now (or importing from one created now): its keys exist only from here on
            desired, missing_roles, missing_plain = account_desired(step.item, e, keys, admin.now(store))
            activation_tokens(store, spec, step.item, desired, e.claims, admin.now(store))
        for _ in range(missing_plain):
            kp = KeyPair.generate("account")
            store.save_key(kp)
            desired.signing_keys.append(kp.public_key)
        for role in missing_roles:
            kp = KeyPair.generate("account")
            store.save_key(kp)
            r = next(x for x in step.item.get("signing_keys", []) if x["role"] == role)
            desired.signing_keys.append(
                ScopedSigningKey(kp.public_key, role, role_template(r), r.get("description", ""))
            )
        if desired.to_dict() != e.claims.to_dict():
            admin.resign_account(store, store.operator(), e, desired)


def _issue(store: Store, p: Plan, users: UserState, workers, progress) -> None:
    """Issue the plan's users; the state entry of each goes to ``users``."""
    op = store.operator()
    groups: dict[tuple[str, str], list[UserStep]] = {}
    for step in p.users_to_issue:
        groups.setdefault((step.account, step.role), []).append(step)
    done = 0
    total = len(p.users_to_issue)
    for (acc_name, role), steps in groups.items():
        acc = store.account(acc_name, op.name)
        signer, scope = admin.user_signer(store, op.claims, acc.claims, role or None)
        # users that exist keep their key: only their JWT and creds are made anew (all signed first, then
        # written together)
        writes: list[tuple[Path, str, bool]] = []
        for step in steps:
            if step.exists and not step.taken_away:
                token, _ = _reissue_existing(store, op.name, acc, step, signer, scope, writes)
                users[f"{acc_name}/{step.name}"] = {"spec": fingerprint(step.item), "jwt": sha(token)}
                done += 1
        store.write_many(writes)
        narrowed = [s for s in steps if s.exists and s.taken_away]
        if narrowed:
            # a re-issue that takes something away revokes the user's earlier JWTs: the new JWTs and
            # creds and the account's revocations are one unit of work
            with store.transaction():
                narrowed_writes: list[tuple[Path, str, bool]] = []
                issued = [
                    (step, *_reissue_existing(store, op.name, acc, step, signer, scope, narrowed_writes))
                    for step in narrowed
                ]
                store.write_many(narrowed_writes)
                with store.edit_account(acc_name, op.name) as claims:
                    for step, _, iat in issued:
                        retire(claims, store.user(acc_name, step.name, op.name).public_key, iat)
            for step, token, _ in issued:
                users[f"{acc_name}/{step.name}"] = {"spec": fingerprint(step.item), "jwt": sha(token)}
            done += len(issued)
        fresh = [s for s in steps if not s.exists]
        # the issuing processes write the files themselves (journaled here as new ones); one flush at the end
        admin.journal_user_files(store, op.name, acc_name, [s.name for s in fresh], replaced=False)
        rows = admin.issue_users(
            [s.name for s in fresh],
            acc.public_key,
            signer,
            specs=[s.spec for s in fresh],
            scope=scope,
            clock=store.clock,
            workers=workers,
            write_to=(str(store.home), op.name, acc_name),
        )
        for step, row in zip(fresh, rows, strict=True):
            users[f"{acc_name}/{step.name}"] = {"spec": fingerprint(step.item), "jwt": sha(row[3])}
        done += len(rows)
        if progress:
            progress(done, total)
        if rows:
            os.sync()
    if progress and total:
        progress(total, total)


def _revoke(store: Store, p: Plan) -> None:
    """Revoke the users removed from the spec and remove their files: per account, one re-signing of the
    account JWT for all of them, and all or nothing."""
    op_name = store.current_operator()
    by_account: dict[str, list[str]] = {}
    for acc_name, name in p.users_to_revoke:
        by_account.setdefault(acc_name, []).append(name)
    for acc_name, names in by_account.items():
        with store.transaction():
            revoke.revoke_users(store, acc_name, names)
            for name in names:
                store.remove_user(op_name, acc_name, name)


def _reissue_existing(
    store: Store,
    op_name: str,
    acc,
    step: UserStep,
    signer: KeyPair,
    scope,
    writes: Optional[list[tuple[Path, str, bool]]] = None,
) -> tuple[str, int]:
    """A new JWT and creds for a user that keeps its key; returns the JWT and its ``iat``.  With ``writes``
    the files are added to it (the caller writes them all at once), else written here."""
    if step.current is not None:
        subject, issued_at = step.current
    else:
        old = store.user(acc.name, step.name, op_name).claims
        subject, issued_at = old.subject, old.issued_at
    u = UserClaims(subject=subject, name=step.name)
    if scope is not None:
        u.limits.clear_for_scope()
    step.spec.apply(u)
    if signer.public_key != acc.public_key:
        u.issuer_account = acc.public_key
    token = store.sign(u, signer, replaces=issued_at)  # iat after the version it replaces
    if writes is None:
        store.write_user(op_name, acc.name, step.name, token)
        if store.has_key(subject):
            creds = format_creds(token, store.load_key(subject).seed)
            store.write_creds(op_name, acc.name, step.name, creds, force=True)
        return token, u.issued_at
    writes.append((store.user_jwt_path(op_name, acc.name, step.name), token, False))
    if store.has_key(subject):
        creds = format_creds(token, store.load_key(subject).seed)
        writes.append((store.creds_path(op_name, acc.name, step.name), creds, True))
    return token, u.issued_at


def _ensure_certificates(store: Store, node_id: str, edits: list) -> None:
    """Issue the certificates the node's TLS settings (after ``edits``) need and it does not have yet."""
    nf = NodeFile.load(store, node_id)
    for keys, value in edits:
        nf.set(keys, value)
    node = nf.refresh()  # a preview: the node file itself is changed by apply_node_change
    for kind in tls_mod.required_kinds(node):
        key_path, cert_path = pki.cert_paths(store, node_id, kind)
        if not (key_path.is_file() and cert_path.is_file()):
            pki.issue(store, node_id, kind, node=node)


def _apply_nodes(store: Store, spec: Spec, p: Plan, result: ApplyResult) -> None:
    if spec_uses_tls(spec):
        pki.init_ca(store)  # the spec's TLS needs the store's CA: made once, kept after (like the operator)
    for step in p.nodes:
        if step.create:
            n = step.item
            host = n.get("host", "127.0.0.1")
            given = [x for x in (n.get("client_port"), n.get("monitor_port"), n.get("cluster_port")) if x]
            listen: dict[str, Optional[int]] = {}
            for sec in ("gateway", "leafnodes", "websocket"):
                want = n.get(sec)
                if want is None or (sec == "leafnodes" and not want.get("port")):
                    listen[sec] = None
                    continue
                listen[sec] = want.get("port") or nodes_mod.pick_port(store, n["id"], host, given)
                given.append(listen[sec])
            nodes_mod.add_node(
                store,
                n["id"],
                host=host,
                client_port=n.get("client_port"),
                monitor_port=n.get("monitor_port"),
                monitor_host=n.get("monitor_host"),
                cluster=n.get("cluster", True) is not False,
                cluster_name=n.get("cluster_name", "dchat"),
                cluster_port=n.get("cluster_port"),
                gateway_port=listen["gateway"],
                leaf_port=listen["leafnodes"],
                websocket_port=listen["websocket"],
                advertise=n.get("advertise"),
                jetstream=bool(n.get("jetstream")),
                resolver=n.get("resolver", "full"),
                account=n.get("account"),
                force=True,
            )
    ports = spec_ports(store, spec)
    for step in p.nodes:
        edits = step.edits
        if edits is None or step.create:  # the ports of nodes created now are known only now
            edits = node_edits(spec, step.item, NodeFile.load(store, step.id), ports) or []
        # every node, changed or not: account JWTs the config preloads may have changed
        try:
            if step.item.get("tls"):
                _ensure_certificates(store, step.id, edits)
            r = apply_node_change(store, step.id, edits)
        except DchatOpsError as exc:
            # all or nothing: the nodes changed before it are put back too, the ones after it not touched
            for done in result.nodes:
                if done.outcome != "unchanged":
                    done.outcome, done.detail = "rolled-back", f"restored: node {step.id} failed"
            result.nodes.append(NodeOutcome(step.id, "rolled-back", str(exc)))
            done_ids = {x.node for x in result.nodes}
            result.nodes += [
                NodeOutcome(s.id, "rolled-back", f"not applied: node {step.id} failed")
                for s in p.nodes
                if s.id not in done_ids
            ]
            raise _NodeFailed(step.id, str(exc)) from None
        result.nodes.append(NodeOutcome(step.id, r.outcome, "; ".join(r.messages)))
