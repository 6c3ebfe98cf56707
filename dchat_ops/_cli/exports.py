"""Exports, imports and activation tokens: ``add export``, ``add import``, ``rm export``, ``rm import``,
``generate activation``, ``revoke activation``.

These are subcommands of groups other modules define (``add``, ``rm``, ``generate`` in identity, ``revoke``
in transfer); each of those modules imports this one at its end, so the subcommands are there whichever
group is loaded first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import click

from dchat_ops._cli.app import Ctx, parsed, pass_ctx
from dchat_ops._cli.identity import add, generate, rm
from dchat_ops._cli.output import emit, json_option, note
from dchat_ops._cli.transfer import revoke
from dchat_ops.errors import DchatOpsError

if TYPE_CHECKING:
    from dchat_ops.nsc.store import Store

_T = TypeVar("_T")

# the library's field names -> the options that carry them, so that a refused value names its option
_OPTION_OF = {
    "subject": "--subject",
    "type": "--service",
    "response_type": "--response-type",
    "response_threshold": "--response-threshold",
    "latency": "--latency-subject",
    "latency_subject": "--latency-subject",
    "latency_sampling": "--latency-sampling",
    "description": "--description",
    "name": "--name",
    "local_subject": "--local-subject",
    "share": "--share",
    "token": "--token",
    "account": "--from-account",
    "from_account": "--from-account",
    "target_account": "--target-account",
    "expiry": "--expiry",
}


def _call(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)``; a FieldError of the library names the option instead of the field."""
    from dchat_ops.errors import FieldError

    try:
        return fn(*args, **kwargs)
    except FieldError as exc:
        option = _OPTION_OF.get(exc.field, exc.field)
        raise FieldError(option, exc.reason, message=f"{option}: {exc.reason}") from None


def _before_change(store: Store, account: str) -> None:
    """Refuse a change of ``account`` made on an older JWT than a running node holds (nothing written)."""
    from dchat_ops.runtime import push

    push.require_current_store(store, [account])


def _push(store: Store, account: str, no_push: bool, as_json: bool, data: dict, lines: list[str]) -> None:
    """Send the changed account to the running nodes (unless ``no_push``) and say what each confirmed;
    exit 1 when one did not."""
    from dchat_ops.runtime import push

    report = None
    if not no_push and push.running_nodes(store):
        report = push.push(store, [account])
    data["push"] = report.to_dict() if report else None
    if report:
        lines += [f"  {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}" for r in report.results]
        lines += [f"  {n}: not running (takes the store's JWTs when it starts)" for n in report.stopped]
    elif no_push:
        lines.append(f"  not pushed: running nodes get account {account} with 'dchat-ops push'")
    else:
        lines.append("  no node running: nothing pushed (nodes take the store's JWTs when they start)")
    emit(as_json, data, lines)
    if report and not report.ok:
        failed = ", ".join(report.failed_servers()) or "none answered"
        raise DchatOpsError(
            f"account {account} is changed in the store, but not every server took it (not confirmed: {failed}): "
            "run 'dchat-ops push'"
        )


_no_push = click.option("--no-push", is_flag=True, help="Change the store only; push later with 'dchat-ops push'.")
_account = click.option("--account", "-a", help="The account (default: the current account).")


# --- add / rm export ---------------------------------------------------------------------------------------


