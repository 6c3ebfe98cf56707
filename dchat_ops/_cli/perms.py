"""Permission changes on nodes and users: allow-sub, deny-sub, perms show."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dchat_ops._cli.app import Ctx, cli, pass_ctx
from dchat_ops._cli.output import emit, json_option
from dchat_ops.errors import ConfigError
from dchat_ops.subjects import check_subject

if TYPE_CHECKING:
    from dchat_ops.nsc.store import Store

# --- permissions -------------------------------------------------------------------------------------


def _target(store: Store, node_id, user):
    from dchat_ops.config.node import list_nodes

    if node_id and user:
        raise click.UsageError("give --node or --user, not both")
    if not node_id and not user:
        names = list_nodes(store)
        if len(names) == 1:
            return names[0], None
        raise click.UsageError("choose the node (--node N) or the user (--user U) to change")
    return node_id, user


def _perm_command(action: str, helptext: str):
    @click.argument("subject")
    @click.option("--node", "-n", "node_id", help="Change this node's policy (default: the only node).")
    @click.option("--user", "-u", help="Change this user's JWT instead of a node.")
    @click.option("--account", "-a", help="Account of --user (default: the current account).")
    @click.option("--restart", is_flag=True, help="Apply by restarting the node, as the original design did.")
    @click.option("--dry-run", is_flag=True, help="Show the change and the resulting policy; touch nothing.")
    @json_option
    @pass_ctx
    def command(c: Ctx, subject, node_id, user, account, restart, dry_run, as_json):
        from dchat_ops.permissions.apply import apply_node_edit, apply_user_edit

        try:  # a malformed subject is a bad value (exit 2), before anything is read
            check_subject(subject, queue_ok=action.endswith("-sub"))
        except ConfigError as exc:
            raise click.BadParameter(f"invalid subject: {exc}", param_hint="SUBJECT") from None
        store = c.store()
        node_id, user = _target(store, node_id, user)
        if user:
            r = apply_user_edit(store, account or store.default_account(), user, action, subject, dry_run=dry_run)
        else:
            r = apply_node_edit(store, node_id, action, subject, mode="restart" if restart else "live", dry_run=dry_run)

        def human():
            for n in r.edit.notes:
                yield f"note: {n}"
            verb = {
                "live": "applied live",
                "restart": "applied with a restart",
                "saved": "saved",
                "dry-run": "dry run, nothing changed",
                "unchanged": "no change",
            }[r.outcome]
            yield f"{action} {subject} on {'user' if user else 'node'} {r.target}: {verb}"
            for m in r.messages:
                yield f"  {m}"
            for direction in ("publish", "subscribe"):
                p = r.policy[direction]
                yield f"  {direction}: allow {p['allow'] or '[]'} deny {p['deny'] or '[]'}"
            if r.steps:
                yield "  " + ", ".join(f"{s} {ms:.0f} ms" for s, ms in r.steps)

        emit(as_json, r.to_dict(), human)

    command.__doc__ = helptext
    return command


cli.command("allow-sub")(
    _perm_command("allow-sub", "Allow subscribing to SUBJECT (a node: live, with rollback on failure).")
)
cli.command("deny-sub")(_perm_command("deny-sub", "Deny subscribing to SUBJECT."))
cli.command("rm-sub")(_perm_command("rm-sub", "Remove SUBJECT from the subscribe allow and deny lists."))
cli.command("allow-pub")(_perm_command("allow-pub", "Allow publishing to SUBJECT."))
cli.command("deny-pub")(_perm_command("deny-pub", "Deny publishing to SUBJECT."))
cli.command("rm-pub")(_perm_command("rm-pub", "Remove SUBJECT from the publish allow and deny lists."))


@cli.group()
def perms():
    """Show permissions."""


@perms.command("show")
@click.option("--node", "-n", "node_id")
@click.option("--user", "-u")
@click.option("--account", "-a")
@json_option
@pass_ctx
def perms_show(c: Ctx, node_id, user, account, as_json):
    """Show the publish / subscribe policy of a node or a user."""
    from dchat_ops.permissions.apply import node_policy, user_policy

    store = c.store()
    node_id, user = _target(store, node_id, user)
    pol = user_policy(store, account or store.default_account(), user) if user else node_policy(store, node_id)
    # a user's empty allow list allows everything; a node's subscribe list is default-deny
    lines = [f"from role {pol['role']} (the server applies the role's template)"] if pol.get("role") else []
    lines += [
        f"{d}: allow {pol[d]['allow'] or ('(all)' if user else '[]')} deny {pol[d]['deny'] or '[]'}"
        for d in ("publish", "subscribe")
    ]
    emit(as_json, {"target": user or node_id, "kind": "user" if user else "node", **pol}, lines)
