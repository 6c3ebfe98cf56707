"""The per-node config file, ``<home>/nodes/<id>.yaml``: what one DChat node is and may do.

The file is YAML, edited round-trip (ruamel.yaml) so a person's comments and key order survive
every change the tool makes.  :class:`NodeFile` loads, edits and saves it atomically;
:class:`Node` is the validated, typed view of its content.

    >>> nf = NodeFile.load(store, "alice")
    >>> nf.node.policy.subscribe.allow
    []
    >>> nf.add_to_list(("policy", "subscribe", "allow"), "room.x"); nf.save()

Default policy: publish allowed on every subject, subscribe denied on every subject except the
node's own reply inbox (``_INBOX_<id>.>``).  See docs/permissions.md.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from dchat_ops._decode import (
    BAD_SCALAR,
    BAD_SCALAR_MESSAGE,
    MAX_DEPTH,
    quietly,
    read_text,
    round_trip_yaml,
    yaml_problem,
    yaml_too_deep,
)
from dchat_ops._fs import atomic_write
from dchat_ops.errors import ConfigError
from dchat_ops.hosts import check_advertise, check_host, check_url
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.subjects import check_subject, inbox_prefix

__all__ = [
    "ROUTE_SCHEMES",
    "Node",
    "NodeFile",
    "Policy",
    "Rule",
    "check_node_operator",
    "inbox_prefix",
    "list_nodes",
    "node_operators",
    "node_path",
    "of_current_operator",
    "read_nodes",
]

ROUTE_SCHEMES = ("nats-route", "nats", "tls")
LEAF_SCHEMES = ("nats-leaf", "nats", "tls", "ws", "wss")
GATEWAY_SCHEMES = ("nats", "tls")

_TOP_KEYS = {
    "id",
    "server_name",
    "host",
    "client_port",
    "monitor_port",
    "monitor_host",
    "advertise",
    "resolver",
    "resolver_allow_delete",
    "cluster",
    "jetstream",
    "websocket",
    "tls",
    "gateway",
    "leafnodes",
    "identity",
    "trusted_keys",
    "policy",
    "max_payload",
}


def node_path(store: Store, node_id: str) -> Path:
    return store.nodes_dir / f"{check_name(node_id, 'node id')}.yaml"


def list_nodes(store: Store) -> list[str]:
    if not store.nodes_dir.is_dir():
        return []
    return sorted(p.stem for p in store.nodes_dir.glob("*.yaml") if not p.name.startswith(".tmp-"))


def node_operators(store: Store, node: Node) -> list[str]:
    """The operators of the home whose store holds the node's identity user (its account and user): the
    operator a node belongs to.  In a home with one operator, that one (the node's user may be missing)."""
    names = store.operator_names()
    if len(names) <= 1:
        return names
    return [op for op in names if store.user_jwt_path(op, node.account, node.user).is_file()]


def of_current_operator(store: Store, node: Node) -> bool:
    """Whether ``node`` belongs to the current operator (or to no operator the home knows)."""
    if len(store.operator_names()) <= 1:
        return True
    owners = node_operators(store, node)
    return not owners or store.current_operator() in owners


def check_node_operator(store: Store, node: Node) -> None:
    """ConfigError when the node belongs to another operator than the current one (a home with several):
    its config would carry the wrong operator, and its users would be refused."""
    if len(store.operator_names()) <= 1:
        return
    current = store.current_operator()
    owners = node_operators(store, node)
    if owners and current not in owners:
        raise ConfigError(
            f"node {node.id} belongs to operator {owners[0]}, not to the current operator {current}: run "
            f"'dchat-ops --operator {owners[0]} ...' or 'dchat-ops use operator {owners[0]}'"
        )


_PARSED: dict[Path, tuple[str, Node]] = {}  # path -> (text, node) of the last parse of that file here


def read_nodes(store: Store) -> dict[str, Node]:
    """Every valid node of the store, by id, for reading only (do not change them: use NodeFile)."""
    out: dict[str, Node] = {}
    for nid in list_nodes(store):
        path = node_path(store, nid)
        try:
            out[nid] = NodeFile.parse(path, read_text(path, ConfigError)).node
        except (OSError, ConfigError):
            continue
    return out


@dataclass
class Rule:
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)


