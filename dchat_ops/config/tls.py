"""TLS on every link of a node: which links use it, the config blocks that say so, warnings.

A node's ``tls`` mapping (in ``nodes/<id>.yaml``) says which links use TLS::

    tls: {client: true, route: true, gateway: true, leafnode: true, websocket: true, insecure: false}

``client: verify`` also requires clients to present a certificate of this CA.  ``insecure: true``
skips verifying the peers this node dials (routes, gateways, leafnode remotes): development only.

    >>> enable(store, "a", ["route"])          # sets the node's tls mapping, issues missing certs
    >>> apply_tls(store, node, cfg)            # called by nodes.server_config()

Certificates themselves are :mod:`dchat_ops.config.pki`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from dchat_ops.config.node import NodeFile
from dchat_ops.errors import TLSError
from dchat_ops.nsc.store import Store

if TYPE_CHECKING:
    import ssl
    from pathlib import Path

__all__ = [
    "INSECURE_WARNING",
    "LINKS",
    "applicable_links",
    "apply_tls",
    "client_cert_for",
    "client_tls_for",
    "enable",
    "refuse_insecure_in_production",
    "required_kinds",
    "tls_flags",
    "tls_sections",
    "tls_warnings",
]

LINKS = ("client", "route", "gateway", "leafnode", "websocket")
INSECURE_WARNING = (
    "tls.insecure is on: the certificates (chain and host name) of the routes, gateways and "
    "leafnode hubs this node dials are NOT verified. Development only, never in production."
)


def _pki():
    """:mod:`dchat_ops.config.pki`, imported at first use: it loads cryptography's X.509 (about 30 ms),
    which only a node that uses TLS needs, and rendering any node comes through here."""
    from dchat_ops.config import pki

    return pki


# --- node settings -> server config ------------------------------------------------------------------------


def tls_flags(node) -> dict:
    """The node's validated ``tls`` mapping: each link ``False``/``True`` (client also ``"verify"``), and insecure."""
    raw = dict(node.tls or {})
    flags: dict[str, Any] = {}
    for link in LINKS:
        v = raw.get(link, False)
        if v is None:
            v = False
        if link == "client" and isinstance(v, str) and v.strip().lower() == "verify":
            v = "verify"
        elif not isinstance(v, bool):
            raise TLSError(
                f"node {node.id}: tls.{link} must be true or false"
                + (" (or 'verify')" if link == "client" else "")
                + f", not {v!r}"
            )
        flags[link] = v
    ins = raw.get("insecure", False)
    if ins is None:
        ins = False
    if not isinstance(ins, bool):
        raise TLSError(f"node {node.id}: tls.insecure must be true or false, not {ins!r}")
    flags["insecure"] = ins
    return flags


def applicable_links(node) -> list[str]:
    """The links this node has: client always, route with a cluster, and so on."""
    out = ["client"]
    if node.cluster:
        out.append("route")
    if node.gateway:
        out.append("gateway")
    if node.leafnodes and (node.leafnodes.get("port") or node.leafnodes.get("remotes")):
        out.append("leafnode")
    if node.websocket:
        out.append("websocket")
    return out


def _check_links(node, flags: dict) -> None:
    have = applicable_links(node)
    for link in LINKS:
        if flags.get(link) and link not in have:
            section = {"route": "cluster", "gateway": "gateway", "leafnode": "leafnodes", "websocket": "websocket"}[
                link
            ]
            raise TLSError(f"node {node.id}: tls.{link} is on but the node has no {section} section")


def required_kinds(node) -> list[str]:
    """The certificate kinds the node's ``tls`` mapping needs."""
    flags = tls_flags(node)
    kinds = []
    if flags["client"] or flags["websocket"]:
        kinds.append("server")
    if flags["leafnode"] and node.leafnodes and node.leafnodes.get("port") and "server" not in kinds:
        kinds.append("server")
    if flags["route"] or flags["gateway"]:
        kinds.append("route")
    if flags["leafnode"] and node.leafnodes and node.leafnodes.get("remotes"):
        kinds.append("client")
    return kinds


