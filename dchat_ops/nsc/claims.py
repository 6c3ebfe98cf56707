"""Typed JWT v2 claims: operator, account, user and activation.

Each model has ``to_dict()`` / ``from_dict()``; fields this module does not know are kept in
``extra`` (inside ``nats``) and ``extra_top`` (beside it), so a decode / encode round trip never
drops data.  Defaults are the ones a nats-server needs to let anyone in: -1 (unlimited) for
connection, subscription, data and payload limits, and ``pub`` / ``sub`` objects present.
JetStream is off for an account until ``mem_storage`` or ``disk_storage`` is set.

    >>> u = UserClaims(subject="U...", name="alice")
    >>> u.permissions.sub.allow.append("chat.>")

Encoding and signing live in :mod:`dchat_ops.nsc.jwt`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from dchat_ops.errors import JWTError

__all__ = [
    "ACCOUNT_LIMIT_KEYS",
    "CONNECTION_TYPES",
    "JETSTREAM_LIMIT_KEYS",
    "AccountClaims",
    "AccountLimits",
    "ActivationClaims",
    "Claims",
    "Export",
    "Import",
    "JetStreamLimits",
    "OperatorClaims",
    "Permission",
    "Permissions",
    "ResponsePermission",
    "ScopedSigningKey",
    "TimeRange",
    "UserClaims",
    "UserPermissionLimits",
    "claims_class_for",
    "jetstream_field",
]

UNLIMITED = -1

# Connection types a user may be restricted to (allowed_connection_types).
CONNECTION_TYPES = (
    "STANDARD",
    "WEBSOCKET",
    "LEAFNODE",
    "LEAFNODE_WS",
    "MQTT",
    "MQTT_WS",
    "IN_PROCESS",
)

_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d\Z", re.ASCII)


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # older JWTs wrote some lists as comma-separated strings
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise JWTError(f"{what} must be a list of strings")
    return list(value)


def _int(value: Any, what: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JWTError(f"{what} must be a number")
    return int(value)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JWTError(f"{what} must be an object")
    return value


def _rest(d: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in d.items() if k not in known}


# --- permissions --------------------------------------------------------------------------------


@dataclass
class Permission:
    """An allow / deny list of subjects.  Subscribe entries may carry a queue group: ``"subj queue"``."""

    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.allow:
            d["allow"] = list(self.allow)
        if self.deny:
            d["deny"] = list(self.deny)
        return d

    @classmethod
    def from_dict(cls, d: Any, what: str = "permission") -> Permission:
        d = _obj(d, what)
        return cls(_strings(d.get("allow"), f"{what}.allow"), _strings(d.get("deny"), f"{what}.deny"))

    def is_empty(self) -> bool:
        return not self.allow and not self.deny


@dataclass
class ResponsePermission:
    """Allow publishing to reply subjects: ``max`` replies within ``ttl_ns`` nanoseconds (0: no limit)."""

    max: int = 1
    ttl_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"max": self.max, "ttl": self.ttl_ns}

    @classmethod
    def from_dict(cls, d: Any) -> ResponsePermission:
        d = _obj(d, "resp")
        return cls(_int(d.get("max"), "resp.max"), _int(d.get("ttl"), "resp.ttl"))


@dataclass
class TimeRange:
    """A daily window ``start``-``end`` in ``HH:MM:SS`` when a user may connect."""

    start: str
    end: str

    def __post_init__(self) -> None:
        for v in (self.start, self.end):
            if not isinstance(v, str) or not _TIME.match(v):
                raise JWTError(f"time window {v!r} is not HH:MM:SS")

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, d: Any) -> TimeRange:
        d = _obj(d, "times[]")
        return cls(d.get("start", ""), d.get("end", ""))


@dataclass
class Permissions:
    """Publish, subscribe and response permissions."""

    pub: Permission = field(default_factory=Permission)
    sub: Permission = field(default_factory=Permission)
    resp: ResponsePermission | None = None

    def write(self, d: dict[str, Any]) -> None:
        d["pub"] = self.pub.to_dict()
        d["sub"] = self.sub.to_dict()
        if self.resp is not None:
            d["resp"] = self.resp.to_dict()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        self.write(d)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Permissions:
        d = _obj(d, "permissions")
        resp = d.get("resp")
        return cls(
            Permission.from_dict(d.get("pub"), "pub"),
            Permission.from_dict(d.get("sub"), "sub"),
            ResponsePermission.from_dict(resp) if resp is not None else None,
        )

    def is_empty(self) -> bool:
        return self.pub.is_empty() and self.sub.is_empty() and self.resp is None


_UPL_KEYS = {
    "pub",
    "sub",
    "resp",
    "src",
    "times",
    "times_location",
    "subs",
    "data",
    "payload",
    "bearer_token",
    "allowed_connection_types",
}


@dataclass
class UserPermissionLimits:
    """What a user may do: permissions, limits, bearer, connection types, source networks, time windows.

    Used both by :class:`UserClaims` and as the template of a :class:`ScopedSigningKey`.
    """

    permissions: Permissions = field(default_factory=Permissions)
    subs: int = UNLIMITED
    data: int = UNLIMITED
    payload: int = UNLIMITED
    src: list[str] = field(default_factory=list)
    times: list[TimeRange] = field(default_factory=list)
    times_location: str = ""
    bearer_token: bool = False
    allowed_connection_types: list[str] = field(default_factory=list)

    def write_upl(self, d: dict[str, Any]) -> None:
        self.permissions.write(d)
        if self.src:
            d["src"] = list(self.src)
        if self.times:
            d["times"] = [t.to_dict() for t in self.times]
        if self.times_location:
            d["times_location"] = self.times_location
        for k in ("subs", "data", "payload"):
            v = getattr(self, k)
            if v:
                d[k] = v
        if self.bearer_token:
            d["bearer_token"] = True
        if self.allowed_connection_types:
            d["allowed_connection_types"] = list(self.allowed_connection_types)

    @staticmethod
    def read_upl(d: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the fields above, read from a ``nats`` object."""
        types = _strings(d.get("allowed_connection_types"), "allowed_connection_types")
        return dict(
            permissions=Permissions.from_dict(d),
            subs=_int(d.get("subs"), "subs"),
            data=_int(d.get("data"), "data"),
            payload=_int(d.get("payload"), "payload"),
            src=_strings(d.get("src"), "src"),
            times=[TimeRange.from_dict(t) for t in (d.get("times") or [])],
            times_location=str(d.get("times_location") or ""),
            bearer_token=bool(d.get("bearer_token", False)),
            allowed_connection_types=types,
        )

    def has_limits_or_permissions(self) -> bool:
        """True when anything is set that a scoped signing key's template would own."""
        return bool(
            not self.permissions.is_empty()
            or self.subs
            or self.data
            or self.payload
            or self.src
            or self.times
            or self.times_location
            or self.bearer_token
            or self.allowed_connection_types
        )

    def clear_for_scope(self) -> None:
        """Empty permissions and no limits: what a user issued by a scoped key must carry."""
        self.permissions = Permissions()
        self.subs = self.data = self.payload = 0
        self.src, self.times, self.times_location = [], [], ""
        self.bearer_token = False
        self.allowed_connection_types = []


