"""The spec file: load it, parse it, validate it; errors name the file, the line and the field.

User and role fields are checked by the validators of :mod:`dchat_ops.nsc.spec`, the same ones the
library and the CLI use, so a spec that passes here is one that apply can issue.  ``${VAR}`` in a
string takes the value of an environment variable (an unset variable is an error).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from dchat_ops import __version__
from dchat_ops._decode import BAD_SCALAR, BAD_SCALAR_MESSAGE, MAX_DEPTH, quietly, read_text, yaml_problem, yaml_too_deep
from dchat_ops._fs import atomic_write
from dchat_ops._time import parse_duration, parse_expiry
from dchat_ops.config.node import GATEWAY_SCHEMES, LEAF_SCHEMES, ROUTE_SCHEMES
from dchat_ops.errors import ConfigError, DchatOpsError, JWTError, SpecError
from dchat_ops.hosts import check_advertise, check_host, check_url, listeners_overlap
from dchat_ops.nsc.accounts import check_info_url, check_js_tier
from dchat_ops.nsc.admin import SYSTEM_ACCOUNT
from dchat_ops.nsc.claims import AccountLimits, ActivationClaims, Import, JetStreamLimits
from dchat_ops.nsc.exports import (
    EXPORT_FIELDS,
    IMPORT_FIELDS,
    LATENCY_FIELDS,
    RESPONSE_TYPES,
    check_exports,
    check_imports,
    export_from_fields,
)
from dchat_ops.nsc.jwt import decode
from dchat_ops.nsc.limits import check_service_url, check_text, parse_size, tier_problem
from dchat_ops.nsc.mappings import check_mapping
from dchat_ops.nsc.spec import (
    DEFAULT_PERMISSION_FIELDS,
    INT64_MAX,
    PERMISSION_FIELDS,
    ROLE_FIELDS,
    USER_FIELDS,
    FieldError,
    UserSpec,
    check_limit,
    check_tags,
    check_time,
)
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.provision._yaml import BadScalar, TooDeep, load_yaml
from dchat_ops.subjects import check_subject

__all__ = [
    "EXPORT_FIELDS",
    "IMPORT_FIELDS",
    "JS_FIELDS",
    "RESPONSE_TYPES",
    "Spec",
    "SpecError",
    "load_spec",
    "node_user_clash",
    "parse_spec",
    "spec_cache_dir",
    "spec_jetstream",
]


# --- the schema -----------------------------------------------------------------------------------

# The shape of each user and role field comes from the one table in nsc.spec; what a value may be
# (subjects, networks, time windows, limits...) is decided there too, in _check_user / _check_role.
_SHAPE = {
    "subjects": "strings",
    "queue_subjects": "strings",
    "texts": "strings",
    "text": "str",
    "duration": "str",
    "time": "date",
    "int": "int",
    "bool": "bool",
}
_USER = {
    "name": "name",
    "role": "name",
    "revoked": "bool",
    **{k: _SHAPE[shape] for k, (_, shape) in USER_FIELDS.items()},
}
_ROLE = {"role": "name", "description": "text", **{k: _SHAPE[shape] for k, (_, shape) in ROLE_FIELDS.items()}}
_LIMITS = {
    "conn": "limit",
    "leaf": "limit",
    "subs": "limit",
    "data": "size",
    "payload": "size",
    "imports": "limit",
    "exports": "limit",
    "wildcards": "bool",
    "disallow_bearer": "bool",
}
# spec name -> JetStreamLimits attribute
JS_FIELDS = {
    "mem": "mem_storage",
    "disk": "disk_storage",
    "streams": "streams",
    "consumers": "consumer",
    "max_ack_pending": "max_ack_pending",
    "mem_max_stream_bytes": "mem_max_stream_bytes",
    "disk_max_stream_bytes": "disk_max_stream_bytes",
    "max_bytes_required": "max_bytes_required",
}
_JS_SIZES = ("mem", "disk", "mem_max_stream_bytes", "disk_max_stream_bytes")
_JS_LIMITS = {k: ("bool" if k == "max_bytes_required" else "size" if k in _JS_SIZES else "limit") for k in JS_FIELDS}
# tiers: R1..R5 -> the same limits, for streams of that many replicas (instead of account-wide limits)
_JS = {**_JS_LIMITS, "tiers": ("tiers", _JS_LIMITS)}
# the optional fields of an export and of an import: the table of nsc.exports (its rules check the values)
_EXPORT = {"subject": "subject", "type": "export_type", **EXPORT_FIELDS, **LATENCY_FIELDS}
_IMPORT = {"account": "name", "subject": "subject", "type": "export_type", **IMPORT_FIELDS}
_ACCOUNT = {
    "name": "name",
    "limits": ("map", _LIMITS),
    "jetstream": ("map", _JS),
    "signing_keys": ("list", _ROLE),
    "exports": ("list", _EXPORT),
    "imports": ("list", _IMPORT),
    "users": ("list", _USER),
    "mappings": "mappings",
    "default_permissions": ("map", {k: _SHAPE[shape] for k, (_, shape) in DEFAULT_PERMISSION_FIELDS.items()}),
    "info_url": "info_url",
    "description": "text",
    "expiry": "date",
    "tags": "strings",
    "plain_signing_keys": "count",
}
_DESTINATION = ("subject", "weight", "cluster")  # of a mapping (the JWT's names)
_RULE = {"allow": "queue_subjects", "deny": "queue_subjects"}
_POLICY = {"publish": ("map", {"allow": "subjects", "deny": "subjects"}), "subscribe": ("map", _RULE)}
# node ids of the spec or URLs: routes, gateway remotes' urls, leaf remotes' urls (a hub's id)
_GATEWAY = {
    "port": "port",
    "advertise": "advertise",
    "remotes": ("list", {"name": "name", "urls": "strings"}),
}
_LEAF = {
    "port": "port",
    "advertise": "advertise",
    "remotes": ("list", {"urls": "strings", "account": "name", "user": "name", "credentials": "str"}),
}
_WEBSOCKET = {"port": "port", "advertise": "advertise"}
_NODE = {
    "id": "name",
    "host": "host",
    "client_port": "port",
    "cluster_port": "port",
    "monitor_port": "port",
    "monitor_host": "host",
    "cluster": "bool",
    "cluster_name": "name",
    "cluster_advertise": "advertise",
    "routes": "routes",
    "gateway": ("map", _GATEWAY),
    "leafnodes": ("map", _LEAF),
    "websocket": ("map", _WEBSOCKET),
    "advertise": "advertise",
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
_OPERATOR = {
    "name": "name",
    "strict": "bool",
    "service_urls": "service_urls",
    "system_account": "name",
    "account_server_url": "str",
    "tags": "strings",
    "plain_signing_keys": "count",
}
_TOP = {
    "version": "int",
    "production": "bool",
    "operator": ("map", _OPERATOR),
    "accounts": ("list", _ACCOUNT),
    "nodes": ("list", _NODE),
}

# the ports of a spec node: field name -> (section, key); "" is the node itself
_PORTS = {
    "client_port": ("", "client_port"),
    "cluster_port": ("", "cluster_port"),
    "monitor_port": ("", "monitor_port"),
    "gateway.port": ("gateway", "port"),
    "leafnodes.port": ("leafnodes", "port"),
    "websocket.port": ("websocket", "port"),
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
            if form == "tiers":  # tier name -> a map of fields
                if not isinstance(v, dict):
                    self.fail(parent, key, where, "must be a mapping of tier names (R1..R5) to limits")
                out_tiers = {}
                for name in v:
                    try:
                        check_js_tier(name)
                    except FieldError as exc:
                        self.fail(v, name, f"{where}.{name}", exc.reason)
                    out_tiers[name] = self.value(v, name, f"{where}.{name}", ("map", fields))
                return out_tiers
            if not isinstance(v, list):
                self.fail(parent, key, where, "must be a list")
            out: list[dict[str, Any]] = []
            for i, item in enumerate(v):
                if not isinstance(item, dict):
                    self.fail(v, i, f"{where}[{i}]", "must be a mapping")
                out.append({k: self.field(item, k, f"{where}[{i}].{k}", fields) for k in item})
            return out
        if isinstance(v, str):
            v = self.env(parent, key, where, v)
        if kind == "mappings":
            return self.mappings(parent, key, where, v)
        if kind == "sampling":  # a percentage (50, "50%") or "headers": checked with the export (nsc.exports)
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                self.fail(parent, key, where, "must be a percentage 1 to 100 or 'headers'")
            return v
        if kind in (
            "str",
            "text",
            "date",
            "resolver",
            "export_type",
            "name",
            "subject",
            "host",
            "advertise",
            "duration",
            "response_type",
            "info_url",
            "token",
        ):
            if not isinstance(v, str):
                if (kind == "date" and isinstance(v, (int,))) or (kind == "date" and hasattr(v, "isoformat")):
                    v = v.isoformat() if hasattr(v, "isoformat") else str(v)
                else:
                    self.fail(parent, key, where, "must be text")
            try:
                if kind == "name":
                    check_name(v, where.rsplit(".", 1)[-1])
                elif kind == "text":
                    check_text(str(key), v)
                elif kind == "subject":
                    check_subject(v)
                elif kind == "host":
                    check_host(v, "host")
                elif kind == "advertise":
                    check_advertise(v, "advertise", port_required=False)
                elif kind == "resolver" and v not in ("full", "memory"):
                    raise ConfigError("must be 'full' or 'memory'")
                elif kind == "export_type" and v not in ("stream", "service"):
                    raise ConfigError("must be 'stream' or 'service'")
                elif kind == "response_type" and v not in RESPONSE_TYPES:
                    raise ConfigError(f"must be one of {', '.join(RESPONSE_TYPES)}")
                elif kind == "duration":
                    parse_duration(v)
                elif kind == "info_url":
                    check_info_url(v)
                elif kind == "token":  # the shape here; plan verifies it against the accounts' keys
                    try:
                        decode(v.strip(), ActivationClaims)
                    except JWTError as exc:
                        raise FieldError("token", f"not a valid activation token: {exc}") from None
                    v = v.strip()
            except FieldError as exc:
                self.fail(parent, key, where, exc.reason if kind in ("text", "info_url", "token") else str(exc))
            except DchatOpsError as exc:
                self.fail(parent, key, where, str(exc))
            return v
        if kind == "bool":
            if not isinstance(v, bool):
                self.fail(parent, key, where, "must be true or false")
            return v
        if kind == "size":  # bytes, as on the command line: 1024, -1, or with a unit (512M, 1G)
            try:
                return parse_size(str(key), v)
            except FieldError as exc:
                self.fail(parent, key, where, exc.reason)
        if kind in ("int", "port", "limit", "count"):
            if isinstance(v, bool) or not isinstance(v, int):
                self.fail(parent, key, where, "must be a whole number")
            if kind == "count" and not 0 <= v <= INT64_MAX:
                self.fail(parent, key, where, f"must be 0 or more (at most {INT64_MAX}), not {v}")
            if kind == "port" and not 0 < v < 65536:
                self.fail(parent, key, where, f"port {v} is out of range")
            if kind == "limit":
                try:
                    check_limit(str(key), v)
                except FieldError as exc:
                    self.fail(parent, key, where, exc.reason)
            return int(v)
        if kind in ("strings", "subjects", "queue_subjects", "routes", "service_urls"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                self.fail(parent, key, where, "must be a list of text")
            texts: list[str] = []
            for i, x in enumerate(v):
                x = self.env(v, i, f"{where}[{i}]", x)
                try:
                    if kind in ("subjects", "queue_subjects"):
                        check_subject(x, queue_ok=(kind == "queue_subjects"))
                    elif kind == "routes" and "://" in x:  # a URL; else a node id of the spec (checked below)
                        check_url(x, ROUTE_SCHEMES, "route")
                    elif kind == "service_urls":
                        check_service_url("service_urls", x)
                except FieldError as exc:
                    self.fail(v, i, f"{where}[{i}]", exc.reason)
                except ConfigError as exc:
                    self.fail(v, i, f"{where}[{i}]", str(exc))
                texts.append(x)
            return texts
        raise AssertionError(kind)

    def mappings(self, parent, key, where: str, v: Any) -> dict:
        """Subject mappings: source subject -> [{subject, weight, cluster}], by the rules of nsc.mappings."""
        if not isinstance(v, dict):
            self.fail(parent, key, where, "must be a mapping of source subjects to lists of destinations")
        out: dict[str, list[dict[str, Any]]] = {}
        for source, dests in v.items():
            at = f"{where}[{source}]"
            if not isinstance(dests, list) or not all(isinstance(d, dict) for d in dests):
                self.fail(v, source, at, "must be a list of destinations ({subject, weight, cluster})")
            for d in dests:
                unknown = sorted(str(k) for k in d if k not in _DESTINATION)
                if unknown:
                    self.fail(v, source, at, f"unknown field {unknown[0]!r} (known: {', '.join(_DESTINATION)})")
            try:
                check_mapping(source, [dict(d) for d in dests])
            except FieldError as exc:
                self.fail(v, source, f"{at}.{exc.field.split('.')[-1]}", exc.reason)
            out[source] = [{k: d[k] for k in _DESTINATION if k in d and (k != "cluster" or d[k])} for d in dests]
        return out

    def field(self, parent, key, where: str, fields: dict) -> Any:
        if key not in fields:
            self.fail(parent, key, where, f"unknown field (known: {', '.join(sorted(fields))})")
        return self.value(parent, key, where, fields[key])

    def env(self, parent, key, where: str, text: str) -> str:
        if "${" not in text:
            return text

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
    text: str = ""
    key: str = ""  # the text's and its environment values' hash: the same key, the same validated data
    # where the validated data is kept for the next load, once the spec is accepted (see keep())
    cache_file: Optional[Path] = field(default=None, repr=False, compare=False)

    def keep(self) -> None:
        """Keep the validated data for the next load of the same text (a plan of it succeeded: a spec
        refused by the schema or by the plan leaves no cache file)."""
        if self.cache_file is not None and not self.cache_file.exists():
            atomic_write(self.cache_file, json.dumps(self.data, default=str), private=True)

    def where(self, *keys: Any) -> str:
        """``file:line`` of the item at ``keys`` (e.g. ``"nodes", 0, "id"``); ``file`` when not known."""
        try:
            node: Any = quietly(YAML().load, self.text)
            parent, last = None, None
            for k in keys:
                parent, last = node, k
                node = node[k]
            if isinstance(parent, CommentedMap):
                line = parent.lc.key(last)[0]
            elif isinstance(parent, CommentedSeq):
                line = parent.lc.item(last)[0]
            else:
                return str(self.path)
            return f"{self.path}:{line + 1}"
        except (YAMLError, KeyError, IndexError, TypeError, AttributeError):
            return str(self.path)

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
        text = read_text(path, SpecError)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_spec(text, path, cache_dir=cache_dir)


# Part of the cache key: raised when the checks change, so a spec validated by older checks is checked again.
_CHECKS_REVISION = 6


def _cache_key(text: str) -> str:

    env = {name: os.environ.get(name) for name in sorted(set(_ENV.findall(text)))}
    return hashlib.sha256(json.dumps([__version__, _CHECKS_REVISION, text, env]).encode()).hexdigest()[:40]


def parse_spec(text: str, path: Path = Path("spec.yaml"), *, cache_dir: Optional[Path] = None) -> Spec:
    """Parse and validate a spec; SpecError names the file, line and field of the first problem."""
    key = _cache_key(text)
    cache_file = Path(cache_dir) / f"{key}.json" if cache_dir else None
    if cache_file is not None:
        try:
            data = json.loads(cache_file.read_text())
            return Spec(path, data, bool(data.get("production", False)), text, key)
        except (OSError, ValueError):
            pass
    # fast path: the safe loader's document built from the C parser's events, no line numbers; on a
    # problem, validate again on the round-trip document (slow) only to say on which line it is
    try:
        doc = load_yaml(text)
        data = _validate(doc, path)
    except TooDeep as exc:
        raise SpecError(f"{path}:{exc.line}: nested deeper than {MAX_DEPTH} levels") from None
    except BadScalar as exc:
        raise SpecError(f"{path}:{exc.line or '?'}: not valid YAML: {BAD_SCALAR_MESSAGE}") from None
    except (SpecError, YAMLError):
        line = yaml_too_deep(text)  # what the fast path did not reach may be deeper still
        if line is not None:
            raise SpecError(f"{path}:{line}: nested deeper than {MAX_DEPTH} levels") from None
        try:
            rt = quietly(YAML().load, text)
        except YAMLError as exc:
            line, problem = yaml_problem(exc, text)
            raise SpecError(f"{path}:{line or '?'}: not valid YAML: {problem}") from None
        except BAD_SCALAR:
            raise SpecError(f"{path}:?: not valid YAML: {BAD_SCALAR_MESSAGE}") from None
        data = _validate(rt, path)
    return Spec(path, data, bool(data.get("production", False)), text, key, cache_file)


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
    # apply makes the system account (SYS) itself; the spec's accounts are application accounts
    system_names = {SYSTEM_ACCOUNT, (data.get("operator") or {}).get("system_account") or SYSTEM_ACCOUNT}
    for i, a in enumerate(accounts):
        adoc = doc["accounts"][i]
        if "name" not in a:
            ck.fail(adoc, None, f"accounts[{i}]", "name is missing")
        if a["name"] in system_names:
            ck.fail(
                adoc,
                "name",
                f"accounts[{i}].name",
                f"{a['name']!r} is the system account's name: the application account and the system account "
                "need different names (leave the system account out of accounts: apply makes it)",
            )
        if a["name"] in names:
            ck.fail(adoc, "name", f"accounts[{i}].name", f"duplicate account {a['name']!r}")
        names.add(a["name"])
        try:
            if "expiry" in a:
                check_time("expiry", parse_expiry(a["expiry"], int(time.time())))
            if "tags" in a:
                check_tags("tags", a["tags"])
        except FieldError as exc:
            ck.fail(adoc, exc.field, f"accounts[{i}].{exc.where}", exc.reason)
        except DchatOpsError as exc:
            ck.fail(adoc, "expiry", f"accounts[{i}].expiry", str(exc))
        if "default_permissions" in a:
            _check_fields(
                ck,
                adoc["default_permissions"],
                a["default_permissions"],
                f"accounts[{i}].default_permissions",
                DEFAULT_PERMISSION_FIELDS,
            )
        if "jetstream" in a:
            wide, tiers = spec_jetstream(a["jetstream"])
            problem = tier_problem(AccountLimits(jetstream=wide, tiers=tiers))
            if problem is not None:
                jdoc = adoc["jetstream"]
                ck.fail(jdoc, "tiers" if "tiers" in jdoc else None, f"accounts[{i}].jetstream", problem.reason)
        checked: set = set()  # field sets already checked: users that share permissions are checked once
        roles = set()
        for j, r in enumerate(a.get("signing_keys") or []):
            rdoc = adoc["signing_keys"][j]
            if "role" not in r:
                ck.fail(rdoc, None, f"accounts[{i}].signing_keys[{j}]", "role is missing")
            roles.add(r["role"])
            _check_fields(ck, rdoc, r, f"accounts[{i}].signing_keys[{j}]", ROLE_FIELDS)
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
                own = [k for k in u if k in PERMISSION_FIELDS]
                if own:
                    ck.fail(
                        udoc,
                        own[0],
                        f"{where}.{own[0]}",
                        "a user of a signing key role takes its permissions from the role",
                    )
            _check_fields(ck, udoc, u, where, USER_FIELDS, checked)
        for j, imp in enumerate(a.get("imports") or []):
            for k in ("account", "subject"):
                if k not in imp:
                    ck.fail(adoc["imports"][j], None, f"accounts[{i}].imports[{j}]", f"{k} is missing")
        _check_exchange(ck, adoc, a, f"accounts[{i}]")
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
        for k, (sec, key) in _PORTS.items():
            owner = n.get(sec) if sec else n
            if owner and key in owner:
                where_doc = ndoc[sec] if sec else ndoc
                for (h, p), other in ports.items():
                    if p == owner[key] and listeners_overlap(h, host):
                        ck.fail(where_doc, key, f"nodes[{i}].{k}", f"port {p} clashes with {other}")
                ports[(host, owner[key])] = f"nodes[{i}].{k} ({n['id']})"
        if n.get("cluster") is False:
            for k in ("cluster_port", "cluster_name", "cluster_advertise", "routes", "gateway"):
                if k in n:
                    ck.fail(ndoc, k, f"nodes[{i}].{k}", "a node with cluster: false has no cluster (nor gateway)")
        for link, sec in (("gateway", "gateway"), ("leafnode", "leafnodes"), ("websocket", "websocket")):
            if n.get("tls", {}).get(link) and not (n.get(sec) and (sec != "leafnodes" or n[sec].get("port"))):
                ck.fail(
                    ndoc["tls"],
                    link,
                    f"nodes[{i}].tls.{link}",
                    f"the node has no {link} listener to put TLS on (give it a {sec} section"
                    + (" with a port)" if sec == "leafnodes" else ")"),
                )
        for j, rem in enumerate((n.get("leafnodes") or {}).get("remotes") or []):
            if not rem.get("urls"):
                ck.fail(ndoc["leafnodes"]["remotes"], j, f"nodes[{i}].leafnodes.remotes[{j}]", "urls is missing")
            if rem.get("account") and rem["account"] not in names:
                ck.fail(
                    ndoc["leafnodes"]["remotes"][j],
                    "account",
                    f"nodes[{i}].leafnodes.remotes[{j}].account",
                    f"unknown account {rem['account']!r}",
                )
        for j, g in enumerate((n.get("gateway") or {}).get("remotes") or []):
            if "name" not in g or not g.get("urls"):
                ck.fail(ndoc["gateway"]["remotes"], j, f"nodes[{i}].gateway.remotes[{j}]", "name and urls are needed")
        if n.get("tls", {}).get("insecure") and data.get("production"):
            ck.fail(ndoc["tls"], "insecure", f"nodes[{i}].tls.insecure", "insecure TLS is refused in a production spec")
        if "account" in n and n["account"] not in names:
            ck.fail(ndoc, "account", f"nodes[{i}].account", f"unknown account {n['account']!r}")
        # a node's id names its local user in the node's account (the first account when it names none:
        # the store's default account when apply creates the store); a spec user of that name would be
        # overwritten by the node user and back again, and the spec would never settle
        acc = n.get("account") or (accounts[0]["name"] if accounts else None)
        clash = next((a for a in accounts if a["name"] == acc), None)
        if clash is not None and any(u["name"] == n["id"] for u in clash.get("users") or []):
            ck.fail(ndoc, "id", f"nodes[{i}].id", node_user_clash(n["id"], str(acc)))
    nodes = data.get("nodes") or []
    for i, n in enumerate(nodes):
        ndoc = doc["nodes"][i]
        lists: list[tuple[Any, str, str, list[str], str, tuple[str, ...]]] = [
            (ndoc, "routes", f"nodes[{i}].routes", n.get("routes") or [], "cluster", ROUTE_SCHEMES)
        ]
        for section, link_kind, link_schemes in (
            ("gateway", "gateway", GATEWAY_SCHEMES),
            ("leafnodes", "leaf", LEAF_SCHEMES),
        ):
            for j, rem in enumerate((n.get(section) or {}).get("remotes") or []):
                where = f"nodes[{i}].{section}.remotes[{j}].urls"
                lists.append(
                    (ndoc[section]["remotes"][j], "urls", where, rem.get("urls") or [], link_kind, link_schemes)
                )
        for parent, key, where, urls, kind, schemes in lists:
            for j, r in enumerate(urls):
                if "://" in r:
                    try:
                        check_url(r, schemes, f"{where}[{j}]")
                    except ConfigError as exc:
                        ck.fail(parent[key], j, f"{where}[{j}]", str(exc).split(": ", 1)[-1])
                    continue
                target = nodes[ids[r]] if r in ids else None
                if target is None or not _listens(target, kind):
                    what = {"cluster": "a cluster", "gateway": "a gateway", "leaf": "a leafnodes port"}[kind]
                    ck.fail(
                        parent[key],
                        j,
                        f"{where}[{j}]",
                        f"{'unknown node' if target is None else 'node'} {r!r}"
                        + (
                            f" (use a node id of this spec or a {schemes[0]}:// URL)"
                            if target is None
                            else f" has no {what} listener"
                        ),
                    )


def _check_exchange(ck: _Checker, adoc, a: dict, where: str) -> None:
    """An account's exports and imports, by the rules of nsc.exports (what nats-server refuses)."""
    for section in ("exports", "imports"):
        for j, item in enumerate(a.get(section) or []):
            if "subject" not in item:
                ck.fail(adoc[section][j], None, f"{where}.{section}[{j}]", "subject is missing")
    try:
        exports = []
        for j, x in enumerate(a.get("exports") or []):
            try:
                exports.append(export_from_fields(x["subject"], x.get("type", "stream"), x))
            except FieldError as exc:
                raise FieldError(exc.field, exc.reason, j) from None
        check_exports(exports)
    except FieldError as exc:
        _fail_item(ck, adoc, "exports", exc, where)
    try:
        check_imports(
            [
                Import(x["subject"], "", x.get("type", "stream"), **{k: x[k] for k in IMPORT_FIELDS if k in x})
                for x in a.get("imports") or []
            ]
        )
    except FieldError as exc:
        _fail_item(ck, adoc, "imports", exc, where)


