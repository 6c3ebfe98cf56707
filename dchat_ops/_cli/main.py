"""The ``dchat-ops`` command line: parses, calls the library, formats.  No logic of its own.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 changes pending (``--detailed-exitcode``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from dchat_ops import __version__
from dchat_ops._cli.output import emit, json_option, note, run_cli
from dchat_ops._fs import atomic_write
from dchat_ops._time import format_time, parse_duration, parse_expiry
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc import admin
from dchat_ops.nsc import describe as inspect_
from dchat_ops.nsc.store import Store


class Ctx:
    def __init__(self, home: Optional[str]):
        self.home = home

    def store(self, must_exist: bool = True) -> Store:
        store = Store(self.home)
        if must_exist:
            store.require()
        return store


pass_ctx = click.make_pass_decorator(Ctx)


def _split(values) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _times(values) -> list[tuple[str, str]]:
    out = []
    for v in values or ():
        start, sep, end = v.partition("-")
        if not sep:
            raise DchatOpsError(f"invalid time window {v!r}: use HH:MM:SS-HH:MM:SS")
        out.append((start.strip(), end.strip()))
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="DCHAT_OPS_HOME",
    type=click.Path(file_okay=False),
    help="Store folder (default: $DCHAT_OPS_HOME, else $XDG_DATA_HOME/dchat-ops).",
)
@click.version_option(__version__, prog_name="dchat-ops")
@click.pass_context
def cli(ctx: click.Context, home: Optional[str]):
    """Credentials and configuration for decentralized NATS chat networks."""
    ctx.obj = Ctx(home)


# --- init ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--operator", default=admin.DEFAULT_OPERATOR, show_default=True, help="Operator name.")
@click.option("--account", default=admin.DEFAULT_ACCOUNT, show_default=True, help="Application account name.")
@click.option("--user", default=admin.DEFAULT_USER, show_default=True, help="First user of the account.")
@click.option("--strict", is_flag=True, help="Sign with signing keys only (strict signing key usage).")
@json_option
@pass_ctx
def init(c: Ctx, operator, account, user, strict, as_json):
    """Create an operator, the system account and user, an application account and its first user."""
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


@cli.group()
def add():
    """Add an account or a user."""


@cli.group()
def rm():
    """Remove an account (its JWTs and creds; seeds stay in the keystore)."""


@rm.command("account")
@click.argument("name")
@pass_ctx
def rm_account(c: Ctx, name):
    admin.remove_account(c.store(), name)
    note(f"removed account {name}; run 'dchat-ops push --prune' to remove it from running nodes")


@add.command("account")
@click.argument("name")
@click.option("--signing-key", is_flag=True, help="Also make an account signing key to sign its users.")
@click.option("--force", is_flag=True, help="Replace an existing account of this name.")
@json_option
@pass_ctx
def add_account(c: Ctx, name, signing_key, force, as_json):
    """Add an account signed by the operator."""
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
        click.option("--data", type=int, help="Maximum bytes (-1 unlimited)."),
        click.option("--payload", type=int, help="Maximum message payload (-1 unlimited)."),
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


def _spec(store: Store, kw: dict, for_edit: bool) -> admin.UserSpec:
    now = admin.now(store)
    both = _split(kw["allow_pubsub"])

    def lst(v, extra=()):
        items = _split(v) + list(extra)
        return items if items or not for_edit else None

    spec = admin.UserSpec(
        resp_max=kw["resp_max"],
        resp_ttl_s=parse_duration(kw["resp_ttl"]) if kw["resp_ttl"] else None,
        subs=kw["subs"],
        data=kw["data"],
        payload=kw["payload"],
        bearer=kw["bearer"],
        times_location=kw["locale"],
        expires=parse_expiry(kw["expiry"], now) if kw["expiry"] is not None else None,
        not_before=parse_expiry(kw["start"], now) if kw["start"] is not None else None,
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


@cli.group()
def edit():
    """Change an operator, account or user (and re-sign it)."""


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
    msg = f"user {account}/{name} re-issued" if r.changed else f"user {account}/{name} unchanged"
    emit(as_json, r.to_dict(), msg)


def _limit_kw(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


@edit.command("account")
@click.argument("name")
@click.option("--conn", type=int, help="Maximum connections (-1 unlimited).")
@click.option("--leaf", type=int, help="Maximum leaf node connections (-1 unlimited).")
@click.option("--subs", type=int)
@click.option("--data", type=int)
@click.option("--payload", type=int)
@click.option("--imports", type=int)
@click.option("--exports", type=int)
@click.option("--wildcards/--no-wildcards", default=None, help="Allow wildcard exports.")
@click.option("--disallow-bearer/--allow-bearer", default=None)
@click.option("--js-mem", type=int, help="JetStream memory storage bytes (-1 unlimited, 0 off).")
@click.option("--js-disk", type=int, help="JetStream disk storage bytes (-1 unlimited, 0 off).")
@click.option("--js-streams", type=int)
@click.option("--js-consumers", type=int)
@click.option("--sk", "add_sk", is_flag=True, help="Add a plain account signing key.")
@click.option("--role", help="Add a scoped signing key with this role; its template is the user options below.")
@click.option("--rm-sk", help="Remove a signing key (public key or role).")
@click.option("--role-allow-pub", multiple=True)
@click.option("--role-allow-sub", multiple=True)
@click.option("--role-deny-pub", multiple=True)
@click.option("--role-deny-sub", multiple=True)
@click.option("--expiry", help="A duration, a date, or 0 for none.")
@click.option("--tag", multiple=True)
@click.option("--description")
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
    role_allow_pub,
    role_allow_sub,
    role_deny_pub,
    role_deny_sub,
    expiry,
    tag,
    description,
    as_json,
):
    """Change an account's limits, JetStream, signing keys and roles; re-sign it."""
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
        jetstream=_limit_kw(mem_storage=js_mem, disk_storage=js_disk, streams=js_streams, consumer=js_consumers),
        add_signing_key=add_sk,
        add_role=role,
        role_spec=role_spec,
        remove_signing_key=rm_sk,
        expires=parse_expiry(expiry, admin.now(store)) if expiry is not None else None,
        tags=_split(tag) or None,
        description=description,
    )
    emit(
        as_json,
        {**inspect_.describe_claims(e.claims), "changed": changed},
        f"account {name} re-signed" if changed else f"account {name} unchanged",
    )
    if changed:
        note("running servers still hold the old account JWT: push it or reload the nodes")