@dataclass
class ScopedSigningKey:
    """An account signing key whose users get their permissions and limits from ``template``."""

    key: str
    role: str = ""
    template: UserPermissionLimits = field(default_factory=UserPermissionLimits)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    KIND: ClassVar[str] = "user_scope"

    def to_dict(self) -> dict[str, Any]:
        t: dict[str, Any] = {}
        self.template.write_upl(t)
        d: dict[str, Any] = {"kind": self.KIND, "key": self.key, "role": self.role, "template": t}
        if self.description:
            d["description"] = self.description
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScopedSigningKey:
        if d.get("kind") != cls.KIND:
            raise JWTError(f"unknown signing key scope kind {d.get('kind')!r}")
        t = _obj(d.get("template"), "template")
        return cls(
            key=str(d.get("key", "")),
            role=str(d.get("role", "")),
            template=UserPermissionLimits(**UserPermissionLimits.read_upl(t)),
            description=str(d.get("description", "")),
            extra=_rest(d, {"kind", "key", "role", "template", "description"}),
        )


# --- account limits, exports, imports ----------------------------------------------------------

_JS_KEYS = (
    "mem_storage",
    "disk_storage",
    "streams",
    "consumer",
    "max_ack_pending",
    "mem_max_stream_bytes",
    "disk_max_stream_bytes",
)


