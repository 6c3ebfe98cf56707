"""Identities: init, add, edit, remove, describe, list, validate, generate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dchat_ops._cli import account_options as _claims
from dchat_ops._cli.app import SIZE, Ctx, SubGroup, _split, _times, cli, parsed, pass_ctx
from dchat_ops._cli.output import emit, json_option, note
from dchat_ops._fs import atomic_write
from dchat_ops._time import format_time, parse_duration, parse_expiry
from dchat_ops.errors import DchatOpsError

if TYPE_CHECKING:
    from dchat_ops.nsc import admin
    from dchat_ops.nsc.claims import AccountClaims, OperatorClaims, UserClaims
    from dchat_ops.nsc.store import Entity, Store

# Each command imports the library when it runs, so that the help of these commands imports none of it;
# hence this copy of admin.init's defaults (tests/test_cli.py compares them).
DEFAULT_OPERATOR = "dchat"
DEFAULT_ACCOUNT = "chat"
DEFAULT_USER = "default"

# --- init ----------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--operator",
    help=f"Operator name (default: the global --operator, else the current one, else {DEFAULT_OPERATOR}); "
    "a new name adds an operator to the home.",
)
@click.option("--account", default=DEFAULT_ACCOUNT, show_default=True, help="Application account name.")
@click.option("--user", default=DEFAULT_USER, show_default=True, help="First user of the account.")
@click.option("--strict", is_flag=True, help="Sign with signing keys only (strict signing key usage).")
@json_option
@pass_ctx
def init(c: Ctx, operator, account, user, strict, as_json):
    """Create an operator, the system account and user, an application account and its first user."""
    from dchat_ops.nsc import admin

    store = c.store(must_exist=False)
    r = admin.init(store, operator, account, user, strict=strict)

    def human():
        yield r.message
        for name, path in r.creds.items():
            yield f"  creds for {name}: {path}"
        if r.created:
            yield "next: dchat-ops generate config --nats-resolver -o server.conf"

    emit(as_json, r.to_dict(), human)


# --- add -------------------------------------------------------------------------------------------


@cli.group(cls=SubGroup, lazy={"export": "exports", "import": "exports", "mapping": "claims:add_mapping"})
def add():
    """Add an account, a user, an export, an import or a subject mapping."""


@cli.group(cls=SubGroup, lazy={"export": "exports", "import": "exports", "mapping": "claims:rm_mapping"})
def rm():
    """Remove an account, a user (its JWTs and creds, revoked; seeds stay in the keystore), an export or an import."""


@rm.command("account")
@click.argument("name")
@pass_ctx
def rm_account(c: Ctx, name):
    from dchat_ops.nsc import admin

    admin.remove_account(c.store(), name)
    note(f"removed account {name}; run 'dchat-ops push --prune' to remove it from running nodes")


@rm.command("user")
@click.argument("name")
@click.option("--account", "-a", help="The user's account (default: the current account).")
@click.option("--no-revoke", is_flag=True, help="Only delete its files: copies of its creds keep working.")
@click.option("--no-push", is_flag=True, help="Revoke in the store only; push later with 'dchat-ops push'.")
@json_option
@pass_ctx
def rm_user(c: Ctx, name, account, no_revoke, no_push, as_json):
    """Remove a user: revoke every JWT of it issued until now (pushed to running nodes), delete its JWT and creds."""
    from dchat_ops.nsc.store import check_name
    from dchat_ops.permissions.apply import remove_user

    check_name(name, "user name")
    store = c.store()
    account = account or store.default_account()
    r = remove_user(store, account, name, revoke_it=not no_revoke, push_it=not no_push)
    lines = [f"removed user {account}/{name}" + (" (revoked)" if r.revoked else " (not revoked)")]
    if r.push:
        lines += [f"  {x['server']}: {'ok' if x['ok'] else 'FAILED'} {x['message']}" for x in r.push["results"]]
    lines += [f"  {m}" for m in r.messages]
    emit(as_json, r.to_dict(), lines)
    if r.push and not r.push["ok"]:
        raise DchatOpsError("the revocation is in the store, but not every server took it: run 'dchat-ops push'")


@add.command("account")
@click.argument("name")
@click.option("--signing-key", is_flag=True, help="Also make an account signing key to sign its users.")
@click.option("--force", is_flag=True, help="Replace an existing account of this name.")
@json_option
@pass_ctx
def add_account(c: Ctx, name, signing_key, force, as_json):
    """Add an account signed by the operator."""
    from dchat_ops.nsc import admin
    from dchat_ops.nsc import describe as inspect_

    e = admin.add_account(c.store(), name, signing_key=signing_key, force=force)
    emit(as_json, inspect_.describe_claims(e.claims), f"added account {name} ({e.public_key})")


def user_options(f):
    opts = [
        click.option(
            "--allow-pub", multiple=True, help="Subjects the user may publish to (repeatable, or comma list)."
        ),
        click.option(
            "--allow-sub", multiple=True, help="Subjects the user may subscribe to; 'subject queue' for a queue group."
        ),
        click.option("--deny-pub", multiple=True, help="Subjects the user may not publish to."),
        click.option("--deny-sub", multiple=True, help="Subjects the user may not subscribe to."),
        click.option("--allow-pubsub", multiple=True, help="Subjects allowed for both publish and subscribe."),
        click.option(
            "--resp-max", type=int, help="Allow publishing this many responses to request reply subjects (0 removes)."
        ),
        click.option("--resp-ttl", help="Time window for those responses, e.g. 1s."),
        click.option("--subs", type=int, help="Maximum subscriptions (-1 unlimited)."),
        click.option("--data", type=SIZE, help="Maximum bytes, e.g. 10M (-1 unlimited)."),
        click.option("--payload", type=SIZE, help="Maximum message payload, e.g. 64K (-1 unlimited)."),
        click.option("--bearer/--no-bearer", default=None, help="Bearer token: no nonce signature needed."),
        click.option(
            "--conn-type", multiple=True, help="Allowed connection type (STANDARD, WEBSOCKET, LEAFNODE, MQTT...)."
        ),
        click.option("--source-network", multiple=True, help="CIDR the user may connect from."),
        click.option(
            "--time", "times", multiple=True, help="Daily window HH:MM:SS-HH:MM:SS when the user may connect."
        ),
        click.option("--locale", help="Time zone of the windows (IANA name)."),
        click.option("--expiry", help="Expiry: a duration (30d), a date (2026-12-31), or 0 for none."),
        click.option("--start", help="Not valid before: a duration from now or a date."),
        click.option("--tag", multiple=True, help="Tag (repeatable)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def user_limit_fields(kw: dict) -> dict:
    """The UserSpec fields of the limit options ``user_options`` and ``edit role`` share: response
    permission, subscriptions, data, payload, bearer, time zone of the windows."""
    from dchat_ops._time import parse_duration

    return {
        "resp_max": kw["resp_max"],
        "resp_ttl_s": parsed("resp_ttl", parse_duration, kw["resp_ttl"]) if kw["resp_ttl"] else None,
        "subs": kw["subs"],
        "data": kw["data"],
        "payload": kw["payload"],
        "bearer": kw["bearer"],
        "times_location": kw["locale"],
    }


def _spec(store: Store, kw: dict, for_edit: bool) -> admin.UserSpec:
    from dchat_ops.nsc import admin

    now = admin.now(store)
    both = _split(kw["allow_pubsub"])

    def lst(v, extra=()):
        items = _split(v) + list(extra)
        return items if items or not for_edit else None

    spec = admin.UserSpec(
        **user_limit_fields(kw),
        expires=parsed("expiry", parse_expiry, kw["expiry"], now) if kw["expiry"] is not None else None,
        not_before=parsed("start", parse_expiry, kw["start"], now) if kw["start"] is not None else None,
    )
    if not for_edit:
        spec.pub_allow = lst(kw["allow_pub"], both) or None
        spec.sub_allow = lst(kw["allow_sub"], both) or None
        spec.pub_deny = lst(kw["deny_pub"]) or None
        spec.sub_deny = lst(kw["deny_sub"]) or None
        spec.connection_types = _split(kw["conn_type"]) or None
        spec.source_networks = _split(kw["source_network"]) or None
        spec.times = _times(kw["times"]) or None
        spec.tags = _split(kw["tag"]) or None
    return spec


@add.command("user")
@click.argument("name")
@click.option("--account", "-a", help="Account of the user (default: the current account).")
@click.option("--role", help="Sign with the account's scoped signing key of this role.")
@click.option("--signing-key", help="Sign with this account signing key (public key, A...).")
@click.option("--force", is_flag=True, help="Replace an existing user of this name.")
@user_options
@json_option
@pass_ctx
def add_user(c: Ctx, name, account, role, signing_key, force, as_json, **kw):
    """Add a user, its seed and its creds file."""
    from dchat_ops.nsc import admin

    store = c.store()
    account = account or store.default_account()
    r = admin.add_user(
        store, account, name, _spec(store, kw, for_edit=False), role=role, signing_key=signing_key, force=force
    )
    emit(
        as_json,
        r.to_dict(),
        [f"added user {name} to account {account} ({r.entity.public_key})", f"  creds: {r.creds_path}"],
    )


# --- edit --------------------------------------------------------------------------------------------


@cli.group(cls=SubGroup, lazy={"role": "claims:edit_role"})
def edit():
    """Change an operator, account, role template or user (and re-sign it)."""


@edit.command("user")
@click.argument("name")
@click.option("--account", "-a", help="Account of the user.")
@click.option("--rm", multiple=True, help="Remove a subject from every permission list.")
@click.option("--rm-tag", multiple=True)
@click.option("--rm-conn-type", multiple=True)
@click.option("--rm-source-network", multiple=True)
@click.option("--rm-times", is_flag=True, help="Remove every time window.")
@user_options
@json_option
@pass_ctx
def edit_user(c: Ctx, name, account, rm, rm_tag, rm_conn_type, rm_source_network, rm_times, as_json, **kw):
    """Add to or remove from a user's permissions and limits; re-issue its JWT and creds."""
    from dchat_ops.nsc import admin

    store = c.store()
    account = account or store.default_account()
    both = _split(kw["allow_pubsub"])
    changes = admin.UserChanges(
        allow_pub=_split(kw["allow_pub"]) + both,
        allow_sub=_split(kw["allow_sub"]) + both,
        deny_pub=_split(kw["deny_pub"]),
        deny_sub=_split(kw["deny_sub"]),
        remove=_split(rm),
        add_tags=_split(kw["tag"]),
        remove_tags=_split(rm_tag),
        add_connection_types=_split(kw["conn_type"]),
        remove_connection_types=_split(rm_conn_type),
        add_source_networks=_split(kw["source_network"]),
        remove_source_networks=_split(rm_source_network),
        add_times=_times(kw["times"]),
        clear_times=rm_times,
    )
    r = admin.edit_user(store, account, name, _spec(store, kw, for_edit=True), changes)
    lines = [f"user {account}/{name} re-issued" if r.changed else f"user {account}/{name} unchanged"]
    failure = None
    if r.revoked_at:  # it took something away: its earlier JWTs are revoked, and the account is pushed
        from dchat_ops.permissions.apply import push_superseded

        messages: list[str] = []
        try:
            push_superseded(store, account, r, messages=messages)
        except DchatOpsError as exc:
            failure = exc
        lines += [f"  {m}" for m in messages]
    emit(as_json, {**r.to_dict(), "messages": lines[1:]}, lines)
    for w in r.warnings:
        note(f"warning: {w}")
    if failure is not None:
        raise failure


