"""Nodes of a network: create node configs, derive each node's user and server config, check them all.

    >>> r = add_node(store, "a", seed_routes=[])                     # a first node
    >>> add_node(store, "b", seed_routes=[route_url(store, "a")])     # b joins through a
    >>> path = render_node(store, "b")                               # checked nats-server.conf
    >>> client_url(node), monitor_url(node)                          # how this machine reaches a node

Every URL to a node is made here (on :mod:`dchat_ops.hosts`): a wildcard listen host is dialled on
loopback, a specific one as it is, and the client URL says ``tls://`` when the node's client port
uses TLS.

A node's policy is enforced in two places: the JWT of the node's local user (what its clients
may publish and subscribe to) and the route import permissions of its cluster block (which
subjects flow into the node from the rest of the cluster).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from dchat_ops.config.node import (
    GATEWAY_SCHEMES,
    LEAF_SCHEMES,
    ROUTE_SCHEMES,
    Node,
    NodeFile,
    check_node_operator,
    inbox_prefix,
    node_path,
    read_nodes,
)
from dchat_ops.config.server import (
    Resolver,
    ServerConfig,
    semantic_check,
    write_and_check,
)
from dchat_ops.config.tls import apply_tls, tls_flags
from dchat_ops.errors import ConfigError, ExistsError, StoreError
from dchat_ops.hosts import (
    LOOPBACK,
    check_advertise,
    check_host,
    check_url,
    choose_advertise,
    dial_host,
    host_of,
    host_port,
    listeners_overlap,
    local_addresses,
)
from dchat_ops.hosts import url as host_url
from dchat_ops.natsbin import free_port
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.subjects import matches, split_queue

__all__ = [
    "SYSTEM_IMPORTS",
    "AddNodeResult",
    "RouteChange",
    "add_node",
    "advertise_on",
    "check_port_clashes",
    "client_url",
    "dependent_nodes",
    "device_node_user_spec",
    "hosted_leaves",
    "leaf_hubs",
    "monitor_host",
    "monitor_url",
    "node_user_spec",
    "pick_port",
    "render_node",
    "route_change",
    "route_imports",
    "route_url",
    "run_dir",
    "server_config",
    "sync_node_user",
]

# Subjects that must flow into every node whatever the chat policy says (each found necessary by
# experiment, see docs/permissions.md): system account events and account pushes ($SYS), replies
# (_INBOX, and _R_ for service-import replies such as the JetStream API), JetStream's API, acks,
# raft and catch-up ($JS, $NRG, $JSC), KV and object store writes ($KV, $O), gateway replies (_GR_).
SYSTEM_IMPORTS = ["$SYS.>", "_INBOX.>", "_R_.>", "$JS.>", "$JSC.>", "$NRG.>", "$KV.>", "$O.>", "_GR_.>"]
# The chat runtime's store-and-forward mail: end-to-end sealed, captured by a JetStream stream that may
# live on any node, so every node must let it in (who may read it is decided by the user JWTs).
CHAT_IMPORTS = ["dchat.mail.>", "dchat.group.>"]


def run_dir(store: Store, node_id: str) -> Path:
    """Where a node's rendered config, pid file, log, resolver and JetStream data live."""
    return store.location.run_dir / check_name(node_id, "node id")


def _used_ports(store: Store, exclude: str = "", host: str = "127.0.0.1") -> set[int]:
    """Ports of the store's other nodes that listen where a node on ``host`` would."""
    used: set[int] = set()
    for nid, other in read_nodes(store).items():
        if nid != exclude and listeners_overlap(other.host, host):
            used.update(p for _, p in other.ports())
        elif nid != exclude:
            used.add(other.monitor_port)  # monitoring may share loopback with nodes on other hosts
    return used


def pick_port(store: Store, node_id: str, host: str = "127.0.0.1", taken: Sequence[int] = ()) -> int:
    """A free port for a new listener of ``node_id``: used by no other node of the store on that host."""
    return _pick_port(_used_ports(store, exclude=node_id, host=host) | set(taken), host)