@dataclass
class JetStreamLimits:
    """JetStream limits of an account (or of one tier such as ``R1`` / ``R3``).  All 0: JetStream off."""

    mem_storage: int = 0
    disk_storage: int = 0
    streams: int = 0
    consumer: int = 0
    max_ack_pending: int = 0
    mem_max_stream_bytes: int = 0
    disk_max_stream_bytes: int = 0
    max_bytes_required: bool = False

    def write(self, d: dict[str, Any]) -> None:
        for k in _JS_KEYS:
            v = getattr(self, k)
            if v:
                d[k] = v
        if self.max_bytes_required:
            d["max_bytes_required"] = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        self.write(d)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JetStreamLimits:
        kw = {k: _int(d.get(k), k) for k in _JS_KEYS}
        return cls(**kw, max_bytes_required=bool(d.get("max_bytes_required", False)))

    def enabled(self) -> bool:
        return bool(self.mem_storage or self.disk_storage)


_LIMIT_KEYS = ("subs", "data", "payload", "imports", "exports", "conn", "leaf")
ACCOUNT_LIMIT_KEYS = _LIMIT_KEYS  # the account's numeric limits (int64, -1 unlimited)
JETSTREAM_LIMIT_KEYS = _JS_KEYS  # the numeric JetStream limits


def jetstream_field(key: str) -> str:
    """A JetStream limit key as specs and error messages spell it: ``mem_storage`` -> ``jetstream.mem``."""
    return "jetstream." + {"mem_storage": "mem", "disk_storage": "disk", "consumer": "consumers"}.get(key, key)


@dataclass
class AccountLimits:
    """Account limits; -1 is unlimited, 0 is zero (an absent field is 0 to the server)."""

    subs: int = UNLIMITED
    data: int = UNLIMITED
    payload: int = UNLIMITED
    imports: int = UNLIMITED
    exports: int = UNLIMITED
    wildcards: bool = True
    disallow_bearer: bool = False
    conn: int = UNLIMITED
    leaf: int = UNLIMITED
    jetstream: JetStreamLimits = field(default_factory=JetStreamLimits)
    tiers: dict[str, JetStreamLimits] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k in _LIMIT_KEYS:
            v = getattr(self, k)
            if v:
                d[k] = v
        if self.wildcards:
            d["wildcards"] = True
        if self.disallow_bearer:
            d["disallow_bearer"] = True
        self.jetstream.write(d)
        if self.tiers:
            d["tiered_limits"] = {name: t.to_dict() for name, t in self.tiers.items()}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> AccountLimits:
        d = _obj(d, "limits")
        kw = {k: _int(d.get(k), f"limits.{k}") for k in _LIMIT_KEYS}
        tiers = {
            n: JetStreamLimits.from_dict(_obj(t, f"tiered_limits.{n}"))
            for n, t in _obj(d.get("tiered_limits"), "tiered_limits").items()
        }
        known = (
            set(_LIMIT_KEYS) | set(_JS_KEYS) | {"wildcards", "disallow_bearer", "max_bytes_required", "tiered_limits"}
        )
        return cls(
            **kw,
            wildcards=bool(d.get("wildcards", False)),
            disallow_bearer=bool(d.get("disallow_bearer", False)),
            jetstream=JetStreamLimits.from_dict(d),
            tiers=tiers,
            extra=_rest(d, known),
        )


