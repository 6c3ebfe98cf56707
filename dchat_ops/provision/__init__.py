"""Declarative provisioning: a whole network from one spec file, as plan / apply, idempotent and fast.

    >>> spec = load_spec(Path("network.yaml"))          # validated; errors name file, line and field
    >>> p = plan(store, spec)                            # what would be created, re-issued, revoked...
    >>> result = apply(store, spec)                      # does it; a second apply changes nothing

The spec is plain YAML data (see docs/ci.md for the full reference).  ``${VAR}`` in a string takes
the value of an environment variable, for secrets and paths that must not live in the repository.

What apply remembers lives in ``<home>/provision-state.json``: a fingerprint of each user's spec and
of the JWT it wrote.  An unchanged re-apply compares fingerprints and reads no JWT twice; a JWT that
no longer matches what apply wrote is reported as drift and restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from dchat_ops import __version__
from dchat_ops._fs import atomic_write, deferred_sync, with_store_lock
from dchat_ops._time import parse_duration, parse_expiry
from dchat_ops.config import nodes as nodes_mod
from dchat_ops.config.node import NodeFile, list_nodes, node_path
from dchat_ops.errors import ConfigError, DchatOpsError, StoreError
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.claims import (
    AccountClaims,
    Export,
    Import,
    ScopedSigningKey,
    UserClaims,
    UserPermissionLimits,
)
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.subjects import check_subject

__all__ = [
    "Change",
    "Plan",
    "Spec",
    "SpecError",
    "apply",
    "dump_spec",
    "export_spec",
    "load_spec",
    "parse_spec",
    "plan",
]


class SpecError(ConfigError):
    """A spec that is not valid: the message names the file, the line and the field."""


# --- the schema -----------------------------------------------------------------------------------

_PERMS = {"allow_pub": "subjects", "deny_pub": "subjects", "allow_sub": "queue_subjects", "deny_sub": "queue_subjects"}
_USER = {
    "name": "name",
    **_PERMS,
    "resp_max": "int",
    "resp_ttl": "duration",
    "subs": "int",
    "data": "int",
    "payload": "int",
    "bearer": "bool",
    "connection_types": "strings",
    "source_networks": "strings",
    "times": "strings",
    "times_location": "str",
    "expiry": "date",
    "role": "name",
    "tags": "strings",
}
_ROLE = {"role": "name", **_PERMS, "subs": "int", "data": "int", "payload": "int", "description": "str"}
_LIMITS = {
    "conn": "int",
    "leaf": "int",
    "subs": "int",
    "data": "int",
    "payload": "int",
    "imports": "int",
    "exports": "int",
    "wildcards": "bool",
}
_JS = {"mem": "int", "disk": "int", "streams": "int", "consumers": "int"}
_EXPORT = {"subject": "subject", "type": "export_type", "name": "str"}
_IMPORT = {"account": "name", "subject": "subject", "type": "export_type", "local_subject": "subject", "name": "str"}
_ACCOUNT = {
    "name": "name",
    "limits": ("map", _LIMITS),
    "jetstream": ("map", _JS),
    "signing_keys": ("list", _ROLE),
    "exports": ("list", _EXPORT),
    "imports": ("list", _IMPORT),
    "users": ("list", _USER),
    "description": "str",
}
_RULE = {"allow": "queue_subjects", "deny": "queue_subjects"}
_POLICY = {"publish": ("map", {"allow": "subjects", "deny": "subjects"}), "subscribe": ("map", _RULE)}
_NODE = {
    "id": "name",
    "host": "str",
    "client_port": "port",
    "cluster_port": "port",
    "monitor_port": "port",
    "cluster_name": "name",
    "routes": "strings",
    "advertise": "str",
    "jetstream": "bool",
    "resolver": "resolver",
    "account": "name",
    "policy": ("map", _POLICY),
    "tls": (
        "map",
        {
            "client": "bool",
            "route": "bool",
            "gateway": "bool",
            "leafnode": "bool",
            "websocket": "bool",
            "insecure": "bool",
        },
    ),
}
_OPERATOR = {"name": "name", "strict": "bool", "service_urls": "strings", "system_account": "name"}
_TOP = {
    "version": "int",
    "production": "bool",
    "operator": ("map", _OPERATOR),
    "accounts": ("list", _ACCOUNT),
    "nodes": ("list", _NODE),
}

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, node: Any, key: Any, where: str, msg: str):
        line = None
        try:
            if key is not None and isinstance(node, (CommentedMap, CommentedSeq)):
                line = (node.lc.key(key) if isinstance(node, CommentedMap) else node.lc.item(key))[0] + 1
            elif isinstance(node, (CommentedMap, CommentedSeq)):
                line = node.lc.line + 1
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        loc = f"{self.path}:{line}" if line else str(self.path)
        raise SpecError(f"{loc}: {where}: {msg}")

    def value(self, parent, key, where: str, kind) -> Any:
        v = parent[key]
        if isinstance(kind, tuple):
            form, fields = kind
            if form == "map":
                if not isinstance(v, dict):
                    self.fail(parent, key, where, "must be a mapping")
                return {k: self.field(v, k, f"{where}.{k}", fields) for k in v}
            if not isinstance(v, list):
                self.fail(parent, key, where, "must be a list")
            out = []
            for i, item in enumerate(v):
                if not isinstance(item, dict):
                    self.fail(v, i, f"{where}[{i}]", "must be a mapping")
                out.append({k: self.field(item, k, f"{where}[{i}].{k}", fields) for k in item})
            return out
        if isinstance(v, str):
            v = self.env(parent, key, where, v)
        if kind in ("str", "duration", "date", "resolver", "export_type", "name", "subject"):
            if not isinstance(v, str):
                if (kind == "date" and isinstance(v, (int,))) or (kind == "date" and hasattr(v, "isoformat")):
                    v = v.isoformat() if hasattr(v, "isoformat") else str(v)
                else:
                    self.fail(parent, key, where, "must be text")
            try:
                if kind == "name":
                    check_name(v, where.rsplit(".", 1)[-1])
                elif kind == "subject":
                    check_subject(v)
                elif kind == "resolver" and v not in ("full", "memory"):
                    raise ConfigError("must be 'full' or 'memory'")
                elif kind == "export_type" and v not in ("stream", "service"):
                    raise ConfigError("must be 'stream' or 'service'")
                elif kind == "date":
                    parse_expiry(v, 0)
                elif kind == "duration":
                    parse_duration(v)
            except DchatOpsError as exc:
                self.fail(parent, key, where, str(exc))
            return v
        if kind == "bool":
            if not isinstance(v, bool):
                self.fail(parent, key, where, "must be true or false")
            return v
        if kind in ("int", "port"):
            if isinstance(v, bool) or not isinstance(v, int):
                self.fail(parent, key, where, "must be a whole number")
            if kind == "port" and not 0 < v < 65536:
                self.fail(parent, key, where, f"port {v} is out of range")
            return int(v)
        if kind in ("strings", "subjects", "queue_subjects"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                self.fail(parent, key, where, "must be a list of text")
            out = []
            for i, x in enumerate(v):
                x = self.env(v, i, f"{where}[{i}]", x)
                if kind != "strings":
                    try:
                        check_subject(x, queue_ok=(kind == "queue_subjects"))
                    except ConfigError as exc:
                        self.fail(v, i, f"{where}[{i}]", str(exc))
                out.append(x)
            return out
        raise AssertionError(kind)

    def field(self, parent, key, where: str, fields: dict) -> Any:
        if key not in fields:
            self.fail(parent, key, where, f"unknown field (known: {', '.join(sorted(fields))})")
        return self.value(parent, key, where, fields[key])

    def env(self, parent, key, where: str, text: str) -> str:
        def sub(m):
            v = os.environ.get(m.group(1))
            if v is None:
                self.fail(parent, key, where, f"environment variable {m.group(1)} is not set")
            return v

        return _ENV.sub(sub, text)


@dataclass
class Spec:
    path: Path
    data: dict
    production: bool = False

    @property
    def operator(self) -> dict:
        return self.data.get("operator") or {}

    @property
    def accounts(self) -> list[dict]:
        return self.data.get("accounts") or []

    @property
    def nodes(self) -> list[dict]:
        return self.data.get("nodes") or []


def load_spec(path: Path, *, cache_dir: Optional[Path] = None) -> Spec:
    """Load and validate a spec file.  With ``cache_dir``, a spec already validated (same text, same
    environment values) is read back from there instead of being parsed again."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    return parse_spec(text, path, cache_dir=cache_dir)