def tls_sections(store: Store, node) -> dict[str, dict]:
    """The TLS blocks of a node's server config, by section; empty when the node uses no TLS.

    Keys: ``client`` (the client port: ``tls {}`` at the top level), ``cluster`` (routes: mutual,
    ``verify`` is also forced by nats-server), ``gateway`` (mutual), ``leafnodes`` (the hub side,
    mutual), ``leafnode_remote`` (each remote: the CA and a client certificate), ``websocket``.
    """
    flags = tls_flags(node)
    if not any(flags[link] for link in LINKS):
        return {}
    _check_links(node, flags)
    _key, ca_crt = _pki().ca_paths(store)
    if not ca_crt.is_file():
        raise TLSError(f"node {node.id} uses TLS but the store has no CA: run 'dchat-ops tls init-ca'")
    files: dict[str, tuple[str, str]] = {}
    for kind in required_kinds(node):
        kpath, cpath = _pki().cert_paths(store, node.id, kind)
        for p in (cpath, kpath):
            if not p.is_file():
                raise TLSError(f"node {node.id}: {p} is missing: run 'dchat-ops tls issue {kind} --node {node.id}'")
        files[kind] = (str(cpath), str(kpath))
    ca = str(ca_crt)
    insecure = flags["insecure"]

    def block(kind: str, *, verify: bool, remote: bool) -> dict:
        cert, key = files[kind]
        b = {"cert_file": cert, "key_file": key, "ca_file": ca, "verify": verify}
        if remote and insecure:
            b["insecure"] = True
        return b

    out: dict[str, dict] = {}
    if flags["client"]:
        out["client"] = block("server", verify=(flags["client"] == "verify"), remote=False)
    if flags["route"]:
        out["cluster"] = block("route", verify=True, remote=True)
    if flags["gateway"]:
        out["gateway"] = block("route", verify=True, remote=True)
    if flags["leafnode"]:
        if node.leafnodes.get("port"):
            out["leafnodes"] = block("server", verify=True, remote=False)
        if node.leafnodes.get("remotes"):
            r = block("client", verify=False, remote=True)
            r.pop("verify")
            out["leafnode_remote"] = r
    if flags["websocket"]:
        out["websocket"] = block("server", verify=False, remote=False)
    return out


def apply_tls(store: Store, node, cfg):
    """Put the node's TLS blocks into its :class:`ServerConfig`; changes nothing when the node uses no TLS."""
    if not node.tls:
        return cfg
    secs = tls_sections(store, node)
    if not secs:
        return cfg
    if "client" in secs:
        cfg.tls = secs["client"]
    if "cluster" in secs and cfg.cluster is not None:
        cfg.cluster["tls"] = secs["cluster"]
    if "gateway" in secs and cfg.gateway is not None:
        cfg.gateway["tls"] = secs["gateway"]
    if cfg.leafnodes is not None:
        if "leafnodes" in secs and cfg.leafnodes.get("listen"):
            cfg.leafnodes["tls"] = secs["leafnodes"]
        if "leafnode_remote" in secs:
            for r in cfg.leafnodes.get("remotes") or []:
                r["tls"] = dict(secs["leafnode_remote"])
    if "websocket" in secs and cfg.websocket is not None:
        cfg.websocket["tls"] = secs["websocket"]
    return cfg