_EXPORT_KEYS = (
    "name",
    "subject",
    "type",
    "token_req",
    "revocations",
    "response_type",
    "response_threshold",
    "service_latency",
    "account_token_position",
    "advertise",
    "allow_trace",
    "description",
    "info_url",
)


@dataclass
class Export:
    """A stream or service the account offers to other accounts."""

    subject: str
    type: str = "stream"  # "stream" or "service"
    name: str = ""
    token_req: bool = False
    response_type: str = ""  # services: "Singleton", "Stream" or "Chunked"
    response_threshold: int = 0
    account_token_position: int = 0
    advertise: bool = False
    allow_trace: bool = False
    description: str = ""
    info_url: str = ""
    revocations: dict[str, int] = field(default_factory=dict)
    service_latency: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in ("stream", "service"):
            raise JWTError(f"export type must be 'stream' or 'service', not {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        d["subject"] = self.subject
        d["type"] = self.type
        for k in ("token_req", "advertise", "allow_trace"):
            if getattr(self, k):
                d[k] = True
        if self.revocations:
            d["revocations"] = dict(self.revocations)
        if self.response_type:
            d["response_type"] = self.response_type
        if self.response_threshold:
            d["response_threshold"] = self.response_threshold
        if self.service_latency:
            d["service_latency"] = dict(self.service_latency)
        if self.account_token_position:
            d["account_token_position"] = self.account_token_position
        if self.description:
            d["description"] = self.description
        if self.info_url:
            d["info_url"] = self.info_url
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Export:
        d = _obj(d, "exports[]")
        return cls(
            subject=str(d.get("subject", "")),
            type=str(d.get("type", "stream")),
            name=str(d.get("name", "")),
            token_req=bool(d.get("token_req", False)),
            response_type=str(d.get("response_type", "")),
            response_threshold=_int(d.get("response_threshold"), "response_threshold"),
            account_token_position=_int(d.get("account_token_position"), "account_token_position"),
            advertise=bool(d.get("advertise", False)),
            allow_trace=bool(d.get("allow_trace", False)),
            description=str(d.get("description", "")),
            info_url=str(d.get("info_url", "")),
            revocations={k: _int(v, "revocations") for k, v in _obj(d.get("revocations"), "revocations").items()},
            service_latency=d.get("service_latency"),
            extra=_rest(d, set(_EXPORT_KEYS)),
        )


_IMPORT_KEYS = ("name", "subject", "account", "token", "to", "local_subject", "type", "share", "allow_trace")


@dataclass
class Import:
    """A stream or service taken from another account's export."""

    subject: str
    account: str
    type: str = "stream"
    name: str = ""
    local_subject: str = ""
    token: str = ""
    share: bool = False
    allow_trace: bool = False
    to: str = ""  # deprecated by local_subject; kept for old JWTs
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in ("stream", "service"):
            raise JWTError(f"import type must be 'stream' or 'service', not {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        d["subject"] = self.subject
        d["account"] = self.account
        if self.token:
            d["token"] = self.token
        if self.to:
            d["to"] = self.to
        if self.local_subject:
            d["local_subject"] = self.local_subject
        d["type"] = self.type
        if self.share:
            d["share"] = True
        if self.allow_trace:
            d["allow_trace"] = True
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Import:
        d = _obj(d, "imports[]")
        return cls(
            subject=str(d.get("subject", "")),
            account=str(d.get("account", "")),
            type=str(d.get("type", "stream")),
            name=str(d.get("name", "")),
            local_subject=str(d.get("local_subject", "")),
            token=str(d.get("token", "")),
            share=bool(d.get("share", False)),
            allow_trace=bool(d.get("allow_trace", False)),
            to=str(d.get("to", "")),
            extra=_rest(d, set(_IMPORT_KEYS)),
        )


# --- the claims -------------------------------------------------------------------------------

_C = TypeVar("_C", bound="Claims")

_STD = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")
_STD_ATTRS = {
    "aud": "audience",
    "exp": "expires",
    "jti": "jti",
    "iat": "issued_at",
    "iss": "issuer",
    "name": "name",
    "nbf": "not_before",
    "sub": "subject",
}


@dataclass
class Claims:
    """The standard claims every NATS JWT carries, plus what this module does not know.

    ``issued_at``, ``expires`` and ``not_before`` are Unix seconds (0: unset).
    """

    subject: str = ""
    name: str = ""
    issuer: str = ""
    issued_at: int = 0
    expires: int = 0
    not_before: int = 0
    audience: str = ""
    jti: str = ""
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_top: dict[str, Any] = field(default_factory=dict)

    TYPE: ClassVar[str] = ""
    SUBJECT_KIND: ClassVar[str] = ""
    _NATS_KEYS: ClassVar[tuple[str, ...]] = ()

    # serialisation ---------------------------------------------------------------------------
    def standard_claims(self) -> dict[str, Any]:
        """The standard claims in Go's order, empty ones omitted (the input of the jti hash)."""
        d: dict[str, Any] = {}
        for k in _STD:
            v = getattr(self, _STD_ATTRS[k])
            if v:
                d[k] = v
        return d

    def nats_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        self._write_nats(d)
        if self.tags:
            d["tags"] = list(self.tags)
        d.update(self.extra)
        d["type"] = self.TYPE
        d["version"] = 2
        return d

    def to_dict(self) -> dict[str, Any]:
        d = self.standard_claims()
        d.update(self.extra_top)
        d["nats"] = self.nats_dict()
        return d

    def _write_nats(self, d: dict[str, Any]) -> None:  # pragma: no cover - overridden
        pass

    @classmethod
    def _read_nats(cls, n: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - overridden
        return {}

    @classmethod
    def from_dict(cls: type[_C], d: Any) -> _C:
        if not isinstance(d, dict):
            raise JWTError("claims must be a JSON object")
        n = d.get("nats")
        if not isinstance(n, dict):
            if "type" in d:
                raise JWTError("this is a v1 JWT (type outside nats); only v2 JWTs are supported")
            raise JWTError("claims have no 'nats' object")
        typ = n.get("type")
        if typ != cls.TYPE and cls.TYPE:
            raise JWTError(f"expected a {cls.TYPE} JWT, got {typ!r}")
        version = n.get("version", 0)
        if version != 2:
            raise JWTError(f"unsupported JWT version {version!r}; only version 2 is supported")
        kw: dict[str, Any] = {}
        for k in _STD:
            v = d.get(k)
            attr = _STD_ATTRS[k]
            if k in ("exp", "iat", "nbf"):
                kw[attr] = _int(v, k)
            else:
                kw[attr] = "" if v is None else str(v)
        kw.update(cls._read_nats(n))
        kw["tags"] = _strings(n.get("tags"), "tags")
        kw["extra"] = _rest(n, set(cls._NATS_KEYS) | {"tags", "type", "version"})
        kw["extra_top"] = _rest(d, set(_STD) | {"nats"})
        return cls(**kw)

    def copy(self: _C) -> _C:
        return copy.deepcopy(self)


@dataclass
class OperatorClaims(Claims):
    """The operator: root of trust.  Self-signed (or by one of its ``signing_keys``)."""

    signing_keys: list[str] = field(default_factory=list)
    account_server_url: str = ""
    operator_service_urls: list[str] = field(default_factory=list)
    system_account: str = ""
    assert_server_version: str = ""
    strict_signing_key_usage: bool = False

    TYPE: ClassVar[str] = "operator"
    SUBJECT_KIND: ClassVar[str] = "operator"
    _NATS_KEYS: ClassVar[tuple[str, ...]] = (
        "signing_keys",
        "account_server_url",
        "operator_service_urls",
        "system_account",
        "assert_server_version",
        "strict_signing_key_usage",
    )

    def _write_nats(self, d: dict[str, Any]) -> None:
        if self.signing_keys:
            d["signing_keys"] = list(self.signing_keys)
        if self.account_server_url:
            d["account_server_url"] = self.account_server_url
        if self.operator_service_urls:
            d["operator_service_urls"] = list(self.operator_service_urls)
        if self.system_account:
            d["system_account"] = self.system_account
        if self.assert_server_version:
            d["assert_server_version"] = self.assert_server_version
        if self.strict_signing_key_usage:
            d["strict_signing_key_usage"] = True

    @classmethod
    def _read_nats(cls, n: dict[str, Any]) -> dict[str, Any]:
        return dict(
            signing_keys=_strings(n.get("signing_keys"), "signing_keys"),
            account_server_url=str(n.get("account_server_url") or ""),
            operator_service_urls=_strings(n.get("operator_service_urls"), "operator_service_urls"),
            system_account=str(n.get("system_account") or ""),
            assert_server_version=str(n.get("assert_server_version") or ""),
            strict_signing_key_usage=bool(n.get("strict_signing_key_usage", False)),
        )

    def may_sign_accounts(self, key: str) -> bool:
        """True when ``key`` may issue account JWTs under this operator."""
        if key in self.signing_keys:
            return True
        return key == self.subject and not self.strict_signing_key_usage


@dataclass
class AccountClaims(Claims):
    """An account: a namespace of subjects, its limits, exports / imports and the keys that sign its users."""

    limits: AccountLimits = field(default_factory=AccountLimits)
    signing_keys: list[str | ScopedSigningKey] = field(default_factory=list)
    default_permissions: Permissions = field(default_factory=Permissions)
    exports: list[Export] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    revocations: dict[str, int] = field(default_factory=dict)
    mappings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    info_url: str = ""

    TYPE: ClassVar[str] = "account"
    SUBJECT_KIND: ClassVar[str] = "account"
    _NATS_KEYS: ClassVar[tuple[str, ...]] = (
        "limits",
        "signing_keys",
        "default_permissions",
        "exports",
        "imports",
        "revocations",
        "mappings",
        "description",
        "info_url",
    )

    def _write_nats(self, d: dict[str, Any]) -> None:
        if self.imports:
            d["imports"] = [i.to_dict() for i in self.imports]
        if self.exports:
            d["exports"] = [e.to_dict() for e in self.exports]
        d["limits"] = self.limits.to_dict()
        if self.signing_keys:
            d["signing_keys"] = [k if isinstance(k, str) else k.to_dict() for k in self.signing_keys]
        if self.revocations:
            d["revocations"] = dict(self.revocations)
        d["default_permissions"] = self.default_permissions.to_dict()
        if self.mappings:
            d["mappings"] = copy.deepcopy(self.mappings)
        if self.description:
            d["description"] = self.description
        if self.info_url:
            d["info_url"] = self.info_url

    @classmethod
    def _read_nats(cls, n: dict[str, Any]) -> dict[str, Any]:
        sks: list[str | ScopedSigningKey] = []
        raw = n.get("signing_keys") or []
        if not isinstance(raw, list):
            raise JWTError("signing_keys must be a list")
        for k in raw:
            if isinstance(k, str):
                sks.append(k)
            elif isinstance(k, dict):
                sks.append(ScopedSigningKey.from_dict(k))
            else:
                raise JWTError("signing_keys entries must be keys or scopes")
        revs = _obj(n.get("revocations"), "revocations")
        return dict(
            limits=AccountLimits.from_dict(n.get("limits")),
            signing_keys=sks,
            default_permissions=Permissions.from_dict(n.get("default_permissions")),
            exports=[Export.from_dict(e) for e in (n.get("exports") or [])],
            imports=[Import.from_dict(i) for i in (n.get("imports") or [])],
            revocations={k: _int(v, "revocations") for k, v in revs.items()},
            mappings=copy.deepcopy(_obj(n.get("mappings"), "mappings")),
            description=str(n.get("description") or ""),
            info_url=str(n.get("info_url") or ""),
        )

    # signing keys --------------------------------------------------------------------------------
    def signing_key_map(self) -> dict[str, ScopedSigningKey | None]:
        """public key -> its scope (None for a plain signing key)."""
        return {(k if isinstance(k, str) else k.key): (None if isinstance(k, str) else k) for k in self.signing_keys}

    def scope_for_role(self, role: str) -> ScopedSigningKey | None:
        for k in self.signing_keys:
            if isinstance(k, ScopedSigningKey) and k.role == role:
                return k
        return None

    def may_sign_users(self, key: str) -> bool:
        return key == self.subject or key in self.signing_key_map()

    # revocations --------------------------------------------------------------------------------
    def is_revoked(self, user_key: str, issued_at: int) -> bool:
        """True when a user JWT with this subject and ``iat`` is revoked (``iat <=`` revocation time)."""
        for k in (user_key, "*"):
            t = self.revocations.get(k)
            if t is not None and issued_at <= t:
                return True
        return False


@dataclass
class UserClaims(Claims):
    """A user: what one connection may do, signed by its account (or an account signing key)."""

    limits: UserPermissionLimits = field(default_factory=UserPermissionLimits)
    issuer_account: str = ""

    TYPE: ClassVar[str] = "user"
    SUBJECT_KIND: ClassVar[str] = "user"
    _NATS_KEYS: ClassVar[tuple[str, ...]] = tuple(_UPL_KEYS | {"issuer_account"})

    @property
    def permissions(self) -> Permissions:
        return self.limits.permissions

    def _write_nats(self, d: dict[str, Any]) -> None:
        self.limits.write_upl(d)
        if self.issuer_account:
            d["issuer_account"] = self.issuer_account

    @classmethod
    def _read_nats(cls, n: dict[str, Any]) -> dict[str, Any]:
        return dict(
            limits=UserPermissionLimits(**UserPermissionLimits.read_upl(n)),
            issuer_account=str(n.get("issuer_account") or ""),
        )


@dataclass
class ActivationClaims(Claims):
    """Grants one account (the subject) an import of a private export of the issuing account."""

    import_subject: str = ""
    import_type: str = "stream"
    issuer_account: str = ""

    TYPE: ClassVar[str] = "activation"
    SUBJECT_KIND: ClassVar[str] = "account"
    _NATS_KEYS: ClassVar[tuple[str, ...]] = ("subject", "kind", "issuer_account")

    def _write_nats(self, d: dict[str, Any]) -> None:
        d["subject"] = self.import_subject
        d["kind"] = self.import_type
        if self.issuer_account:
            d["issuer_account"] = self.issuer_account

    @classmethod
    def _read_nats(cls, n: dict[str, Any]) -> dict[str, Any]:
        return dict(
            import_subject=str(n.get("subject") or ""),
            import_type=str(n.get("kind") or "stream"),
            issuer_account=str(n.get("issuer_account") or ""),
        )


_BY_TYPE: dict[str, type[Claims]] = {c.TYPE: c for c in (OperatorClaims, AccountClaims, UserClaims, ActivationClaims)}


def claims_class_for(d: Any) -> type[Claims]:
    """The claims class for a decoded payload, by ``nats.type``."""
    n = d.get("nats") if isinstance(d, dict) else None
    if not isinstance(n, dict):
        if isinstance(d, dict) and "type" in d:
            raise JWTError("this is a v1 JWT (type outside nats); only v2 JWTs are supported")
        raise JWTError("claims have no 'nats' object")
    typ = n.get("type")
    cls = _BY_TYPE.get(typ) if isinstance(typ, str) else None
    if cls is None:
        raise JWTError(f"unsupported JWT type {n.get('type')!r}")
    return cls
