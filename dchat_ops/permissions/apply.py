"""Applying a permission edit to a node as one transaction, live when the node runs.

For a node: the node config (comments kept), the node user's JWT and creds, and the rendered
nats-server config change together; the config is checked; a running node is reloaded (SIGHUP)
and must confirm the reload and stay healthy.  When any step fails, every file goes back byte for
byte, a running node is reloaded back onto the old config, and the error says which step failed.

    >>> r = apply_node_edit(store, "b", "allow-sub", "room.x")          # live
    >>> r = apply_node_edit(store, "b", "allow-sub", "room.y", mode="restart")
    >>> r = apply_node_edit(store, "b", "deny-sub", "room.x", dry_run=True)

What is live: the route import permissions (which subjects flow into the node from the cluster)
reload without dropping routes or clients.  The node user's own permissions live in its JWT, so a
client picks them up on its next connection with the new creds; :class:`ManagedClient` does that
for a running client without losing messages (see docs/permissions.md).

"Live" is reported once the effect is seen: the node user subscribes with its new creds, and every
route peer holds the node's interest in each newly allowed subject it has subscribers for, and no
longer holds interest it may not import.  nats-server announces existing subscriptions that a
reload makes importable (or no longer importable) to one route peer only, so the peers that missed
it are made to re-learn it; when even that is not seen, the node is restarted, and the messages
say so (:class:`dchat_ops.runtime.confirm.PeerCheck`).  A leaf node's change also follows to its
hubs and its leaf connections (:mod:`dchat_ops.runtime.leaf`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from dchat_ops._fs import read_bytes, with_store_lock
from dchat_ops.config.node import Node, NodeFile, Policy, Rule, check_node_operator, read_nodes
from dchat_ops.config.nodes import (
    check_leaf_queue_entries,
    dependent_nodes,
    hosted_leaves,
    leaf_hubs,
    node_user_spec,
    render_node,
    route_change,
    run_dir,
    server_config,
    sync_node_user,
)
from dchat_ops.config.server import render
from dchat_ops.errors import ApplyError, DchatOpsError, EnrollError, StoreError
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.describe import effective_limits
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.nsc.supersede import taken_away
from dchat_ops.permissions.policy import Edit, parse_action, plan_edit
from dchat_ops.runtime.process import HEALTHZ, RoutePeer, http_json, route_peers
from dchat_ops.runtime.steps import Steps
from dchat_ops.runtime.supervisor import Supervisor, without_jwts

# _LAZY: what comes after a reload (the confirmation on the node and its peers, pushes, leaf connections)
# reaches nodes through the client library (asyncio, nats-py, the system account: about 25 ms to import)
# and is imported where it is used, so that the reload of a live change, which people wait on, does not
# wait for those imports (ADR 2).

__all__ = [
    "ApplyError",
    "ApplyResult",
    "NodeChangeResult",
    "NodeEdit",
    "apply_node_change",
    "apply_node_edit",
    "apply_user_edit",
    "node_behind",
    "node_findings",
    "node_policy",
    "push_superseded",
    "remove_node",
    "remove_user",
    "user_policy",
]


@dataclass
class ApplyResult:
    target: str
    edit: Edit
    outcome: str  # "live", "restart", "saved", "dry-run", "unchanged"
    policy: dict
    steps: list[tuple[str, float]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "outcome": self.outcome,
            **self.edit.to_dict(),
            "policy": self.policy,
            "steps": [{"step": s, "ms": round(ms, 1)} for s, ms in self.steps],
            "messages": self.messages,
        }


def node_policy(store: Store, node_id: str) -> dict:
    n = NodeFile.load(store, node_id).node
    return {
        "publish": {"allow": n.policy.publish.allow, "deny": n.policy.publish.deny},
        "subscribe": {"allow": n.policy.subscribe.allow, "deny": n.policy.subscribe.deny},
    }


def user_policy(store: Store, account: str, user: str) -> dict:
    """What the server applies to the user: its own permissions, or its role's template (``role``)."""
    role, upl = effective_limits(store.account(account).claims, store.user(account, user).claims)
    p = upl.permissions
    out: dict[str, Any] = {
        "publish": {"allow": p.pub.allow, "deny": p.pub.deny},
        "subscribe": {"allow": p.sub.allow, "deny": p.sub.deny},
    }
    if role:
        out["role"] = role
    return out