def _cache_key(text: str) -> str:

    env = {name: os.environ.get(name) for name in sorted(set(_ENV.findall(text)))}
    return hashlib.sha256(json.dumps([__version__, text, env]).encode()).hexdigest()[:40]


def parse_spec(text: str, path: Path = Path("spec.yaml"), *, cache_dir: Optional[Path] = None) -> Spec:
    """Parse and validate a spec; SpecError names the file, line and field of the first problem."""
    cache_file = Path(cache_dir) / f"{_cache_key(text)}.json" if cache_dir else None
    if cache_file is not None:
        try:
            data = json.loads(cache_file.read_text())
            return Spec(path, data, bool(data.get("production", False)))
        except (OSError, ValueError):
            pass
    # fast path: the C-backed safe loader, no line numbers; on a problem, validate again on the
    # round-trip document (slow) only to say on which line it is
    try:
        doc = YAML(typ="safe").load(text)
        data = _validate(doc, path)
    except (SpecError, YAMLError):
        try:
            rt = YAML().load(text)
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SpecError(
                f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML: {getattr(exc, 'problem', None) or exc}"
            ) from None
        data = _validate(rt, path)
    if cache_file is not None:
        atomic_write(cache_file, json.dumps(data, default=str), private=True)
    return Spec(path, data, bool(data.get("production", False)))


