"""Export: a spec that describes a store as it is, so a network built by hand can move to CI."""

from __future__ import annotations

import io

from dchat_ops._decode import round_trip_yaml
from dchat_ops.config.node import Node, NodeFile, list_nodes
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc.admin import SYSTEM_ACCOUNT
from dchat_ops.nsc.claims import (
    ACCOUNT_LIMIT_KEYS,
    AccountClaims,
    AccountLimits,
    Export,
    JetStreamLimits,
    OperatorClaims,
    ScopedSigningKey,
    UserClaims,
    UserPermissionLimits,
)
from dchat_ops.nsc.exports import latency_fields
from dchat_ops.nsc.spec import (
    DEFAULT_PERMISSION_FIELDS,
    PERMISSION_FIELDS,
    ROLE_FIELDS,
    UserSpec,
    duration_text,
    time_text,
)
from dchat_ops.nsc.store import Store, user_signer
from dchat_ops.provision.schema import EXPORT_FIELDS, IMPORT_FIELDS, JS_FIELDS

__all__ = ["dump_spec", "export_spec"]


def export_spec(store: Store) -> dict:
    """A spec that describes the store as it is, so a hand-built network can move to CI.

    Lossless for identities: every field of the operator, the accounts, their roles and their users
    that a spec can hold is written, so that applying the spec issues JWTs with the same claims (only
    keys, issue times and ids differ).  A user whose current JWT is revoked is written as ``revoked:
    true`` (applied elsewhere it is not issued at all).
    """

    op = store.operator()
    out: dict = {"version": 1, "operator": _operator_dict(store, op)}
    node_ids = set(list_nodes(store))
    accounts = []
    keys = {x.public_key: x.name for x in store.accounts(op.name)}
    # accounts whose activations apply can make (it holds a key that signs them): an import of their
    # private exports is written without its token, apply makes one for the accounts' keys where it runs
    signers = {x.public_key for x in store.accounts(op.name) if _can_sign(store, op.claims, x.claims)}
    for e in store.accounts(op.name):
        if e.public_key == op.claims.system_account:
            continue
        a = _account_dict(e.name, e.claims, keys, signers)
        users = []
        sk_map = e.claims.signing_key_map()
        for uname in store.user_names(e.name, op.name):
            if uname in node_ids:
                continue
            u = store.user(e.name, uname).claims
            ud: dict = {"name": uname}
            if e.claims.is_revoked(u.subject, u.issued_at):
                ud["revoked"] = True
                users.append(ud)
                continue
            scope = sk_map.get(u.issuer)
            if scope is not None:
                ud["role"] = scope.role
                ud.update({k: v for k, v in UserSpec.from_claims(u).to_fields().items() if k not in PERMISSION_FIELDS})
            else:
                ud.update(UserSpec.from_claims(u).to_fields())
            users.append(ud)
        if users:
            a["users"] = users
        accounts.append(a)
    out["accounts"] = accounts
    nodes_out = [_node_dict(NodeFile.load(store, nid).node) for nid in sorted(node_ids)]
    if nodes_out:
        out["nodes"] = nodes_out
    return out


def _node_dict(n: Node) -> dict:
    """Every setting of a node a spec holds: applied in a new home, its config renders the same."""
    nd: dict = {"id": n.id, "host": n.host, "client_port": n.client_port, "monitor_port": n.monitor_port}
    if n.monitor_host:
        nd["monitor_host"] = n.monitor_host
    if n.advertise:
        nd["advertise"] = n.advertise
    if n.cluster:
        c = n.cluster
        if c["name"] != "dchat":
            nd["cluster_name"] = c["name"]
        nd["cluster_port"] = c["port"]
        if c.get("advertise"):
            nd["cluster_advertise"] = c["advertise"]
        if c["routes"]:
            nd["routes"] = list(c["routes"])
    else:
        nd["cluster"] = False
    if n.gateway:
        g = n.gateway
        nd["gateway"] = {
            "port": g["port"],
            **({"advertise": g["advertise"]} if g.get("advertise") else {}),
            "remotes": [{"name": r["name"], "urls": list(r["urls"])} for r in g["remotes"]],
        }
    if n.leafnodes:
        lf = n.leafnodes
        nd["leafnodes"] = {
            **({"port": lf["port"]} if lf.get("port") else {}),
            **({"advertise": lf["advertise"]} if lf.get("advertise") else {}),
            "remotes": [{k: (list(v) if k == "urls" else v) for k, v in r.items() if v} for r in lf["remotes"]],
        }
    if n.websocket:
        w = n.websocket
        nd["websocket"] = {"port": w["port"], **({"advertise": w["advertise"]} if w.get("advertise") else {})}
    if n.jetstream is not None:
        nd["jetstream"] = True
    if n.resolver != "full":
        nd["resolver"] = n.resolver
    if n.account:
        nd["account"] = n.account
    pol = {}
    if n.policy.subscribe.allow or n.policy.subscribe.deny:
        pol["subscribe"] = {"allow": n.policy.subscribe.allow, "deny": n.policy.subscribe.deny}
    if n.policy.publish.allow != [">"] or n.policy.publish.deny:
        pol["publish"] = {"allow": n.policy.publish.allow, "deny": n.policy.publish.deny}
    if pol:
        nd["policy"] = pol
    if n.tls:
        nd["tls"] = dict(n.tls)
    return nd