def _limit_kw(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


@edit.command("account")
@click.argument("name")
@click.option("--conn", type=int, help="Maximum connections (-1 unlimited).")
@click.option("--leaf", type=int, help="Maximum leaf node connections (-1 unlimited).")
@click.option("--subs", type=int)
@click.option("--data", type=SIZE, help="Maximum bytes, e.g. 1G (-1 unlimited).")
@click.option("--payload", type=SIZE, help="Maximum message payload, e.g. 1M (-1 unlimited).")
@click.option("--imports", type=int)
@click.option("--exports", type=int)
@click.option("--wildcards/--no-wildcards", default=None, help="Allow wildcard exports.")
@click.option("--disallow-bearer/--allow-bearer", default=None)
@click.option("--js-mem", type=SIZE, help="JetStream memory storage, e.g. 512M (-1 unlimited, 0 off).")
@click.option("--js-disk", type=SIZE, help="JetStream disk storage, e.g. 10G (-1 unlimited, 0 off).")
@click.option("--js-streams", type=int)
@click.option("--js-consumers", type=int)
@click.option("--sk", "add_sk", is_flag=True, help="Add a plain account signing key.")
@click.option("--role", help="Add a scoped signing key with this role; its template is the user options below.")
@click.option("--rm-sk", help="Remove a signing key (public key or role); refused while it signs users.")
@click.option("--force", is_flag=True, help="With --rm-sk: remove the key even though it still signs users.")
@click.option("--role-allow-pub", multiple=True)
@click.option("--role-allow-sub", multiple=True)
@click.option("--role-deny-pub", multiple=True)
@click.option("--role-deny-sub", multiple=True)
@click.option("--expiry", help="A duration, a date, or 0 for none.")
@click.option("--tag", multiple=True, help="Add a tag (repeatable).")
@click.option("--rm-tag", multiple=True, help="Remove a tag (repeatable).")
@click.option("--description")
@_claims.account_claim_options
@json_option
@pass_ctx
def edit_account(
    c: Ctx,
    name,
    conn,
    leaf,
    subs,
    data,
    payload,
    imports,
    exports,
    wildcards,
    disallow_bearer,
    js_mem,
    js_disk,
    js_streams,
    js_consumers,
    add_sk,
    role,
    rm_sk,
    force,
    role_allow_pub,
    role_allow_sub,
    role_deny_pub,
    role_deny_sub,
    expiry,
    tag,
    rm_tag,
    description,
    as_json,
    **more,
):
    """Change an account's limits, JetStream (account-wide or per tier), signing keys and roles, default
    permissions; re-sign it."""
    from dchat_ops.nsc import admin
    from dchat_ops.nsc import describe as inspect_

    store = c.store()
    role_spec = None
    if not role and (role_allow_pub or role_allow_sub or role_deny_pub or role_deny_sub):
        raise click.UsageError("--role-allow-* and --role-deny-* need --role NAME")
    if role:
        role_spec = admin.UserSpec(
            pub_allow=_split(role_allow_pub),
            sub_allow=_split(role_allow_sub),
            pub_deny=_split(role_deny_pub),
            sub_deny=_split(role_deny_sub),
        )
    from dchat_ops.runtime import push

    push.require_current_store(store, [name])  # an edit on an older JWT than a node holds would undo it
    more_js, more_kw = _claims.account_claim_kwargs(more)
    if rm_sk and force:
        from dchat_ops.nsc.rotate import check_account_key_removal

        warning = check_account_key_removal(store, name, rm_sk, force=True)
        if warning:
            note(f"warning: {warning}")
    e, changed = admin.edit_account(
        store,
        name,
        limits=_limit_kw(
            conn=conn,
            leaf=leaf,
            subs=subs,
            data=data,
            payload=payload,
            imports=imports,
            exports=exports,
            wildcards=wildcards,
            disallow_bearer=disallow_bearer,
        ),
        jetstream={
            **_limit_kw(mem_storage=js_mem, disk_storage=js_disk, streams=js_streams, consumer=js_consumers),
            **more_js,
        },
        add_signing_key=add_sk,
        add_role=role,
        role_spec=role_spec,
        remove_signing_key=rm_sk,
        force=force,
        expires=parsed("expiry", parse_expiry, expiry, admin.now(store)) if expiry is not None else None,
        add_tags=_split(tag),
        remove_tags=_split(rm_tag),
        description=description,
        **more_kw,
    )
    emit(
        as_json,
        {**inspect_.describe_claims(e.claims), "changed": changed},
        f"account {name} re-signed" if changed else f"account {name} unchanged",
    )
    if changed:
        from dchat_ops.runtime.push import running_nodes

        running = [s.node_id for s in running_nodes(store)]
        if running:
            note(f"running node(s) {', '.join(running)} still hold the old account JWT: run 'dchat-ops push'")


@edit.command("operator")
@click.option("--sk", "add_sk", is_flag=True, help="Add an operator signing key.")
@click.option("--rm-sk", help="Remove an operator signing key (public key); refused while it signs accounts.")
@click.option("--force", is_flag=True, help="With --rm-sk: remove the key even though it still signs accounts.")
@click.option("--strict/--no-strict", default=None, help="Require signing keys (strict signing key usage).")
@click.option("--service-url", multiple=True, help="Operator service URL (nats://...).")
@click.option("--account-server-url")
@click.option("--system-account", help="Name or key of the system account.")
@click.option("--tag", multiple=True, help="Add a tag (repeatable).")
@click.option("--rm-tag", multiple=True, help="Remove a tag (repeatable).")
@json_option
@pass_ctx
def edit_operator(
    c: Ctx, add_sk, rm_sk, force, strict, service_url, account_server_url, system_account, tag, rm_tag, as_json
):
    """Change the operator's signing keys, strict mode, URLs or system account."""
    from dchat_ops.nsc import admin
    from dchat_ops.nsc import describe as inspect_

    report: list[str] = []
    store = c.store()
    if rm_sk:
        from dchat_ops.nsc.keys import check_public_key

        parsed("--rm-sk", check_public_key, rm_sk, "operator", "signing key")
    if rm_sk and force:
        from dchat_ops.nsc.rotate import check_operator_key_removal

        warning = check_operator_key_removal(store, rm_sk, force=True)
        if warning:
            note(f"warning: {warning}")
    e, changed = admin.edit_operator(
        store,
        add_signing_key=add_sk,
        remove_signing_key=rm_sk,
        force=force,
        strict=strict,
        service_urls=_split(service_url) or None,
        account_server_url=account_server_url,
        system_account=system_account,
        add_tags=_split(tag),
        remove_tags=_split(rm_tag),
        report=report,
    )
    emit(
        as_json,
        {**inspect_.describe_claims(e.claims), "changed": changed, "migrated": report},
        [f"operator {e.name} re-signed" if changed else f"operator {e.name} unchanged", *(f"  {m}" for m in report)],
    )
    if changed:
        note("servers read the operator JWT at start: regenerate their configs and restart them")


# --- describe / list / validate ------------------------------------------------------------------------


def _describe_lines(d: dict) -> list[str]:
    c = d["claims"]
    n = c.get("nats", {})
    lines = [
        f"{d['kind']:<9} {d['name']}",
        f"  public key   {d['public_key']}",
        f"  issuer       {d['issuer']}",
        f"  issued       {format_time(c.get('iat', 0))}",
        f"  expires      {format_time(c.get('exp', 0))}",
    ]
    if c.get("nbf"):
        lines.append(f"  not before   {format_time(c['nbf'])}")
    if d.get("validity", "valid") != "valid":
        lines.append(f"  state        {d['validity'].upper()}")
    if d.get("account"):
        lines.insert(1, f"  account      {d['account']}")
    if d.get("issuer_account"):
        lines.append(f"  issuer acct  {d['issuer_account']}")
    if d["kind"] == "operator":
        lines.append(f"  system acct  {d.get('system_account') or '-'}")
        lines.append(f"  strict keys  {d.get('strict_signing_key_usage')}")
        for sk in n.get("signing_keys", []):
            lines.append(f"  signing key  {sk}")
    if d["kind"] == "account":
        lim = n.get("limits", {})
        lines.append("  limits       " + ", ".join(f"{k}={v}" for k, v in lim.items() if k != "tiered_limits"))
        for sk in d.get("signing_keys", []):
            lines.append(f"  signing key  {sk if isinstance(sk, str) else sk['key'] + ' (role ' + sk['role'] + ')'}")
        for r, t in n.get("revocations", {}).items():
            lines.append(f"  revoked      {r} at {format_time(t)}")
        for x in n.get("exports", []):
            extra = ", token required" if x.get("token_req") else ""
            lines.append(
                f"  export       {x.get('subject')} ({x.get('type')}{extra}){' ' + x['name'] if x.get('name') else ''}"
            )
            for key, t in (x.get("revocations") or {}).items():
                lines.append(f"    activation of {key} revoked at {format_time(t)}")
        for x in n.get("imports", []):
            local = f" as {x['local_subject']}" if x.get("local_subject") else ""
            lines.append(f"  import       {x.get('subject')}{local} ({x.get('type')}) from {x.get('account')}")
        for subject, targets in n.get("mappings", {}).items():
            to = ", ".join(
                f"{t.get('subject')} {t.get('weight') or 100}%{' in ' + t['cluster'] if t.get('cluster') else ''}"
                for t in targets
            )
            lines.append(f"  mapping      {subject} -> {to}")
        lines += _claims.account_describe_lines(n)
    if d["kind"] == "user":
        if d.get("role"):
            lines.append(f"  role         {d['role']} (its template below is what the server applies)")
            n = {**n, **d["effective"]}
        for part in ("pub", "sub"):
            perm = n.get(part, {})
            lines.append(f"  {part} allow    {', '.join(perm.get('allow', [])) or '(all)'}")
            if perm.get("deny"):
                lines.append(f"  {part} deny     {', '.join(perm['deny'])}")
        if "resp" in n:
            lines.append(f"  responses    max {n['resp'].get('max')} ttl {n['resp'].get('ttl')}ns")
        lines.append("  limits       " + ", ".join(f"{k}={n.get(k, 0)}" for k in ("subs", "data", "payload")))
        for k in ("bearer_token", "allowed_connection_types", "src", "times", "times_location"):
            if n.get(k):
                lines.append(f"  {k:<12} {n[k]}")
    if n.get("tags"):
        lines.append(f"  tags         {', '.join(n['tags'])}")
    return lines


@cli.command()
@click.argument("kind", type=click.Choice(["operator", "account", "user", "file"]))
@click.argument("name", required=False)
@click.option("--account", "-a", help="Account of the user.")
@json_option
@pass_ctx
def describe(c: Ctx, kind, name, account, as_json):
    """Show an operator, account or user by name, or any JWT or creds file (the seed is never shown)."""
    from dchat_ops.nsc import describe as inspect_

    if kind == "file":
        if not name:
            raise click.UsageError("describe file needs a path")
        d = inspect_.describe_file(Path(name))
    else:
        store = c.store()
        e: Entity[OperatorClaims] | Entity[AccountClaims] | Entity[UserClaims]
        if kind == "operator":
            e = store.operator(name)
        elif kind == "account":
            e = store.account(name or store.default_account())
        else:
            if not name:
                raise click.UsageError("describe user needs a user name")
            account = account or store.default_account()
            e = store.user(account, name)
        d = inspect_.describe_claims(e.claims, e.token)
        if kind == "user":
            d["account"] = account
            role, upl = inspect_.effective_limits(store.account(account).claims, e.claims)  # type: ignore[arg-type]
            if role:  # the server applies the role's template, not the user's own (empty) permissions
                template: dict = {}
                upl.write_upl(template)
                d["role"], d["effective"] = role, template
        d["token"] = e.token
    emit(as_json, d, lambda: _describe_lines(d))


@cli.command("list")
@click.argument("what", required=False, type=click.Choice(["operators", "keys"]))
@click.option("--no-users", is_flag=True, help="With 'keys': the operator's and accounts' keys only.")
@json_option
@pass_ctx
def list_(c: Ctx, what, no_users, as_json):
    """List the operator, its accounts and their users.

    'list operators': the home's operators, the current one marked with *.
    'list keys': every key of the current operator, its accounts and users, and whether this home holds
    its seed (never shown).
    """
    from dchat_ops.nsc import describe as inspect_

    if what == "operators":
        from dchat_ops._cli.operators import show_operators

        show_operators(c.store(), as_json)
        return
    if what == "keys":
        keys = inspect_.list_keys(c.store(), users=not no_users)

        def key_lines():
            for r in keys["keys"]:
                if "error" in r:
                    yield f"  {r['kind']:<20} {r['owner']}: {r['error']}"
                    continue
                what_ = r["kind"] + (f" ({r['role']})" if r["role"] else "")
                yield f"{'*' if r['seed'] else ' '} {what_:<28} {r['owner']:<20} {r['public_key']}"
            yield "(* this home holds the seed)"

        emit(as_json, keys, key_lines)
        return
    tree = inspect_.list_store(c.store())

    def human():
        op = tree["operator"]
        yield f"operator {op['name']}  {op['public_key']}"
        for a in tree["accounts"]:
            yield f"  account {a['name']}{' (system)' if a['system'] else ''}  {a['public_key']}"
            for u in a["users"]:
                yield f"    user {u['name']}  {u.get('public_key') or u.get('error')}"

    emit(as_json, tree, human)


@cli.command("expirations")
@click.option("--within", default="30d", show_default=True, help="The window ahead, e.g. 7d, 12h, 90m.")
@json_option
@pass_ctx
def expirations_cmd(c: Ctx, within, as_json):
    """JWTs that expire within a window (default 30 days), have expired, or are not valid yet."""
    from dchat_ops.nsc.describe import expirations

    seconds = parsed("--within", parse_duration, within)
    rows = expirations(c.store(), int(seconds))

    def human():
        if not rows:
            yield f"nothing expires within {within}"
        for r in rows:
            who = f"{r['kind']} {r['account'] + '/' if r['account'] else ''}{r['name']}"
            if r["state"] == "not yet valid":
                yield f"{who}: not valid until {r['not_before_at']}"
            else:
                yield f"{who}: {'expired' if r['state'] == 'expired' else 'expires'} {r['expires_at']}"

    emit(as_json, rows, human)


@cli.command()
@json_option
@pass_ctx
def validate(c: Ctx, as_json):
    """Check every signature, chain, expiry, key and creds file in the store."""
    from dchat_ops.nsc import describe as inspect_

    store = c.store()
    findings = inspect_.validate_store(store)
    if store.nodes_dir.is_dir() and any(store.nodes_dir.glob("*.yaml")):
        from dchat_ops.permissions.apply import node_findings
        from dchat_ops.runtime.push import account_findings

        findings += [inspect_.Finding(*f) for f in node_findings(store)]
        findings += [inspect_.Finding(*f) for f in account_findings(store)]
    errors = [f for f in findings if f.level == "error"]
    emit(
        as_json,
        {"valid": not errors, "findings": [f.to_dict() for f in findings]},
        lambda: (
            [f"{f.level}: {f.entity}: {f.message}" for f in findings]
            + [("store is valid" if not errors else f"{len(errors)} error(s)")]
        ),
    )
    return 1 if errors else 0


@cli.command()
@json_option
@pass_ctx
def recover(c: Ctx, as_json):
    """Roll back a change a killed command left unfinished, and remove its temporary files."""
    from dchat_ops._fs import recover_store

    rolled_back, removed = recover_store(c.store(must_exist=False).home)
    emit(
        as_json,
        {"rolled_back": [str(p) for p in rolled_back], "removed_temporary_files": [str(p) for p in removed]},
        lambda: (
            [
                f"rolled back {len(rolled_back)} file(s) of an interrupted change"
                if rolled_back
                else "no interrupted change"
            ]
            + [f"removed {p}" for p in removed]
            + (["run the interrupted command again to finish it"] if rolled_back else [])
        ),
    )


# --- generate ----------------------------------------------------------------------------------------------


@cli.group(cls=SubGroup, lazy={"activation": "exports"})
def generate():
    """Generate creds files, server configs and activation tokens."""


@generate.command("creds")
@click.option("--account", "-a", help="Account of the user.")
@click.option("--user", "-u", "name", required=True, help="User name.")
@click.option("--output", "-o", help="Write here ('-' prints the creds, a secret, to stdout).")
@click.option("--force", is_flag=True, help="Replace an existing different file.")
@pass_ctx
def generate_creds(c: Ctx, account, name, output, force):
    """Write a user's creds file (JWT + seed), checked against the chain."""
    from dchat_ops.nsc import admin

    store = c.store()
    account = account or store.default_account()
    text = admin.generate_creds(store, account, name)
    if output == "-":
        click.echo(text, nl=False)
        return
    if output:
        path = Path(output)
        changed = atomic_write(path, text, private=True, force=force)
    else:  # the store's own creds file follows the store's JWT: written under the store lock
        path = store.creds_path(store.current_operator(), account, name)
        with store.transaction():
            changed = atomic_write(path, text, private=True, force=True)
    note(f"{'wrote' if changed else 'unchanged'} {path}")


@generate.command("context")
@click.option("--account", "-a", help="Account of the user.")
@click.option("--user", "-u", "name", required=True, help="User name.")
@click.option("--node", "nodes", multiple=True, help="Reach the network through this node (repeatable; default all).")
@click.option("--server", "servers", multiple=True, help="A server URL instead of the store's nodes (repeatable).")
@click.option("--context", "context_name", help="The context's name (default: the user's name).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Contexts folder (default: nats').")
@click.option("--select", is_flag=True, help="Make it the selected context of the nats tool.")
@json_option
@pass_ctx
def generate_context(c: Ctx, account, name, nodes, servers, context_name, directory, select, as_json):
    """Write a context for the nats tool: the user's creds in the store, the nodes' URLs, the CA if TLS."""
    from dchat_ops.config.context import CLIENT_SCHEMES, nats_context, write_context
    from dchat_ops.hosts import check_url
    from dchat_ops.nsc.store import check_name

    for s in servers:
        parsed("--server", check_url, s, CLIENT_SCHEMES, "--server")
    parsed("--context", check_name, context_name or name, "context name")
    if nodes and servers:
        raise click.UsageError("give --node or --server, not both")
    store = c.store()
    account = account or store.default_account()
    ctx = nats_context(store, account, name, nodes=list(nodes), servers=list(servers))
    result = write_context(context_name or name, ctx, directory=Path(directory) if directory else None, select=select)
    lines = [
        f"{'wrote' if result['changed'] else 'unchanged'} nats context {result['name']}: {result['path']}",
        f"  servers {ctx['url']}",
        f"  creds {ctx['creds']}",
    ]
    lines += [f"  CA {ctx['ca']}"] if ctx["ca"] else []
    lines += [f"  client certificate {ctx['cert']}"] if ctx["cert"] else []
    lines += (
        [f"  selected: the nats tool uses it by default (else: nats --context {result['name']} ...)"] if select else []
    )
    emit(as_json, result, lines)


@generate.command("config")
@click.option(
    "--nats-resolver",
    "resolver",
    flag_value="full",
    default=True,
    help="Full nats resolver: accounts kept on disk, updates pushable (default).",
)
@click.option("--mem-resolver", "resolver", flag_value="memory", help="Memory resolver: accounts preloaded only.")
@click.option("--output", "-o", help="Write here (default: print).")
@click.option("--server-name", default="dchat-1", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Client listen address.")
@click.option("--port", type=click.IntRange(1, 65535), default=4222, show_default=True)
@click.option(
    "--http-port", type=click.IntRange(0, 65535), default=8222, show_default=True, help="Monitoring port (0 for none)."
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the nats resolver keeps account JWTs.")
@click.option("--allow-delete", is_flag=True, help="Let the operator delete accounts from the nats resolver.")
@click.option("--no-check", is_flag=True, help="Skip the nats-server -t check.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@pass_ctx
def generate_config(
    c: Ctx, resolver, output, server_name, host, port, http_port, data_dir, allow_delete, no_check, force
):
    """Render a nats-server config for one server of this operator, every account preloaded."""
    from dchat_ops.config import server as render
    from dchat_ops.hosts import check_host
    from dchat_ops.nsc.store import check_name

    parsed("--host", check_host, host, "--host")
    check_name(server_name, "server name")
    store = c.store()
    cfg = render.standalone_config(
        store,
        resolver=resolver,
        data_dir=Path(data_dir) if data_dir else None,
        server_name=server_name,
        host=host,
        port=port,
        http_port=http_port or None,
        allow_delete=allow_delete,
    )
    if output:
        out = Path(output)
        if not out.parent.is_dir():
            raise DchatOpsError(f"folder {out.parent} does not exist")
        if out.exists() and not force:
            raise DchatOpsError(f"{out} already exists; use --force to replace it")
        if no_check:
            render.semantic_check(cfg)
            atomic_write(out, render.render(cfg))
        else:
            render.write_and_check(cfg, out)
        note(f"wrote {output} ({resolver} resolver); start it with: nats-server -c {output}")
    else:
        render.semantic_check(cfg)
        click.echo(render.render(cfg), nl=False)