def _validate(doc, path: Path) -> dict:
    ck = _Checker(path)
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping")
    data = {k: ck.field(doc, k, k, _TOP) for k in doc}
    if data.get("version", 1) != 1:
        ck.fail(doc, "version", "version", "only version 1 is known")
    _cross_checks(ck, doc, data)
    return data


def _cross_checks(ck: _Checker, doc, data: dict) -> None:
    accounts = data.get("accounts") or []
    names = set()
    for i, a in enumerate(accounts):
        adoc = doc["accounts"][i]
        if "name" not in a:
            ck.fail(adoc, None, f"accounts[{i}]", "name is missing")
        if a["name"] in names:
            ck.fail(adoc, "name", f"accounts[{i}].name", f"duplicate account {a['name']!r}")
        names.add(a["name"])
        roles = set()
        for j, r in enumerate(a.get("signing_keys") or []):
            if "role" not in r:
                ck.fail(adoc["signing_keys"][j], None, f"accounts[{i}].signing_keys[{j}]", "role is missing")
            roles.add(r["role"])
        users = set()
        for j, u in enumerate(a.get("users") or []):
            udoc = adoc["users"][j]
            where = f"accounts[{i}].users[{j}]"
            if "name" not in u:
                ck.fail(udoc, None, where, "name is missing")
            if u["name"] in users:
                ck.fail(udoc, "name", f"{where}.name", f"duplicate user {u['name']!r} in account {a['name']}")
            users.add(u["name"])
            if "role" in u:
                if u["role"] not in roles:
                    ck.fail(
                        udoc,
                        "role",
                        f"{where}.role",
                        f"unknown signing key role {u['role']!r} (roles of {a['name']}: {', '.join(sorted(roles)) or 'none'})",
                    )
                own = [
                    k
                    for k in u
                    if k in _PERMS
                    or k
                    in ("resp_max", "subs", "data", "payload", "bearer", "connection_types", "source_networks", "times")
                ]
                if own:
                    ck.fail(
                        udoc,
                        own[0],
                        f"{where}.{own[0]}",
                        "a user of a signing key role takes its permissions from the role",
                    )
        for j, imp in enumerate(a.get("imports") or []):
            for k in ("account", "subject"):
                if k not in imp:
                    ck.fail(adoc["imports"][j], None, f"accounts[{i}].imports[{j}]", f"{k} is missing")
    for i, a in enumerate(accounts):
        for j, imp in enumerate(a.get("imports") or []):
            if imp["account"] not in names:
                ck.fail(
                    doc["accounts"][i]["imports"][j],
                    "account",
                    f"accounts[{i}].imports[{j}].account",
                    f"unknown account {imp['account']!r}",
                )
    ids = {}
    ports: dict[tuple[str, int], str] = {}
    for i, n in enumerate(data.get("nodes") or []):
        ndoc = doc["nodes"][i]
        if "id" not in n:
            ck.fail(ndoc, None, f"nodes[{i}]", "id is missing")
        if n["id"] in ids:
            ck.fail(ndoc, "id", f"nodes[{i}].id", f"duplicate node {n['id']!r}")
        ids[n["id"]] = i
        host = n.get("host", "127.0.0.1")
        for k in ("client_port", "cluster_port", "monitor_port"):
            if k in n:
                for (h, p), other in ports.items():
                    if p == n[k] and (h == host or "0.0.0.0" in (h, host)):
                        ck.fail(ndoc, k, f"nodes[{i}].{k}", f"port {p} clashes with {other}")
                ports[(host, n[k])] = f"nodes[{i}].{k} ({n['id']})"
        if n.get("tls", {}).get("insecure") and data.get("production"):
            ck.fail(ndoc["tls"], "insecure", f"nodes[{i}].tls.insecure", "insecure TLS is refused in a production spec")
        if "account" in n and n["account"] not in names:
            ck.fail(ndoc, "account", f"nodes[{i}].account", f"unknown account {n['account']!r}")
    for i, n in enumerate(data.get("nodes") or []):
        for j, r in enumerate(n.get("routes") or []):
            if "://" not in r and r not in ids:
                ck.fail(
                    doc["nodes"][i]["routes"],
                    j,
                    f"nodes[{i}].routes[{j}]",
                    f"unknown node {r!r} (use a node id of this spec or a nats-route:// URL)",
                )