def _pick_port(used: set[int], host: str = "127.0.0.1") -> int:

    for _ in range(100):
        p = free_port(dial_host(host))
        if p not in used:
            used.add(p)
            return p
    raise ConfigError("could not find a free port")


@dataclass
class AddNodeResult:
    node: Node
    path: Path
    messages: list[str] = field(default_factory=list)
    creds_path: str = ""

    def to_dict(self) -> dict:
        n = self.node
        return {
            "id": n.id,
            "path": str(self.path),
            "client_port": n.client_port,
            "monitor_port": n.monitor_port,
            "cluster": n.cluster,
            "gateway": n.gateway,
            "leafnodes": n.leafnodes,
            "websocket": n.websocket,
            "advertise": n.advertise,
            "identity": n.identity,
            "creds_path": self.creds_path,
            "messages": self.messages,
        }


def add_node(
    store: Store,
    node_id: str,
    *,
    host: str = "127.0.0.1",
    client_port: Optional[int] = None,
    monitor_port: Optional[int] = None,
    monitor_host: Optional[str] = None,
    cluster: bool = True,
    cluster_name: str = "dchat",
    cluster_port: Optional[int] = None,
    advertise: Optional[str] = None,
    seed_routes: tuple[str, ...] | list[str] = (),
    gateway_port: Optional[int] = None,
    gateways: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    leaf_of: tuple[str, ...] | list[str] = (),
    leaf_port: Optional[int] = None,
    websocket_port: Optional[int] = None,
    jetstream: bool = False,
    resolver: str = "full",
    allow_delete: bool = False,
    account: Optional[str] = None,
    force: bool = False,
    grant: Optional[Sequence[str]] = None,
) -> AddNodeResult:
    """Create ``nodes/<id>.yaml`` and the node's local user (default-deny subscribe).  Free ports are picked.

    ``grant``: the node of an enrolled device, whose user the operator signed already (with that grant,
    see :func:`device_node_user_spec`): the user is not made here, it must be in the store.
    """
    check_name(node_id, "node id")
    check_name(cluster_name, "cluster name")
    check_host(host, "--host")
    if monitor_host:
        check_host(monitor_host, "--monitor-host")
    if advertise:
        check_advertise(advertise, "--advertise", port_required=False)
    store.require()
    given_ports = [p for p in (client_port, monitor_port, cluster_port, gateway_port, leaf_port, websocket_port) if p]
    if len(given_ports) != len(set(given_ports)):
        raise ConfigError(f"node {node_id}: the same port is given for two listeners")
    path = node_path(store, node_id)
    if path.exists() and not force:
        raise ExistsError(f"node {node_id} already exists ({path}); use --force to replace it")
    account = account or store.default_account()
    store.account(account)  # must exist
    for route in seed_routes:
        check_url(route, ROUTE_SCHEMES, "--seed-route")
    for name, url in gateways:
        check_name(name, "gateway name")
        check_url(url, GATEWAY_SCHEMES, f"--gateway {name}")
    for url in leaf_of:
        check_url(url, LEAF_SCHEMES, "--leaf-of")
    if (gateways or gateway_port) and not cluster:
        raise ConfigError("a gateway node needs a cluster (the gateway name is the cluster name)")
    messages = []
    used = _used_ports(store, exclude=node_id, host=host)
    for given, what in (
        (client_port, "client"),
        (monitor_port, "monitor"),
        (cluster_port, "cluster"),
        (gateway_port, "gateway"),
        (leaf_port, "leafnode"),
        (websocket_port, "websocket"),
    ):
        if given is not None and given in used:
            raise ConfigError(f"{what} port {given} is already used by another node of this store on the same host")
    client_port = client_port or _pick_port(used, host)
    monitor_port = monitor_port or _pick_port(used, host)
    nf = NodeFile.new(
        path,
        id=node_id,
        server_name=node_id,
        host=host,
        client_port=client_port,
        monitor_port=monitor_port,
        resolver=resolver,
        account=account,
        user=node_id,
    )
    if monitor_host:
        nf.set(("monitor_host",), monitor_host)
    addr = why = ""
    if host in ("0.0.0.0", "::") or advertise:
        addr, why = choose_advertise(local_addresses() if not advertise else [], advertise)
        # clients are told the same host (on the client port); every other listener below too
        nf.set(("advertise",), host_port(host_of(addr), client_port))
        messages.append(f"advertising {host_port(host_of(addr), client_port)} to clients: {why}")
    if cluster:
        cport = cluster_port or _pick_port(used, host)
        cl = {"name": cluster_name, "port": cport, "routes": list(seed_routes)}
        if addr:
            cl["advertise"] = addr if ":" in addr.rsplit("]", 1)[-1] else f"{addr}:{cport}"
            messages.append(f"advertising {cl['advertise']} to the cluster: {why}")
        nf.set(("cluster",), cl)
    if gateways or gateway_port:
        gport = gateway_port or _pick_port(used, host)
        gw: dict = {"name": cluster_name, "port": gport, "remotes": [{"name": n, "urls": [u]} for n, u in gateways]}
        if addr:
            gw["advertise"] = host_port(host_of(addr), gport)
            messages.append(f"advertising {gw['advertise']} to other gateways: {why}")
        nf.set(("gateway",), gw)
    if leaf_of or leaf_port:
        lf: dict = {}
        if leaf_port:
            lf["port"] = leaf_port
            if addr:  # a hub tells its leaf nodes where to reconnect: the address they can reach
                lf["advertise"] = host_port(host_of(addr), leaf_port)
                messages.append(f"advertising {lf['advertise']} to leaf nodes: {why}")
        if leaf_of:
            lf["remotes"] = [{"urls": list(leaf_of), "account": account, "user": node_id}]
        nf.set(("leafnodes",), lf)
    if allow_delete:
        nf.set(("resolver_allow_delete",), True)
    if websocket_port:
        ws: dict = {"port": websocket_port}
        if addr:
            ws["advertise"] = host_port(host_of(addr), websocket_port)
            messages.append(f"advertising {ws['advertise']} to websocket clients: {why}")
        nf.set(("websocket",), ws)
    if jetstream:
        nf.set(("jetstream",), {"enabled": True})
        if cluster and not seed_routes:
            messages.append(
                "JetStream in a cluster answers once other nodes have joined and elected a leader; "
                "for a lone JetStream node use --no-cluster"
            )
    if grant is not None:  # after the account, before the user (whose trailing comment is the next key's)
        nf.set(("identity", "grant"), list(grant))
        ident = nf.doc["identity"]
        ident.move_to_end("user")
        ident.yaml_set_comment_before_after_key(
            "grant", before="what its operator lets this device's users subscribe to (in their JWTs; a copy)", indent=2
        )
    node = nf.refresh()
    user_path = store.user_jwt_path(store.current_operator(), account, node_id)
    if grant is not None:
        if not user_path.exists():
            raise StoreError(f"node {node_id}: its user is not in account {account}")
        store.write_file(path, nf.text())
        return AddNodeResult(node, path, messages, str(store.creds_path(store.current_operator(), account, node_id)))
    if user_path.exists() and not force:
        raise ExistsError(f"user {node_id} already exists in account {account}; use --force to reuse the name")
    with store.transaction():  # the user and the node file: both or neither, also across a kill
        r = admin.add_user(store, account, node_id, node_user_spec(node), force=force)
        store.write_file(path, nf.text())
    return AddNodeResult(node, path, messages, r.creds_path)