@edit.command("operator")
@click.option("--sk", "add_sk", is_flag=True, help="Add an operator signing key.")
@click.option("--strict/--no-strict", default=None, help="Require signing keys (strict signing key usage).")
@click.option("--service-url", multiple=True, help="Operator service URL (nats://...).")
@click.option("--account-server-url")
@click.option("--system-account", help="Name or key of the system account.")
@click.option("--tag", multiple=True)
@json_option
@pass_ctx
def edit_operator(c: Ctx, add_sk, strict, service_url, account_server_url, system_account, tag, as_json):
    """Change the operator's signing keys, strict mode, URLs or system account."""
    e, changed = admin.edit_operator(
        c.store(),
        add_signing_key=add_sk,
        strict=strict,
        service_urls=_split(service_url) or None,
        account_server_url=account_server_url,
        system_account=system_account,
        tags=_split(tag) or None,
    )
    emit(
        as_json,
        {**inspect_.describe_claims(e.claims), "changed": changed},
        f"operator {e.name} re-signed" if changed else f"operator {e.name} unchanged",
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
    if d.get("issuer_account"):
        lines.append(f"  issuer acct  {d['issuer_account']}")
    if d["kind"] == "operator":
        lines.append(f"  system acct  {d.get('system_account') or '-'}")
        lines.append(f"  strict keys  {d.get('strict_signing_key_usage')}")
        for sk in n.get("signing_keys", []):
            lines.append(f"  signing key  {sk}")
    if d["kind"] == "account":
        lim = n.get("limits", {})
        lines.append("  limits       " + ", ".join(f"{k}={v}" for k, v in lim.items()))
        for sk in d.get("signing_keys", []):
            lines.append(f"  signing key  {sk if isinstance(sk, str) else sk['key'] + ' (role ' + sk['role'] + ')'}")
        for r, t in n.get("revocations", {}).items():
            lines.append(f"  revoked      {r} at {format_time(t)}")
    if d["kind"] == "user":
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
    if kind == "file":
        if not name:
            raise click.UsageError("describe file needs a path")
        d = inspect_.describe_file(Path(name))
    else:
        store = c.store()
        if kind == "operator":
            e = store.operator(name)
        elif kind == "account":
            e = store.account(name or store.default_account())
        else:
            if not name:
                raise click.UsageError("describe user needs a user name")
            e = store.user(account or store.default_account(), name)
        d = inspect_.describe_claims(e.claims, e.token)
        d["token"] = e.token
    emit(as_json, d, lambda: _describe_lines(d))


@cli.command("list")
@json_option
@pass_ctx
def list_(c: Ctx, as_json):
    """List the operator, its accounts and their users."""
    tree = inspect_.list_store(c.store())

    def human():
        op = tree["operator"]
        yield f"operator {op['name']}  {op['public_key']}"
        for a in tree["accounts"]:
            yield f"  account {a['name']}{' (system)' if a['system'] else ''}  {a['public_key']}"
            for u in a["users"]:
                yield f"    user {u['name']}  {u.get('public_key') or u.get('error')}"

    emit(as_json, tree, human)


@cli.command()
@json_option
@pass_ctx
def validate(c: Ctx, as_json):
    """Check every signature, chain, expiry, key and creds file in the store."""
    store = c.store()
    findings = inspect_.validate_store(store)
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


# --- generate ----------------------------------------------------------------------------------------------


@cli.group()
def generate():
    """Generate creds files and server configs."""


@generate.command("creds")
@click.option("--account", "-a", help="Account of the user.")
@click.option("--user", "-u", "name", required=True, help="User name.")
@click.option("--output", "-o", help="Write here ('-' prints the creds, a secret, to stdout).")
@click.option("--force", is_flag=True, help="Replace an existing different file.")
@pass_ctx
def generate_creds(c: Ctx, account, name, output, force):
    """Write a user's creds file (JWT + seed), checked against the chain."""
    store = c.store()
    account = account or store.default_account()
    text = admin.generate_creds(store, account, name)
    if output == "-":
        click.echo(text, nl=False)
        return
    if output:
        path = Path(output)
    else:
        path = store.creds_path(store.current_operator(), account, name)
        force = True  # the store's own creds file follows the store's JWT
    changed = atomic_write(path, text, private=True, force=force)
    note(f"{'wrote' if changed else 'unchanged'} {path}")


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
@click.option("--port", type=int, default=4222, show_default=True)
@click.option("--http-port", type=int, default=8222, show_default=True, help="Monitoring port (0 for none).")
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


# --- nodes ---------------------------------------------------------------------------------------------


@cli.group()
def node():
    """Node configs and supervised nats-server processes."""


def _gateways(values) -> list[tuple[str, str]]:
    out = []
    for v in values or ():
        name, sep, url = v.partition("=")
        if not sep:
            raise DchatOpsError(f"invalid --gateway {v!r}: use NAME=nats://host:port")
        out.append((name.strip(), url.strip()))
    return out


@node.command("add")
@click.argument("node_id")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (0.0.0.0 for a public node).")
@click.option("--client-port", type=int, help="Client port (default: a free port).")
@click.option("--monitor-port", type=int, help="Monitoring port (default: a free port).")
@click.option("--cluster-port", type=int, help="Cluster (route) port (default: a free port).")
@click.option("--cluster-name", default="dchat", show_default=True)
@click.option("--no-cluster", is_flag=True, help="A node without routes (a leaf or a lone server).")
@click.option(
    "--advertise",
    help="host[:port] other nodes should use to reach this one (default: detected when --host is 0.0.0.0).",
)
@click.option("--seed-route", multiple=True, help="nats-route://host:port of any node already in the cluster.")
@click.option("--gateway", multiple=True, help="NAME=nats://host:port of another cluster's gateway.")
@click.option("--gateway-port", type=int, help="Listen for gateways on this port.")
@click.option("--leaf-of", multiple=True, help="nats-leaf://host:port of a hub: run as a leaf node.")
@click.option("--leaf-port", type=int, help="Accept leaf nodes on this port (a hub).")
@click.option("--websocket-port", type=int)
@click.option("--jetstream", is_flag=True, help="Enable JetStream (streams, KV) on this node.")
@click.option("--mem-resolver", is_flag=True, help="Memory resolver instead of the full nats resolver.")
@click.option("--allow-delete", is_flag=True, help="Let 'push --prune' delete accounts from this node's resolver.")
@click.option("--account", "-a", help="Account of the node's local user (default: the current account).")
@click.option("--force", is_flag=True)
@json_option
@pass_ctx
def node_add(
    c: Ctx,
    node_id,
    host,
    client_port,
    monitor_port,
    cluster_port,
    cluster_name,
    no_cluster,
    advertise,
    seed_route,
    gateway,
    gateway_port,
    leaf_of,
    leaf_port,
    websocket_port,
    jetstream,
    mem_resolver,
    allow_delete,
    account,
    force,
    as_json,
):
    """Create a node config (default-deny subscribe) and the node's local user."""
    from dchat_ops.config import nodes

    r = nodes.add_node(
        c.store(),
        node_id,
        host=host,
        client_port=client_port,
        monitor_port=monitor_port,
        cluster=not no_cluster,
        cluster_name=cluster_name,
        cluster_port=cluster_port,
        advertise=advertise,
        seed_routes=list(seed_route),
        gateway_port=gateway_port,
        gateways=_gateways(gateway),
        leaf_of=list(leaf_of),
        leaf_port=leaf_port,
        websocket_port=websocket_port,
        jetstream=jetstream,
        resolver="memory" if mem_resolver else "full",
        allow_delete=allow_delete,
        account=account,
        force=force,
    )

    def human():
        n = r.node
        yield f"added node {n.id}: {r.path}"
        yield f"  client 127.0.0.1:{n.client_port}  monitor {n.monitor_port}" + (
            f"  cluster {n.cluster['name']}:{n.cluster['port']}" if n.cluster else ""
        )
        for m in r.messages:
            yield f"  {m}"
        yield f"  local user {n.user} (subscribe: default deny), creds {r.creds_path}"
        yield f"start it: dchat-ops node up {n.id}"

    emit(as_json, r.to_dict(), human)


@node.command("list")
@json_option
@pass_ctx
def node_list(c: Ctx, as_json):
    """List the nodes and whether they run."""
    from dchat_ops.config.node import list_nodes
    from dchat_ops.runtime.supervisor import Supervisor

    store = c.store()
    rows = []
    for n in list_nodes(store):
        try:
            rows.append(Supervisor(store, n).status().to_dict())
        except DchatOpsError as exc:
            rows.append({"id": n, "running": False, "error": str(exc)})
    emit(
        as_json,
        rows,
        lambda: (
            [
                f"{r['id']:<20} "
                + (r["error"] if r.get("error") else "running pid " + str(r["pid"]) if r["running"] else "stopped")
                for r in rows
            ]
            or ["no nodes; add one with 'dchat-ops node add'"]
        ),
    )


@node.command("show")
@click.argument("node_id")
@json_option
@pass_ctx
def node_show(c: Ctx, node_id, as_json):
    """Show a node's config (the YAML file, or its parsed form with --json)."""
    from dataclasses import asdict

    from dchat_ops.config.node import NodeFile

    nf = NodeFile.load(c.store(), node_id)
    emit(as_json, asdict(nf.node), nf.original_text.rstrip("\n"))


@node.command("render")
@click.argument("node_id")
@pass_ctx
def node_render(c: Ctx, node_id):
    """Check a node and write its nats-server config (without starting it)."""
    from dchat_ops.config.nodes import render_node

    note(f"wrote {render_node(c.store(), node_id)}")


def _status_lines(d: dict) -> list[str]:
    warnings = list(d.get("warnings") or [])
    if not d["running"]:
        return [f"node {d['id']}: stopped", *warnings]
    return [
        *warnings,
        f"node {d['id']}: running (pid {d['pid']}), {'healthy' if d['healthy'] else 'NOT healthy'}",
        f"  server {d.get('server_name')} nats-server {d.get('version')}, {d.get('connections')} connections",
        f"  routes to {', '.join(d.get('routes') or []) or '-'} ({d.get('route_count')} connections)",
        f"  gateways {', '.join(d.get('gateways') or []) or '-'};"
        f" leaf nodes {', '.join(leaf['name'] or '?' for leaf in d.get('leafnodes') or []) or '-'}",
    ]


@node.command("up")
@click.argument("node_id")
@click.option("--nats-server", "binary", envvar="DCHAT_OPS_NATS_SERVER", help="nats-server binary to run.")
@json_option
@pass_ctx
def node_up(c: Ctx, node_id, binary, as_json):
    """Start a node's nats-server and wait until it is healthy."""
    from dchat_ops.runtime.supervisor import Supervisor

    sup = Supervisor(c.store(), node_id, binary=binary)
    was = sup.running()
    st = sup.up().to_dict()
    emit(as_json, st, (["already running"] if was else []) + _status_lines(st))


@node.command("down")
@click.argument("node_id")
@json_option
@pass_ctx
def node_down(c: Ctx, node_id, as_json):
    """Stop a node gracefully."""
    from dchat_ops.runtime.supervisor import Supervisor

    stopped = Supervisor(c.store(), node_id).down()
    emit(
        as_json,
        {"id": node_id, "stopped": stopped},
        f"node {node_id} stopped" if stopped else f"node {node_id} is not running; nothing to stop",
    )


@node.command("status")
@click.argument("node_id")
@json_option
@pass_ctx
def node_status(c: Ctx, node_id, as_json):
    """Health, routes, gateways and leaf nodes of a node (from its monitoring endpoints)."""
    from dchat_ops.runtime.supervisor import Supervisor

    st = Supervisor(c.store(), node_id).status().to_dict()
    emit(as_json, st, _status_lines(st))


@node.command("reload")
@click.argument("node_id")
@json_option
@pass_ctx
def node_reload(c: Ctx, node_id, as_json):
    """Re-render and check the config, reload the running node (SIGHUP), confirm it took."""
    from dchat_ops.runtime.supervisor import Supervisor

    varz = Supervisor(c.store(), node_id).reload()
    emit(
        as_json,
        {"id": node_id, "reloaded": True, "config_load_time": varz.get("config_load_time")},
        f"node {node_id} reloaded at {varz.get('config_load_time')}",
    )


@node.command("logs")
@click.argument("node_id")
@click.option("-n", "--lines", type=int, default=50, show_default=True)
@json_option
@pass_ctx
def node_logs(c: Ctx, node_id, lines, as_json):
    """The last lines of a node's log."""
    from dchat_ops.config.node import NodeFile
    from dchat_ops.runtime.supervisor import Supervisor

    NodeFile.load(c.store(), node_id)  # an unknown node is an error, not an empty log
    out = Supervisor(c.store(), node_id).logs(lines)
    emit(as_json, {"id": node_id, "lines": out}, out or [f"node {node_id} has no log yet"])


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
    emit(
        as_json,
        {"target": user or node_id, "kind": "user" if user else "node", **pol},
        [f"{d}: allow {pol[d]['allow'] or '[]'} deny {pol[d]['deny'] or '[]'}" for d in ("publish", "subscribe")],
    )


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
    head = p.read_bytes()[:200] if p.is_file() else b""
    if FORMAT.encode() in head:
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
            p.read_bytes(),
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


@cli.group(invoke_without_command=True)
@click.option("--all-users", is_flag=True, help="Revoke every user of the account issued until now (or --at).")
@click.option("--account", "-a")
@click.option("--at", help="Revoke JWTs issued at or before this time (default: now).")
@click.option("--no-push", is_flag=True, help="Only change the store; do not push to running nodes.")
@json_option
@click.pass_context
def revoke(ctx, all_users, account, at, no_push, as_json):
    """Revoke a user (revoke user NAME) or every user (revoke --all-users)."""
    if ctx.invoked_subcommand is not None:
        return
    if not all_users:
        raise click.UsageError("use 'revoke user NAME' or 'revoke --all-users'")
    from dchat_ops.nsc import revoke

    store = ctx.obj.store()
    account = account or store.default_account()
    t = parse_expiry(at, admin.now(store)) if at else None
    revoke.revoke_all(store, account, t)
    _after_revocation(store, account, no_push, as_json, f"revoked every user of {account}")


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
    else:
        lines.append("  no node running: nothing pushed (run 'dchat-ops push' once nodes are up)")
    emit(as_json, data, lines)
    if report and not report.ok:
        raise DchatOpsError("the revocation is in the store, but not every server took it")


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
    t = parse_expiry(at, admin.now(store)) if at else None
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
        [f"{r['account']} -> {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}" for r in report.results],
    )
    return 0 if report.ok else 1