# --- desired state -----------------------------------------------------------------------------------


def _user_spec(u: dict, now: int) -> admin.UserSpec:
    spec = admin.UserSpec(
        pub_allow=list(u.get("allow_pub", [])),
        pub_deny=list(u.get("deny_pub", [])),
        sub_allow=list(u.get("allow_sub", [])),
        sub_deny=list(u.get("deny_sub", [])),
        resp_max=u.get("resp_max"),
        subs=u.get("subs"),
        data=u.get("data"),
        payload=u.get("payload"),
        bearer=u.get("bearer"),
        connection_types=u.get("connection_types"),
        source_networks=u.get("source_networks"),
        times=[tuple(t.split("-", 1)) for t in u["times"]] if u.get("times") else None,
        times_location=u.get("times_location"),
        expires=parse_expiry(u["expiry"], now) if u.get("expiry") else 0,
        tags=u.get("tags"),
    )
    if u.get("resp_ttl"):
        spec.resp_ttl_s = parse_duration(u["resp_ttl"])
    if "role" in u:  # the role's template owns permissions and limits
        spec = admin.UserSpec(expires=spec.expires, tags=spec.tags)
    return spec


def _desired_nats(spec: admin.UserSpec, scoped: bool) -> tuple[dict, int]:
    u = UserClaims(subject="", name="")
    if scoped:
        u.limits.clear_for_scope()
    spec.apply(u)
    d = u.nats_dict()
    return d, u.expires


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:32]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- plan --------------------------------------------------------------------------------------------


@dataclass
class Change:
    action: str  # create, update, reissue, revoke, drift
    kind: str  # operator, account, user, node
    name: str
    detail: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    # internal: what apply needs
    users_to_issue: list[tuple[str, str, dict]] = field(default_factory=list)  # account, name, spec item
    users_to_revoke: list[tuple[str, str]] = field(default_factory=list)
    accounts_to_write: list[str] = field(default_factory=list)
    nodes_to_write: list[str] = field(default_factory=list)
    create_operator: bool = False
    state_stale: bool = False  # some users were compared the slow way: record their fingerprints

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.action] = counts.get(c.action, 0) + 1
        return {"changes": [c.to_dict() for c in self.changes], "summary": counts, "unchanged": self.unchanged}


def spec_cache_dir(store: Store) -> Path:
    """Where validated specs are kept (private: values from the environment may be secrets)."""
    return store.home / "cache" / "specs"


def _state_path(store: Store) -> Path:
    return store.home / "provision-state.json"