@with_store_lock
def apply_node_edit(
    store: Store,
    node_id: str,
    action: str,
    subject: str,
    *,
    mode: str = "live",
    dry_run: bool = False,
    binary: Optional[str] = None,
) -> ApplyResult:
    """Edit a node's policy and apply it (``mode``: ``live`` reload or ``restart``)."""

    if mode not in ("live", "restart"):
        raise DchatOpsError(f"unknown apply mode {mode!r}")
    direction, verb = parse_action(action)
    nf = NodeFile.load(store, node_id)
    rule = getattr(nf.node.policy, direction)
    edit = plan_edit({"allow": rule.allow, "deny": rule.deny}, verb, subject, direction)
    if edit.changed and "grant" in nf.node.identity:  # an enrolled device: refused in a dry run too
        _within_grant(store, nf.node, direction, verb, subject)
    if edit.changed and direction == "subscribe":  # refused in a dry run too
        old = nf.node
        after = replace(old, policy=Policy(old.policy.publish, Rule(edit.after["allow"], edit.after["deny"])))
        check_leaf_queue_entries(after, old)
    if not dry_run and not edit.changed and any(lv == "error" for lv, _ in node_behind(store, node_id, binary=binary)):
        # the node file has it, but the running node or the node user does not (hand edits, a change
        # cut short): apply what the file says
        r = apply_node_change(store, node_id, mode=mode, binary=binary)
        return ApplyResult(node_id, edit, r.outcome, node_policy(store, node_id), r.steps, r.messages)
    if not dry_run and not edit.changed:
        # the change may be in force with its revocation in the store only (a command cut short)
        pushed = _push_unpushed_revocation(store, nf.node)
    else:
        pushed = []
    if dry_run or not edit.changed:
        preview = node_policy(store, node_id)
        preview[direction] = edit.after
        return ApplyResult(node_id, edit, "dry-run" if dry_run else "unchanged", preview, messages=pushed)
    r = apply_node_change(
        store,
        node_id,
        [(("policy", direction, "allow"), edit.after["allow"]), (("policy", direction, "deny"), edit.after["deny"])],
        mode=mode,
        binary=binary,
    )
    return ApplyResult(node_id, edit, r.outcome, node_policy(store, node_id), r.steps, r.messages)


def _within_grant(store: Store, node: Node, direction: str, verb: str, subject: str) -> None:
    """On an enrolled device's node, a change that its grant does not cover needs the operator: write a
    grant request and refuse (:class:`EnrollError`, exit 1, naming the file).

    Within the grant the node's policy is its route import filter only, a local choice: subscribing
    within the grant is allowed by the users' JWTs already, so nothing is re-signed.  Publishing rules
    live in the JWTs alone, so a device cannot change them.
    """
    from dchat_ops.config.node import inbox_prefix
    from dchat_ops.nsc.enroll import beyond_grant, write_grant_request

    # the grant the servers enforce is the one in the node user's JWT (the node file holds a copy)
    try:
        allowed = store.user(node.account, node.user).claims.permissions.sub.allow
    except StoreError:
        allowed = node.identity["grant"]
    grant = [g for g in allowed if g != f"{inbox_prefix(node.id)}.>"]
    if direction == "publish":
        raise EnrollError(
            f"node {node.id} is an enrolled device's node: its publish permissions are its operator's to sign"
        )
    if verb == "allow" and beyond_grant(grant, subject):
        path = write_grant_request(store, [subject.split(" ")[0]], node.id)
        raise EnrollError(
            f"{subject!r} is beyond what this device's operator granted ({', '.join(grant) or 'nothing'}): "
            f"nothing changed; a request for the operator is in {path} "
            f"(the operator runs 'dchat-ops enroll sign {path.name} -o {path.stem}.resp', you then "
            f"'dchat-ops enroll import {path.stem}.resp')"
        )


