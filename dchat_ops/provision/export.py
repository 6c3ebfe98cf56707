"""Export: a spec that describes a store as it is, so a network built by hand can move to CI."""

from __future__ import annotations

import datetime as dt
import io

from dchat_ops._decode import round_trip_yaml
from dchat_ops.config.node import NodeFile, list_nodes
from dchat_ops.nsc.claims import ScopedSigningKey
from dchat_ops.nsc.store import Store

__all__ = ["dump_spec", "export_spec"]


def export_spec(store: Store) -> dict:
    """A spec that describes the store as it is, so a hand-built network can move to CI."""

    op = store.operator()
    out: dict = {"version": 1, "operator": {"name": op.name}}
    if op.claims.strict_signing_key_usage:
        out["operator"]["strict"] = True
    node_ids = set(list_nodes(store))
    accounts = []
    for e in store.accounts(op.name):
        if e.public_key == op.claims.system_account:
            continue
        c = e.claims
        a: dict = {"name": e.name}
        lim = {
            k: getattr(c.limits, k)
            for k in ("conn", "leaf", "subs", "data", "payload", "imports", "exports")
            if getattr(c.limits, k) != -1
        }
        if lim:
            a["limits"] = lim
        js = c.limits.jetstream
        if js.enabled():
            a["jetstream"] = {
                "mem": js.mem_storage,
                "disk": js.disk_storage,
                "streams": js.streams,
                "consumers": js.consumer,
            }
        roles = [k for k in c.signing_keys if isinstance(k, ScopedSigningKey)]
        if roles:
            a["signing_keys"] = [_role_dict(k) for k in roles]
        if c.exports:
            a["exports"] = [{"subject": x.subject, "type": x.type} for x in c.exports]
        keys = {x.public_key: x.name for x in store.accounts(op.name)}
        if c.imports:
            a["imports"] = [
                {
                    "account": keys.get(x.account, x.account),
                    "subject": x.subject,
                    "type": x.type,
                    **({"local_subject": x.local_subject} if x.local_subject else {}),
                }
                for x in c.imports
            ]
        users = []
        sk_map = c.signing_key_map()
        for uname in store.user_names(e.name, op.name):
            if uname in node_ids:
                continue
            u = store.user(e.name, uname).claims
            ud: dict = {"name": uname}
            scope = sk_map.get(u.issuer)
            if scope is not None:
                ud["role"] = scope.role
            else:
                p = u.permissions
                for k, v in (
                    ("allow_pub", p.pub.allow),
                    ("deny_pub", p.pub.deny),
                    ("allow_sub", p.sub.allow),
                    ("deny_sub", p.sub.deny),
                ):
                    if v:
                        ud[k] = list(v)
            if u.expires:
                ud["expiry"] = dt.datetime.fromtimestamp(u.expires, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            users.append(ud)
        if users:
            a["users"] = users
        accounts.append(a)
    out["accounts"] = accounts
    nodes_out = []
    for nid in sorted(node_ids):
        n = NodeFile.load(store, nid).node
        nd: dict = {"id": nid, "host": n.host, "client_port": n.client_port, "monitor_port": n.monitor_port}
        if n.cluster:
            nd["cluster_port"] = n.cluster["port"]
            if n.cluster["routes"]:
                nd["routes"] = list(n.cluster["routes"])
        if n.account:
            nd["account"] = n.account
        pol = {}
        if n.policy.subscribe.allow or n.policy.subscribe.deny:
            pol["subscribe"] = {"allow": n.policy.subscribe.allow, "deny": n.policy.subscribe.deny}
        if n.policy.publish.allow != [">"] or n.policy.publish.deny:
            pol["publish"] = {"allow": n.policy.publish.allow, "deny": n.policy.publish.deny}
        if pol:
            nd["policy"] = pol
        nodes_out.append(nd)
    if nodes_out:
        out["nodes"] = nodes_out
    return out


def _role_dict(k: ScopedSigningKey) -> dict:
    d: dict = {"role": k.role}
    p = k.template.permissions
    for name, v in (
        ("allow_pub", p.pub.allow),
        ("deny_pub", p.pub.deny),
        ("allow_sub", p.sub.allow),
        ("deny_sub", p.sub.deny),
    ):
        if v:
            d[name] = list(v)
    return d


def dump_spec(data: dict) -> str:
    y = round_trip_yaml()
    y.default_flow_style = False
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()
