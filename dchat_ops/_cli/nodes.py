"""Nodes: add, up, down, status, reload, logs, render."""

from __future__ import annotations

import click

from dchat_ops._cli.app import Ctx, cli, parsed, pass_ctx
from dchat_ops._cli.output import emit, json_option, note
from dchat_ops._time import format_time
from dchat_ops.errors import DchatOpsError

# a port given on the command line: out of range is a usage error (exit 2), like any bad option value
PORT = click.IntRange(1, 65535)

# --- nodes ---------------------------------------------------------------------------------------------


@cli.group()
def node():
    """Node configs and supervised nats-server processes."""


def _gateways(values) -> list[tuple[str, str]]:
    from dchat_ops.config.node import GATEWAY_SCHEMES
    from dchat_ops.errors import FieldError
    from dchat_ops.hosts import check_url
    from dchat_ops.nsc.store import check_name

    out = []
    for v in values or ():
        name, sep, url = v.partition("=")
        if not sep:
            raise FieldError("--gateway", f"{v!r} is not NAME=nats://host:port")
        parsed("--gateway", check_name, name.strip(), "gateway name")
        parsed("--gateway", check_url, url.strip(), GATEWAY_SCHEMES, f"--gateway {name.strip()}")
        out.append((name.strip(), url.strip()))
    return out


def _check_node_options(node_id, host, advertise, seed_route, leaf_of, monitor_host=None) -> None:
    """The values of ``node add`` checked before anything is read or written: a bad one is exit 2."""
    from dchat_ops.config.node import LEAF_SCHEMES, ROUTE_SCHEMES
    from dchat_ops.hosts import check_advertise, check_host, check_url
    from dchat_ops.nsc.store import check_name

    check_name(node_id, "node id")
    parsed("--host", check_host, host, "--host")
    if monitor_host is not None:
        parsed("--monitor-host", check_host, monitor_host, "--monitor-host")
    if advertise is not None:
        parsed("--advertise", check_advertise, advertise, "--advertise", port_required=False)
    for route in seed_route:
        parsed("--seed-route", check_url, route, ROUTE_SCHEMES, "--seed-route")
    for url in leaf_of:
        parsed("--leaf-of", check_url, url, LEAF_SCHEMES, "--leaf-of")