def _push_unpushed_revocation(store: Store, node: Node) -> list[str]:
    """When the node user was narrowed once (its account revokes some of its JWTs) and a running server
    holds an older JWT of the account than the store, push it; the messages (empty: nothing to do)."""
    try:
        account = store.account(node.account)
        user_key = store.user(node.account, node.user).public_key
    except DchatOpsError:
        return []
    if user_key not in account.claims.revocations:
        return []
    from dchat_ops.runtime.push import push, servers_behind  # after the reload: see _LAZY

    behind = servers_behind(store).get(node.account)
    if not behind:
        return []
    report = push(store, [node.account])
    if not report.ok:
        raise ApplyError(
            f"server(s) {', '.join(behind)} hold an older JWT of account {node.account} than the store "
            "(a revocation not pushed), and pushing it failed; run 'dchat-ops push'",
            node=node.id,
        )
    return [f"account {node.account}: the revocation in the store was not on server(s) {', '.join(behind)}: pushed"]


def node_behind(store: Store, node_id: str, *, binary: Optional[str] = None) -> list[tuple[str, str]]:
    """What of node ``node_id`` lags behind its node file, as (level, what) pairs (empty when nothing
    does): its user's JWT or creds, its rendered config, the config the running server loaded (errors),
    a rendered config of a stopped node that its next start renders anew (a warning)."""
    node = NodeFile.load(store, node_id).node
    out = []
    try:
        user = store.user(node.account, node.user)
    except DchatOpsError as exc:
        return [("error", f"its user: {exc}")]
    want = user.claims.copy()
    node_user_spec(node).apply(want)
    if want.nats_dict() != user.claims.nats_dict():
        out.append(("error", f"the JWT of its user {node.account}/{node.user} does not carry the node's policy"))
    else:
        op = store.current_operator()
        creds = read_bytes(store.creds_path(op, node.account, node.user))
        if creds is not None and user.token.encode() not in creds:
            out.append(("error", f"the creds of its user {node.account}/{node.user} hold another JWT than the store"))
    sup = Supervisor(store, node_id, binary=binary)
    behind = sup.config_behind()
    if behind:
        out.append(("error", "the running server runs another config than its config file says"))
    written = read_bytes(sup.config_path)
    if written is not None:
        try:
            text = render(server_config(store, node), f"node {node.id}")
        except DchatOpsError as exc:
            out.append(("error", f"its config does not render: {exc}"))
        else:
            if without_jwts(written.decode("utf-8", "replace")) != without_jwts(text):
                # a stopped node renders its config anew when it starts
                level = "warning" if behind is None else "error"
                out.append((level, "its rendered config is not what its node file says now"))
    return out


def node_findings(store: Store) -> list[tuple[str, str, str]]:
    """(level, entity, message) for every node whose user, config or running server lags behind its node
    file (see :func:`node_behind`), each naming the command that repairs it."""
    from dchat_ops.config.node import list_nodes

    out = []
    for nid in list_nodes(store):
        try:
            items = node_behind(store, nid)
        except DchatOpsError as exc:
            out.append(("error", f"node {nid}", str(exc)))
            continue
        out.extend((level, f"node {nid}", f"{what}; run 'dchat-ops node sync {nid}'") for level, what in items)
    return out


NodeEdit = tuple[tuple[str, ...], Any]  # (key path in the node file, new value)


@dataclass
class NodeChangeResult:
    """What happened to one node: ``outcome`` is ``live`` (reloaded and confirmed, on its route peers
    too), ``restart`` (asked for, or the fallback when the peers did not show a reload's effect: the
    messages say which), ``saved`` (not running: written for its next start) or ``unchanged``."""

    node: str
    outcome: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "outcome": self.outcome,
            "steps": [{"step": s, "ms": round(ms, 1)} for s, ms in self.steps],
            "messages": self.messages,
        }


