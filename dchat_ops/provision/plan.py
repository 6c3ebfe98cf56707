"""The plan: what apply would create, update, re-issue, revoke or restore, and how.

A :class:`Plan` is both the report (``changes``) and the work list apply executes: the operator
settings to change, each account's step (with the claims it will be signed with), each user to
issue with the :class:`~dchat_ops.nsc.spec.UserSpec` it will get, each user to revoke, and each
node's step with the edits of its node file.  Apply does what the plan says; it computes only what
cannot be known before it runs: the keys of accounts and the ports of nodes it creates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from dchat_ops._fs import read_file
from dchat_ops.config.node import NodeFile, list_nodes, node_path
from dchat_ops.config.pki import ca_paths
from dchat_ops.errors import ConfigError, JWTError, StoreError
from dchat_ops.hosts import dial_host
from dchat_ops.hosts import url as host_url
from dchat_ops.nsc import admin
from dchat_ops.nsc.claims import AccountClaims, Export, Import, ScopedSigningKey, UserClaims, UserPermissionLimits
from dchat_ops.nsc.jwt import decode
from dchat_ops.nsc.spec import ROLE_FIELDS, USER_FIELDS, UserSpec
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.nsc.supersede import taken_away
from dchat_ops.permissions.apply import NodeEdit
from dchat_ops.provision.schema import Spec, SpecError, node_user_clash
from dchat_ops.provision.state import fingerprint, load_state, sha

__all__ = ["AccountStep", "Change", "NodeStep", "Plan", "UserStep", "plan", "spec_uses_tls"]


@dataclass
class Change:
    action: str  # create, update, reissue, revoke, drift
    kind: str  # operator, account, user, node
    name: str
    detail: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class AccountStep:
    name: str
    create: bool
    item: dict  # the spec's account
    desired: Optional[AccountClaims] = None  # None: built once the keys it names exist (created in this apply)
    missing_roles: list[str] = field(default_factory=list)


@dataclass
class UserStep:
    account: str
    name: str
    role: str  # "" for none
    spec: UserSpec  # may be shared with other steps: read, never changed
    exists: bool  # re-issue with the same key, or a new user
    item: dict = field(default_factory=dict)  # the spec's user (its fingerprint goes to the state)
    current: Optional[tuple[str, int]] = None  # (public key, iat) of its JWT in the store, as plan verified it
    taken_away: list[str] = field(default_factory=list)  # what the re-issue takes away: its earlier JWTs are revoked


@dataclass
class NodeStep:
    id: str
    create: bool
    item: dict  # the spec's node
    edits: Optional[list[NodeEdit]] = None  # None: worked out once the nodes it routes to have ports


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    create_operator: bool = False
    operator: dict = field(default_factory=dict)  # operator settings to change: strict, service_urls
    accounts: list[AccountStep] = field(default_factory=list)
    users_to_issue: list[UserStep] = field(default_factory=list)
    users_to_revoke: list[tuple[str, str]] = field(default_factory=list)
    nodes: list[NodeStep] = field(default_factory=list)  # every node of the spec, changed or not
    state_stale: bool = False  # the state does not say what plan found: write it even when nothing changed
    user_state: dict[str, dict[str, str]] = field(default_factory=dict)  # the state entries of unchanged users

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.action] = counts.get(c.action, 0) + 1
        return {"changes": [c.to_dict() for c in self.changes], "summary": counts, "unchanged": self.unchanged}


# --- desired state ----------------------------------------------------------------------------------


def user_spec(u: dict, now: int) -> UserSpec:
    """The UserSpec of a spec user: every field set, so the JWT is the spec and nothing else."""
    if "role" in u:  # the role's template owns permissions and limits
        spec = UserSpec.from_fields({k: u[k] for k in ("expiry", "start", "tags") if k in u}, now=now)
    else:
        spec = UserSpec.from_fields({k: v for k, v in u.items() if k in USER_FIELDS}, now=now)
        for attr in ("pub_allow", "pub_deny", "sub_allow", "sub_deny"):
            if getattr(spec, attr) is None:
                setattr(spec, attr, [])
    if spec.expires is None:
        spec.expires = 0
    return spec


def role_template(r: dict) -> UserPermissionLimits:
    u = UserClaims(subject="", name="")
    UserSpec.from_fields({k: v for k, v in r.items() if k in ROLE_FIELDS}, now=0, known=ROLE_FIELDS).apply(u)
    return u.limits


def _desired_claims(spec: UserSpec, scoped: bool) -> UserClaims:
    u = UserClaims(subject="", name="")
    if scoped:
        u.limits.clear_for_scope()
    spec.apply(u)
    return u


def account_desired(spec_acc: dict, existing, account_keys: dict[str, str]) -> tuple[AccountClaims, list[str]]:
    """The account claims the spec wants, built on the existing claims (keys and revocations kept)."""
    claims = existing.claims.copy() if existing else AccountClaims(subject="", name=spec_acc["name"])
    lim = spec_acc.get("limits", {})
    base = AccountClaims(subject="", name="").limits
    for limit in ("conn", "leaf", "subs", "data", "payload", "imports", "exports", "wildcards"):
        setattr(claims.limits, limit, lim.get(limit, getattr(base, limit)))
    js = spec_acc.get("jetstream", {})
    claims.limits.jetstream.mem_storage = js.get("mem", 0)
    claims.limits.jetstream.disk_storage = js.get("disk", 0)
    claims.limits.jetstream.streams = js.get("streams", 0)
    claims.limits.jetstream.consumer = js.get("consumers", 0)
    claims.exports = [
        Export(e["subject"], e.get("type", "stream"), name=e.get("name", "")) for e in spec_acc.get("exports", [])
    ]
    claims.imports = [
        Import(
            i["subject"],
            account_keys.get(i["account"], ""),
            i.get("type", "stream"),
            name=i.get("name", ""),
            local_subject=i.get("local_subject", ""),
        )
        for i in spec_acc.get("imports", [])
    ]
    claims.description = spec_acc.get("description", "")
    # roles: keep existing scoped keys whose role is still wanted (their template updated), drop the others
    wanted = {r["role"]: r for r in spec_acc.get("signing_keys", [])}
    kept: list = [k for k in claims.signing_keys if isinstance(k, str)]
    have_roles = set()
    for k in claims.signing_keys:
        if isinstance(k, ScopedSigningKey) and k.role in wanted:
            k.template = role_template(wanted[k.role])
            k.description = wanted[k.role].get("description", "")
            kept.append(k)
            have_roles.add(k.role)
    missing_roles = [r for r in wanted if r not in have_roles]
    claims.signing_keys = kept
    return claims, missing_roles


def route_urls(spec: Spec, n: dict, ports: dict[str, int]) -> Optional[list[str]]:
    """The node's routes as URLs; None while a node it routes to has no cluster port yet."""
    out = []
    for r in n.get("routes", []):
        if "://" in r:
            out.append(r)
            continue
        if r not in ports:
            return None
        other = next(x for x in spec.nodes if x["id"] == r)
        out.append(host_url("nats-route", dial_host(other.get("host", "127.0.0.1")), ports[r]))
    return out