def device_node_user_spec(node_id: str, grant: Sequence[str]) -> admin.UserSpec:
    """The user of an enrolled device's node, as its operator signs it: subscribe within ``grant`` (and its
    reply inbox), publish anywhere.  The node's policy chooses within the grant (its route imports)."""
    return admin.UserSpec(pub_allow=[], pub_deny=[], sub_allow=[*grant, f"{inbox_prefix(node_id)}.>"], sub_deny=[])


def node_user_spec(node: Node) -> admin.UserSpec:
    """The node user's permissions: the policy, plus its own reply inbox for subscribe (an enrolled
    device's node: its grant, see :func:`device_node_user_spec`)."""
    if "grant" in node.identity:
        return device_node_user_spec(node.id, node.identity["grant"])
    pub_allow = [] if node.policy.publish.allow == [">"] else list(node.policy.publish.allow)
    sub_allow = list(node.policy.subscribe.allow)
    if ">" not in sub_allow:
        sub_allow.append(f"{inbox_prefix(node.id)}.>")
    return admin.UserSpec(
        pub_allow=pub_allow,
        pub_deny=list(node.policy.publish.deny),
        sub_allow=sub_allow,
        sub_deny=list(node.policy.subscribe.deny),
    )


def check_leaf_queue_entries(node: Node, old: Optional[Node] = None) -> None:
    """ConfigError when leaf node ``node`` allows a subscribe entry with a queue group (``orders.*
    workers``) that ``old`` (the node before an edit, when given) did not.

    The leaf connection presents the node user's JWT: the leaf server sends the hub its interest
    only in subjects that JWT allows as plain subjects (queue group or not), and the hub sends down
    only subjects it allows as plain subjects, so such an entry lets nothing through the connection.
    """
    if not (node.leafnodes or {}).get("remotes"):
        return
    had = set(old.policy.subscribe.allow) if old is not None and (old.leafnodes or {}).get("remotes") else set()
    for entry in node.policy.subscribe.allow:
        if " " in entry and entry not in had:
            subject = entry.split(" ")[0]
            raise ConfigError(
                f"node {node.id} is a leaf node: its hub sends down subjects only, so a queue group in its"
                f" subscribe allow list ({entry!r}) lets nothing through; allow {subject!r} instead"
                " (queue subscriptions on the leaf then work)"
            )