@with_store_lock
def apply_node_change(
    store: Store,
    node_id: str,
    edits: Sequence[NodeEdit] = (),
    *,
    mode: str = "live",
    binary: Optional[str] = None,
    follow: bool = True,
) -> NodeChangeResult:
    """Apply edits of a node's file, and whatever else changed in what its config renders (account
    JWTs, for instance), as one transaction.

    Writes the node file, renders and checks the server config, reloads a running node (or restarts
    it with ``mode="restart"``) and confirms it loaded the new config and is healthy, then re-issues
    the node user's JWT and creds when the policy changed them (first, for a leaf node: its leaf
    connections present them).  When the subscribe policy changed, the effect is then confirmed: the
    node user subscribes with its new creds, and every route peer shows the node's new interest
    (re-announced, or the node restarted, where it does not; see :class:`~dchat_ops.runtime.confirm.PeerCheck`).  A node that
    is not running keeps the written files for its next start.  On any failure every file goes back
    byte for byte, a running node is put back onto the old config, and :class:`ApplyError` names the
    failed step.

    When a leaf node's policy changed (``follow``), its hubs and their cluster peers are then
    re-rendered and reloaded to import its subjects, its leaf connections are re-established with
    the new creds, and its hubs' interest is confirmed (:func:`_follow_leaf_change`).
    """
    if mode not in ("live", "restart"):
        raise DchatOpsError(f"unknown apply mode {mode!r}")
    nf = NodeFile.load(store, node_id)
    old_node = nf.node
    for keys, value in edits:
        nf.set(keys, value)
    node = nf.refresh()  # an invalid node file is refused before anything is written
    check_leaf_queue_entries(node, old_node)
    text = nf.text()
    change = route_change(old_node, node, hosted_leaves(store, node))
    # A leaf node's remotes present its user's creds to the hub when they connect: those must be
    # current before the node (re)connects, so they are re-issued first.
    leaf = bool((node.leafnodes or {}).get("remotes"))

    # a change that takes something away from the node user also revokes its earlier JWT in the account,
    # which is then pushed: refused up front when a running server holds a newer account JWT (it would
    # not take this one)
    if _takes_away(store, node.account, node.user, node_user_spec(node)):
        from dchat_ops.runtime.push import require_current_store  # see _LAZY

        require_current_store(store, [node.account])

    sup = Supervisor(store, node_id, binary=binary)
    running = sup.running()
    stale = bool(running and sup.config_behind())  # e.g. a change rolled back after its reload: reload again
    op = store.current_operator()
    conf = run_dir(store, node_id) / "nats-server.conf"
    # One unit of work (journaled: a kill anywhere in it is rolled back by the next command on the store,
    # so that running this again applies the change again, reload included).  It stays open until the
    # reload is confirmed and the node user re-issued; within an outer one, a failure puts back this
    # node's files only.
    with store.transaction() as tx:
        savepoint = tx.savepoint()
        tx.remember_many(
            [
                nf.path,
                store.user_jwt_path(op, node.account, node.user),
                store.creds_path(op, node.account, node.user),
                store.account_jwt_path(op, node.account),
                conf,
            ]
        )
        before = read_bytes(conf)
        steps = Steps()
        reissued = restarted = False
        issued: Optional[admin.UserResult] = None
        messages: list[str] = []
        try:
            peers: list[RoutePeer] = []
            if running and change.routes_changed:
                peers = steps.run("read route peers", lambda: route_peers(sup.monitor_url)[1])
            if text != nf.original_text:
                steps.run("write node config", tx.write, nf.path, text)
            if leaf:
                issued = steps.run("re-issue user JWT and creds", sync_node_user, store, node)
                reissued = issued.changed
            # a live reload judges the config itself (a rejected one is rolled back below): nats-server -t
            # runs for a node that is stopped or restarted
            live = running and mode == "live"
            steps.run(
                "render and check config",
                render_node,
                store,
                node_id,
                binary=binary,
                node=node,
                server_check=not live,
            )
            changed = text != nf.original_text or read_bytes(conf) != before or (running and stale)
            if running and changed and mode == "live":
                steps.run("reload node", sup.reload, render=False)
            elif running and changed:
                steps.run("stop node", sup.down)
                steps.run("start node", sup.up)
            if not leaf:
                # once the node runs the new policy (its reload or start is confirmed), so that clients
                # following the creds file move over at once; a failed health check still rolls them back
                issued = steps.run("re-issue user JWT and creds", sync_node_user, store, node)
                reissued = issued.changed
            if running and changed:
                steps.run("check health", _check_healthy, sup)
            if running and (changed or reissued) and change.needs_check:
                from dchat_ops.runtime.client import run_sync  # after the reload: see _LAZY
                from dchat_ops.runtime.confirm import PeerCheck

                check = PeerCheck(store, sup, node, change, peers, steps, binary=binary)
                restarted = run_sync(lambda: check.run(restarted_already=(changed and mode == "restart")))
                messages.extend(check.messages)
        except Exception as exc:
            failed = steps.current
            problems = tx.rollback(savepoint)
            restored = _restore_running(sup, running, mode)
            detail = str(exc) if isinstance(exc, DchatOpsError) else f"{type(exc).__name__}: {exc}"
            msg = f"{failed} failed: {detail}; every file was restored"
            if running:
                msg += f", and the node {restored}"
            if problems:
                msg += f" (could not restore: {'; '.join(problems)})"
            raise ApplyError(msg, node=node_id, step=failed) from None
    if not changed and not reissued:
        outcome = "unchanged"
    elif running and changed:
        outcome = "live" if mode == "live" and not restarted else "restart"
    elif running:
        outcome = "live"  # only the node user's JWT and creds changed: the server config did not
        messages.append(f"node {node_id}: only its user's JWT and creds changed; clients get them on reconnect")
    else:
        outcome = "saved"
        messages.append(f"node {node_id} is not running: the change is saved and applies at its next start")
    result = NodeChangeResult(node_id, outcome, steps.steps, messages)
    failure: Optional[ApplyError] = None
    if follow and leaf and outcome != "unchanged" and old_node.policy != node.policy:
        try:
            _follow_leaf_change(store, old_node, node, result, steps, running=running, binary=binary)
        except ApplyError as exc:  # the change is in force: its revocation is pushed all the same
            failure = exc
    if issued is not None and issued.revoked_at:
        # last, once the new creds are in force (and a leaf's connections present them)
        try:
            push_superseded(
                store, node.account, issued, steps, result.messages, f"the change is in force on node {node_id}"
            )
        except ApplyError as exc:
            if failure is None:
                raise
            failure = ApplyError(f"{failure}; and {exc}", node=node_id, step=failure.step)
    if failure is not None:
        raise failure
    return result