@cli.command("pull")
@json_option
@pass_ctx
def pull_cmd(c: Ctx, as_json):
    """Fetch the account JWTs the running servers hold and show how they differ from the store."""
    from dchat_ops.runtime import push

    rows = push.pull(c.store())

    def human():
        for r in rows:
            state = (
                ("same" if r.get("same") else "DIFFERENT")
                if r["in_store"] and r["on_server"]
                else ("only in the store" if r["in_store"] else "only on the servers")
            )
            yield f"{r['name'] or r['account']}: {state}"

    emit(as_json, rows, human)


# --- provisioning --------------------------------------------------------------------------------------


def _plan_lines(d: dict) -> list[str]:
    lines = [
        f"{c['action']:<8} {c['kind']:<8} {c['name']}" + (f"  ({c['detail']})" if c["detail"] else "")
        for c in d["changes"]
    ]
    if not d["changes"]:
        lines.append(f"no changes: the store matches the spec ({d['unchanged']} users unchanged)")
    else:
        summary = ", ".join(f"{n} {a}" for a, n in sorted(d["summary"].items()))
        lines.append(f"{len(d['changes'])} change(s): {summary}; {d['unchanged']} users unchanged")
    return lines


@cli.command("plan")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(dir_okay=False), help="The spec file.")
@click.option("--keep-removed", is_flag=True, help="Do not revoke users removed from the spec.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 3 when there are changes, 0 when none.")
@json_option
@pass_ctx
def plan_cmd(c: Ctx, spec_file, keep_removed, detailed_exitcode, as_json):
    """Show what applying the spec would create, change, re-issue or revoke (and drift)."""
    from dchat_ops import provision

    store = c.store(must_exist=False)
    spec = provision.load_spec(Path(spec_file), cache_dir=provision.spec_cache_dir(store) if store.exists() else None)
    p = provision.plan(store, spec, keep_removed=keep_removed)
    d = p.to_dict()
    emit(as_json, d, lambda: _plan_lines(d))
    return 3 if detailed_exitcode and p.has_changes else 0


