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
from functools import partial
from typing import Optional

from dchat_ops._fs import read_file
from dchat_ops._time import parse_expiry
from dchat_ops.config.node import NodeFile, list_nodes, node_path, read_nodes
from dchat_ops.config.nodes import advertise_on
from dchat_ops.config.pki import ca_paths
from dchat_ops.errors import ConfigError, FieldError, JWTError, StoreError
from dchat_ops.hosts import dial_host, host_of, host_port, is_wildcard
from dchat_ops.hosts import url as host_url
from dchat_ops.nsc import admin
from dchat_ops.nsc.claims import (
    ACCOUNT_LIMIT_KEYS,
    AccountClaims,
    Export,
    Import,
    Permissions,
    ScopedSigningKey,
    UserClaims,
    UserPermissionLimits,
)
from dchat_ops.nsc.exports import export_from_fields, find_export, sign_activation, verify_activation
from dchat_ops.nsc.jwt import decode
from dchat_ops.nsc.spec import DEFAULT_PERMISSION_FIELDS, ROLE_FIELDS, USER_FIELDS, UserSpec, dedupe
from dchat_ops.nsc.store import Entity, Store, check_name
from dchat_ops.nsc.supersede import taken_away
from dchat_ops.permissions.apply import NodeEdit
from dchat_ops.provision.schema import IMPORT_FIELDS, Spec, SpecError, node_user_clash, spec_jetstream
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
    missing_plain: int = 0  # plain signing keys to add


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
    accounts_to_remove: list[str] = field(default_factory=list)
    accounts_kept: list[str] = field(default_factory=list)  # removed from the spec, kept (--keep-removed)
    nodes_to_remove: list[str] = field(default_factory=list)
    nodes_kept: list[str] = field(default_factory=list)  # removed from the spec, kept (--keep-removed)
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


def default_permissions(fields: dict) -> Permissions:
    """An account's default permissions from its spec fields (every list set: the spec and nothing else)."""
    u = UserClaims(subject="", name="")
    spec = UserSpec.from_fields(fields, now=0, known=DEFAULT_PERMISSION_FIELDS)
    for attr in ("pub_allow", "pub_deny", "sub_allow", "sub_deny"):
        if getattr(spec, attr) is None:
            setattr(spec, attr, [])
    spec.apply(u)
    return u.limits.permissions


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


def account_desired(
    spec_acc: dict, existing, account_keys: dict[str, str], now: int = 0
) -> tuple[AccountClaims, list[str], int]:
    """The account claims the spec wants, built on the existing claims (keys and revocations kept), the
    roles it has no key for yet, and how many plain signing keys it lacks."""
    claims = existing.claims.copy() if existing else AccountClaims(subject="", name=spec_acc["name"])
    lim = spec_acc.get("limits", {})
    base = AccountClaims(subject="", name="").limits
    for limit in (*ACCOUNT_LIMIT_KEYS, "wildcards", "disallow_bearer"):
        setattr(claims.limits, limit, lim.get(limit, getattr(base, limit)))
    claims.limits.jetstream, claims.limits.tiers = spec_jetstream(spec_acc.get("jetstream", {}))
    claims.mappings = {source: [dict(d) for d in dests] for source, dests in spec_acc.get("mappings", {}).items()}
    claims.default_permissions = default_permissions(spec_acc.get("default_permissions", {}))
    claims.info_url = spec_acc.get("info_url", "")

    revoked = {(x.subject, x.type): x.revocations for x in claims.exports}  # revoked activations stay
    claims.exports = [export_from_fields(e["subject"], e.get("type", "stream"), e) for e in spec_acc.get("exports", [])]
    for x in claims.exports:
        x.revocations = dict(revoked.get((x.subject, x.type), {}))
    claims.imports = [
        Import(
            i["subject"],
            account_keys.get(i["account"], ""),
            i.get("type", "stream"),
            **{k: i[k] for k in IMPORT_FIELDS if k in i},
        )
        for i in spec_acc.get("imports", [])
    ]
    claims.description = spec_acc.get("description", "")
    claims.expires = parse_expiry(str(spec_acc["expiry"]), now) if "expiry" in spec_acc else 0
    claims.tags = dedupe(t.strip().lower() for t in spec_acc.get("tags", []))
    # roles: keep existing scoped keys whose role is still wanted (their template updated), drop the others
    wanted = {r["role"]: r for r in spec_acc.get("signing_keys", [])}
    kept: list = [k for k in claims.signing_keys if isinstance(k, str)]
    have_roles = set()
    for sk in claims.signing_keys:
        if isinstance(sk, ScopedSigningKey) and sk.role in wanted:
            sk.template = role_template(wanted[sk.role])
            sk.description = wanted[sk.role].get("description", "")
            kept.append(sk)
            have_roles.add(sk.role)
    missing_roles = [r for r in wanted if r not in have_roles]
    claims.signing_keys = kept
    plain = sum(1 for k in kept if isinstance(k, str))
    return claims, missing_roles, max(0, spec_acc.get("plain_signing_keys", 0) - plain)