@add.command("export")
@_account
@click.option("--subject", "-s", required=True, help="Subject exported (wildcards allowed).")
@click.option("--service", is_flag=True, help="A service (request/reply) instead of a stream.")
@click.option("--private", is_flag=True, help="Importers need an activation token ('generate activation').")
@click.option("--name", default="", help="A name for the export.")
@click.option("--response-type", default="", help="A service's responses: Singleton (default), Stream or Chunked.")
@click.option("--response-threshold", help="How long a service may take to answer, e.g. 5s.")
@click.option("--latency-subject", default="", help="Where a service's latency measurements are published.")
@click.option("--latency-sampling", help="Percentage of requests measured (1-100), or 'headers'.")
@click.option("--description", default="", help="What the export offers.")
@click.option("--advertise", is_flag=True, help="Advertise the export to other accounts.")
@_no_push
@json_option
@pass_ctx
def add_export_cmd(
    c: Ctx,
    account,
    subject,
    service,
    private,
    name,
    response_type,
    response_threshold,
    latency_subject,
    latency_sampling,
    description,
    advertise,
    no_push,
    as_json,
):
    """Export a stream (or a service) of an account to other accounts (public, or --private)."""
    from dchat_ops.nsc import exports

    store = c.store()
    account = account or store.default_account()
    _before_change(store, account)
    e, x = _call(
        exports.add_export,
        store,
        account,
        subject,
        service=service,
        private=private,
        name=name,
        response_type=response_type,
        response_threshold=response_threshold,
        latency_subject=latency_subject,
        latency_sampling=latency_sampling,
        description=description,
        advertise=advertise,
    )
    kind = "private" if x.token_req else "public"
    data = {"account": account, "public_key": e.public_key, "export": x.to_dict()}
    _push(store, account, no_push, as_json, data, [f"added {kind} {x.type} export {x.subject} to account {account}"])


@rm.command("export")
@_account
@click.option("--subject", "-s", default="", help="Subject of the export.")
@click.option("--name", default="", help="Name of the export (instead of --subject).")
@_no_push
@json_option
@pass_ctx
def rm_export_cmd(c: Ctx, account, subject, name, no_push, as_json):
    """Remove an export of an account (imports of it stop working once the account reaches the servers)."""
    from dchat_ops.nsc import exports

    if bool(subject) == bool(name):
        raise click.UsageError("give --subject or --name")
    store = c.store()
    account = account or store.default_account()
    _before_change(store, account)
    x = _call(exports.remove_export, store, account, subject=subject, name=name)
    data = {"account": account, "removed": x.to_dict()}
    _push(store, account, no_push, as_json, data, [f"removed {x.type} export {x.subject} from account {account}"])


# --- add / rm import ---------------------------------------------------------------------------------------


def _read_token(value: Optional[str]) -> str:
    """``--token``: a file holding an activation JWT, or the JWT itself."""
    if not value:
        return ""
    from dchat_ops._decode import read_text
    from dchat_ops.errors import FieldError

    path = Path(value)
    try:
        is_file = path.is_file()
    except OSError:  # a JWT is longer than a file name may be
        is_file = False
    if is_file or value.count(".") != 2:
        try:
            return read_text(path, FieldError).strip()
        except FieldError:
            raise FieldError("--token", "the file is not text") from None
        except OSError as exc:
            raise FieldError("--token", f"neither an activation token nor a readable file ({exc.strerror})") from None
    return value.strip()


@add.command("import")
@_account
@click.option("--from-account", required=True, help="The exporting account: a name or an account public key.")
@click.option("--remote-subject", required=True, help="Subject as the exporting account exports it.")
@click.option("--local-subject", default="", help="Subject in this account (default: the remote subject).")
@click.option("--service", is_flag=True, help="Import a service (request/reply) instead of a stream.")
@click.option("--token", help="Activation token of a private export: a file, or the JWT itself.")
@click.option("--name", default="", help="A name for the import.")
@click.option("--share", is_flag=True, help="Share the requester's information with the service (latency tracking).")
@_no_push
@json_option
@pass_ctx
def add_import_cmd(
    c: Ctx, account, from_account, remote_subject, local_subject, service, token, name, share, no_push, as_json
):
    """Import a stream or service another account exports (a private one needs its activation token)."""
    from dchat_ops.nsc import exports

    store = c.store()
    account = account or store.default_account()
    jwt = _read_token(token)
    _before_change(store, account)
    e, i = _call(
        exports.add_import,
        store,
        account,
        from_account,
        remote_subject,
        local_subject=local_subject,
        service=service,
        token=jwt,
        name=name,
        share=share,
    )
    local = f" as {i.local_subject}" if i.local_subject else ""
    verified = " (activation verified)" if i.token else ""
    data = {"account": account, "public_key": e.public_key, "import": i.to_dict()}
    lines = [f"added {i.type} import {i.subject}{local} from {from_account} to account {account}{verified}"]
    _push(store, account, no_push, as_json, data, lines)