def _takes_away(store: Store, account: str, user: str, spec: admin.UserSpec) -> bool:
    """True when re-issuing ``user`` with ``spec`` would take something away (and so revoke its JWT)."""
    try:
        current = store.user(account, user).claims
    except StoreError:
        return False  # a user to be made, or one whose JWT cannot be read: nothing to revoke
    new = current.copy()
    spec.apply(new)
    return bool(taken_away(current, new))


def push_superseded(
    store: Store,
    account: str,
    issued: admin.UserResult,
    steps: Optional[Steps] = None,
    messages: Optional[list[str]] = None,
    in_force: str = "",
) -> list[str]:
    """After a re-issue that took something away (``issued.revoked_at``): push the account, with its
    revocation of the user's earlier JWTs, to every running node; returns ``messages`` with what happened.

    Clients that follow the creds file get a moment to move over first
    (:func:`~dchat_ops.runtime.push.push_revocation`).  :class:`ApplyError` when a server did not take it
    (the revocation stays in the store: ``dchat-ops push`` sends it again).
    """
    from dchat_ops.runtime.push import push_revocation  # see _LAZY

    steps = steps if steps is not None else Steps()
    messages = messages if messages is not None else []
    user = issued.entity.name
    in_force = in_force or f"user {account}/{user} is re-issued"
    messages.append(f"user {user}: its JWTs issued before this one are revoked ({'; '.join(issued.taken_away)})")
    what = f"{in_force}, and the revocation of the earlier JWTs of user {user} is in the store, but"
    try:
        report, lingering = steps.run(
            "push the revocation of the superseded JWT",
            push_revocation,
            store,
            account,
            issued.entity.public_key,
            issued.superseded,
        )
    except DchatOpsError as exc:
        raise ApplyError(f"{what} pushing it failed: {exc}; run 'dchat-ops push'", step=steps.current) from None
    if report is None:
        messages.append(
            "no node is running: nodes take the revocation from the store when they start "
            "(or run 'dchat-ops push' for servers started elsewhere)"
        )
        return messages
    for nid, n in lingering.items():
        messages.append(f"node {nid}: {n} connection(s) still presenting the superseded JWT were closed")
    if not report.ok:
        failed = ", ".join(report.failed_servers()) or "none answered"
        raise ApplyError(
            f"{what} not every server took it (not confirmed: {failed}); run 'dchat-ops push'", step=steps.current
        )
    messages.append(
        f"revocation pushed: {len({r['server'] for r in report.results})} running server(s) hold the new account JWT"
    )
    return messages