@dataclass
class Policy:
    """Publish and subscribe allow / deny lists.  Subscribe with an empty allow list means: nothing."""

    publish: Rule = field(default_factory=lambda: Rule(allow=[">"]))
    subscribe: Rule = field(default_factory=Rule)


@dataclass
class Node:
    id: str
    server_name: str
    host: str = "127.0.0.1"
    client_port: int = 4222
    monitor_port: int = 8222
    monitor_host: str = ""  # where monitoring listens: loopback unless set
    advertise: str = ""  # host[:port] clients are told (client_advertise); the other listeners have their own
    advertise_reason: str = ""
    resolver: str = "full"
    resolver_allow_delete: bool = False
    max_payload: int = 0
    cluster: Optional[dict] = None  # name, host, port, advertise, routes, connect_retries
    jetstream: Optional[dict] = None  # enabled, max_memory, max_file
    websocket: Optional[dict] = None  # port, host, advertise
    tls: dict = field(default_factory=dict)
    gateway: Optional[dict] = None  # port, host, advertise, remotes: [{name, urls}]
    leafnodes: Optional[dict] = None  # port (hub), remotes: [{url(s), account, user}]
    identity: dict = field(default_factory=dict)  # account, user
    trusted_keys: list[str] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)

    @property
    def account(self) -> str:
        return self.identity.get("account", "")

    @property
    def user(self) -> str:
        return self.identity.get("user", "")

    def ports(self) -> list[tuple[str, int]]:
        out = [("client", self.client_port), ("monitor", self.monitor_port)]
        if self.cluster:
            out.append(("cluster", self.cluster["port"]))
        if self.gateway:
            out.append(("gateway", self.gateway["port"]))
        if self.leafnodes and self.leafnodes.get("port"):
            out.append(("leafnode", self.leafnodes["port"]))
        if self.websocket:
            out.append(("websocket", self.websocket["port"]))
        return out


# --- reading and checking ---------------------------------------------------------------------------


def _where(doc: Any, key: Any = None) -> str:
    """' (line N)' for a key of a ruamel mapping, when known."""
    try:
        if key is not None and isinstance(doc, CommentedMap):
            line = doc.lc.key(key)[0]
        else:
            line = doc.lc.line
        return f" (line {line + 1})"
    except (AttributeError, KeyError, TypeError):
        return ""


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, doc: Any, key: Any, msg: str) -> NoReturn:
        raise ConfigError(f"{self.path}{_where(doc, key)}: {msg}")

    def mapping(self, doc, key, what: str, known: set[str]) -> Optional[dict]:
        v = doc.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            self.fail(doc, key, f"{what} must be a mapping")
        for k in v:
            if k not in known:
                self.fail(v, k, f"unknown field {what}.{k} (known: {', '.join(sorted(known))})")
        return v

    def port(self, doc: Any, key: str, what: str) -> int:
        v = self.optional_port(doc, key, what)
        if v is None:
            self.fail(doc, None, f"{what} is missing")
        return v

    def optional_port(self, doc: Any, key: str, what: str) -> Optional[int]:
        v = doc.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
            self.fail(doc, key, f"{what} must be a port number 1-65535, not {v!r}")
        return int(v)

    def host(self, doc: Any, key: str, what: str, default: str) -> str:
        """A listen host: an IP address or a host name (``default`` when the key is absent or empty)."""
        v = doc.get(key)
        if v is None or v == "":
            return default
        try:
            return check_host(str(v), what)
        except ConfigError as exc:
            self.fail(doc, key, str(exc))

    def advertise(self, doc: Any, key: str, what: str, *, port_required: bool = True) -> str:
        v = doc.get(key)
        if v is None or v == "":
            return ""
        try:
            return check_advertise(str(v), what, port_required=port_required)
        except ConfigError as exc:
            self.fail(doc, key, str(exc))

    def strings(self, doc, key, what: str) -> list[str]:
        v = doc.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.fail(doc, key, f"{what} must be a list of strings")
        return [str(x) for x in v]

    def urls(self, doc, key, what: str, schemes: tuple[str, ...]) -> list[str]:
        out = self.strings(doc, key, what)
        for u in out:
            check_url(u, schemes, f"{self.path}{_where(doc, key)}: {what}")
        return out