def tls_warnings(node, store: Optional[Store] = None) -> list[str]:
    """Lines to show a person about the node's TLS: insecure mode, and (with ``store``) expired or expiring certs."""
    out: list[str] = []
    try:
        flags = tls_flags(node)
    except TLSError as exc:
        return [str(exc)]
    if flags["insecure"]:
        out.append(f"WARNING: node {node.id}: {INSECURE_WARNING}")
        if not (flags["route"] or flags["gateway"] or flags["leafnode"]):
            out.append(f"WARNING: node {node.id}: tls.insecure is on but no route, gateway or leafnode TLS is")
    if store is not None:
        for kind in required_kinds(node):
            _k, cpath = _pki().cert_paths(store, node.id, kind)
            if not cpath.is_file():
                continue
            try:
                d = _pki().describe_cert(store, _pki().read_cert(cpath), cpath, node.id, kind)
            except TLSError as exc:
                out.append(f"WARNING: node {node.id}: {exc}")
                continue
            if d["expired"]:
                out.append(
                    f"WARNING: node {node.id}: the {kind} certificate expired on {d['not_after']}: "
                    f"run 'dchat-ops tls renew --node {node.id}'"
                )
            elif d["expiring_soon"]:
                out.append(
                    f"WARNING: node {node.id}: the {kind} certificate expires in {d['days_left']} days "
                    f"({d['not_after']})"
                )
    return out


def refuse_insecure_in_production(spec_is_production: bool, node) -> None:
    """Raise :class:`TLSError` when a production spec would run ``node`` with ``tls.insecure``."""
    if spec_is_production and tls_flags(node)["insecure"]:
        raise TLSError(
            f"node {node.id}: tls.insecure is not allowed in production: it skips verifying the "
            "certificates of the peers the node dials; remove it and use certificates of the store's CA"
        )


def enable(
    store: Store,
    node_id: str,
    links: Iterable[str],
    *,
    insecure: bool = False,
    client_verify: bool = False,
    sans: Iterable[str] = (),
    days: int = 397,
) -> dict:
    """Set the node's ``tls`` mapping to exactly ``links`` (and ``insecure``), issuing missing certificates.

    The node file is edited round-trip (comments kept) and saved only after the new settings
    check out.  Returns the mapping, the certificates issued and the warnings to show.
    """

    links = list(dict.fromkeys(links))
    for link in links:
        if link not in LINKS:
            raise TLSError(f"unknown TLS link {link!r} (use {', '.join(LINKS)})")
    if client_verify and "client" not in links:
        links.insert(0, "client")
    nf = NodeFile.load(store, node_id)
    mapping: dict[str, Any] = {}
    for link in LINKS:
        if link in links:
            mapping[link] = "verify" if (link == "client" and client_verify) else True
    if insecure:
        mapping["insecure"] = True
    nf.set(("tls",), mapping)
    node = nf.refresh()
    _check_links(node, tls_flags(node))
    if links:
        _pki().load_ca(store)
    issued = []
    with store.transaction() as tx:  # certificates and node file: all or nothing, also across a kill
        for kind in required_kinds(node):
            kpath, cpath = _pki().cert_paths(store, node.id, kind)
            if not (kpath.is_file() and cpath.is_file()):
                issued.append(_pki().issue(store, node.id, kind, sans, days, node=node))
        tls_sections(store, node)  # every file in place before the node file says so
        changed = tx.write(nf.path, nf.text())
    return {
        "node": node.id,
        "tls": mapping,
        "changed": changed,
        "issued": issued,
        "warnings": tls_warnings(node, store),
    }


def client_tls_for(store: Store, node) -> Optional[ssl.SSLContext]:
    """The TLS context the toolkit's own clients need for ``node``'s client port (None: plain text).

    It trusts the store's CA; when the node verifies clients (``client: verify``) it also presents the
    node's client certificate, issued from the store's CA when there is none yet.
    """
    flags = tls_flags(node)
    if not flags["client"]:
        return None
    if flags["client"] != "verify":
        return _pki().client_ssl_context(store)
    client_cert_for(store, node)
    return _pki().client_ssl_context(store, node_id=node.id, kind="client")


def client_cert_for(store: Store, node) -> tuple[Path, Path]:
    """``(key, cert)`` of the client certificate a client presents to ``node`` (one that verifies
    clients), issued from the store's CA when there is none yet."""
    kpath, cpath = _pki().cert_paths(store, node.id, "client")
    if not (kpath.is_file() and cpath.is_file()):
        _pki().issue(store, node.id, "client", node=node)
    return kpath, cpath