def _claims_changed(have: AccountClaims, want: AccountClaims, missing_roles: list[str]) -> str:
    """What differs between two account claims, by JWT field (``limits``, ``mappings``, ``imports``...)."""
    h, w = have.to_dict(), want.to_dict()
    parts = [k for k in ("exp", "tags") if h.get(k) != w.get(k)]
    hn, wn = h["nats"], w["nats"]
    parts += [k for k in dict.fromkeys([*wn, *hn]) if hn.get(k) != wn.get(k)]
    if missing_roles and "signing_keys" not in parts:
        parts.append("signing_keys")
    return ", ".join(parts) or "signing_keys"


def _check_new_tokens(spec: Spec, ai: int, a: dict, account_keys: dict[str, str], creating: bool) -> None:
    """Refuse a spec's activation token for an account apply has yet to make: it cannot be for its new key."""
    for j, i in enumerate(a.get("imports", [])):
        if i.get("token") and (creating or i["account"] not in account_keys):
            new = a["name"] if creating else i["account"]
            raise SpecError(
                f"{spec.where('accounts', ai, 'imports', j, 'token')}: accounts[{ai}].imports[{j}].token: "
                f"account {new} is made by this apply, so no token can be for its key yet: leave token out "
                "(apply makes the activation with the exporting account's key)"
            )


def _spec_export(spec: Spec, account: str, subject: str, kind: str) -> Optional[Export]:
    """The export of the spec's ``account`` that covers ``subject`` (of ``kind``)."""
    acc = next((a for a in spec.accounts if a["name"] == account), None)
    if acc is None:
        return None
    xs = [export_from_fields(x["subject"], x.get("type", "stream"), x) for x in acc.get("exports", [])]
    return find_export(AccountClaims(subject="", exports=xs), subject, kind)


def _verify(exporter: Entity[AccountClaims], importer: str, imp: Import, now: int, token: str) -> None:
    verify_activation(
        token,
        exporter=exporter.public_key,
        importer=importer,
        subject=imp.subject,
        kind=imp.type,
        now=now,
        exporter_claims=exporter.claims,
    )