def node_edits(spec: Spec, n: dict, nf: NodeFile, cluster_ports: dict[str, int]) -> Optional[list[NodeEdit]]:
    """(key path, value) pairs that bring the node file to the spec (None: routes not known yet)."""
    node = nf.node
    edits: list[NodeEdit] = []
    for key in ("client_port", "monitor_port", "host"):
        if key in n and getattr(node, key) != n[key]:
            edits.append(((key,), n[key]))
    pol = n.get("policy", {})
    for direction in ("publish", "subscribe"):
        want = pol.get(direction, {})
        rule = getattr(node.policy, direction)
        default_allow = [">"] if direction == "publish" else []
        if rule.allow != want.get("allow", default_allow):
            edits.append((("policy", direction, "allow"), want.get("allow", default_allow)))
        if rule.deny != want.get("deny", []):
            edits.append((("policy", direction, "deny"), want.get("deny", [])))
    if node.cluster and "cluster_port" in n and node.cluster["port"] != n["cluster_port"]:
        edits.append((("cluster", "port"), n["cluster_port"]))
    if node.cluster:
        routes = route_urls(spec, n, cluster_ports)
        if routes is None:
            return None
        if node.cluster["routes"] != routes:
            edits.append((("cluster", "routes"), routes))
    want_tls = n.get("tls", {})
    if (node.tls or {}) != want_tls:
        edits.append((("tls",), want_tls))
    return edits