@rm.command("import")
@_account
@click.option("--subject", "-s", default="", help="Remote or local subject of the import.")
@click.option("--name", default="", help="Name of the import (instead of --subject).")
@click.option("--from-account", default="", help="Only an import from this account (a name or public key).")
@_no_push
@json_option
@pass_ctx
def rm_import_cmd(c: Ctx, account, subject, name, from_account, no_push, as_json):
    """Remove an import of an account."""
    from dchat_ops.nsc import exports

    if bool(subject) == bool(name):
        raise click.UsageError("give --subject or --name")
    store = c.store()
    account = account or store.default_account()
    _before_change(store, account)
    i = _call(exports.remove_import, store, account, subject=subject, name=name, from_account=from_account)
    data = {"account": account, "removed": i.to_dict()}
    _push(store, account, no_push, as_json, data, [f"removed {i.type} import {i.subject} from account {account}"])


# --- activations -------------------------------------------------------------------------------------------


@generate.command("activation")
@_account
@click.option("--subject", "-s", required=True, help="Subject of a private export (or a narrower one it covers).")
@click.option("--target-account", required=True, help="The importing account: a name or an account public key.")
@click.option("--expiry", help="Expiry: a duration (30d), a date (2026-12-31), or 0 for none (default).")
@click.option("--output", "-o", help="Write the token here (default: print it).")
@click.option("--force", is_flag=True, help="Replace an existing different file.")
@json_option
@pass_ctx
def generate_activation_cmd(c: Ctx, account, subject, target_account, expiry, output, force, as_json):
    """Write an activation token that lets another account import a private export."""
    from dchat_ops._fs import atomic_write
    from dchat_ops._time import format_time, parse_expiry
    from dchat_ops.nsc import admin, exports

    store = c.store()
    account = account or store.default_account()
    now = admin.now(store)
    expires = parsed("--expiry", parse_expiry, expiry, now) if expiry else 0
    out = Path(output) if output else None
    if out is not None and not out.parent.is_dir():
        raise DchatOpsError(f"folder {out.parent} does not exist")
    act = _call(exports.generate_activation, store, account, subject, target_account, expires=expires, now=now)
    data = act.to_dict()
    if out is not None:
        changed = atomic_write(out, act.token + "\n", force=force)
        data["output"] = str(out)
        emit(as_json, data, f"{'wrote' if changed else 'unchanged'} {out}")
    else:
        emit(as_json, data, act.token)
    note(
        f"activation of {act.claims.import_type} {act.claims.import_subject} for {act.claims.subject}"
        + (f", expires {format_time(act.claims.expires)}" if act.claims.expires else "")
        + f"; the importer adds it with: dchat-ops add import --token FILE --from-account {account} ..."
    )


@revoke.command("activation")
@_account
@click.option("--subject", "-s", required=True, help="Subject of the private export.")
@click.option("--target-account", required=True, help="The importing account (name or public key), or '*' for all.")
@click.option("--at", help="Revoke activations issued at or before this time (default: now).")
@_no_push
@json_option
@pass_ctx
def revoke_activation_cmd(c: Ctx, account, subject, target_account, at, no_push, as_json):
    """Revoke an account's activation of a private export (the exporting account is re-signed and pushed)."""
    from dchat_ops._time import format_time, parse_expiry
    from dchat_ops.nsc import admin, exports

    store = c.store()
    account = account or store.default_account()
    t = parsed("--at", parse_expiry, at, admin.now(store)) if at else admin.now(store)
    _before_change(store, account)
    x = _call(exports.revoke_activation, store, account, subject, target_account, at=t)
    data = {"account": account, "export": x.to_dict()}
    lines = [
        f"revoked activations of {x.subject} in account {account} for {target_account} issued until {format_time(t)}"
    ]
    _push(store, account, no_push, as_json, data, lines)