def sync_node_user(store: Store, node: Node) -> admin.UserResult:
    """Re-issue the node user's JWT and creds when they differ from the policy (no-op otherwise)."""
    return admin.edit_user(store, node.account, node.user, node_user_spec(node))


def _leaf_listener_matches(url_text: str, hub: Node) -> bool:
    """True when a leafnode remote URL dials ``hub``'s leafnode listener: its listen host (a wildcard
    one on loopback) or its advertised address, on its port."""
    lf = hub.leafnodes or {}
    if not lf.get("port"):
        return False
    try:
        parts = urlsplit(url_text)
        dialled = (dial_host(parts.hostname or ""), parts.port)
    except ValueError:
        return False
    listen = lf.get("host") or hub.host
    endpoints = {(dial_host(listen), lf["port"])}
    adv = lf.get("advertise") or ""
    if adv:
        tail = adv.rsplit("]", 1)[-1]
        port = int(tail.rsplit(":", 1)[1]) if ":" in tail else lf["port"]
        endpoints.add((dial_host(host_of(adv)), port))
    return dialled in endpoints


def leaf_hubs(store: Store, leaf: Node, others: Optional[dict[str, Node]] = None) -> list[str]:
    """The nodes of this store whose leafnode listener one of ``leaf``'s remotes dials."""
    remotes = (leaf.leafnodes or {}).get("remotes") or []
    if not remotes:
        return []
    others = others if others is not None else read_nodes(store)
    return [
        hid
        for hid, hub in others.items()
        if hid != leaf.id and any(_leaf_listener_matches(u, hub) for rem in remotes for u in rem["urls"])
    ]


def hub_group(node: Node, others: dict[str, Node]) -> list[str]:
    """``node`` and the nodes of its cluster (same cluster name): a leaf of one of them may move to any."""
    if not node.cluster:
        return [node.id]
    name = node.cluster["name"]
    return [nid for nid, n in others.items() if nid == node.id or (n.cluster and n.cluster["name"] == name)]