def spec_cluster_ports(store: Store, spec: Spec) -> dict[str, int]:
    ports = {}
    for x in spec.nodes:
        if "cluster_port" in x:
            ports[x["id"]] = x["cluster_port"]
        elif node_path(store, x["id"]).exists():
            c = NodeFile.load(store, x["id"]).node.cluster
            if c:
                ports[x["id"]] = c["port"]
    return ports


# --- plan --------------------------------------------------------------------------------------------


def plan(store: Store, spec: Spec, *, keep_removed: bool = False) -> Plan:
    """Compare the spec with the store: what apply would create, change, re-issue or revoke."""
    p = Plan()
    state = load_state(store)
    now = admin.now(store)
    op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
    sys_name = spec.operator.get("system_account") or admin.SYSTEM_ACCOUNT
    if not store.exists():
        p.create_operator = True
        p.operator["system_account"] = sys_name
        p.changes.append(Change("create", "operator", op_name, f"with system account {sys_name}"))
    elif store.current_operator() != op_name:
        raise SpecError(f"{spec.path}: the spec's operator is {op_name!r}, the store's is {store.current_operator()!r}")
    op = None if p.create_operator else store.operator()
    if op is not None and "system_account" in spec.operator:
        held = store.find_account(op.claims.system_account, op.name).name
        if held != sys_name:
            raise SpecError(
                f"{spec.path}: operator.system_account: the spec names {sys_name!r}, the store's system account is "
                f"{held!r} (a system account cannot be renamed)"
            )
    strict = bool(spec.operator.get("strict", False))
    if (op and strict != op.claims.strict_signing_key_usage) or (op is None and strict):
        p.operator["strict"] = strict
        if op:
            p.changes.append(Change("update", "operator", op_name, "strict signing key usage"))
    urls = spec.operator.get("service_urls")
    if urls and (op is None or list(op.claims.operator_service_urls) != list(urls)):
        p.operator["service_urls"] = list(urls)
        if op:
            p.changes.append(Change("update", "operator", op_name, "service URLs"))
    existing_accounts = {} if p.create_operator else {n: store.account(n) for n in store.account_names()}
    account_keys = {n: e.public_key for n, e in existing_accounts.items()}
    for a in spec.accounts:
        e = existing_accounts.get(a["name"])
        if e is None:
            p.changes.append(Change("create", "account", a["name"]))
            p.accounts.append(AccountStep(a["name"], True, a))
            continue
        desired, missing_roles = account_desired(a, e, account_keys)
        if desired.to_dict() != e.claims.to_dict() or missing_roles:
            p.changes.append(Change("update", "account", a["name"], "limits, keys, exports or imports"))
            resolved = all(i["account"] in account_keys for i in a.get("imports", []))
            p.accounts.append(AccountStep(a["name"], False, a, desired if resolved else None, missing_roles))
    users_state = _plan_users(store, spec, p, state, existing_accounts, now)
    node_users = {(n.get("account") or "", n["id"]) for n in spec.nodes}
    in_spec = {f"{a['name']}/{u['name']}" for a in spec.accounts for u in a.get("users", [])}
    for key in sorted(users_state):
        acc_name, name = key.split("/", 1)
        if key in in_spec or (acc_name, name) in node_users:
            continue
        if not store.user_jwt_path(op_name, acc_name, name).exists():
            continue
        if keep_removed:
            p.changes.append(Change("drift", "user", key, "removed from the spec; kept (--keep-removed)"))
        else:
            p.users_to_revoke.append((acc_name, name))
            p.changes.append(Change("revoke", "user", key, "removed from the spec"))
    _plan_nodes(store, spec, p)
    spec.keep()
    return p