def activation_tokens(
    store: Store, spec: Spec, spec_acc: dict, claims: AccountClaims, current: Optional[AccountClaims], now: int
) -> None:
    """The activation token of each import of ``claims`` (built by :func:`account_desired`) that takes a
    private export of the spec: the spec's token, verified (:func:`~dchat_ops.nsc.exports.verify_activation`);
    else the one the account holds when it still verifies; else a new one, signed with the exporting
    account's key.  An import of a public export has none.  SpecError names the import when none verifies."""
    if not spec_acc.get("imports"):
        return
    ai = next(n for n, a in enumerate(spec.accounts) if a is spec_acc)
    for j, (item, imp) in enumerate(zip(spec_acc.get("imports", []), claims.imports, strict=True)):
        x = _spec_export(spec, item["account"], imp.subject, imp.type)
        if x is None or not x.token_req:
            imp.token = ""
            continue
        if not imp.account or not claims.subject:
            continue  # keys made by apply: it comes back here once they exist
        exporter = store.account(item["account"])
        where = f"accounts[{ai}].imports[{j}]"
        check = partial(_verify, exporter, claims.subject, imp, now)
        if imp.token:
            try:
                check(imp.token)
            except FieldError as exc:
                raise SpecError(
                    f"{spec.where('accounts', ai, 'imports', j, 'token')}: {where}.token: {exc.reason}"
                ) from None
            continue
        held = next(
            (
                h.token
                for h in (current.imports if current else [])
                if h.token and (h.account, h.subject, h.type) == (imp.account, imp.subject, imp.type)
            ),
            "",
        )
        if held:
            try:
                check(held)
                imp.token = held
                continue
            except FieldError:
                pass
        try:
            imp.token = sign_activation(store, exporter, x, imp.subject, claims.subject).token
            check(imp.token)
        except (FieldError, StoreError) as exc:
            reason = exc.reason if isinstance(exc, FieldError) else str(exc)
            raise SpecError(
                f"{spec.where('accounts', ai, 'imports', j)}: {where}: no activation of {x.type} "
                f"{imp.subject!r} from account {item['account']}: {reason}"
            ) from None


# what a node id in a spec's URL list stands for: (URL scheme, section of the port)
_LINKS = {"cluster": ("nats-route", "cluster"), "gateway": ("nats", "gateway"), "leaf": ("nats-leaf", "leafnodes")}

SpecPorts = dict[str, dict[str, int]]  # node id -> {"cluster" | "gateway" | "leafnodes": port}


def spec_ports(store: Store, spec: Spec) -> SpecPorts:
    """The cluster, gateway and leafnode ports of the spec's nodes: the spec's, else the node file's."""
    out: SpecPorts = {}
    for x in spec.nodes:
        ports: dict[str, int] = {}
        if node_path(store, x["id"]).exists():
            node = NodeFile.load(store, x["id"]).node
            for sec in ("cluster", "gateway", "leafnodes"):
                cur = getattr(node, sec)
                if cur and cur.get("port"):
                    ports[sec] = cur["port"]
        if "cluster_port" in x:
            ports["cluster"] = x["cluster_port"]
        for sec in ("gateway", "leafnodes"):
            if (x.get(sec) or {}).get("port"):
                ports[sec] = x[sec]["port"]
        out[x["id"]] = ports
    return out


def resolve_urls(spec: Spec, refs: list[str], kind: str, ports: SpecPorts) -> Optional[list[str]]:
    """URLs for a list of URLs and node ids of the spec; None while a node named has no port yet."""
    scheme, sec = _LINKS[kind]
    out = []
    for r in refs:
        if "://" in r:
            out.append(r)
            continue
        port = ports.get(r, {}).get(sec)
        if port is None:
            return None
        other = next(x for x in spec.nodes if x["id"] == r)
        out.append(host_url(scheme, dial_host(other.get("host", "127.0.0.1")), port))
    return out


def _advertise(n: dict, given: Optional[str], port: int, *, whole: bool = False) -> Optional[str]:
    """The advertise a listener of spec node ``n`` should have: its own (``given``), else the node's
    ``advertise`` on the listener's port (``whole``: as written when it has a port: the cluster's),
    else none; None (not compared) for a public node that names none (node add detected one)."""
    if given:
        return given
    adv = n.get("advertise")
    if adv:
        if whole and ":" in adv.rsplit("]", 1)[-1]:
            return adv
        return host_port(host_of(adv), port)
    return None if is_wildcard(n.get("host", "127.0.0.1")) else ""