@cli.command("apply")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(dir_okay=False), help="The spec file.")
@click.option("--keep-removed", is_flag=True, help="Do not revoke users removed from the spec.")
@json_option
@pass_ctx
def apply_cmd(c: Ctx, spec_file, keep_removed, as_json):
    """Make the store and node configs what the spec says; a second apply changes nothing."""
    from dchat_ops import provision

    store = c.store(must_exist=False)
    spec = provision.load_spec(Path(spec_file), cache_dir=provision.spec_cache_dir(store) if store.exists() else None)
    progress = None
    if sys.stderr.isatty() and not as_json:

        def progress(done, total, _state=None):
            if _state is None:
                _state = {}
            if "bar" not in _state:
                _state["bar"] = click.progressbar(length=total, label="issuing users", file=sys.stderr)
                _state["bar"].__enter__()
            _state["bar"].update(done - _state.get("done", 0))
            _state["done"] = done
            if done >= total:
                _state["bar"].__exit__(None, None, None)

    r = provision.apply(store, spec, keep_removed=keep_removed, progress=progress)
    d = r.to_dict()
    emit(
        as_json,
        d,
        lambda: (
            _plan_lines(d)
            if d["changes"]
            else [f"no changes: the store matches the spec ({d['unchanged']} users unchanged); nothing written"]
        ),
    )