def parse_node(doc: Any, path: Path) -> Node:
    """Validate a loaded node document and return the typed :class:`Node`."""
    r = _Reader(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a node config must be a YAML mapping")
    for k in doc:
        if k not in _TOP_KEYS:
            r.fail(doc, k, f"unknown field {k!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    nid = doc.get("id")
    if not isinstance(nid, str):
        r.fail(doc, "id", "id is missing")
    try:
        check_name(nid, "node id")
    except Exception as exc:
        r.fail(doc, "id", str(exc))
    node = Node(id=nid, server_name=str(doc.get("server_name") or nid))
    node.host = r.host(doc, "host", "host", "127.0.0.1")
    node.client_port = r.port(doc, "client_port", "client_port")
    node.monitor_port = r.port(doc, "monitor_port", "monitor_port")
    node.monitor_host = r.host(doc, "monitor_host", "monitor_host", "")
    node.advertise = r.advertise(doc, "advertise", "advertise", port_required=False)
    node.resolver = str(doc.get("resolver") or "full")
    if node.resolver not in ("full", "memory"):
        r.fail(doc, "resolver", f"resolver must be 'full' or 'memory', not {node.resolver!r}")
    node.resolver_allow_delete = bool(doc.get("resolver_allow_delete", False))
    mp = doc.get("max_payload")
    if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp <= 0):
        r.fail(doc, "max_payload", "max_payload must be a positive number of bytes")
    node.max_payload = int(mp or 0)

    c = r.mapping(
        doc,
        "cluster",
        "cluster",
        {"name", "host", "port", "advertise", "routes", "seed_routes", "connect_retries", "no_advertise"},
    )
    if c is not None:
        routes = r.urls(c, "routes", "cluster.routes", ROUTE_SCHEMES)
        node.cluster = {
            "name": str(c.get("name") or "dchat"),
            "host": r.host(c, "host", "cluster.host", node.host),
            "port": r.port(c, "port", "cluster.port"),
            "advertise": r.advertise(c, "advertise", "cluster.advertise"),
            "routes": routes,
            "connect_retries": c.get("connect_retries"),
            "no_advertise": bool(c.get("no_advertise", False)),
        }
        if "seed_routes" in c:
            r.fail(c, "seed_routes", "use cluster.routes for seed routes")
    js = r.mapping(doc, "jetstream", "jetstream", {"enabled", "max_memory", "max_file", "store_dir"})
    if js is not None and js.get("enabled", True):
        node.jetstream = {
            "max_memory": js.get("max_memory"),
            "max_file": js.get("max_file"),
            "store_dir": js.get("store_dir"),
        }
    ws = r.mapping(doc, "websocket", "websocket", {"port", "host", "advertise"})
    if ws is not None:
        node.websocket = {
            "port": r.port(ws, "port", "websocket.port"),
            "host": r.host(ws, "host", "websocket.host", node.host),
            "advertise": r.advertise(ws, "advertise", "websocket.advertise"),
        }
    tls = r.mapping(doc, "tls", "tls", {"client", "route", "gateway", "leafnode", "websocket", "insecure"})
    node.tls = dict(tls or {})
    gw = r.mapping(doc, "gateway", "gateway", {"name", "host", "port", "advertise", "remotes"})
    if gw is not None:
        remotes = []
        for g in gw.get("remotes") or []:
            if not isinstance(g, dict) or not isinstance(g.get("name"), str):
                r.fail(gw, "remotes", "each gateway remote needs a name and urls")
            remotes.append(
                {"name": g["name"], "urls": r.urls(g, "urls", f"gateway remote {g['name']} urls", GATEWAY_SCHEMES)}
            )
        node.gateway = {
            "name": str(gw.get("name") or (node.cluster or {}).get("name", "")),
            "host": r.host(gw, "host", "gateway.host", node.host),
            "port": r.port(gw, "port", "gateway.port"),
            "advertise": r.advertise(gw, "advertise", "gateway.advertise"),
            "remotes": remotes,
        }
    lf = r.mapping(doc, "leafnodes", "leafnodes", {"port", "host", "advertise", "remotes"})
    if lf is not None:
        remotes = []
        for rem in lf.get("remotes") or []:
            if not isinstance(rem, dict):
                r.fail(lf, "remotes", "each leafnode remote is a mapping with urls, account and user")
            for k in rem:
                if k not in ("urls", "account", "user", "credentials"):
                    r.fail(rem, k, f"unknown field leafnodes.remotes[].{k}")
            remotes.append(
                {
                    "urls": r.urls(rem, "urls", "leafnode remote urls", LEAF_SCHEMES),
                    "account": str(rem.get("account") or ""),
                    "user": str(rem.get("user") or ""),
                    "credentials": str(rem.get("credentials") or ""),
                }
            )
        node.leafnodes = {
            "port": r.optional_port(lf, "port", "leafnodes.port"),
            "host": r.host(lf, "host", "leafnodes.host", node.host),
            "advertise": r.advertise(lf, "advertise", "leafnodes.advertise"),
            "remotes": remotes,
        }
    ident = r.mapping(doc, "identity", "identity", {"account", "user", "grant"}) or {}
    node.identity = {"account": str(ident.get("account") or ""), "user": str(ident.get("user") or nid)}
    if "grant" in ident:  # an enrolled device's node: what its operator lets its users subscribe to
        node.identity["grant"] = r.strings(ident, "grant", "identity.grant")
        for s in node.identity["grant"]:
            try:
                check_subject(s)
            except ConfigError as exc:
                raise ConfigError(f"{path}: identity.grant: {exc}") from None
    node.trusted_keys = r.strings(doc, "trusted_keys", "trusted_keys")
    pol = r.mapping(doc, "policy", "policy", {"publish", "subscribe"}) or {}
    rules = {}
    for part in ("publish", "subscribe"):
        p = r.mapping(pol, part, f"policy.{part}", {"allow", "deny"}) if pol else None
        if p is None:
            rules[part] = Policy().publish if part == "publish" else Rule()
        else:
            rules[part] = Rule(
                r.strings(p, "allow", f"policy.{part}.allow"), r.strings(p, "deny", f"policy.{part}.deny")
            )
    node.policy = Policy(rules["publish"], rules["subscribe"])

    for part, rule in (("publish", node.policy.publish), ("subscribe", node.policy.subscribe)):
        for kind in ("allow", "deny"):
            for s in getattr(rule, kind):
                try:
                    check_subject(s, queue_ok=(part == "subscribe"))
                except ConfigError as exc:
                    raise ConfigError(f"{path}: policy.{part}.{kind}: {exc}") from None
    return node


# --- the file -----------------------------------------------------------------------------------------

_TEMPLATE = """\
# DChat node {id} -- edited by dchat-ops; your comments and order are kept.
id: {id}
server_name: {server_name}
# client listen address; 127.0.0.1 keeps the node private to this machine, 0.0.0.0 opens it
host: {host}
client_port: {client_port}
monitor_port: {monitor_port}
# full: account JWTs kept on disk and pushable; memory: preloaded only
resolver: {resolver}
# the user this node's local clients connect as (its creds are in the store)
identity:
  account: {account}
  user: {user}
# public keys this node trusts (friends, other operators' signing keys)
trusted_keys: []
# default deny: publish anywhere, subscribe to nothing but what is allowed here
policy:
  publish:
    allow: ['>']
    deny: []
  subscribe:
    allow: []
    deny: []
"""


def _check_depth(path: Path, text: str) -> None:
    line = yaml_too_deep(text)
    if line is not None:
        raise ConfigError(f"{path} (line {line}): nested deeper than {MAX_DEPTH} levels")


def _round_trip(path: Path, text: str) -> CommentedMap:
    _check_depth(path, text)
    try:
        doc = quietly(_yaml().load, text)
    except YAMLError as exc:
        line, problem = yaml_problem(exc, text)
        where = f" (line {line})" if line else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except BAD_SCALAR:
        raise ConfigError(f"{path}: not valid YAML: {BAD_SCALAR_MESSAGE}") from None
    if doc is None:
        raise ConfigError(f"{path}: the file is empty")
    return doc


def _yaml() -> YAML:
    y = round_trip_yaml()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


class NodeFile:
    """A node config file, loaded round-trip.  Edit with :meth:`set` / :meth:`add_to_list`, then :meth:`save`.

    A file whose text did not change since this process last parsed it is not parsed again (a
    command reads each node several times: port clashes, leaves of a cluster, its supervisor), and
    the round-trip document, which keeps comments and order for edits, is only made when an edit
    or :meth:`text` needs it: reading a node takes ruamel's C parser, about six times faster.
    """

    def __init__(self, path: Path, doc: Optional[CommentedMap], text: str, node: Optional[Node] = None):
        self.path = path
        self._doc = doc
        self.original_text = text
        self.node = node if node is not None else parse_node(self.doc, path)

    @property
    def doc(self) -> CommentedMap:
        if self._doc is None:
            self._doc = _round_trip(self.path, self.original_text)
        return self._doc

    @classmethod
    def load(cls, store: Store, node_id: str) -> NodeFile:
        path = node_path(store, node_id)
        try:
            text = read_text(path, ConfigError)
        except FileNotFoundError:
            raise ConfigError(
                f"no node named {node_id!r} (expected {path}); create it with 'dchat-ops node add'"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        return cls.parse(path, text)

    @classmethod
    def parse(cls, path: Path, text: str) -> NodeFile:
        seen = _PARSED.get(path)
        if seen is not None and seen[0] == text:
            return cls(path, None, text, seen[1])
        # read with ruamel's C parser into plain dicts; what that refuses is read round-trip again,
        # whose document says where the problem is, by line
        _check_depth(path, text)
        try:
            nf = cls(path, None, text, parse_node(quietly(YAML(typ="safe").load, text), path))
        except (YAMLError, ConfigError, *BAD_SCALAR):
            nf = cls(path, _round_trip(path, text), text)
        if len(_PARSED) > 4096:
            _PARSED.clear()
        _PARSED[path] = (text, nf.node)
        return nf

    @classmethod
    def new(cls, path: Path, **values: Any) -> NodeFile:
        q = {
            k: v
            if not isinstance(v, str)
            or (
                re.match(r"^[A-Za-z][A-Za-z0-9_.@-]*\Z", v, re.ASCII)
                and v not in ("true", "false", "null", "yes", "no", "on", "off")
            )
            else json.dumps(v)
            for k, v in values.items()
        }
        return cls.parse(path, _TEMPLATE.format(**q))

    # edits ---------------------------------------------------------------------------------------
    def _parent(self, keys: tuple[str, ...], create: bool = True) -> CommentedMap:
        cur = self.doc
        for k in keys[:-1]:
            nxt = cur.get(k)
            if nxt is None:
                if not create:
                    raise ConfigError(f"{self.path}: no {'.'.join(keys[:-1])} section")
                nxt = CommentedMap()
                cur[k] = nxt
            cur = nxt
        return cur

    def set(self, keys: tuple[str, ...], value: Any) -> None:
        parent = self._parent(keys)
        if (isinstance(value, dict) and not isinstance(value, CommentedMap)) or (
            isinstance(value, list) and not isinstance(value, CommentedSeq)
        ):
            value = _commented(value)
        parent[keys[-1]] = value

    def get_list(self, keys: tuple[str, ...]) -> list:
        parent = self._parent(keys)
        seq = parent.get(keys[-1])
        if seq is None:
            seq = CommentedSeq()
            parent[keys[-1]] = seq
        return seq

    def add_to_list(self, keys: tuple[str, ...], item: str) -> bool:
        seq = self.get_list(keys)
        if item in seq:
            return False
        seq.append(item)
        return True

    def remove_from_list(self, keys: tuple[str, ...], item: str) -> bool:
        seq = self.get_list(keys)
        if item not in seq:
            return False
        seq.remove(item)
        return True

    def text(self) -> str:
        buf = io.StringIO()
        _yaml().dump(self.doc, buf)
        return buf.getvalue()

    def refresh(self) -> Node:
        """Re-validate after edits (raises ConfigError, leaving the file on disk untouched)."""
        self.node = parse_node(self.doc, self.path)
        return self.node

    def save(self) -> bool:
        self.refresh()
        return atomic_write(self.path, self.text())


def _commented(value):
    if isinstance(value, dict):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = _commented(v)
        return m
    if isinstance(value, list):
        s = CommentedSeq()
        s.extend(_commented(v) for v in value)
        return s
    return value