def node_edits(spec: Spec, n: dict, nf: NodeFile, ports: SpecPorts) -> Optional[list[NodeEdit]]:
    """(key path, value) pairs that bring the node file to the spec (None: a port it needs is not known yet)."""
    node = nf.node
    edits: list[NodeEdit] = []
    for key in ("client_port", "monitor_port", "host"):
        if key in n and getattr(node, key) != n[key]:
            edits.append(((key,), n[key]))
    if node.monitor_host != n.get("monitor_host", ""):
        edits.append((("monitor_host",), n.get("monitor_host", "")))
    if node.resolver != n.get("resolver", "full"):
        edits.append((("resolver",), n.get("resolver", "full")))
    client_port = n.get("client_port", node.client_port)
    want_adv = _advertise(n, None, client_port)
    if want_adv is not None and advertise_on(node.advertise, node.client_port) != want_adv:
        edits.append((("advertise",), want_adv))
    pol = n.get("policy", {})
    for direction in ("publish", "subscribe"):
        want = pol.get(direction, {})
        rule = getattr(node.policy, direction)
        default_allow = [">"] if direction == "publish" else []
        if rule.allow != want.get("allow", default_allow):
            edits.append((("policy", direction, "allow"), want.get("allow", default_allow)))
        if rule.deny != want.get("deny", []):
            edits.append((("policy", direction, "deny"), want.get("deny", [])))
    want_js = bool(n.get("jetstream"))
    if (node.jetstream is not None) != want_js:
        edits.append((("jetstream",), {"enabled": True} if want_js else None))
    clustered = n.get("cluster", True) is not False
    name = n.get("cluster_name", "dchat")
    if not clustered:
        if node.cluster:
            edits.append((("cluster",), None))
    else:
        routes = resolve_urls(spec, n.get("routes", []), "cluster", ports)
        if routes is None:
            return None
        cport = n.get("cluster_port") or (node.cluster or {}).get("port")
        if cport is None:
            return None
        adv = _advertise(n, n.get("cluster_advertise"), cport, whole=True)
        if not node.cluster:
            edits.append(
                (("cluster",), {"name": name, "port": cport, "routes": routes, **({"advertise": adv} if adv else {})})
            )
        else:
            c = node.cluster
            for key, want in (("name", name), ("port", cport), ("routes", routes), ("advertise", adv)):
                if want is not None and c.get(key) != want:
                    edits.append((("cluster", key), want))
    for sec, _kind in (("gateway", "gateway"), ("leafnodes", "leaf"), ("websocket", "")):
        want_sec = n.get(sec)
        have = getattr(node, sec)
        if want_sec is None:
            if have:
                edits.append(((sec,), None))
            continue
        # a leafnodes section without a port is a leaf node only (no listener); gateway and websocket
        # listeners keep the port they were given when created
        port = want_sec.get("port") if sec == "leafnodes" else want_sec.get("port") or (have or {}).get("port")
        if port is None and sec != "leafnodes":
            return None  # picked when the node is created
        desired: dict = {}
        if sec == "gateway":
            desired["name"] = name
        if port:
            desired["port"] = port
            adv = _advertise(n, want_sec.get("advertise"), port)
            if adv is not None:
                desired["advertise"] = adv
        if sec == "gateway":
            remotes = []
            for g in want_sec.get("remotes", []):
                urls = resolve_urls(spec, g["urls"], "gateway", ports)
                if urls is None:
                    return None
                remotes.append({"name": g["name"], "urls": urls})
            desired["remotes"] = remotes
        elif sec == "leafnodes":
            remotes = []
            for rem in want_sec.get("remotes", []):
                urls = resolve_urls(spec, rem["urls"], "leaf", ports)
                if urls is None:
                    return None
                remotes.append(
                    {
                        "urls": urls,
                        "account": rem.get("account", ""),
                        "user": rem.get("user", ""),
                        "credentials": rem.get("credentials", ""),
                    }
                )
            desired["remotes"] = remotes
        current = {k: v for k, v in (have or {}).items() if k in desired}
        if have is None or current != desired or (not port and (have or {}).get("port")):
            edits.append(((sec,), _section_doc(desired)))
    want_tls = n.get("tls", {})
    if (node.tls or {}) != want_tls:
        edits.append((("tls",), want_tls))
    return edits