def hosted_leaves(store: Store, node: Node, others: Optional[dict[str, Node]] = None) -> list[Node]:
    """Leaf nodes of this store attached to ``node`` or to another node of its cluster.

    Their subscribe subjects must flow to ``node`` from the cluster, or a message published on a
    hub other than the leaf's own never reaches the leaf.
    """
    others = others if others is not None else read_nodes(store)
    others = {**others, node.id: node}  # the node as given (it may not be saved yet)
    group = set(hub_group(node, others))
    return [
        leaf for lid, leaf in others.items() if lid != node.id and group.intersection(leaf_hubs(store, leaf, others))
    ]


def dependent_nodes(store: Store, node_id: str) -> list[str]:
    """Other nodes whose rendered config follows ``node_id``'s policy: the hubs (and their cluster
    peers) of a leaf node.  They must be re-rendered when its policy changes."""
    others = read_nodes(store)
    node = others.get(node_id)
    if node is None:
        return []
    out: list[str] = []
    for hid in leaf_hubs(store, node, others):
        for nid in hub_group(others[hid], others):
            if nid != node_id and nid not in out:
                out.append(nid)
    return out


def _subscribe_subjects(node: Node) -> list[str]:
    return [split_queue(s)[0] for s in node.policy.subscribe.allow]


def route_imports(node: Node, leaves: Sequence[Node] = ()) -> Optional[dict]:
    """Route import permissions: what may flow into this node from the cluster (None: everything).

    A node sends its subscription interest over routes only for imported subjects, so messages on
    any other subject never reach it, whichever of its users subscribes.  The subscribe subjects of
    the leaf nodes hosted by its cluster (``leaves``) are imported too, so that their messages reach
    whichever hub the leaf is attached to; who receives them is still decided by each user's JWT.
    """
    allow = _subscribe_subjects(node)
    for leaf in leaves:
        allow += [*_subscribe_subjects(leaf), f"{inbox_prefix(leaf.id)}.>"]
    if ">" in allow:
        return None
    # Only an allow list: an import deny is matched against subscription subjects, so a broader
    # wildcard subscription would still receive a denied subject; deny is enforced in the user JWT.
    imports = {"allow": list(dict.fromkeys([*allow, f"{inbox_prefix(node.id)}.>", *SYSTEM_IMPORTS, *CHAT_IMPORTS]))}
    return {"import": imports, "export": {}}


def _import_allow(node: Node, leaves: Sequence[Node]) -> Optional[list[str]]:
    perms = route_imports(node, leaves)
    return None if perms is None else list(perms["import"]["allow"])


def _allows(allow: Optional[list[str]], subject: str) -> bool:
    """Whether route imports ``allow`` (None: everything) let a subscription on ``subject`` be announced.

    nats-server matches the subscription subject as it is written against the allow list
    (``room.*`` allows a subscription on ``room.>``; ``room.x`` does not allow one on ``room.*``).
    """
    return allow is None or any(matches(a, subject) for a in allow)


@dataclass
class RouteChange:
    """What a node's change does to the interest it announces over its routes, and what to try."""

    before: Optional[list[str]]  # route import allow list before (None: everything)
    after: Optional[list[str]]
    probe: list[str]  # subscribe entries the node user may use now and could not before
    routes_changed: bool

    @property
    def needs_check(self) -> bool:
        return self.routes_changed or bool(self.probe)

    def gained(self, subject: str) -> bool:
        return _allows(self.after, subject) and not _allows(self.before, subject)

    def lost(self, subject: str) -> bool:
        return _allows(self.before, subject) and not _allows(self.after, subject)


def route_change(old: Node, new: Node, leaves: Sequence[Node] = ()) -> RouteChange:
    """``leaves``: the leaf nodes hosted by the node's cluster, whose subjects it imports too."""
    deny = [split_queue(d)[0] for d in new.policy.subscribe.deny]
    probe = [
        e
        for e in new.policy.subscribe.allow
        if e not in old.policy.subscribe.allow and not any(matches(d, split_queue(e)[0]) for d in deny)
    ]
    before, after = _import_allow(old, leaves), _import_allow(new, leaves)
    return RouteChange(before, after, probe, routes_changed=bool(new.cluster) and before != after)