def _follow_leaf_change(
    store: Store, old: Node, node: Node, result: NodeChangeResult, steps: Steps, *, running: bool, binary
) -> None:
    """After a leaf node's policy changed: its hubs (and their cluster peers) import its subscribe
    subjects, its leaf connections present the new creds, and the hubs hold its new interest.

    The leaf's own change is already in force when this runs; a failure here names the hub or the
    connection that did not follow, and says so.
    """
    from dchat_ops.runtime.leaf import confirm_leaf_interest, relink_leaves  # see _LAZY

    done = []
    try:
        for hub in steps.run("find hubs", dependent_nodes, store, node.id):
            r = steps.run(
                f"apply on hub {hub}", apply_node_change, store, hub, mode="live", binary=binary, follow=False
            )
            if r.outcome != "unchanged":
                done.append(hub)
                result.messages.append(f"hub {hub}: {r.outcome} (imports the leaf's subjects from its cluster)")
        if not running or not (node.leafnodes or {}).get("remotes"):
            return
        hubs = steps.run("re-establish leaf connections", relink_leaves, store, node.id, binary=binary)
        if not hubs:
            result.messages.append(
                f"node {node.id} has no leaf connection up: its hub applies the new creds when it connects"
            )
            return
        result.messages.append(
            f"leaf connections of {node.id} re-established with its new creds (connected to {', '.join(hubs)})"
        )
        added = [s for s in node.policy.subscribe.allow if s not in old.policy.subscribe.allow]
        if added:
            confirmed = steps.run("confirm on hubs", confirm_leaf_interest, store, node, added)
            if confirmed:
                result.messages.append(
                    f"confirmed: hub {', '.join(confirmed)} and its route peers hold its interest in {', '.join(added)}"
                )
            else:
                result.messages.append(
                    f"not confirmed: node {node.id} is attached to no running hub of this store, so nothing here "
                    f"can show that its hub holds its interest in {', '.join(added)}"
                )
    except DchatOpsError as exc:
        detail = f"; hubs already updated: {', '.join(done)}" if done else ""
        raise ApplyError(
            f"the change is in force on node {node.id}, but {steps.current} failed: {exc}{detail}",
            node=node.id,
            step=steps.current,
        ) from None


def _check_healthy(sup) -> None:

    code, _ = http_json(sup.monitor_url + HEALTHZ)
    if code != 200 or not sup.running():
        raise DchatOpsError(f"node {sup.node_id} is not healthy after the change")