def _section_doc(desired: dict) -> dict:
    """A node file section as written: empty advertise, account, user and credentials left out."""
    out = {k: v for k, v in desired.items() if not (k == "advertise" and not v)}
    if "remotes" in out and out.get("remotes") and "account" in out["remotes"][0]:
        out["remotes"] = [{k: v for k, v in r.items() if v or k == "urls"} for r in out["remotes"]]
    return out


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
    want_keys = spec.operator.get("plain_signing_keys", 0)
    if want_keys and (op is None or len(op.claims.signing_keys) < want_keys):
        p.operator["plain_signing_keys"] = want_keys
        if op:
            p.changes.append(Change("update", "operator", op_name, "signing keys"))
    asu = spec.operator.get("account_server_url", "")
    if (op and op.claims.account_server_url != asu) or (op is None and asu):
        p.operator["account_server_url"] = asu
        if op:
            p.changes.append(Change("update", "operator", op_name, "account server URL"))
    tags = dedupe(t.strip().lower() for t in spec.operator.get("tags", []))
    if (op and list(op.claims.tags) != tags) or (op is None and tags):
        p.operator["tags"] = tags
        if op:
            p.changes.append(Change("update", "operator", op_name, "tags"))
    existing_accounts = {} if p.create_operator else {n: store.account(n) for n in store.account_names()}
    account_keys = {n: e.public_key for n, e in existing_accounts.items()}
    for ai, a in enumerate(spec.accounts):
        e = existing_accounts.get(a["name"])
        _check_new_tokens(spec, ai, a, account_keys, e is None)
        if e is None:
            p.changes.append(Change("create", "account", a["name"]))
            p.accounts.append(AccountStep(a["name"], True, a))
            continue
        desired, missing_roles, missing_plain = account_desired(a, e, account_keys, now)
        activation_tokens(store, spec, a, desired, e.claims, now)
        if desired.to_dict() != e.claims.to_dict() or missing_roles or missing_plain:
            p.changes.append(Change("update", "account", a["name"], _claims_changed(e.claims, desired, missing_roles)))
            resolved = all(i["account"] in account_keys for i in a.get("imports", []))
            p.accounts.append(
                AccountStep(a["name"], False, a, desired if resolved else None, missing_roles, missing_plain)
            )
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
    _plan_removed_accounts(store, spec, p, state, users_state, keep_removed)
    _plan_nodes(store, spec, p)
    _plan_removed_nodes(store, spec, p, state, keep_removed)
    spec.keep()
    return p


def _plan_removed_nodes(store: Store, spec: Spec, p: Plan, state: dict, keep_removed: bool) -> None:
    """Nodes an earlier apply made or managed that the spec no longer names: removed (stopped, their files
    and their local user gone, see :func:`dchat_ops.permissions.apply.remove_node`), or kept with
    ``--keep-removed``.  Nodes the spec never managed are left alone."""
    managed = {n for n in state.get("nodes") or [] if isinstance(n, str)}
    named = {n["id"] for n in spec.nodes}
    have = set(list_nodes(store)) if not p.create_operator else set()
    for nid in sorted(n for n in managed - named if n in have):
        if keep_removed:
            p.nodes_kept.append(nid)
            p.changes.append(Change("drift", "node", nid, "removed from the spec; kept (--keep-removed)"))
        else:
            p.nodes_to_remove.append(nid)
            p.changes.append(
                Change("remove", "node", nid, "removed from the spec: stopped, its files go and its user is revoked")
            )


