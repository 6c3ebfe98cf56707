"""Key rotation: operator signing key, account signing key, a user's own key (no downtime on running nodes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dchat_ops._cli.app import Ctx, cli, parsed, pass_ctx
from dchat_ops._cli.output import emit, json_option
from dchat_ops.errors import DchatOpsError, FieldError

if TYPE_CHECKING:
    from dchat_ops.runtime.rotation import RotationReport


@cli.group()
def rotate():
    """Replace a key without downtime: re-sign what it signed, push, then retire the old one."""


def _finish(report: RotationReport, as_json: bool) -> None:
    def human():
        head = "plan" if report.dry_run else "rotated" if report.ok else "rotation stopped"
        yield f"{head}: {report.kind}" + (f" (new key {report.new_key})" if report.new_key else "")
        yield "  servers: " + (", ".join(report.servers) if report.servers else "no node running")
        for i, s in enumerate(report.steps, 1):
            mark = "planned" if report.dry_run else "ok" if s["ok"] else "FAILED"
            yield f"  {i}. {s['step']}: {mark}" + (f" ({s['detail']})" if s["detail"] and not report.dry_run else "")
            for r in s["results"]:
                yield f"     {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}"
        if report.dry_run:
            yield "  nothing was changed (dry run)"

    emit(as_json, report.to_dict(), human)
    if not report.ok:
        raise DchatOpsError(report.remaining or "a step of the rotation failed")


@rotate.command("operator-key")
@click.option("--key", help="The operator signing key to retire (default: every one the operator has).")
@click.option("--dry-run", is_flag=True, help="Show the plan: what is re-signed, which servers; change nothing.")
@json_option
@pass_ctx
def operator_key(c: Ctx, key, dry_run, as_json):
    """A new operator signing key: every account re-signed with it and pushed, then the old key retired.

    Servers read the operator JWT only when they start: the running nodes are restarted one after the
    other, first to trust both keys, and again once the old key is retired."""
    from dchat_ops.nsc.keys import check_public_key
    from dchat_ops.runtime.rotation import rotate_operator_key

    if key:
        parsed("--key", check_public_key, key, "operator", "signing key")
    _finish(rotate_operator_key(c.store(), key=key, dry_run=dry_run), as_json)


@rotate.command("account-key")
@click.argument("account")
@click.option("--role", help="Rotate the scoped signing key of this role (the new key gets the same template).")
@click.option("--key", help="Rotate this signing key (public key, A...).")
@click.option(
    "--dry-run", is_flag=True, help="Show the plan: which users are re-issued, which servers; change nothing."
)
@json_option
@pass_ctx
def account_key(c: Ctx, account, role, key, dry_run, as_json):
    """A new account signing key: its users re-issued (same nkeys, new creds), pushed, then the old key retired."""
    from dchat_ops.nsc.keys import check_public_key
    from dchat_ops.runtime.rotation import rotate_account_key

    if role and key:
        raise FieldError("--key", "give --role or --key, not both")
    if key:
        parsed("--key", check_public_key, key, "account", "signing key")
    _finish(rotate_account_key(c.store(), account, role=role, key=key, dry_run=dry_run), as_json)


@rotate.command("user")
@click.argument("account")
@click.argument("user")
@click.option(
    "--wait-connect",
    type=float,
    default=0.0,
    help="Revoke the old key only once the new one connected to a running node (wait up to SECONDS).",
)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@json_option
@pass_ctx
def user(c: Ctx, account, user, wait_connect, dry_run, as_json):
    """A new nkey, JWT and creds for USER; every JWT of its old nkey revoked and pushed."""
    from dchat_ops.nsc.store import check_name
    from dchat_ops.runtime.rotation import rotate_user

    if wait_connect < 0:
        raise FieldError("--wait-connect", "must be 0 or more seconds")
    check_name(account, "account name")
    check_name(user, "user name")
    _finish(rotate_user(c.store(), account, user, dry_run=dry_run, wait_connect=wait_connect), as_json)