def _load_state(store: Store) -> dict:
    try:
        data = json.loads(_state_path(store).read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def _account_desired(store: Store, spec_acc: dict, existing, account_keys: dict[str, str]):
    """The account claims the spec wants, built on the existing claims (keys and revocations kept)."""

    claims = existing.claims.copy() if existing else AccountClaims(subject="", name=spec_acc["name"])
    lim = spec_acc.get("limits", {})
    base = AccountClaims(subject="", name="").limits
    for k in ("conn", "leaf", "subs", "data", "payload", "imports", "exports", "wildcards"):
        setattr(claims.limits, k, lim.get(k, getattr(base, k)))
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
            k.template = _role_template(wanted[k.role])
            k.description = wanted[k.role].get("description", "")
            kept.append(k)
            have_roles.add(k.role)
    missing_roles = [r for r in wanted if r not in have_roles]
    claims.signing_keys = kept
    return claims, missing_roles


def _role_template(r: dict) -> UserPermissionLimits:
    u = UserClaims(subject="", name="")
    admin.UserSpec(
        pub_allow=r.get("allow_pub", []),
        pub_deny=r.get("deny_pub", []),
        sub_allow=r.get("allow_sub", []),
        sub_deny=r.get("deny_sub", []),
        subs=r.get("subs"),
        data=r.get("data"),
        payload=r.get("payload"),
    ).apply(u)
    return u.limits


def plan(store: Store, spec: Spec, *, keep_removed: bool = False) -> Plan:
    """Compare the spec with the store: what apply would create, change, re-issue or revoke."""
    p = Plan()
    state = _load_state(store)
    now = admin.now(store)
    op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
    if not store.exists():
        p.create_operator = True
        p.changes.append(Change("create", "operator", op_name, "with system account SYS"))
    elif store.current_operator() != op_name:
        raise SpecError(f"{spec.path}: the spec's operator is {op_name!r}, the store's is {store.current_operator()!r}")
    op = None if p.create_operator else store.operator()
    if op and bool(spec.operator.get("strict", False)) != op.claims.strict_signing_key_usage:
        p.changes.append(Change("update", "operator", op_name, "strict signing key usage"))
    existing_accounts = {} if p.create_operator else {n: store.account(n) for n in store.account_names()}
    account_keys = {n: e.public_key for n, e in existing_accounts.items()}
    for a in spec.accounts:
        e = existing_accounts.get(a["name"])
        if e is None:
            p.changes.append(Change("create", "account", a["name"]))
            p.accounts_to_write.append(a["name"])
            continue
        desired, missing_roles = _account_desired(store, a, e, account_keys)
        if desired.to_dict() != e.claims.to_dict() or missing_roles:
            p.changes.append(Change("update", "account", a["name"], "limits, keys, exports or imports"))
            p.accounts_to_write.append(a["name"])
    users_state = state.get("users", {})
    node_users = {(n.get("account") or "", n["id"]) for n in spec.nodes}
    for a in spec.accounts:
        acc_name = a["name"]
        new_account = acc_name not in existing_accounts
        for u in a.get("users", []):
            key = f"{acc_name}/{u['name']}"
            fp = _fingerprint(u)
            if new_account:
                p.users_to_issue.append((acc_name, u["name"], u))
                p.changes.append(Change("create", "user", key))
                continue
            jwt_path = store.user_jwt_path(op_name, acc_name, u["name"])
            try:
                token = jwt_path.read_text().strip()
            except FileNotFoundError:
                p.users_to_issue.append((acc_name, u["name"], u))
                p.changes.append(Change("create", "user", key))
                continue
            st = users_state.get(key)
            if st and st.get("spec") == fp and st.get("jwt") == _sha(token):
                p.unchanged += 1
                continue
            # compare the JWT with what the spec wants
            try:
                claims = store.user(acc_name, u["name"]).claims
            except StoreError:
                claims = None
            want, want_exp = _desired_nats(_user_spec(u, now), "role" in u)
            role_ok = True
            if claims is not None and "role" in u:
                scope = existing_accounts[acc_name].claims.signing_key_map().get(claims.issuer)
                role_ok = scope is not None and scope.role == u["role"]
            have = None if claims is None else {k: v for k, v in claims.nats_dict().items() if k != "issuer_account"}
            if have == want and claims.expires == want_exp and role_ok:
                p.unchanged += 1
                p.state_stale = True
                continue
            drift = bool(st and st.get("spec") == fp)
            p.users_to_issue.append((acc_name, u["name"], u))
            p.changes.append(
                Change(
                    "drift" if drift else "reissue",
                    "user",
                    key,
                    "changed outside the spec; apply restores it" if drift else "permissions or limits changed",
                )
            )
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
    cluster_ports = _spec_cluster_ports(store, spec)
    for n in spec.nodes:
        path = node_path(store, n["id"])
        if not path.exists():
            p.changes.append(Change("create", "node", n["id"]))
            p.nodes_to_write.append(n["id"])
            continue
        nf = NodeFile.load(store, n["id"])
        if _node_edits(store, spec, n, nf, cluster_ports):
            p.changes.append(Change("update", "node", n["id"]))
            p.nodes_to_write.append(n["id"])
    return p


def _route_urls(store: Store, spec: Spec, n: dict, ports: dict[str, int]) -> list[str]:
    out = []
    for r in n.get("routes", []):
        if "://" in r:
            out.append(r)
        else:
            other = next(x for x in spec.nodes if x["id"] == r)
            host = other.get("host", "127.0.0.1")
            out.append(f"nats-route://{'127.0.0.1' if host == '0.0.0.0' else host}:{ports[r]}")
    return out


def _node_edits(store: Store, spec: Spec, n: dict, nf, cluster_ports: dict[str, int]) -> list[tuple[tuple, Any]]:
    """(key path, value) pairs that would bring the node file to the spec."""
    node = nf.node
    edits = []
    for key, attr in (("client_port", "client_port"), ("monitor_port", "monitor_port"), ("host", "host")):
        if key in n and getattr(node, attr) != n[key]:
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
        routes = _route_urls(store, spec, n, cluster_ports)
        if node.cluster["routes"] != routes:
            edits.append((("cluster", "routes"), routes))
    want_tls = n.get("tls", {})
    if (node.tls or {}) != want_tls:
        edits.append((("tls",), want_tls))
    return edits


def _spec_cluster_ports(store: Store, spec: Spec) -> dict[str, int]:

    ports = {}
    for x in spec.nodes:
        if "cluster_port" in x:
            ports[x["id"]] = x["cluster_port"]
        elif node_path(store, x["id"]).exists():
            c = NodeFile.load(store, x["id"]).node.cluster
            if c:
                ports[x["id"]] = c["port"]
    return ports


# --- apply -------------------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    plan: Plan
    written_users: int = 0

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "changed": self.plan.has_changes, "users_written": self.written_users}