def _plan_removed_accounts(
    store: Store, spec: Spec, p: Plan, state: dict, users_state: dict, keep_removed: bool
) -> None:
    """Accounts an earlier apply made or managed that the spec no longer names: removed (their users
    with them), or kept with ``--keep-removed``.  Accounts the spec never managed are left alone."""
    if p.create_operator:
        return
    managed = {a for a in state.get("accounts") or [] if isinstance(a, str)}
    managed |= {k.split("/", 1)[0] for k in users_state}
    named = {a["name"] for a in spec.accounts}
    op = store.operator()
    system = store.find_account(op.claims.system_account, op.name).name
    have = set(store.account_names(op.name))
    gone = sorted(a for a in managed - named if a in have and a != system)
    if not gone:
        return
    for nid, node in read_nodes(store).items():
        if node.account in gone:
            raise SpecError(
                f"{spec.path}: account {node.account!r} is no longer in the spec, but node {nid}'s user is in it: "
                "keep the account, or remove the node first"
            )
    for a in gone:
        if keep_removed:
            p.accounts_kept.append(a)
            p.changes.append(Change("drift", "account", a, "removed from the spec; kept (--keep-removed)"))
        else:
            p.accounts_to_remove.append(a)
            p.changes.append(Change("remove", "account", a, "removed from the spec: its JWT, users and creds go"))
    # its users go (or stay) with it: not revoked one by one
    p.users_to_revoke = [(acc, u) for acc, u in p.users_to_revoke if acc not in gone]
    p.changes = [
        c
        for c in p.changes
        if not (c.kind == "user" and c.action in ("revoke", "drift") and c.name.split("/", 1)[0] in gone)
    ]


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
            if u.get("revoked"):
                # a revoked user: nothing to issue; one whose JWT is not revoked (yet) is revoked
                if token is not None and not _is_revoked(existing_accounts[acc_name].claims, token):
                    p.users_to_revoke.append((acc_name, name))
                    p.changes.append(Change("revoke", "user", key, "revoked in the spec"))
                else:
                    p.unchanged += 1
                continue
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
            want_nats, want_exp, want_nbf = desired.nats_dict(), desired.expires, desired.not_before
            role_ok = True
            if claims is not None and "role" in u:
                scope = existing_accounts[acc_name].claims.signing_key_map().get(claims.issuer)
                role_ok = scope is not None and scope.role == u["role"]
            have = None if claims is None else {k: v for k, v in claims.nats_dict().items() if k != "issuer_account"}
            if (
                claims is not None
                and have == want_nats
                and (claims.expires, claims.not_before) == (want_exp, want_nbf)
                and role_ok
            ):
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


def _is_revoked(account: AccountClaims, token: str) -> bool:
    try:
        claims = decode(token, UserClaims)
    except JWTError:
        return False
    return account.is_revoked(claims.subject, claims.issued_at)


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
        for field_name, given in (
            *((k, n.get(k)) for k in ("client_port", "cluster_port", "monitor_port")),
            *((f"{sec}.port", (n.get(sec) or {}).get("port")) for sec in ("gateway", "leafnodes", "websocket")),
        ):
            if given in taken:
                raise SpecError(f"{spec.path}: nodes[{n['id']}].{field_name}: port {given} clashes with {taken[given]}")
    all_ports = spec_ports(store, spec)
    for i, n in enumerate(spec.nodes):
        if n.get("account") and node_path(store, n["id"]).exists():
            have = NodeFile.load(store, n["id"]).node.account
            if have and have != n["account"]:
                raise SpecError(
                    f"{spec.where('nodes', i, 'account')}: nodes[{i}].account: node {n['id']}'s user is in account "
                    f"{have!r}, the spec says {n['account']!r}: a node's account does not change (remove the node "
                    "and apply again to make it anew)"
                )
    for n in spec.nodes:
        if not node_path(store, n["id"]).exists():
            p.changes.append(Change("create", "node", n["id"]))
            p.nodes.append(NodeStep(n["id"], True, n))
            continue
        edits = node_edits(spec, n, NodeFile.load(store, n["id"]), all_ports)
        if edits is None or edits:
            detail = ", ".join(dict.fromkeys(".".join(k[:2]) for k, _ in edits)) if edits else "ports of nodes it names"
            p.changes.append(Change("update", "node", n["id"], detail))
        p.nodes.append(NodeStep(n["id"], False, n, edits))