def _route_permissions(node: Node, leaves: Sequence[Node], export_deny: Sequence[str]) -> Optional[dict]:
    perms = route_imports(node, leaves)
    if not export_deny:
        return perms
    return {**(perms or {}), "export": {"deny": list(dict.fromkeys(export_deny))}}


def route_url(store: Store, node_id: str) -> str:
    """The URL other nodes use to join through ``node_id``."""
    n = NodeFile.load(store, node_id).node
    if not n.cluster:
        raise ConfigError(f"node {node_id} has no cluster port")
    adv = n.cluster.get("advertise")
    if adv:
        return f"nats-route://{adv}"
    return host_url("nats-route", dial_host(n.cluster["host"]), n.cluster["port"])


def client_url(node: Node) -> str:
    """The URL this machine's clients use for ``node``: ``tls://`` when its client port uses TLS."""
    scheme = "tls" if tls_flags(node)["client"] else "nats"
    return host_url(scheme, dial_host(node.host), node.client_port)


def monitor_host(node: Node) -> str:
    """The host the node's monitoring port listens on: its ``monitor_host`` when set, else the node's
    host when that is a loopback address, else loopback: also for a public node (the monitoring
    endpoints show its connections and accounts)."""
    if node.monitor_host:
        return node.monitor_host
    h = dial_host(node.host)
    try:
        return h if ipaddress.ip_address(h).is_loopback else LOOPBACK
    except ValueError:
        return LOOPBACK


def monitor_url(node: Node) -> str:
    """``http://host:port`` of the node's monitoring endpoint, dialable from this machine."""
    return host_url("http", dial_host(monitor_host(node)), node.monitor_port)


def server_config(
    store: Store, node: Node, *, leaf_remotes_disabled: bool = False, route_export_deny: Sequence[str] = ()
) -> ServerConfig:
    """The nats-server config of ``node``: operator mode, every account preloaded, its topology.

    Two temporary variants, never the node's own config: ``leaf_remotes_disabled`` renders its
    leafnode remotes disabled (reloading that, then the normal config, re-establishes its leaf
    connections at once with the current creds: :func:`dchat_ops.runtime.leaf.relink_leaves`);
    ``route_export_deny`` renders a route export deny (subjects whose interest the node refuses from
    its routes; only :func:`dchat_ops.runtime.interest.reannounce` uses it, to make the node's peers
    announce their interest in those subjects again when it is lifted).
    """
    op = store.operator()
    rd = run_dir(store, node.id)
    preload = {acc.public_key: acc.token for acc in store.accounts(op.name)}
    cfg = ServerConfig(
        server_name=node.server_name,
        operator_jwt=op.token,
        system_account=op.claims.system_account,
        resolver=Resolver(
            type=node.resolver,
            dir=str(rd / "jwt") if node.resolver == "full" else "",
            allow_delete=node.resolver_allow_delete,
            preload=preload,
        ),
        host=node.host,
        port=node.client_port,
        http_host=monitor_host(node),
        http_port=node.monitor_port,
        client_advertise=advertise_on(node.advertise, node.client_port),
        max_payload=node.max_payload or None,
    )
    if node.jetstream is not None:
        cfg.jetstream = {
            "store_dir": node.jetstream.get("store_dir") or str(rd / "jetstream"),
            "max_memory": node.jetstream.get("max_memory"),
            "max_file": node.jetstream.get("max_file"),
        }
    if node.cluster:
        c = node.cluster
        routes = list(c["routes"])
        if not routes and node.jetstream is not None:
            # clustered JetStream wants a configured route; the first node of a mesh names itself
            # (nats-server recognises and skips a route to itself)
            routes = [host_url("nats-route", dial_host(c["host"]), c["port"])]
        cfg.cluster = {
            "name": c["name"],
            "listen": host_port(c["host"], c["port"]),
            "advertise": c.get("advertise"),
            "routes": routes,
            "no_advertise": c.get("no_advertise"),
            "connect_retries": c.get("connect_retries"),
            "permissions": _route_permissions(node, hosted_leaves(store, node), route_export_deny),
        }
    if node.gateway:
        g = node.gateway
        cfg.gateway = {
            "name": g["name"],
            "listen": host_port(g["host"], g["port"]),
            "advertise": g.get("advertise"),
            "gateways": g["remotes"],
        }
    if node.leafnodes:
        lf = node.leafnodes
        remotes = []
        for rem in lf.get("remotes", []):
            acc_name = rem.get("account") or node.account
            user = rem.get("user") or node.user
            creds = rem.get("credentials") or str(store.creds_path(op.name, acc_name, user))
            remotes.append(
                {
                    "urls": rem["urls"],
                    "credentials": creds,
                    "account": store.account(acc_name, op.name).public_key,
                    "disabled": leaf_remotes_disabled,
                }
            )
        cfg.leafnodes = {
            "listen": host_port(lf["host"], lf["port"]) if lf.get("port") else "",
            "advertise": lf.get("advertise"),
            "remotes": remotes,
        }
    if node.websocket:
        cfg.websocket = {
            "listen": host_port(node.websocket["host"], node.websocket["port"]),
            "advertise": node.websocket.get("advertise"),
        }
    apply_tls(store, node, cfg)
    return cfg


