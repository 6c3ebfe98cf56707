"""Enrolling a device: its request, the operator's answer, and the device's store and node made from it.

    >>> path, body = make_request(device_store, "dev2", operator=op_key, seed_routes=[url])    # on the device
    >>> show_request(path)                                                                      # on the operator's machine
    >>> signed = sign_request(store, path, out="dev2.resp")                                    # answered, recorded
    >>> import_response(device_store, "dev2.resp")                                              # store + node on the device
    >>> sign_grant(store, "grant-1a2b.req", out="dev2-grant.resp")                             # a wider grant, later

The envelopes and what is checked are :mod:`dchat_ops.nsc.enroll`.  Every command checks everything
before it writes, and writes in one unit of work: a refused file leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from dchat_ops._fs import atomic_write
from dchat_ops.config.node import LEAF_SCHEMES, ROUTE_SCHEMES, check_url, read_nodes
from dchat_ops.config.nodes import add_node, device_node_user_spec, route_url
from dchat_ops.errors import ConfigError, DchatOpsError, EnrollError, ExistsError, StoreError
from dchat_ops.hosts import check_advertise, check_host, host_of, is_wildcard
from dchat_ops.nsc import enroll as env
from dchat_ops.nsc.admin import now
from dchat_ops.nsc.keys import KeyPair, check_public_key
from dchat_ops.nsc.revoke import revoke_users
from dchat_ops.nsc.store import Store, check_name, operator_signer
from dchat_ops.subjects import check_subject

TLS_KINDS = ("route", "client", "server")  # the certificate keys a device makes with its request
_LINK_KIND = {"route": "route", "leafnode": "client"}  # a device's link -> the certificate it presents


def _pki():
    """:mod:`dchat_ops.config.pki`, imported when used (cryptography's X.509, see config.tls)."""
    from dchat_ops.config import pki

    return pki


__all__ = [
    "import_response",
    "list_devices",
    "make_request",
    "revoke_device",
    "show_request",
    "sign_grant",
    "sign_request",
]


def _write_out(path: str | Path, text: str, force: bool) -> Path:
    out = Path(path)
    if out.exists() and not force:
        raise ExistsError(f"{out} exists; use --force to replace it")
    atomic_write(out, text, private=False, force=True)
    return out


def _port(value: Optional[int], what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{what} must be a port number (1-65535)")
    return value


def _check_node(node: dict[str, Any], what: str) -> dict[str, Any]:
    """The node a request asks for, checked as ``node add`` checks its options."""
    try:
        check_name(str(node.get("id")), "node id")
        check_host(str(node.get("host") or "127.0.0.1"), "host")
        if node.get("advertise"):
            check_advertise(str(node["advertise"]), "advertise", port_required=False)
        for key in ("client_port", "monitor_port", "cluster_port", "leaf_port"):
            _port(node.get(key, 0), key)
        check_name(str(node.get("cluster_name") or "dchat"), "cluster name")
        for url in node.get("seed_routes") or []:
            check_url(str(url), ROUTE_SCHEMES, "seed route")
        for url in node.get("leaf_of") or []:
            check_url(str(url), LEAF_SCHEMES, "leaf-of")
    except (ConfigError, StoreError) as exc:
        raise EnrollError(f"{what}: node: {exc}") from None
    if not isinstance(node.get("seed_routes", []), list) or not isinstance(node.get("leaf_of", []), list):
        raise EnrollError(f"{what}: node: seed_routes and leaf_of are lists")
    return node


# --- on the device ---------------------------------------------------------------------------------------------


def make_request(
    store: Store,
    device: str,
    *,
    operator: str,
    out: str | Path,
    user: str = "",
    node_id: str = "",
    account: str = "",
    host: str = "127.0.0.1",
    client_port: Optional[int] = None,
    monitor_port: Optional[int] = None,
    cluster_port: Optional[int] = None,
    cluster_name: str = "dchat",
    cluster: bool = True,
    seed_routes: Sequence[str] = (),
    leaf_of: Sequence[str] = (),
    advertise: str = "",
    want_sub: Sequence[str] = (),
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Make the device's keys (kept in this home's keystore) and write the signed request to ``out``.

    Refused in a home that holds a store already, or that made a request before (``force``: a new one,
    which the earlier one's response no longer answers).
    """
    check_name(device, "device name")
    check_public_key(operator, "operator", "--operator")
    user = user or device
    node_id = node_id or f"{device}-node"
    names = {"user": check_name(user, "user name"), "node": check_name(node_id, "node id"), "system": f"{device}-sys"}
    check_name(names["system"], "user name")
    if len(set(names.values())) != 3:
        raise ConfigError("the device's user and node need two different names")
    if account:
        check_name(account, "account name")
    for s in want_sub:
        check_subject(s)
    node = _check_node(
        {
            "id": node_id,
            "host": host,
            "client_port": _port(client_port, "--client-port"),
            "monitor_port": _port(monitor_port, "--monitor-port"),
            "cluster": bool(cluster),
            "cluster_name": cluster_name,
            "cluster_port": _port(cluster_port, "--cluster-port"),
            "seed_routes": list(seed_routes),
            "leaf_of": list(leaf_of),
            "advertise": advertise,
        },
        "request",
    )
    if store.exists():
        raise StoreError(f"{store.home} holds a store already: a device enrolls into a home of its own")
    if env.pending(store) is not None and not force:
        raise ExistsError(f"{store.home} made an enrollment request already; use --force to make a new one")
    if Path(out).exists() and not force:
        raise ExistsError(f"{out} exists; use --force to replace it")
    keys = {part: KeyPair.generate("user") for part in ("user", "node", "system")}
    tls_keys = {kind: _pki().new_key_pair() for kind in TLS_KINDS}
    body: dict[str, Any] = {
        "id": env.new_request_id(),
        "created": now(store),
        "device": device,
        "operator": operator,
        "account": account,
        "keys": {part: kp.public_key for part, kp in keys.items()},
        "names": names,
        "node": node,
        "want_sub": list(want_sub),
        "tls_keys": {kind: public.decode("ascii") for kind, (_private, public) in tls_keys.items()},
    }
    body["proofs"] = env.key_proofs(body["id"], keys)
    text = env.seal("request", body, keys["user"])
    with store.transaction():
        for kp in keys.values():
            store.save_key(kp)
        for kind, (private, _public) in tls_keys.items():  # for certificates the operator's CA may sign
            store.write_file(_pki().cert_paths(store, node_id, kind)[0], private, private=True)
        env.write_pending(
            store,
            {
                "request": body["id"],
                "device": device,
                "operator": operator,
                "keys": body["keys"],
                "names": names,
                "node": node,
                "created": body["created"],
                "imported": 0,
            },
        )
        written = _write_out(out, text, True)  # last, inside: a request that cannot be written leaves no keys
    return written, body


def import_response(store: Store, path: str | Path) -> dict[str, Any]:
    """Check a response against this device's request and write the store, the creds and the node.

    A response to a grant request re-issues the device's user and node user with the wider grant.
    """
    mine = env.pending(store)
    if mine is None:
        raise EnrollError(f"{store.home} made no enrollment request: run 'dchat-ops enroll request' first")
    body = env.read_envelope(path, "response")
    checked = env.check_response(body, mine)
    grant = body.get("grant")
    if not isinstance(grant, list) or not all(isinstance(g, str) for g in grant):
        raise EnrollError("enrollment response: its grant is not a list of subjects")
    for g in grant:
        try:
            check_subject(g)
        except DchatOpsError as exc:
            raise EnrollError(f"enrollment response: grant: {exc}") from None
    first = body["request"] == mine["request"]
    node = _check_node(dict(body.get("node") or {}), "enrollment response") if first else None
    if node is not None and node.get("id") != mine["names"]["node"]:
        raise EnrollError("enrollment response: its node is not the one this device asked for")
    with store.transaction():
        env.install_response(store, body, checked, mine)
        done = dict(mine)
        if first:
            assert node is not None
            add_node(
                store,
                node["id"],
                host=node.get("host") or "127.0.0.1",
                client_port=node.get("client_port") or None,
                monitor_port=node.get("monitor_port") or None,
                cluster=bool(node.get("cluster", True)) and not node.get("leaf_of"),
                cluster_name=node.get("cluster_name") or "dchat",
                cluster_port=node.get("cluster_port") or None,
                advertise=node.get("advertise") or None,
                seed_routes=list(node.get("seed_routes") or []),
                leaf_of=list(node.get("leaf_of") or []),
                account=body["account"],
                grant=grant,
            )
            if body.get("tls"):
                _install_tls(store, node["id"], body["tls"])
            done["imported"] = now(store)
        else:
            from dchat_ops.config.node import NodeFile

            nf = NodeFile.load(store, mine["names"]["node"])
            nf.set(("identity", "grant"), list(grant))
            nf.refresh()
            store.write_file(nf.path, nf.text())
            done["answered"] = [*mine.get("answered", []), body["request"]]
        done["grant"] = list(grant)
        done["account"] = body["account"]
        env.write_pending(store, done)
    return {
        "device": mine["device"],
        "operator": checked["operator"].subject,
        "account": body["account"],
        "grant": list(grant),
        "node": mine["names"]["node"],
        "users": {part: name for part, (_a, name, _t) in checked["users"].items()},
        "first": first,
    }


def _install_tls(store: Store, node_id: str, tls: Any) -> None:
    """Write the CA and the node's certificates of a response (each checked: signed by that CA, for the
    key this node made) and turn TLS on for the links the operator chose."""
    from dchat_ops.config.node import NodeFile

    what = "enrollment response: tls"
    if not isinstance(tls, dict) or not isinstance(tls.get("ca"), str) or not isinstance(tls.get("certs"), dict):
        raise EnrollError(f"{what}: not a CA and certificates")
    links = tls.get("links")
    if not isinstance(links, list) or not all(link in _LINK_KIND for link in links):
        raise EnrollError(f"{what}: unknown links {links!r}")
    pki = _pki()
    ca = tls["ca"].encode("ascii", "replace")
    for kind, pem in tls["certs"].items():
        if kind not in TLS_KINDS or not isinstance(pem, str):
            raise EnrollError(f"{what}: unknown certificate {kind!r}")
        key_path, crt_path = pki.cert_paths(store, node_id, kind)
        try:
            pki.check_issued(pem.encode("ascii", "replace"), ca, key_path.read_bytes())
        except (DchatOpsError, OSError) as exc:
            raise EnrollError(f"{what}: the {kind} certificate: {exc}") from None
        store.write_file(crt_path, pem)
    store.write_file(pki.ca_paths(store)[1], tls["ca"])
    nf = NodeFile.load(store, node_id)
    nf.set(("tls",), {link: True for link in links})
    nf.refresh()
    store.write_file(nf.path, nf.text())


# --- on the operator's machine ------------------------------------------------------------------------------------


def _default_tls_links(store: Store, node: dict[str, Any]) -> list[str]:
    """The links of a device's node that use TLS when the operator does not say: those its own nodes use
    (routes for a node with a cluster, leafnode connections for a leaf)."""
    from dchat_ops.config.tls import tls_flags

    mine = read_nodes(store).values()
    out = []
    if node.get("leaf_of"):
        if any(tls_flags(n)["leafnode"] for n in mine):
            out.append("leafnode")
    elif node.get("cluster", True) and any(tls_flags(n)["route"] for n in mine):
        out.append("route")
    return out


def _tls_for(store: Store, body: dict[str, Any], node: dict[str, Any], links: list[str]) -> Optional[dict[str, Any]]:
    if not links:
        return None
    pki = _pki()
    ca_crt = pki.ca_paths(store)[1]
    if not ca_crt.is_file():
        raise EnrollError("TLS for the device needs this store's CA: run 'dchat-ops tls init-ca'")
    keys = body.get("tls_keys")
    if not isinstance(keys, dict):
        raise EnrollError("the request holds no TLS keys (it was made without them)")
    names = [node["id"], "localhost", "127.0.0.1"]
    for h in (node.get("host"), host_of(node.get("advertise") or "")):
        if h and not is_wildcard(h) and h not in names:
            names.append(h)
    certs = {}
    for link in links:
        if link == "route" and (node.get("leaf_of") or not node.get("cluster", True)):
            raise EnrollError("the device's node has no cluster: it cannot use TLS on routes")
        if link == "leafnode" and not node.get("leaf_of"):
            raise EnrollError("the device's node is not a leaf node: it cannot use TLS on leafnode connections")
        kind = _LINK_KIND[link]
        pem = keys.get(kind)
        if not isinstance(pem, str):
            raise EnrollError(f"the request holds no {kind} key")
        certs[kind] = pki.issue_for_public_key(store, node["id"], kind, pem.encode("ascii", "replace"), names).decode()
    return {"links": links, "ca": ca_crt.read_text(), "certs": certs}


def show_request(path: str | Path) -> dict[str, Any]:
    """A request's content, checked (its signature and its fields); nothing is written."""
    body = env.check_request_body(env.read_envelope(path, "request"))
    _check_node(body["node"], "enrollment request")
    return body


def _refuse_other_operator(store: Store, body: dict[str, Any], what: str) -> None:
    op = store.operator()
    if not body.get("operator"):
        raise EnrollError(f"{what} names no operator; make it with --operator {op.public_key}")
    if body["operator"] != op.public_key:
        raise EnrollError(
            f"{what} is for another operator ({str(body['operator'])[:12]}…), not this store's ({op.public_key[:12]}…)"
        )


def _cluster_routes(store: Store) -> list[str]:
    out = []
    for nid, n in read_nodes(store).items():
        if n.cluster:
            try:
                out.append(route_url(store, nid))
            except DchatOpsError:
                continue
    return out


def sign_request(
    store: Store,
    path: str | Path,
    *,
    out: str | Path,
    account: str = "",
    grant: Optional[Sequence[str]] = None,
    seed_routes: Optional[Sequence[str]] = None,
    tls: Optional[Sequence[str]] = None,
    force: bool = False,
) -> dict[str, Any]:
    """Check a request, issue the device's users, record the device and write the signed response.

    ``grant``: what the device's users may ever subscribe to (default: what it asked for).
    ``seed_routes``: where its node joins (default: the request's, else this store's nodes).
    ``tls``: the links of its node that use TLS (``route``, ``leafnode``; default: those this store's
    nodes use); the response then holds the CA and certificates for the keys the device made.
    """
    what = "enrollment request"
    body = show_request(path)
    _refuse_other_operator(store, body, what)
    for rec in env.device_records(store):
        if rec.get("request") == body["id"]:
            raise EnrollError(f"{what} was signed already (device {rec['device']}): a replayed request is refused")
    known = env.device_record(store, body["device"])
    if known is not None and not known.get("revoked_at"):
        raise EnrollError(f"device {body['device']} is enrolled already; revoke it first to enroll it again")
    if Path(out).exists() and not force:
        raise ExistsError(f"{out} exists; use --force to replace it")
    account = account or body.get("account") or store.default_account()
    grant = list(grant) if grant is not None else list(body.get("want_sub") or [])
    for g in grant:
        check_subject(g)
    node = dict(body["node"])
    if seed_routes is not None:
        node["seed_routes"] = list(seed_routes)
    elif not node.get("seed_routes") and not node.get("leaf_of") and node.get("cluster", True):
        node["seed_routes"] = _cluster_routes(store)
    _check_node(node, what)
    op = store.operator()
    sys_acc = store.find_account(op.claims.system_account, op.name)
    names, keys = body["names"], body["keys"]
    if account == sys_acc.name:
        raise EnrollError("a device's users belong to an application account, not the system account")
    taken = env.keys_in_use(store, [keys["user"], keys["node"], keys["system"]])
    if taken:
        raise EnrollError(f"{what}: its keys {', '.join(k[:12] + '…' for k in taken)} are already in use in this store")
    old_keys = known["keys"] if known is not None else {}  # a revoked device enrolling again: its old users' names
    links = list(tls) if tls is not None else _default_tls_links(store, node)
    with store.transaction():
        store.account(account, op.name)  # must exist
        tls_files = _tls_for(store, body, node, links)
        users = {
            "user": (
                account,
                names["user"],
                env.issue_for_key(
                    store,
                    account,
                    names["user"],
                    keys["user"],
                    env.device_user_spec(grant, node["id"]),
                    replaces_key=old_keys.get("user", ""),
                ),
            ),
            "node": (
                account,
                names["node"],
                env.issue_for_key(
                    store,
                    account,
                    names["node"],
                    keys["node"],
                    device_node_user_spec(node["id"], grant),
                    replaces_key=old_keys.get("node", ""),
                ),
            ),
            "system": (
                sys_acc.name,
                names["system"],
                env.issue_for_key(
                    store,
                    sys_acc.name,
                    names["system"],
                    keys["system"],
                    env.system_user_spec(node["id"]),
                    replaces_key=old_keys.get("system", ""),
                ),
            ),
        }
        issued = now(store)
        response = {
            "request": body["id"],
            "device": body["device"],
            "device_key": keys["user"],
            "issued": issued,
            "operator_jwt": op.token,
            "accounts": {a.name: a.token for a in store.accounts(op.name)},
            "account": account,
            "users": {part: {"account": a, "name": n, "jwt": t} for part, (a, n, t) in users.items()},
            "grant": grant,
            "node": node,
        }
        if tls_files is not None:
            response["tls"] = tls_files
        text = env.seal("response", response, operator_signer(store, op.claims))
        env.record_device(
            store,
            {
                "device": body["device"],
                "request": body["id"],
                "keys": keys,
                "names": names,
                "account": account,
                "system_account": sys_acc.name,
                "grant": grant,
                "node": node,
                "signed_at": issued,
                "revoked_at": 0,
                "grant_requests": [],
            },
        )
        _write_out(out, text, True)
    return {
        "device": body["device"],
        "account": account,
        "grant": grant,
        "node": node,
        "users": names,
        "tls": links,
        "out": str(out),
    }


def sign_grant(
    store: Store, path: str | Path, *, out: str | Path, grant: Optional[Sequence[str]] = None, force: bool = False
) -> dict[str, Any]:
    """Answer a device's grant request: re-issue its user and node user with the wider grant (``grant``:
    what to grant in all, default: the device's grant and what it asks for)."""
    what = "grant request"
    body = env.read_envelope(path, "grant", what)
    _refuse_other_operator(store, body, what)
    device = str(body.get("device"))
    rec = env.device_record(store, device) if isinstance(body.get("device"), str) else None
    if rec is None:
        raise EnrollError(f"{what}: device {device!r} is not enrolled in this store")
    if body["signer"] != rec["keys"]["user"]:
        raise EnrollError(f"{what}: not signed by device {device}'s key")
    if rec.get("revoked_at"):
        raise EnrollError(f"{what}: device {device} is revoked")
    if body.get("id") in rec.get("grant_requests", []):
        raise EnrollError(f"{what} was answered already: a replayed request is refused")
    want = [s for s in body.get("want_sub") or [] if isinstance(s, str)]
    for s in want:
        check_subject(s)
    new_grant = list(grant) if grant is not None else list(dict.fromkeys([*rec["grant"], *want]))
    for g in new_grant:
        check_subject(g)
    if Path(out).exists() and not force:
        raise ExistsError(f"{out} exists; use --force to replace it")
    op = store.operator()
    account, names, keys = rec["account"], rec["names"], rec["keys"]
    with store.transaction():
        u = env.issue_for_key(
            store, account, names["user"], keys["user"], env.device_user_spec(new_grant, names["node"]), replace=True
        )
        n = env.issue_for_key(
            store, account, names["node"], keys["node"], device_node_user_spec(names["node"], new_grant), replace=True
        )
        response = {
            "request": body["id"],
            "device": device,
            "device_key": keys["user"],
            "issued": now(store),
            "operator_jwt": op.token,
            "accounts": {a.name: a.token for a in store.accounts(op.name)},
            "account": account,
            "users": {
                "user": {"account": account, "name": names["user"], "jwt": u},
                "node": {"account": account, "name": names["node"], "jwt": n},
            },
            "grant": new_grant,
        }
        text = env.seal("response", response, operator_signer(store, op.claims))
        env.record_device(
            store, {**rec, "grant": new_grant, "grant_requests": [*rec.get("grant_requests", []), body["id"]]}
        )
        _write_out(out, text, True)
    return {"device": device, "grant": new_grant, "out": str(out)}


def list_devices(store: Store) -> list[dict[str, Any]]:
    store.require()
    return env.device_records(store)


def revoke_device(store: Store, device: str) -> dict[str, Any]:
    """Revoke every JWT of the device's users issued until now (its user, its node's user, its system user)."""
    rec = env.device_record(store, device)
    if rec is None:
        raise StoreError(f"no device named {device!r} in this store ('dchat-ops enroll list')")
    with store.transaction():
        revoke_users(store, rec["account"], [rec["keys"]["user"], rec["keys"]["node"]])
        revoke_users(store, rec["system_account"], [rec["keys"]["system"]])
        env.record_device(store, {**rec, "revoked_at": now(store)})
    return {"device": device, "accounts": [rec["account"], rec["system_account"]]}