@node.command("add")
@click.argument("node_id")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (0.0.0.0 for a public node).")
@click.option("--client-port", type=PORT, help="Client port (default: a free port).")
@click.option("--monitor-port", type=PORT, help="Monitoring port (default: a free port).")
@click.option(
    "--monitor-host",
    help="Where monitoring listens (default 127.0.0.1, also for a public node: it shows connections and accounts).",
)
@click.option("--cluster-port", type=PORT, help="Cluster (route) port (default: a free port).")
@click.option("--cluster-name", default="dchat", show_default=True)
@click.option("--no-cluster", is_flag=True, help="A node without routes (a leaf or a lone server).")
@click.option(
    "--advertise",
    help="host[:port] others should use to reach this one: advertised to clients, the cluster, gateways, leaf nodes"
    " and websocket clients, each on its own port (default: detected when --host is 0.0.0.0). An IPv6 address goes"
    " in brackets: [fd00::1].",
)
@click.option("--seed-route", multiple=True, help="nats-route://host:port of any node already in the cluster.")
@click.option("--gateway", multiple=True, help="NAME=nats://host:port of another cluster's gateway.")
@click.option("--gateway-port", type=PORT, help="Listen for gateways on this port.")
@click.option("--leaf-of", multiple=True, help="nats-leaf://host:port of a hub: run as a leaf node.")
@click.option("--leaf-port", type=PORT, help="Accept leaf nodes on this port (a hub).")
@click.option("--websocket-port", type=PORT)
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
    monitor_host,
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

    # a bad address is a usage error (exit 2), found before anything is written
    _check_node_options(node_id, host, advertise, seed_route, leaf_of, monitor_host)
    gateways = _gateways(gateway)
    r = nodes.add_node(
        c.store(),
        node_id,
        host=host,
        client_port=client_port,
        monitor_port=monitor_port,
        monitor_host=monitor_host,
        cluster=not no_cluster,
        cluster_name=cluster_name,
        cluster_port=cluster_port,
        advertise=advertise,
        seed_routes=list(seed_route),
        gateway_port=gateway_port,
        gateways=gateways,
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
        yield f"  client {nodes.client_url(n)}  monitor {n.monitor_port}" + (
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
    several = len(store.operator_names()) > 1
    for n in list_nodes(store):
        try:
            sup = Supervisor(store, n)
            rows.append(sup.status().to_dict())
            if several:  # a home with several operators: whose node it is
                from dchat_ops.config.node import node_operators

                rows[-1]["operator"] = ", ".join(node_operators(store, sup.node())) or None
        except DchatOpsError as exc:
            rows.append({"id": n, "running": False, "error": str(exc)})
    emit(
        as_json,
        rows,
        lambda: (
            [
                f"{r['id']:<20} "
                + (f"operator {r['operator']}, " if r.get("operator") else "")
                + (r["error"] if r.get("error") else "running pid " + str(r["pid"]) if r["running"] else "stopped")
                + (
                    f", {_plural(len(r['warnings']), 'warning')}: dchat-ops node status {r['id']}"
                    if r.get("warnings")
                    else ""
                )
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _status_lines(d: dict) -> list[str]:
    warnings = list(d.get("warnings") or [])
    if not d["running"]:
        return [f"node {d['id']}: stopped", *warnings]
    links = d.get("links") or {}
    gist = []  # a node that is not connected as it should be is never called simply healthy
    if links.get("isolated"):
        gist.append("isolated")
    elif links.get("missing"):
        gist.append("no route to " + ", ".join(links["missing"]))
    if links.get("leaf_remotes_down"):
        gist.append("leaf connection down")
    if links.get("gateways_down"):
        gist.append("no gateway to " + ", ".join(links["gateways_down"]))
    state = "healthy" if d["healthy"] else "NOT healthy"
    if gist:
        state += " but " + "; ".join(gist)
    if warnings:
        state += f" ({_plural(len(warnings), 'warning')})"
    servers = links.get("servers") or []
    of_cluster = f"; {len(links.get('routes_to') or [])} of {len(servers)} servers of cluster {links.get('cluster')}"
    return [
        f"node {d['id']}: running (pid {d['pid']}), {state}",
        *warnings,
        f"  server {d.get('server_name')} nats-server {d.get('version')}, {d.get('connections')} connections",
        f"  routes to {', '.join(d.get('routes') or []) or '-'} ({d.get('route_count')} connections"
        + (of_cluster if links.get("cluster") else "")
        + ")",
        f"  gateways {', '.join(d.get('gateways') or []) or '-'};"
        f" leaf nodes {', '.join(leaf['name'] or '?' for leaf in d.get('leafnodes') or []) or '-'}",
    ]


def _catch_up_lines(c: dict) -> list[str]:
    lines = []
    for r in c.get("caught_up") or []:
        lines.append(f"  caught up {r['name']} from {', '.join(r['from'])} (issued {format_time(r['issued_at'])})")
    for r in c.get("kept") or []:
        lines.append(f"  kept {r['name']}: its own resolver holds a newer JWT (issued {format_time(r['issued_at'])})")
    for r in c.get("replaced") or []:
        lines.append(f"  replaced its resolver's copy of {r['name']}: {r['message']}")
    for r in c.get("refused") or []:
        lines.append(f"  refused {r['name'] or r['account']} from {r['server']}: {r['message']}")
    for r in c.get("peers") or []:
        if not r["ok"]:
            lines.append(f"  peer {r['server']} did not answer: {r['message']}")
    return lines


@node.command("up")
@click.argument("node_id")
@click.option("--nats-server", "binary", envvar="DCHAT_OPS_NATS_SERVER", help="nats-server binary to run.")
@json_option
@pass_ctx
def node_up(c: Ctx, node_id, binary, as_json):
    """Start a node's nats-server from the newest account JWTs (the store's, or newer ones its running peers
    hold); wait until it is healthy and holds them, and (a few seconds at most) for its routes."""
    from dchat_ops.runtime.supervisor import Supervisor

    sup = Supervisor(c.store(), node_id, binary=binary)
    was = sup.running()
    st = sup.up().to_dict()
    st.setdefault("catch_up", None)
    emit(
        as_json,
        st,
        (["already running"] if was else []) + _status_lines(st) + _catch_up_lines(st["catch_up"] or {}),
    )


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
    """Health, routes, gateways and leaf nodes of a node, and warnings: isolated, missing routes, leaf down."""
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


@node.command("sync")
@click.argument("node_id")
@click.option("--restart", is_flag=True, help="Restart a running node instead of reloading it.")
@json_option
@pass_ctx
def node_sync(c: Ctx, node_id, restart, as_json):
    """Bring the node's user JWT and creds, its rendered config and the running server in line with its node file."""
    from dchat_ops.permissions.apply import apply_node_change

    r = apply_node_change(c.store(), node_id, mode="restart" if restart else "live")
    emit(as_json, r.to_dict(), [f"node {node_id}: {r.outcome}", *r.messages])


@node.command("rm")
@click.argument("node_id")
@click.option("--keep-user", is_flag=True, help="Keep the node's local user (default: revoke and delete it).")
@json_option
@pass_ctx
def node_rm(c: Ctx, node_id, keep_user, as_json):
    """Remove a node: stop it, delete its node file, run folder and certificates, and revoke its user."""
    from dchat_ops.nsc.store import check_name
    from dchat_ops.permissions.apply import remove_node

    check_name(node_id, "node id")
    r = remove_node(c.store(), node_id, keep_user=keep_user)
    lines = [f"removed node {node_id}" + (" (stopped it first)" if r.stopped else "")]
    if not r.user_revoked:
        lines.append(f"  its user {r.user} is kept")
    lines += [f"  {m}" for m in r.messages]
    emit(as_json, r.to_dict(), lines)


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
