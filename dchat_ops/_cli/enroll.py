"""Enrolling devices: request (on the device), sign (operator), import (device), list and revoke (operator)."""

from __future__ import annotations

import click

from dchat_ops._cli.app import Ctx, _split, cli, pass_ctx
from dchat_ops._cli.output import emit, fail, json_option


def _check(param: str, fn, *args) -> None:
    """A bad value on the command line is a usage error (exit 2), before anything is read or written."""
    from dchat_ops.errors import DchatOpsError

    try:
        fn(*args)
    except DchatOpsError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


def _subjects(param: str, values) -> list[str]:
    from dchat_ops.subjects import check_subject

    out = _split(values)
    for v in out:
        _check(param, check_subject, v)
    return out


@cli.group("enroll")
def enroll():
    """Equip a device with its own keys: a signed request, the operator's signed answer, no seed travels."""


@enroll.command("request")
@click.option("--device", required=True, help="This device's name (its system user is <device>-sys).")
@click.option("--operator", "operator_key", required=True, help="The operator's public key (O...), as it gave it.")
@click.option("--user", default="", help="The device's user (default: the device's name).")
@click.option("--node", "node_id", default="", help="The device's node (default: <device>-node).")
@click.option("--account", default="", help="The account to join (default: the operator's choice).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen host of the node.")
@click.option("--client-port", type=click.IntRange(1, 65535), help="Client port (default: picked).")
@click.option("--monitor-port", type=click.IntRange(1, 65535), help="Monitoring port (default: picked).")
@click.option("--cluster-port", type=click.IntRange(1, 65535), help="Cluster port (default: picked).")
@click.option("--cluster-name", default="dchat", show_default=True)
@click.option("--seed-route", multiple=True, help="Route URL of a node to join through (repeatable).")
@click.option("--leaf-of", multiple=True, help="Run as a leaf node of this hub URL (repeatable) instead of routes.")
@click.option("--advertise", default="", help="Address to advertise to the cluster.")
@click.option("--want-sub", multiple=True, help="Subjects the device's users want to subscribe to (repeatable).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the request.")
@click.option("--force", is_flag=True, help="Make a new request (new keys) although one was made.")
@json_option
@pass_ctx
def request_cmd(
    c: Ctx,
    device,
    operator_key,
    user,
    node_id,
    account,
    host,
    client_port,
    monitor_port,
    cluster_port,
    cluster_name,
    seed_route,
    leaf_of,
    advertise,
    want_sub,
    out,
    force,
    as_json,
):
    """Make this device's keys here and write a request holding only public keys and names."""
    from dchat_ops.config.enroll import make_request
    from dchat_ops.config.node import LEAF_SCHEMES, ROUTE_SCHEMES, check_url
    from dchat_ops.nsc.keys import check_public_key
    from dchat_ops.nsc.store import check_name

    _check("--device", check_name, device, "device name")
    _check("--operator", check_public_key, operator_key, "operator", "--operator")
    for param, value in (("--user", user), ("--node", node_id), ("--account", account)):
        if value:
            _check(param, check_name, value, param[2:])
    for url in _split(seed_route):
        _check("--seed-route", check_url, url, ROUTE_SCHEMES, "--seed-route")
    for url in _split(leaf_of):
        _check("--leaf-of", check_url, url, LEAF_SCHEMES, "--leaf-of")
    want_sub = _subjects("--want-sub", want_sub)

    path, body = make_request(
        c.store(must_exist=False),
        device,
        operator=operator_key,
        out=out,
        user=user,
        node_id=node_id,
        account=account,
        host=host,
        client_port=client_port,
        monitor_port=monitor_port,
        cluster_port=cluster_port,
        cluster_name=cluster_name,
        cluster=not leaf_of,
        seed_routes=_split(seed_route),
        leaf_of=_split(leaf_of),
        advertise=advertise,
        want_sub=want_sub,
        force=force,
    )
    data = {"request": str(path), "id": body["id"], "device": device, "keys": body["keys"], "names": body["names"]}
    emit(
        as_json,
        data,
        [
            f"wrote {path}: request {body['id'][:12]}… of device {device} (public keys only; the seeds stay here)",
            "  give it to the operator: dchat-ops enroll sign " + path.name + " -o <response>",
        ],
    )


def _summary(body) -> list[str]:
    n = body["node"]
    how = (
        f"leaf of {', '.join(n['leaf_of'])}"
        if n.get("leaf_of")
        else (f"routes via {', '.join(n.get('seed_routes') or []) or '(this store’s nodes)'}")
    )
    return [
        f"device {body['device']}: user {body['names']['user']}, node {n['id']} ({how}), system user {body['names']['system']}",
        f"  keys: user {body['keys']['user']}, node {body['keys']['node']}, system {body['keys']['system']}",
        f"  account: {body.get('account') or '(the signer chooses: the current account by default)'}",
        f"  asks to subscribe to: {', '.join(body.get('want_sub') or []) or 'nothing'}",
        f"  operator: {body.get('operator') or '(none named)'}",
    ]


def _grant_summary(body) -> list[str]:
    return [
        f"grant request of device {body.get('device')} (node {body.get('node')}, signed by its user key {body['signer']})",
        f"  asks to subscribe to: {', '.join(body.get('want_sub') or []) or 'nothing'}",
        "  'dchat-ops enroll sign' grants that by default; --grant-sub says what to grant in all instead",
    ]