def _fail_item(ck: _Checker, adoc, section: str, exc: FieldError, where: str) -> None:
    items = adoc[section]
    j = exc.index if exc.index is not None else 0
    item = items[j] if j < len(items) else None
    key = exc.field if isinstance(item, dict) and exc.field in item else None
    ck.fail(item if item is not None else items, key, f"{where}.{section}[{j}].{exc.field}", exc.reason)


def _listens(n: dict, kind: str) -> bool:
    """True when spec node ``n`` has a listener of ``kind`` (cluster, gateway, leaf)."""
    if kind == "cluster":
        return n.get("cluster", True) is not False
    if kind == "gateway":
        return bool(n.get("gateway") is not None)
    return bool((n.get("leafnodes") or {}).get("port"))


def spec_jetstream(js: dict) -> tuple[JetStreamLimits, dict[str, JetStreamLimits]]:
    """The account-wide JetStream limits and the tiers of a spec's ``jetstream`` section."""

    def limits(d: dict) -> JetStreamLimits:
        out = JetStreamLimits()
        for k, attr in JS_FIELDS.items():
            if k in d:
                setattr(out, attr, d[k])
        return out

    return limits(js), {name: limits(t) for name, t in (js.get("tiers") or {}).items()}


def node_user_clash(node_id: str, account: str) -> str:
    return (
        f"node {node_id!r} has a local user {node_id!r} in account {account!r}, and the spec names a user "
        f"{node_id!r} there too: rename the user or the node"
    )


def _check_fields(ck: _Checker, doc, item: dict, where: str, known: dict, checked: Optional[set] = None) -> None:
    """Check a user's or role's fields with the library's own validators (nsc.spec).

    ``checked``: the same fields (same values, same order) found valid before are not checked again.
    """
    fields = {k: v for k, v in item.items() if k in known}
    seen_key = None
    if checked is not None:
        seen_key = tuple((k, type(v), tuple(v) if isinstance(v, list) else v) for k, v in fields.items())
        try:
            if seen_key in checked:
                return
        except TypeError:  # a value that cannot be a key: checked every time
            seen_key = None
    try:
        UserSpec.from_fields(fields, now=int(time.time()), known=known)
        if checked is not None and seen_key is not None:
            checked.add(seen_key)
    except FieldError as exc:
        node: Any = doc
        key: Any = exc.field if exc.field in item else None
        if key is not None and exc.index is not None and isinstance(doc.get(key), (list, CommentedSeq)):
            node, key = doc[key], exc.index
        ck.fail(node, key, f"{where}.{exc.where}", exc.reason)


def spec_cache_dir(store: Store) -> Path:
    """Where validated specs are kept (private: values from the environment may be secrets)."""
    return store.home / "cache" / "specs"