def _restore_running(sup, was_running: bool, mode: str) -> str:
    """Put a node that ran before back onto its (restored) config; a phrase for the error message."""
    if not was_running:
        return "was not running"
    try:
        if sup.running():
            sup.reload(render=False)
            return "was reloaded onto the previous config"
        sup.up()
        return "was restarted on the previous config"
    except DchatOpsError as exc:
        return f"could not be put back onto the previous config ({exc})"


@with_store_lock
def apply_user_edit(
    store: Store, account: str, user: str, action: str, subject: str, *, dry_run: bool = False
) -> ApplyResult:
    """Edit a user's JWT permissions and re-issue its JWT and creds (all or nothing).

    The edit is planned and made inside one unit of work on the store, so concurrent edits of the
    same user (from other processes too) each see the one before.
    """
    direction, verb = parse_action(action)
    with store.transaction():
        claims = store.user(account, user).claims
        perm = claims.permissions.pub if direction == "publish" else claims.permissions.sub
        edit = plan_edit({"allow": perm.allow, "deny": perm.deny}, verb, subject, direction)
        if dry_run or not edit.changed:
            preview = user_policy(store, account, user)
            preview[direction] = edit.after
            return ApplyResult(f"{account}/{user}", edit, "dry-run" if dry_run else "unchanged", preview)
        if direction == "publish":
            spec = admin.UserSpec(pub_allow=edit.after["allow"], pub_deny=edit.after["deny"])
        else:
            spec = admin.UserSpec(sub_allow=edit.after["allow"], sub_deny=edit.after["deny"])
        if _takes_away(store, account, user, spec):
            from dchat_ops.runtime.push import require_current_store  # see _LAZY

            require_current_store(store, [account])  # the revocation is pushed: see apply_node_change
        steps = Steps()
        try:
            issued = steps.run("re-issue user JWT and creds", admin.edit_user, store, account, user, spec)
        except Exception as exc:  # the unit of work puts every file back
            raise ApplyError(f"{steps.current} failed: {exc}; every file was restored") from None
    messages = [
        "connected clients of this user get the new permissions when they reconnect with the new creds",
        *issued.warnings,
    ]
    if issued.revoked_at:
        push_superseded(store, account, issued, steps, messages)
    return ApplyResult(f"{account}/{user}", edit, "saved", user_policy(store, account, user), steps.steps, messages)


@dataclass
class NodeRemoval:
    """What :func:`remove_node` did."""

    node: str
    stopped: bool  # it was running and was stopped
    user: str  # "<account>/<user>" of its local user
    user_revoked: bool
    followers: list[str] = field(default_factory=list)  # nodes re-rendered because they followed it (hubs)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "stopped": self.stopped,
            "user": self.user,
            "user_revoked": self.user_revoked,
            "followers": self.followers,
            "messages": self.messages,
        }