def _operator_dict(store: Store, op) -> dict:
    c = op.claims
    d: dict = {"name": op.name}
    if c.strict_signing_key_usage:
        d["strict"] = True
    if c.signing_keys:
        d["plain_signing_keys"] = len(c.signing_keys)
    if c.operator_service_urls:
        d["service_urls"] = list(c.operator_service_urls)
    if c.system_account:
        sys_name = store.find_account(c.system_account, op.name).name
        if sys_name != SYSTEM_ACCOUNT:
            d["system_account"] = sys_name
    if c.account_server_url:
        d["account_server_url"] = c.account_server_url
    if c.tags:
        d["tags"] = list(c.tags)
    return d


def _account_dict(name: str, c: AccountClaims, keys: dict[str, str], signers: set[str]) -> dict:
    a: dict = {"name": name}
    base = AccountLimits()
    lim = {
        k: getattr(c.limits, k)
        for k in (*ACCOUNT_LIMIT_KEYS, "wildcards", "disallow_bearer")
        if getattr(c.limits, k) != getattr(base, k)
    }
    if lim:
        a["limits"] = lim
    js = _js_dict(c.limits.jetstream)
    if c.limits.tiers:
        js["tiers"] = {name: _js_dict(t) for name, t in c.limits.tiers.items()}
    if js:
        a["jetstream"] = js
    if c.mappings:
        a["mappings"] = {source: [dict(d) for d in dests] for source, dests in c.mappings.items()}
    perms = UserSpec.from_claims(UserClaims(subject="", limits=UserPermissionLimits(permissions=c.default_permissions)))
    dp = perms.to_fields(DEFAULT_PERMISSION_FIELDS)
    if dp:
        a["default_permissions"] = dp
    plain = sum(1 for k in c.signing_keys if isinstance(k, str))
    if plain:
        a["plain_signing_keys"] = plain
    roles = [k for k in c.signing_keys if isinstance(k, ScopedSigningKey)]
    if roles:
        a["signing_keys"] = [_role_dict(k) for k in roles]
    if c.exports:
        a["exports"] = [_export_dict(x) for x in c.exports]
    if c.imports:
        a["imports"] = [
            {
                "account": keys.get(x.account, x.account),
                "subject": x.subject,
                "type": x.type,
                **{k: getattr(x, k) for k in IMPORT_FIELDS if getattr(x, k)},
            }
            for x in c.imports
        ]
        for d, x in zip(a["imports"], c.imports, strict=True):
            if x.account in signers:
                d.pop("token", None)
    if c.description:
        a["description"] = c.description
    if c.info_url:
        a["info_url"] = c.info_url
    if c.expires:
        a["expiry"] = time_text(c.expires)
    if c.tags:
        a["tags"] = list(c.tags)
    return a


def _export_dict(x: Export) -> dict:
    d: dict = {"subject": x.subject, "type": x.type}
    for k in EXPORT_FIELDS:
        v = getattr(x, k)
        if v:
            d[k] = duration_text(v / 1e9) if k == "response_threshold" else v
    d.update(latency_fields(x))
    return d


def _js_dict(js: JetStreamLimits) -> dict:
    return {k: getattr(js, attr) for k, attr in JS_FIELDS.items() if getattr(js, attr)}


def _can_sign(store: Store, op: OperatorClaims, c: AccountClaims) -> bool:
    """True when the keystore holds a key that signs the account's activations."""
    try:
        user_signer(store, op, c)
    except DchatOpsError:
        return False
    return True


def _role_dict(k: ScopedSigningKey) -> dict:
    d: dict = {"role": k.role}
    if k.description:
        d["description"] = k.description
    d.update(UserSpec.from_claims(UserClaims(subject="", limits=k.template)).to_fields(ROLE_FIELDS))
    return d


def dump_spec(data: dict) -> str:
    y = round_trip_yaml()
    y.default_flow_style = False
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()
