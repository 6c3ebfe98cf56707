"""``dchat-ops tls ...``: the store's certificate authority, node certificates, TLS on a node's links.

Importing this module registers the group on ``cli``; it reads the store from the ``Ctx`` object the
root group puts in ``ctx.obj``.  No key material is ever printed.
"""

from __future__ import annotations

from typing import Optional

import click

from dchat_ops._cli.app import cli
from dchat_ops._cli.output import emit, json_option, note

__all__ = ["tls"]

# Each command imports the library when it runs, so that the help of these commands imports none of it
# (nor cryptography); hence this copy of pki.KINDS (tests/test_cli.py compares them).
CERT_KINDS = ("server", "client", "route")


def _store():
    return click.get_current_context().obj.store()


def _split(values) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _warn_nodes(store, node_ids) -> None:
    """Loud warnings (stderr) for the nodes among ``node_ids`` that run with tls.insecure or bad certs."""
    from dchat_ops.config import tls as node_tls
    from dchat_ops.config.node import NodeFile
    from dchat_ops.errors import DchatOpsError

    for nid in dict.fromkeys(node_ids):
        try:
            node = NodeFile.load(store, nid).node
        except DchatOpsError:
            continue
        for line in node_tls.tls_warnings(node, store):
            note(line)


def _mark(d: dict) -> str:
    if d.get("error"):
        return "UNREADABLE"
    marks = []
    if d.get("expired"):
        marks.append("EXPIRED")
    elif d.get("not_yet_valid"):
        marks.append("NOT YET VALID")
    elif d.get("expiring_soon"):
        marks.append(f"EXPIRES SOON ({d['days_left']} days)")
    if d.get("kind") != "ca" and d.get("signed_by_ca") is False:
        marks.append("NOT SIGNED BY THE CURRENT CA")
    if d.get("key_present") is False:
        marks.append("KEY MISSING")
    return ", ".join(marks) or "ok"


@cli.group("tls")
def tls():
    """TLS for every link: the store's CA, node certificates, and which links of a node use them."""


@tls.command("init-ca")
@click.option("--days", type=int, default=3650, show_default=True, help="Validity of the CA certificate.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every node certificate must then be re-issued).")
@json_option
def init_ca(days, force, as_json):
    """Create the store's certificate authority under <home>/pki/."""
    from dchat_ops.config import pki

    r = pki.init_ca(_store(), days=days, force=force)
    verb = "created" if r["created"] else "kept the existing"
    emit(
        as_json,
        r,
        [
            f"{verb} CA {r['subject']}",
            f"  certificate  {r['path']}",
            f"  valid until  {r['not_after']}",
            f"  sha256       {r['fingerprint_sha256']}",
        ],
    )
    if force and r["created"]:
        note("a new CA: re-issue every node certificate ('dchat-ops tls renew') and reload or restart the nodes")


@tls.command("issue")
@click.argument("kind", type=click.Choice(CERT_KINDS))
@click.option("--node", "node_id", required=True, help="The node the certificate is for.")
@click.option("--san", multiple=True, help="Extra host name or IP address (repeatable, or a comma list).")
@click.option("--days", type=int, default=397, show_default=True, help="Validity in days.")
@json_option
def issue(kind, node_id, san, days, as_json):
    """Issue (or replace) a node's server, client or route certificate, signed by the store's CA."""
    from dchat_ops.config import pki

    store = _store()
    r = pki.issue(store, node_id, kind, _split(san), days)
    emit(
        as_json,
        r,
        [
            f"issued {kind} certificate for {node_id}: {r['path']}",
            f"  names        {', '.join(r['sans'])}",
            f"  valid until  {r['not_after']}",
        ],
    )
    _warn_nodes(store, [node_id])


@tls.command("list")
@json_option
def list_(as_json):
    """List the CA and every node certificate; expired and soon-expiring ones are marked."""
    from dchat_ops.config import pki

    certs = pki.list_certs(_store())

    def human():
        if not certs:
            yield "no CA and no certificates: run 'dchat-ops tls init-ca'"
            return
        for d in certs:
            who = "CA" if d["kind"] == "ca" else f"{d['node']}/{d['kind']}"
            if d.get("error"):
                yield f"{who:<24} {_mark(d)}: {d['error']}"
                continue
            yield f"{who:<24} until {d['not_after']}  {d['days_left']:>5} days  {_mark(d)}"
            if d["sans"]:
                yield f"{'':<24} names {', '.join(d['sans'])}"

    emit(as_json, {"certificates": certs, "soon_days": pki.SOON_DAYS}, human)
    bad = [d for d in certs if d.get("expired") or d.get("error")]
    if bad and not as_json:
        note(f"{len(bad)} certificate(s) expired or unreadable: 'dchat-ops tls renew' re-issues them")