def _plan_users(
    store: Store, spec: Spec, p: Plan, state: dict, existing_accounts: dict, now: int
) -> dict[str, dict[str, str]]:
    """The users of the spec: new ones to create, changed ones to re-issue (or restore), the rest
    unchanged (their state entries kept in ``p.user_state``).  Returns the state's users.

    An unchanged user costs one read of its JWT: its hash is compared with the one apply recorded,
    and its spec with the recorded fingerprint (not even computed when the spec is the one applied
    last).  Only a user whose hashes differ is decoded and compared field by field.
    """
    users_state = state.get("users")
    if not isinstance(users_state, dict):
        users_state = {}
    same_spec = bool(spec.key) and state.get("spec_key") == spec.key
    if users_state and not same_spec:
        p.state_stale = True  # record the key of this spec, so that the next plan of it is the fast one
    specs: dict[tuple, UserSpec] = {}  # users with the same fields share one (read-only) UserSpec
    op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
    for a in spec.accounts:
        acc_name = a["name"]
        new_account = acc_name not in existing_accounts
        users_dir = "" if new_account else os.fspath(store.user_jwt_path(op_name, acc_name, "x").parent)
        for u in a.get("users", []):
            name = u["name"]
            key = f"{acc_name}/{name}"
            token = None if new_account else _read_token(f"{users_dir}/{check_name(name, 'user name')}.jwt")
            if token is None:
                p.users_to_issue.append(
                    UserStep(acc_name, name, u.get("role", ""), _user_spec(specs, u, now), False, u)
                )
                p.changes.append(Change("create", "user", key))
                continue
            st = users_state.get(key)
            jwt_sha = sha(token)
            fp = st.get("spec") if (same_spec and isinstance(st, dict)) else fingerprint(u)
            if isinstance(st, dict) and st.get("spec") == fp and st.get("jwt") == jwt_sha:
                p.unchanged += 1
                p.user_state[key] = st
                continue
            want = _user_spec(specs, u, now)
            # compare the JWT with what the spec wants (one that does not verify is issued anew)
            try:
                claims: Optional[UserClaims] = decode(token, UserClaims)
            except JWTError:
                claims = None
            desired = _desired_claims(want, "role" in u)
            want_nats, want_exp = desired.nats_dict(), desired.expires
            role_ok = True
            if claims is not None and "role" in u:
                scope = existing_accounts[acc_name].claims.signing_key_map().get(claims.issuer)
                role_ok = scope is not None and scope.role == u["role"]
            have = None if claims is None else {k: v for k, v in claims.nats_dict().items() if k != "issuer_account"}
            if claims is not None and have == want_nats and claims.expires == want_exp and role_ok:
                p.unchanged += 1
                p.user_state[key] = {"spec": fingerprint(u), "jwt": jwt_sha}
                p.state_stale = True
                continue
            drift = isinstance(st, dict) and st.get("spec") == fingerprint(u)
            current = None if claims is None else (claims.subject, claims.issued_at)
            # what the new JWT takes away: apply then revokes the user's earlier JWTs
            removed = [] if claims is None else taken_away(claims, desired)
            p.users_to_issue.append(UserStep(acc_name, name, u.get("role", ""), want, True, u, current, removed))
            detail = "changed outside the spec; apply restores it" if drift else "permissions or limits changed"
            if removed:
                detail += f"; its earlier JWTs are revoked ({'; '.join(removed)})"
            p.changes.append(Change("drift" if drift else "reissue", "user", key, detail))
    return users_state