@cli.group("spec")
def spec_group():
    """Specs for provisioning."""


@spec_group.command("export")
@click.option("-o", "--output", help="Write the spec here (default: print).")
@click.option("--force", is_flag=True)
@pass_ctx
def spec_export(c: Ctx, output, force):
    """Write a spec that describes the current store, to move a hand-built network to CI."""
    from dchat_ops import provision

    text = provision.dump_spec(provision.export_spec(c.store()))
    if output:
        atomic_write(Path(output), text, force=force)
        note(f"wrote {output}")
    else:
        click.echo(text, nl=False)


# --- chat ----------------------------------------------------------------------------------------------

CHAT_HELP = """commands: /join ROOM  /leave ROOM  /say ROOM TEXT  /dm USER TEXT  /group NAME TEXT
          /mkgroup NAME USER...  /add-friend USER  /friends  /history [CONVERSATION]  /quit"""


@cli.command()
@click.option("--node", "-n", "node_id", required=True, help="The node to connect to (its user chats).")
@click.option("--user", "-u", help="The chat user (default: the node's own user).")
@click.option("--replicas", type=int, default=1, show_default=True, help="Copies of the mail stream and KV buckets.")
@pass_ctx
def chat(c: Ctx, node_id, user, replicas):
    """A plain terminal chat client on a node: rooms, sealed direct and group messages, history."""
    import asyncio

    from dchat_ops.chat.client import ChatClient, ChatIdentity
    from dchat_ops.config.node import NodeFile
    from dchat_ops.runtime.supervisor import Supervisor

    store = c.store()
    node = NodeFile.load(store, node_id).node
    if not Supervisor(store, node_id).running():
        raise DchatOpsError(f"node {node_id} is not running: start it with 'dchat-ops node up {node_id}'")
    ident = ChatIdentity.load(store, user or node.user, node.account)
    url = f"nats://127.0.0.1:{node.client_port}"

    async def on_message(m):
        click.echo(f"[{m.conversation}] {m.sender}: {m.body}")

    async def session():
        client = await ChatClient(ident, url, replicas=replicas, on_message=on_message).start()
        click.echo(f"connected as {ident.name} to node {node_id}\n{CHAT_HELP}")
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                try:
                    if not await _chat_command(client, store, line.strip()):
                        break
                except DchatOpsError as exc:
                    click.echo(f"error: {exc}")
        finally:
            await client.close()

    asyncio.run(session())