@with_store_lock
def remove_node(store: Store, node_id: str, *, keep_user: bool = False, binary: Optional[str] = None) -> NodeRemoval:
    """Remove a node: stop it when it runs, then, as one unit of work, delete its node file and (unless
    ``keep_user``) revoke and delete its local user; its run folder (rendered config, resolver, JetStream
    data) and its TLS certificates go once that is committed.  Nodes whose config follows it (the hubs of
    a leaf node) are re-rendered and reloaded through :func:`apply_node_change`; the revocation is pushed
    to the running nodes.

    Refused (nothing changed) while store nodes are attached to it as a leaf of theirs: remove or move
    those first.
    """
    check_name(node_id, "node id")
    nf = NodeFile.load(store, node_id)
    node = nf.node
    check_node_operator(store, node)  # its user is revoked in its operator's account, not another's
    others = {nid: n for nid, n in read_nodes(store).items() if nid != node_id}
    leaves = [lid for lid, leaf in others.items() if node_id in leaf_hubs(store, leaf, {**others, node_id: node})]
    if leaves:
        raise ApplyError(
            f"node {node_id} is the hub of leaf node(s) {', '.join(sorted(leaves))}: remove or move them first",
            node=node_id,
            step="check dependents",
        )
    followers = dependent_nodes(store, node_id)
    sup = Supervisor(store, node_id, binary=binary)
    stopped = sup.down()
    op = store.current_operator()
    account, user = node.account, node.user
    revoked = False
    with store.transaction() as tx:
        tx.delete(nf.path)
        if not keep_user and store.user_jwt_path(op, account, user).exists():
            revoke.revoke_users(store, account, [user])
            store.remove_user(op, account, user)
            revoked = True
    result = NodeRemoval(node_id, stopped, f"{account}/{user}", revoked, followers)
    for folder in (run_dir(store, node_id), store.location.pki_dir / "nodes" / node_id):
        shutil.rmtree(folder, ignore_errors=True)
    for nid in followers:
        r = apply_node_change(store, nid, binary=binary, follow=False)
        result.messages.append(f"node {nid}: {r.outcome} (no longer imports the subjects of node {node_id})")
    if revoked:
        from dchat_ops.runtime.push import push  # see _LAZY

        try:
            report = push(store, [account])
        except DchatOpsError:  # no node runs: each starts from the store's JWTs
            result.messages.append(f"user {account}/{user} revoked in the store (no node runs to push to)")
            return result
        if report.ok:
            result.messages.append(f"user {account}/{user} revoked on every running node")
        else:
            result.messages.append(
                f"the revocation of user {account}/{user} is in the store, but server(s) "
                f"{', '.join(report.failed_servers())} did not confirm it: run 'dchat-ops push'"
            )
    return result


@dataclass
class UserRemoval:
    """What :func:`remove_user` did (``push``: the push report's dict, None when nothing was pushed)."""

    account: str
    user: str
    revoked: bool
    push: Optional[dict] = None
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "account": self.account,
            "user": self.user,
            "revoked": self.revoked,
            "push": self.push,
            "messages": self.messages,
        }


@with_store_lock
def remove_user(store: Store, account: str, user: str, *, revoke_it: bool = True, push_it: bool = True) -> UserRemoval:
    """Delete a user's JWT and creds; first (``revoke_it``) revoke every JWT of it issued until now, in the
    same unit of work, and push the account to the running nodes (``push_it``), so that copies of its
    creds are refused everywhere.  Its seed stays in the keystore (as nsc keeps it).

    Refused (nothing changed): the local user of a node (``node rm`` removes both), a user of the system
    account, an unknown user, and, when revoking, a store older than what running servers hold.
    """
    check_name(user, "user name")
    op = store.operator()
    entity = store.user(account, user)  # an unknown user or account is an error here
    system = store.find_account(op.claims.system_account, op.name).name
    if account == system:
        raise ApplyError(f"user {user} is in the system account {system}: it is not removed", step="check")
    for nid, n in read_nodes(store).items():
        if n.account == account and n.user == user:
            raise ApplyError(f"user {account}/{user} is the local user of node {nid}: use 'dchat-ops node rm {nid}'")
    if revoke_it:
        from dchat_ops.runtime.push import push, require_current_store, running_nodes  # see _LAZY

        require_current_store(store, [account])
    with store.transaction():
        if revoke_it:
            revoke.revoke_users(store, account, [entity.public_key])
        store.remove_user(op.name, account, user)
    result = UserRemoval(account, user, revoke_it)
    if not revoke_it:
        result.messages.append("not revoked: copies of its creds still work until their JWT expires")
        return result
    if not push_it or not running_nodes(store):
        result.messages.append("the revocation is in the store; running nodes get it with 'dchat-ops push'")
        return result
    report = push(store, [account])
    result.push = report.to_dict()
    if report.ok:
        result.messages.append("revoked on every running node")
    else:
        result.messages.append(
            f"the revocation is in the store, but server(s) {', '.join(report.failed_servers())} did not "
            "confirm it: run 'dchat-ops push'"
        )
    return result