def _read_token(path: str) -> Optional[str]:
    """The text of a JWT file (stripped), None when there is none."""
    try:
        return read_file(path)[0].decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None


def _user_spec(specs: dict[tuple, UserSpec], u: dict, now: int) -> UserSpec:
    """:func:`user_spec`, made once for users whose fields (all but the name) are the same."""
    try:
        key = tuple((k, type(v), tuple(v) if isinstance(v, list) else v) for k, v in u.items() if k != "name")
        hit = specs.get(key)
    except TypeError:  # a value that cannot be a key
        return user_spec(u, now)
    if hit is None:
        hit = specs[key] = user_spec(u, now)
    return hit


def _node_account(store: Store, spec: Spec, n: dict, create_operator: bool) -> str:
    """The account whose user the node's id names: its node file's, the spec's, else the default one."""
    if not create_operator and node_path(store, n["id"]).exists():
        try:
            return NodeFile.load(store, n["id"]).node.account
        except ConfigError:
            pass
    if n.get("account"):
        return str(n["account"])
    if create_operator:  # apply makes the first account of the spec the default one
        return spec.accounts[0]["name"] if spec.accounts else admin.DEFAULT_ACCOUNT
    try:
        return store.default_account()
    except StoreError:
        return ""


def _check_node_users(store: Store, spec: Spec, create_operator: bool) -> None:
    """Refuse a spec user named like a node of the spec in the node's account (they would overwrite each other)."""
    users = {(a["name"], u["name"]) for a in spec.accounts for u in a.get("users", [])}
    for i, n in enumerate(spec.nodes):
        acc = _node_account(store, spec, n, create_operator)
        if (acc, n["id"]) in users:
            raise SpecError(f"{spec.where('nodes', i, 'id')}: nodes[{i}].id: {node_user_clash(n['id'], acc)}")


def spec_uses_tls(spec: Spec) -> bool:
    """True when a node of the spec turns on TLS for some link (apply then makes the CA if there is none)."""
    return any(v for n in spec.nodes for k, v in (n.get("tls") or {}).items() if k != "insecure")


def _plan_nodes(store: Store, spec: Spec, p: Plan) -> None:
    _check_node_users(store, spec, p.create_operator)
    if spec_uses_tls(spec) and (p.create_operator or not ca_paths(store)[1].is_file()):
        p.changes.append(Change("create", "tls", "CA", "the store's CA, for the nodes with TLS"))
    spec_ids = {n["id"] for n in spec.nodes}
    taken: dict[int, str] = {}
    for other in list_nodes(store):
        if other in spec_ids:
            continue
        try:
            for what, port in NodeFile.load(store, other).node.ports():
                taken[port] = f"the {what} port of node {other}"
        except ConfigError:
            continue
    for n in spec.nodes:
        for k in ("client_port", "cluster_port", "monitor_port"):
            if n.get(k) in taken:
                raise SpecError(f"{spec.path}: nodes[{n['id']}].{k}: port {n[k]} clashes with {taken[n[k]]}")
    cluster_ports = spec_cluster_ports(store, spec)
    for n in spec.nodes:
        if not node_path(store, n["id"]).exists():
            p.changes.append(Change("create", "node", n["id"]))
            p.nodes.append(NodeStep(n["id"], True, n))
            continue
        edits = node_edits(spec, n, NodeFile.load(store, n["id"]), cluster_ports)
        if edits is None or edits:
            detail = ", ".join(dict.fromkeys(".".join(k[:2]) for k, _ in edits)) if edits else "routes"
            p.changes.append(Change("update", "node", n["id"], detail))
        p.nodes.append(NodeStep(n["id"], False, n, edits))