async def _chat_command(client, store, line: str) -> bool:
    if not line:
        return True
    if not line.startswith("/"):
        click.echo("say something with /say ROOM TEXT, /dm USER TEXT or /group NAME TEXT")
        return True
    cmd, _, rest = line.partition(" ")
    args = rest.split(" ", 1)
    if cmd == "/quit":
        return False
    if cmd == "/join":
        await client.join_room(args[0], store=store)
        click.echo(f"joined room {args[0]}")
    elif cmd == "/leave":
        await client.leave_room(args[0])
        click.echo(f"left room {args[0]}")
    elif cmd == "/say" and len(args) == 2:
        await client.send_room(args[0], args[1])
    elif cmd == "/dm" and len(args) == 2:
        await client.send_dm(args[0], args[1])
    elif cmd == "/group" and len(args) == 2:
        await client.send_group(args[0], args[1])
    elif cmd == "/mkgroup" and len(args) == 2:
        await client.create_group(args[0], args[1].split())
        click.echo(f"created group {args[0]}")
    elif cmd == "/add-friend":
        entry = await client.add_friend(args[0])
        click.echo(f"{args[0]} is a friend (key {entry['user_key'][:12]}..., verified)")
    elif cmd == "/friends":
        click.echo(", ".join(sorted(client.friends)) or "no friends yet: /add-friend USER")
    elif cmd == "/history":
        for m in client.history.messages(rest or None, limit=20):
            arrow = "->" if m["direction"] == "out" else "<-"
            click.echo(f"{m['conversation']} {arrow} {m['peer']}: {m['body']}")
    else:
        click.echo(CHAT_HELP)
    return True


# --- verify ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary folder for inspection.")
@json_option
def verify(keep, as_json):
    """Build a throw-away network on loopback and prove it works against real nats-servers."""
    from dchat_ops.verify import run_verify

    report = run_verify(keep=keep, progress=None if as_json else (lambda line: click.echo(line)))
    if as_json:
        emit(True, report.to_dict())
    else:
        click.echo(
            ("PASSED" if report.passed else "FAILED") + f": {sum(c.passed for c in report.checks)}"
            f"/{len(report.checks)} checks in {report.total_ms:.0f} ms"
            + (f"; files kept in {report.folder}" if keep else "")
        )
    return 0 if report.passed else 1


from dchat_ops._cli.tls_cmds import tls as _tls_group  # noqa: E402  (the tls commands live in their own module)

cli.add_command(_tls_group)


def main() -> None:
    sys.exit(run_cli(cli))


if __name__ == "__main__":
    main()