@with_store_lock
def apply(
    store: Store,
    spec: Spec,
    *,
    keep_removed: bool = False,
    workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ApplyResult:
    """Make the store (and node configs) what the spec says; a second apply of the same spec changes nothing."""

    p = plan(store, spec, keep_removed=keep_removed)
    result = ApplyResult(p)
    if not p.has_changes:
        if p.state_stale:
            _write_state(store, spec)
        return result
    op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
    with deferred_sync():
        if p.create_operator:
            first = next((a["name"] for a in spec.accounts), admin.DEFAULT_ACCOUNT)
            admin.init(store, op_name, first, None, strict=bool(spec.operator.get("strict", False)))
        op = store.operator()
        if bool(spec.operator.get("strict", False)) != op.claims.strict_signing_key_usage:
            if spec.operator.get("strict") and not op.claims.signing_keys:
                admin.edit_operator(store, add_signing_key=True)
            admin.edit_operator(store, strict=bool(spec.operator.get("strict", False)))
        if spec.operator.get("service_urls"):
            admin.edit_operator(store, service_urls=spec.operator["service_urls"])
        _apply_accounts(store, spec)
        _issue(store, spec, p, workers, progress)
        result.written_users = len(p.users_to_issue)
        for acc_name, name in p.users_to_revoke:
            revoke.revoke_user(store, acc_name, name)
            store.remove_user(op_name, acc_name, name)
        _apply_nodes(store, spec, p)
        _write_state(store, spec)
    return result


def _apply_accounts(store: Store, spec: Spec) -> None:
    op = store.operator()
    for a in spec.accounts:  # create first, so imports can name them
        if a["name"] not in store.account_names(op.name):
            admin.add_account(store, a["name"], signing_key=bool(spec.operator.get("strict")))
    keys = {n: store.account(n).public_key for n in store.account_names(op.name)}
    for a in spec.accounts:
        e = store.account(a["name"])
        desired, missing_roles = _account_desired(store, a, e, keys)
        for role in missing_roles:
            kp = KeyPair.generate("account")
            store.save_key(kp)
            r = next(x for x in a.get("signing_keys", []) if x["role"] == role)
            desired.signing_keys.append(
                ScopedSigningKey(kp.public_key, role, _role_template(r), r.get("description", ""))
            )
        if desired.to_dict() != e.claims.to_dict():
            admin.resign_account(store, store.operator(), e, desired)


def _issue(store: Store, spec: Spec, p: Plan, workers, progress) -> None:
    op = store.operator()
    now = admin.now(store)
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for acc_name, name, u in p.users_to_issue:
        groups.setdefault((acc_name, u.get("role", "")), []).append((name, u))
    done = 0
    total = len(p.users_to_issue)
    for (acc_name, role), items in groups.items():
        acc = store.account(acc_name, op.name)
        signer, scope = admin.user_signer(store, op.claims, acc.claims, role or None)
        # users that exist keep their key: only their JWT and creds are made anew
        fresh = []
        for name, u in items:
            if store.user_jwt_path(op.name, acc_name, name).exists():
                _reissue_existing(store, op.name, acc, name, _user_spec(u, now), signer, scope)
                done += 1
            else:
                fresh.append((name, u))
        items = fresh
        names = [n for n, _ in items]
        specs = [_user_spec(u, now) for _, u in items]
        # the issuing processes write the files themselves; one flush at the end of apply
        rows = admin.issue_users(
            names,
            acc.public_key,
            signer,
            specs=specs,
            scope=scope,
            clock=store.clock,
            workers=workers,
            write_to=(str(store.home), op.name, acc_name),
        )
        done += len(rows)
        if progress:
            progress(done, total)
        if rows:
            os.sync()
    if progress and total:
        progress(total, total)


def _reissue_existing(store: Store, op_name: str, acc, name: str, spec: admin.UserSpec, signer: KeyPair, scope) -> None:

    old = store.user(acc.name, name, op_name).claims
    u = UserClaims(subject=old.subject, name=name)
    if scope is not None:
        u.limits.clear_for_scope()
    spec.apply(u)
    if signer.public_key != acc.public_key:
        u.issuer_account = acc.public_key
    token = store.sign(u, signer, replaces=old.issued_at)  # iat after the version it replaces
    store.write_user(op_name, acc.name, name, token)
    if store.has_key(u.subject):
        store.write_creds(op_name, acc.name, name, format_creds(token, store.load_key(u.subject).seed), force=True)


def _apply_nodes(store: Store, spec: Spec, p: Plan) -> None:

    for n in spec.nodes:
        if n["id"] in p.nodes_to_write and not node_path(store, n["id"]).exists():
            nodes_mod.add_node(
                store,
                n["id"],
                host=n.get("host", "127.0.0.1"),
                client_port=n.get("client_port"),
                monitor_port=n.get("monitor_port"),
                cluster_name=n.get("cluster_name", "dchat"),
                cluster_port=n.get("cluster_port"),
                advertise=n.get("advertise"),
                jetstream=bool(n.get("jetstream")),
                resolver=n.get("resolver", "full"),
                account=n.get("account"),
                force=True,
            )
    cluster_ports = _spec_cluster_ports(store, spec)
    for n in spec.nodes:
        nf = NodeFile.load(store, n["id"])
        edits = _node_edits(store, spec, n, nf, cluster_ports)
        if edits:
            for keys, value in edits:
                nf.set(keys, value)
            nf.save()
        nodes_mod.sync_node_user(store, nf.node)
    for n in spec.nodes:
        nodes_mod.render_node(store, n["id"])


def _write_state(store: Store, spec: Spec) -> None:
    op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
    users = {}
    for a in spec.accounts:
        for u in a.get("users", []):
            key = f"{a['name']}/{u['name']}"
            try:
                token = store.user_jwt_path(op_name, a["name"], u["name"]).read_text().strip()
            except FileNotFoundError:
                continue
            users[key] = {"spec": _fingerprint(u), "jwt": _sha(token)}
    state = {"spec": str(spec.path), "users": users}
    atomic_write(_state_path(store), json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n")


# --- export --------------------------------------------------------------------------------------------


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
                import datetime as dt

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
    import io

    y = YAML()
    y.default_flow_style = False
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()