@tls.command("renew")
@click.option("--node", "node_id", help="Only this node's certificates (default: every node's).")
@click.option("--days", type=int, default=397, show_default=True, help="Validity of the new certificates.")
@click.option("--no-reload", is_flag=True, help="Do not reload the running nodes.")
@json_option
def renew(node_id: Optional[str], days, no_reload, as_json):
    """Re-issue existing certificates (same names, new keys), then reload the running nodes live."""
    from dchat_ops.config import pki
    from dchat_ops.runtime.supervisor import reload_running

    store = _store()
    renewed = pki.renew(store, node_id, days=days)
    ids = [d["node"] for d in renewed]
    reloads = [] if no_reload else reload_running(store, ids)
    failed = [r for r in reloads if r.get("error")]

    def human():
        if not renewed:
            yield "no certificates to renew"
        for d in renewed:
            yield f"renewed {d['node']}/{d['kind']} until {d['not_after']}"
        for r in reloads:
            if r.get("error"):
                yield f"node {r['node']}: reload FAILED: {r['error']}"
            elif r["reloaded"]:
                yield f"node {r['node']}: reloaded, the new certificates are in use"
            else:
                yield f"node {r['node']}: not running (the new certificates apply at its next start)"

    emit(as_json, {"renewed": renewed, "reloads": reloads}, human)
    _warn_nodes(store, ids)
    if failed:
        raise click.exceptions.Exit(1)


@tls.command("enable")
@click.option("--node", "node_id", required=True, help="The node to configure.")
@click.option("--client", is_flag=True, help="TLS on the client port.")
@click.option(
    "--client-verify", is_flag=True, help="TLS on the client port, and clients must present a certificate of this CA."
)
@click.option("--route", is_flag=True, help="Mutual TLS on cluster routes.")
@click.option("--gateway", is_flag=True, help="Mutual TLS on gateways.")
@click.option("--leafnode", is_flag=True, help="TLS on the leafnode port (mutual) and the leafnode remotes.")
@click.option("--websocket", is_flag=True, help="TLS on the websocket port.")
@click.option(
    "--insecure-tls",
    is_flag=True,
    help="Do not verify the peers this node dials (routes, gateways, leafnode hubs). DEVELOPMENT ONLY.",
)
@click.option("--san", multiple=True, help="Extra name or address for certificates issued now.")
@json_option
def enable(node_id, client, client_verify, route, gateway, leafnode, websocket, insecure_tls, san, as_json):
    """Set which links of a node use TLS (exactly the ones given; none given: every link the node has).

    Missing certificates are issued.  The node file keeps its comments.  Restart the node (or
    reload it for the client port) to apply; routes only form between nodes that agree on TLS.
    """
    from dchat_ops.config import tls as node_tls

    store = _store()
    links = [
        name
        for name, on in (
            ("client", client or client_verify),
            ("route", route),
            ("gateway", gateway),
            ("leafnode", leafnode),
            ("websocket", websocket),
        )
        if on
    ]
    if not links:
        from dchat_ops.config.node import NodeFile

        links = node_tls.applicable_links(NodeFile.load(store, node_id).node)
    if insecure_tls:
        note(
            f"WARNING: --insecure-tls: node {node_id} will NOT verify the certificates of the routes, gateways "
            "and leafnode hubs it dials. Anyone on the path can impersonate them. Development only, never in production."
        )
    r = node_tls.enable(store, node_id, links, insecure=insecure_tls, client_verify=client_verify, sans=_split(san))

    def human():
        on = [k if v is True else f"{k} ({v})" for k, v in r["tls"].items() if k != "insecure"]
        yield f"node {node_id}: TLS on {', '.join(on) or 'no link'}" + (
            " (INSECURE)" if r["tls"].get("insecure") else ""
        )
        for d in r["issued"]:
            yield f"  issued {d['kind']} certificate {d['path']}"
        yield f"  apply it: restart the node (client TLS also reloads live: dchat-ops node reload {node_id})"

    emit(as_json, r, human)
    for line in r["warnings"]:
        note(line)