def advertise_on(advertise: str, port: int) -> str:
    """``advertise`` as host:port: a bare host takes the listener's port."""
    if not advertise:
        return ""
    return advertise if ":" in advertise.rsplit("]", 1)[-1] else host_port(host_of(advertise), port)


def check_port_clashes(store: Store, node: Node) -> None:
    """Refuse a node whose ports clash with another node of this store on the same host."""
    mine = node.ports()
    for other_id, other in read_nodes(store).items():
        if other_id == node.id:
            continue
        if other.monitor_port == node.monitor_port and listeners_overlap(monitor_host(node), monitor_host(other)):
            raise ConfigError(
                f"node {node.id}: monitor port {node.monitor_port} clashes with the monitor port of node {other_id}"
            )
        if not listeners_overlap(node.host, other.host):
            continue
        theirs = {p: what for what, p in other.ports()}
        for what, p in mine:
            if p in theirs:
                raise ConfigError(
                    f"node {node.id}: {what} port {p} clashes with the {theirs[p]} port of node {other_id}"
                )


def render_node(
    store: Store,
    node_id: str,
    *,
    binary: Optional[str] = None,
    node: Optional[Node] = None,
    leaf_remotes_disabled: bool = False,
    route_export_deny: Sequence[str] = (),
    server_check: bool = True,
) -> Path:
    """Check the node (ours and ``nats-server -t``) and write ``run/<id>/nats-server.conf`` atomically.

    ``leaf_remotes_disabled``, ``route_export_deny``: see :func:`server_config` (temporary configs).
    ``server_check=False``: for a running node about to reload it, see :func:`write_and_check`.
    """
    node = node or NodeFile.load(store, node_id).node
    check_port_clashes(store, node)
    if node.leafnodes:
        for rem in node.leafnodes.get("remotes", []):
            acc_name = rem.get("account") or node.account
            user = rem.get("user") or node.user
            creds = rem.get("credentials") or store.creds_path(store.current_operator(), acc_name, user)
            if not Path(creds).is_file():
                raise ConfigError(f"node {node.id}: leafnode remote creds {creds} do not exist")
    check_node_operator(store, node)
    try:
        store.user(node.account, node.user)
    except StoreError as exc:
        raise ConfigError(f"node {node.id}: identity user: {exc}") from None
    cfg = server_config(store, node, leaf_remotes_disabled=leaf_remotes_disabled, route_export_deny=route_export_deny)
    semantic_check(cfg)
    path = run_dir(store, node.id) / "nats-server.conf"
    write_and_check(cfg, path, binary=binary, header=f"node {node.id}", server_check=server_check)
    return path