def _is_grant_request(path) -> bool:
    from dchat_ops.nsc.enroll import KINDS

    try:
        with open(path, "rb") as fh:
            return fh.read(64).startswith(f"-----BEGIN {KINDS['grant']}-----".encode())
    except OSError:
        return False  # the reader says what is wrong with it


@enroll.command("show")
@click.argument("request", type=click.Path(dir_okay=False))
@json_option
def show_cmd(request, as_json):
    """Show a request (or a grant request) after checking its signature (nothing is written)."""
    from dchat_ops.config.enroll import show_request
    from dchat_ops.nsc.enroll import read_envelope

    if _is_grant_request(request):
        body = read_envelope(request, "grant", "grant request")
        emit(as_json, body, _grant_summary(body))
        return
    body = show_request(request)
    emit(as_json, body, _summary(body))


@enroll.command("sign")
@click.argument("request", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the response.")
@click.option(
    "--account", "-a", default="", help="Account of the device's users (default: the request's, else the current)."
)
@click.option(
    "--grant-sub", multiple=True, help="What the device's users may ever subscribe to (default: what it asks)."
)
@click.option(
    "--seed-route", multiple=True, help="Where its node joins (default: the request's, else this store's nodes)."
)
@click.option(
    "--tls",
    "tls_links",
    multiple=True,
    type=click.Choice(["route", "leafnode"]),
    help="Links of its node that use TLS (default: those this store's nodes use); certificates from the store's CA.",
)
@click.option("--no-tls", is_flag=True, help="Its node uses no TLS, whatever this store's nodes do.")
@click.option("--force", is_flag=True, help="Replace --out.")
@json_option
@pass_ctx
def sign_cmd(c: Ctx, request, out, account, grant_sub, seed_route, tls_links, no_tls, force, as_json):
    """Check a device's request (or grant request), show it, and sign the response; the device is recorded."""
    from dchat_ops.config.enroll import show_request, sign_grant, sign_request

    grant = _subjects("--grant-sub", grant_sub) or None
    store = c.store()
    if _is_grant_request(request):
        r = sign_grant(store, request, out=out, grant=grant, force=force)
        emit(as_json, r, [f"device {r['device']}: grant now {', '.join(r['grant'])}", f"wrote {r['out']}"])
        return
    lines = _summary(show_request(request))
    r = sign_request(
        store,
        request,
        out=out,
        account=account,
        grant=grant,
        seed_routes=_split(seed_route) or None,
        tls=[] if no_tls else (list(tls_links) or None),
        force=force,
    )
    emit(
        as_json,
        r,
        [
            *lines,
            f"signed: device {r['device']} in account {r['account']}, may subscribe to "
            f"{', '.join(r['grant']) or 'nothing'}",
            *([f"  TLS on {', '.join(r['tls'])}: certificates from this store's CA"] if r["tls"] else []),
            f"wrote {r['out']} (JWTs and routes only, no seed): the device runs 'dchat-ops enroll import {r['out']}'",
        ],
    )


@enroll.command("import")
@click.argument("response", type=click.Path(dir_okay=False))
@json_option
@pass_ctx
def import_cmd(c: Ctx, response, as_json):
    """Check the operator's response against this device's request and make its store and node."""
    from dchat_ops.config.enroll import import_response

    r = import_response(c.store(must_exist=False), response)
    if r["first"]:
        lines = [
            f"device {r['device']} enrolled with operator {r['operator']}: users {', '.join(r['users'].values())}",
            f"  may subscribe to: {', '.join(r['grant']) or 'nothing'}",
            f"  start its node: dchat-ops node up {r['node']}",
        ]
    else:
        lines = [f"device {r['device']}: grant now {', '.join(r['grant'])}"]
    emit(as_json, r, lines)


@enroll.command("list")
@json_option
@pass_ctx
def list_cmd(c: Ctx, as_json):
    """The devices this operator enrolled."""
    from dchat_ops.config.enroll import list_devices

    rows = list_devices(c.store())

    def human():
        if not rows:
            yield "no device enrolled"
        for r in rows:
            state = "revoked" if r.get("revoked_at") else "enrolled"
            yield (
                f"{r['device']}: {state}, user {r['names']['user']}, node {r['names']['node']}, "
                f"account {r['account']}, grant {', '.join(r['grant']) or 'nothing'}"
            )

    emit(as_json, rows, human)


@enroll.command("revoke")
@click.argument("device")
@click.option("--no-push", is_flag=True, help="Only change the store; do not push to running nodes.")
@json_option
@pass_ctx
def revoke_cmd(c: Ctx, device, no_push, as_json):
    """Revoke a device: every JWT of its users issued until now, pushed to the running nodes."""
    from dchat_ops.config.enroll import revoke_device
    from dchat_ops.runtime import push

    store = c.store()
    r = revoke_device(store, device)
    report = None
    if not no_push and push.running_nodes(store):
        report = push.push(store, r["accounts"])
    emit(
        as_json,
        {**r, "push": report.to_dict() if report else None},
        [f"revoked device {device} (accounts {', '.join(r['accounts'])})"]
        + ([f"  pushed: {'ok' if report.ok else 'FAILED'}"] if report else ["  no node running: nothing pushed"]),
    )
    if report is not None and not report.ok:
        fail("a server did not take the revocation; run 'dchat-ops push'")
