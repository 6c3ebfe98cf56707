"""Moving credentials and reaching running servers: export, import, revoke, push, pull."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from dchat_ops._cli.app import Ctx, SubGroup, cli, parsed, pass_ctx
from dchat_ops._cli.output import emit, json_option, note
from dchat_ops._fs import atomic_write
from dchat_ops._time import format_time, parse_expiry
from dchat_ops.errors import DchatOpsError

# --- export / import / revocation / push --------------------------------------------------------------


def _passphrase(env: Optional[str], file: Optional[str], confirm: bool) -> Optional[str]:
    from dchat_ops.nsc.transfer import read_secret

    pw = read_secret(env, file)
    if pw is not None:
        return pw
    if not sys.stdin.isatty():
        raise DchatOpsError(
            "no passphrase: use --passphrase-env VAR or --passphrase-file FILE (no prompt without a terminal)"
        )
    return click.prompt("passphrase", hide_input=True, confirmation_prompt=confirm)


def _export_options(f):
    for o in reversed(
        [
            click.option(
                "--output",
                "-o",
                required=True,
                help="Bundle file to write (or, with --plain, the .creds file / folder).",
            ),
            click.option("--passphrase-env", help="Read the passphrase from this environment variable."),
            click.option("--passphrase-file", help="Read the passphrase from this file."),
            click.option("--to", "recipient", help="Seal to this curve public key (X...) instead of a passphrase."),
            click.option(
                "--plain", is_flag=True, help="Write nsc's own unencrypted formats instead (secrets in the clear)."
            ),
            click.option("--include-jwts", is_flag=True, help="With --plain: also write the JWTs."),
            click.option("--force", is_flag=True, help="Replace an existing output."),
            json_option,
        ]
    ):
        f = o(f)
    return f


def _do_export(
    c: Ctx, what, account, user, output, passphrase_env, passphrase_file, recipient, plain, include_jwts, force, as_json
):
    from dchat_ops.nsc import transfer

    store = c.store()
    out = Path(output)
    if plain:
        if output == "-":
            raise DchatOpsError(
                "--plain writes files; give a file or folder with -o (use 'generate creds -o -' to print creds)"
            )
        note("warning: --plain writes seeds in the clear; keep the output private and delete it after use")
        paths = transfer.export_plain(
            store, what, out, account=account, user=user, include_jwts=include_jwts, force=force
        )
        emit(
            as_json,
            {"output": str(out), "plain": True, "files": [str(p) for p in paths]},
            f"wrote {len(paths)} file(s) to {out}",
        )
        return
    if out.exists() and not force:
        raise DchatOpsError(f"{out} already exists; use --force to replace it")
    if recipient:
        from dchat_ops.nsc.keys import check_public_key

        check_public_key(recipient, "curve", "--to")
        pw = None
    else:
        pw = _passphrase(passphrase_env, passphrase_file, confirm=True)
    data = transfer.export_bundle(store, what, account=account, user=user, passphrase=pw, recipient=recipient)
    atomic_write(out, data, private=True, force=True)
    emit(
        as_json,
        {"output": str(out), "plain": False, "sealed_to": recipient or "passphrase"},
        f"wrote encrypted bundle {out} (0600)",
    )


@cli.group("export")
def export_():
    """Export creds or keys to an encrypted bundle (or nsc's plain formats)."""


@export_.command("creds")
@click.option("--account", "-a")
@click.option("--user", "-u", required=True)
@_export_options
@pass_ctx
def export_creds(c: Ctx, account, user, **kw):
    """One user's creds, e.g. for a second device or a CI job."""
    _do_export(c, "creds", account, user, **kw)


@export_.command("keys")
@click.option("--operator", "what", flag_value="operator", help="The operator's keys and the account JWTs.")
@click.option("--account", "-a", "account", help="An account with its keys and all its users.")
@click.option("--all", "what", flag_value="all", default=True, help="Everything (default).")
@_export_options
@pass_ctx
def export_keys(c: Ctx, what, account, **kw):
    """Seeds and JWTs: the operator, an account with its users, or everything."""
    if account:
        note(
            f"warning: this hands over account {account}'s signing keys and every user's seed: whoever holds it "
            "can mint users every node accepts; to equip a device, use 'dchat-ops enroll' (no seed travels)"
        )
    _do_export(c, "account" if account else what, account, None, **kw)


@cli.command("import")
@click.argument("kind", type=click.Choice(["creds", "keys"]))
@click.argument("path", type=click.Path(exists=True))
@click.option("--passphrase-env")
@click.option("--passphrase-file")
@click.option("--curve-seed-env", help="Environment variable holding the curve seed (SX...) a bundle is sealed to.")
@click.option("--trust-operator", is_flag=True, help="Accept a bundle of another operator (adds that operator).")
@click.option("--force", is_flag=True, help="Replace conflicting keys or JWTs.")
@click.option("--dry-run", is_flag=True, help="Show what would be added; write nothing.")
@json_option
@pass_ctx
def import_(
    c: Ctx, kind, path, passphrase_env, passphrase_file, curve_seed_env, trust_operator, force, dry_run, as_json
):
    """Import a bundle, or plain .creds / .nk / .jwt files or folders: verified, then all or nothing."""
    from dchat_ops.nsc import transfer
    from dchat_ops.nsc.bundle import FORMAT

    store = c.store(must_exist=False)
    p = Path(path)
    data = p.read_bytes() if p.is_file() and p.suffix not in (".creds", ".nk", ".jwt") else b""
    if FORMAT.encode() in data:  # anywhere: a bundle whose keys were moved is a changed bundle, and said so
        curve = None
        pw = None
        if curve_seed_env:
            from dchat_ops.nsc.keys import KeyPair

            seed = os.environ.get(curve_seed_env)
            if not seed:
                raise DchatOpsError(f"environment variable {curve_seed_env} is not set")
            curve = KeyPair.from_seed(seed, "curve")
        else:
            pw = _passphrase(passphrase_env, passphrase_file, confirm=False)
        plan = transfer.import_bundle(
            store,
            data,
            passphrase=pw,
            curve_key=curve,
            trust_operator=trust_operator,
            force=force,
            dry_run=dry_run,
        )
    else:
        plan = transfer.import_path(store, p, trust_operator=trust_operator, force=force, dry_run=dry_run)

    def human():
        for label in plan.added:
            yield f"{'would add' if dry_run else 'added'} {label}"
        for label in plan.replaced:
            yield f"{'would replace' if dry_run else 'replaced'} {label}"
        if plan.unchanged and not plan.changes:
            yield f"nothing to do: all {len(plan.unchanged)} item(s) are already in the store"

    emit(as_json, {**plan.to_dict(), "dry_run": dry_run}, human)


@cli.group(cls=SubGroup, lazy={"activation": "exports"}, invoke_without_command=True)
@click.option("--all-users", is_flag=True, help="Revoke every user of the account issued until now (or --at).")
@click.option("--account", "-a")
@click.option("--at", help="Revoke JWTs issued at or before this time (default: now).")
@click.option("--no-push", is_flag=True, help="Only change the store; do not push to running nodes.")
@json_option
@click.pass_context
def revoke(ctx, all_users, account, at, no_push, as_json):
    """Revoke a user (revoke user NAME), every user (revoke --all-users), or an activation (revoke activation)."""
    if ctx.invoked_subcommand is not None:
        return
    if not all_users:
        raise click.UsageError("use 'revoke user NAME' or 'revoke --all-users'")
    from dchat_ops.nsc import revoke

    store = ctx.obj.store()
    account = account or store.default_account()
    t = _revocation_time(store, account, revoke.ALL_USERS, at)
    _require_current(store, account)
    revoke.revoke_all(store, account, t)
    _after_revocation(store, account, no_push, as_json, f"revoked every user of {account}")


def _revocation_time(store, account: str, user: str, at: Optional[str]) -> Optional[int]:
    """``--at`` as Unix seconds (None or 0: now); a time that would revoke nothing is a bad value (exit 2)."""
    from dchat_ops.nsc import admin, revoke

    if not at:
        return None
    from dchat_ops.errors import FieldError

    t = parsed("--at", parse_expiry, at, admin.now(store))
    reason = revoke.uncovered(store, account, user, t)
    if reason:
        raise FieldError("--at", reason, message=reason)
    return t


def _require_current(store, account: str) -> None:
    """Refuse an edit of ``account`` made on an older JWT than a running node holds (nothing is written)."""
    from dchat_ops.runtime import push

    push.require_current_store(store, [account])


def _after_revocation(store, account, no_push, as_json, message):
    from dchat_ops.nsc import revoke
    from dchat_ops.runtime import push

    report = None
    if not no_push and push.running_nodes(store):
        report = push.push(store, [account])
    data = {
        "account": account,
        "revocations": revoke.list_revocations(store, account),
        "push": report.to_dict() if report else None,
    }
    lines = [message]
    if report:
        lines += [f"  {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}" for r in report.results]
        lines += [f"  {n}: not running (takes the store's JWTs when it starts)" for n in report.stopped]
    else:
        lines.append("  no node running: nothing pushed (run 'dchat-ops push' once nodes are up)")
    emit(as_json, data, lines)
    if report and not report.ok:
        failed = ", ".join(report.failed_servers()) or "none answered"
        raise DchatOpsError(f"the revocation is in the store, but not every server took it (not confirmed: {failed})")


@revoke.command("user")
@click.argument("name")
@click.option("--account", "-a")
@click.option("--at", help="Revoke JWTs issued at or before this time (default: now).")
@click.option("--no-push", is_flag=True)
@json_option
@pass_ctx
def revoke_user_cmd(c: Ctx, name, account, at, no_push, as_json):
    """Revoke one user (by name or public key): connected clients are cut off where nodes run."""
    from dchat_ops.nsc import revoke

    store = c.store()
    account = account or store.default_account()
    t = _revocation_time(store, account, name, at)
    _require_current(store, account)
    revoke.revoke_user(store, account, name, t)
    _after_revocation(store, account, no_push, as_json, f"revoked {account}/{name}")


@cli.command()
@click.argument("name")
@click.option("--account", "-a")
@click.option("--no-push", is_flag=True)
@json_option
@pass_ctx
def unrevoke(c: Ctx, name, account, no_push, as_json):
    """Lift a revocation (NAME, a public key, or '*' for --all-users)."""
    from dchat_ops.nsc import revoke

    store = c.store()
    account = account or store.default_account()
    _require_current(store, account)
    revoke.unrevoke(store, account, name)
    _after_revocation(store, account, no_push, as_json, f"lifted the revocation of {name} in {account}")


@cli.group()
def revocations():
    """Show revocations."""


@revocations.command("list")
@click.option("--account", "-a")
@json_option
@pass_ctx
def revocations_list(c: Ctx, account, as_json):
    from dchat_ops.nsc import revoke

    store = c.store()
    account = account or store.default_account()
    rows = revoke.list_revocations(store, account)
    emit(
        as_json,
        rows,
        [f"{r['user'] or r['key']}: JWTs issued until {format_time(r['at'])}" for r in rows]
        or [f"no revocations in {account}"],
    )


@cli.command("push")
@click.option("--account", "-a", multiple=True, help="Account to push (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Every account (the default).")
@click.option(
    "--prune", is_flag=True, help="Also delete accounts the store no longer has (full resolver, allow_delete)."
)
@json_option
@pass_ctx
def push_cmd(c: Ctx, account, all_, prune, as_json):
    """Send account JWTs to the running nodes over the system account; report per server."""
    from dchat_ops.runtime import push

    store = c.store()
    report = push.push(store, list(account) or None)
    if prune:
        pruned = push.prune(store)
        report.results.extend(pruned.results)
    emit(
        as_json,
        report.to_dict(),
        [f"{r['account']} -> {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}" for r in report.results]
        + [f"{n}: not running (takes the store's JWTs when it starts)" for n in report.stopped],
    )
    if not report.ok:
        note(f"error: not confirmed by: {', '.join(report.failed_servers()) or 'any server'}")
    return 0 if report.ok else 1


_PULL_STATES = {
    "same": "same",
    "server newer": "SERVER NEWER",
    "store newer": "store newer",
    "differs": "DIFFERENT (same second)",
    "missing": "missing",
    "not in store": "not in the store",
    "refused": "REFUSED",
}


@cli.command("pull")
@click.option("--update", is_flag=True, help="Write JWTs the servers hold newer (and verified) into the store.")
@json_option
@pass_ctx
def pull_cmd(c: Ctx, update, as_json):
    """Compare the account JWTs the running servers hold with the store, per account and server."""
    from dchat_ops.runtime import push

    report = push.pull(c.store(), update=update)

    def human():
        for r in report.rows:
            yield f"{r['name'] or r['account']}: {r['state']}"
            for e in r["per_server"]:
                line = f"  {e['server']}: {_PULL_STATES.get(e['state'], e['state'])}"
                if e["state"] == "refused":  # the reason is in the 'refused' lines below
                    yield line
                    continue
                if e["state"] not in ("same", "missing"):
                    line += f" (issued {format_time(e['issued_at'])}, store {format_time(r['store_issued_at'])})"
                yield line + (f": {e['message']}" if e["message"] else "")
        for r in report.results:
            if not r["ok"]:
                yield f"node {r['server']}: FAILED {r['message']}"
        for u in report.updated:
            yield f"updated {u['name']} in the store from {', '.join(u['from'])} (issued {format_time(u['issued_at'])})"
        for r in report.refused:
            yield f"refused {r['name'] or r['account']} from {r['server']}: {r['message']}"
        if report.push is not None:
            yield from (
                f"  {r['account']} -> {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}"
                for r in report.push.results
            )
        if update and not report.updated:
            yield "nothing to update: no server holds a newer JWT than the store"
        elif not update and any(r["state"] == "server newer" for r in report.rows):
            yield "servers hold newer JWTs: 'dchat-ops pull --update' writes them into the store"

    emit(as_json, report.to_dict(), human)
    if report.refused:
        note(f"error: refused JWTs from: {', '.join(sorted({r['server'] for r in report.refused}))}")
    return 0 if report.ok and not report.refused else 1
