"""What to set on a user (or on a role's template), and the one table of validation for it.

The CLI, the library (:func:`~dchat_ops.nsc.admin.add_user`, ``edit_user``, ``edit_account``) and
provisioning specs all go through the validators here, so an input one of them accepts, the others
accept too.  A refused field raises :class:`FieldError`, which names the field the way a spec
and the CLI spell it (``allow_pub``, ``times``, ``expiry``) and, for a list, the item's index:

    >>> UserSpec.from_fields({"allow_sub": ["chat..x"]}, now=0)
    Traceback (most recent call last):
    FieldError: allow_sub[0]: empty token in 'chat..x' token 2 (at character 6): double '.'

Limits are int64 on the server (durations in nanoseconds): a larger number makes the server refuse
the JWT, so it is refused here.  The rules themselves (numbers, networks, text) are the table in
:mod:`dchat_ops.nsc.limits`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from dchat_ops._time import MAX_TIME, parse_duration, parse_expiry
from dchat_ops.errors import DchatOpsError, FieldError
from dchat_ops.nsc.claims import CONNECTION_TYPES, ResponsePermission, TimeRange, UserClaims
from dchat_ops.nsc.limits import INT64_MAX, check_cidr, check_duration, check_limit, check_tag
from dchat_ops.subjects import check_subject

__all__ = [
    "DEFAULT_PERMISSION_FIELDS",
    "INT64_MAX",
    "ROLE_FIELDS",
    "USER_FIELDS",
    "FieldError",
    "UserChanges",
    "UserSpec",
    "check_connection_types",
    "check_limit",
    "check_source_networks",
    "check_subjects",
    "check_tags",
    "check_time",
    "check_time_zone",
    "check_times",
    "check_validity",
    "dedupe",
    "duration_text",
    "parse_time_window",
    "time_text",
]


# --- the fields -----------------------------------------------------------------------------------------
#
# name -> (UserSpec attribute, shape).  The shape is the form of the value as written in a spec or on
# the command line: "subjects" / "queue_subjects" / "texts" (lists of text), "text", "int", "bool",
# "duration" (30s, 5m), "time" (a date, an ISO time, a duration from now, or 0).

USER_FIELDS: dict[str, tuple[str, str]] = {
    "allow_pub": ("pub_allow", "subjects"),
    "deny_pub": ("pub_deny", "subjects"),
    "allow_sub": ("sub_allow", "queue_subjects"),
    "deny_sub": ("sub_deny", "queue_subjects"),
    "resp_max": ("resp_max", "int"),
    "resp_ttl": ("resp_ttl_s", "duration"),
    "subs": ("subs", "int"),
    "data": ("data", "int"),
    "payload": ("payload", "int"),
    "bearer": ("bearer", "bool"),
    "connection_types": ("connection_types", "texts"),
    "source_networks": ("source_networks", "texts"),
    "times": ("times", "texts"),
    "times_location": ("times_location", "text"),
    "expiry": ("expires", "time"),
    "start": ("not_before", "time"),
    "tags": ("tags", "texts"),
}
# fields that a user of a scoped role may not set (the role owns them)
PERMISSION_FIELDS = tuple(k for k in USER_FIELDS if k not in ("expiry", "start", "tags"))
# what a scoped signing key's template (a role) may set: every permission and limit of a user
ROLE_FIELDS: dict[str, tuple[str, str]] = {k: USER_FIELDS[k] for k in PERMISSION_FIELDS}
# an account's default permissions (what a user with no permissions of its own gets): the permission lists
# and the response permission of a user
DEFAULT_PERMISSION_FIELDS: dict[str, tuple[str, str]] = {
    k: USER_FIELDS[k] for k in ("allow_pub", "deny_pub", "allow_sub", "deny_sub", "resp_max", "resp_ttl")
}
_NAME_OF = {attr: name for name, (attr, _) in USER_FIELDS.items()}


# --- validators (each raises FieldError naming ``name``) --------------------------------------------------


def _list(name: str, values: Any) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise FieldError(name, "must be a list of text")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise FieldError(name, "must be text", i)
    return list(values)


def check_subjects(name: str, values: Any, *, queue_ok: bool) -> list[str]:
    """Subjects (with ``subject queue`` entries when ``queue_ok``) in the subject grammar."""
    out = _list(name, values)
    for i, subj in enumerate(out):
        try:
            check_subject(subj, queue_ok=queue_ok)
        except DchatOpsError as exc:
            raise FieldError(name, str(exc), i) from None
    return out


def check_source_networks(name: str, values: Any) -> list[str]:
    """Networks in CIDR form, as :func:`~dchat_ops.nsc.limits.check_cidr` takes them."""
    out = _list(name, values)
    for i, net in enumerate(out):
        check_cidr(name, net, i)
    return out


def check_tags(name: str, values: Any) -> list[str]:
    out = _list(name, values)
    for i, t in enumerate(out):
        check_tag(name, t, i)
    return out


def check_connection_types(name: str, values: Any) -> list[str]:
    out = _list(name, values)
    for i, t in enumerate(out):
        if t.upper() not in CONNECTION_TYPES:
            raise FieldError(name, f"unknown connection type {t!r} (one of {', '.join(CONNECTION_TYPES)})", i)
    return out


_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d\Z", re.ASCII)


def parse_time_window(text: str) -> tuple[str, str]:
    """``"08:00:00-18:00:00"`` -> ``("08:00:00", "18:00:00")``; DchatOpsError when it is not that."""
    start, sep, end = str(text).partition("-")
    if not sep:
        raise DchatOpsError(f"invalid time window {text!r}: use HH:MM:SS-HH:MM:SS")
    return start.strip(), end.strip()


def check_times(name: str, windows: Any) -> list[tuple[str, str]]:
    """Daily windows as (start, end) pairs of ``HH:MM:SS`` (an end before the start runs past midnight)."""
    if isinstance(windows, str) or not isinstance(windows, (list, tuple)):
        raise FieldError(name, "must be a list of time windows")
    out = []
    for i, w in enumerate(windows):
        try:
            start, end = parse_time_window(w) if isinstance(w, str) else w
        except (TypeError, ValueError):
            raise FieldError(name, f"invalid time window {w!r}: use HH:MM:SS-HH:MM:SS", i) from None
        except DchatOpsError as exc:
            raise FieldError(name, str(exc), i) from None
        for v in (start, end):
            if not isinstance(v, str) or not _CLOCK.match(v):
                raise FieldError(name, f"invalid time window: {v!r} is not HH:MM:SS (00:00:00 to 23:59:59)", i)
        out.append((start, end))
    return out


def check_time_zone(name: str, tz: Any) -> str:
    if not isinstance(tz, str):
        raise FieldError(name, "must be text")
    if tz:
        import zoneinfo  # here: its time zone database paths cost about 2 ms, and few specs name a zone

        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise FieldError(name, f"unknown time zone {tz!r} (use an IANA name like Europe/Berlin)") from None
    return tz


def check_time(name: str, t: Any) -> int:
    """Unix seconds, 0 for none."""
    if isinstance(t, bool) or not isinstance(t, int):
        raise FieldError(name, f"must be Unix seconds, not {t!r}")
    if not 0 <= t <= MAX_TIME:
        raise FieldError(name, f"time {t} is out of range (before 1970 or after 9999)")
    return t


def check_validity(not_before: Optional[int], expires: Optional[int]) -> None:
    if expires and not_before and not_before >= expires:
        raise FieldError("expiry", "the expiry is not after the start time")


def dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)


def time_text(t: int) -> str:
    """Unix seconds as a spec writes a time: ``2027-06-30T00:00:00Z``."""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(seconds: float) -> str:
    """A duration :func:`~dchat_ops._time.parse_duration` reads back to the same nanoseconds."""
    ns = round(seconds * 1e9)
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns / 1e6!r}ms"


# --- what to set on a user ------------------------------------------------------------------------------


@dataclass
class UserSpec:
    """What to set on a user; ``None`` leaves a field as it is (for edits) or at its default."""

    pub_allow: Optional[list[str]] = None
    pub_deny: Optional[list[str]] = None
    sub_allow: Optional[list[str]] = None
    sub_deny: Optional[list[str]] = None
    resp_max: Optional[int] = None  # 0 removes response permissions
    resp_ttl_s: Optional[float] = None
    subs: Optional[int] = None
    data: Optional[int] = None
    payload: Optional[int] = None
    bearer: Optional[bool] = None
    connection_types: Optional[list[str]] = None
    source_networks: Optional[list[str]] = None
    times: Optional[list[tuple[str, str]]] = None
    times_location: Optional[str] = None
    expires: Optional[int] = None  # Unix seconds; 0 removes the expiry
    not_before: Optional[int] = None
    tags: Optional[list[str]] = None

    @classmethod
    def from_fields(
        cls, fields: Mapping[str, Any], *, now: int, known: Mapping[str, tuple[str, str]] = USER_FIELDS
    ) -> UserSpec:
        """A validated spec from fields as a spec file or the CLI writes them (``allow_pub``,
        ``times: ["08:00:00-18:00:00"]``, ``expiry: "2027-06-30"``, ``resp_ttl: "5s"``).

        ``known`` limits the fields (:data:`ROLE_FIELDS` for a role's template).  FieldError names
        the first field that is refused.
        """
        spec = cls()
        for name, value in fields.items():
            if name not in known:
                raise FieldError(name, f"unknown field (known: {', '.join(sorted(known))})")
            attr, shape = known[name]
            if value is None:
                continue
            try:
                if shape == "duration":
                    value = parse_duration(value) if isinstance(value, str) else value
                elif shape == "time":
                    value = value if type(value) is int else parse_expiry(str(value), now)
                elif shape == "texts" and name == "times":
                    value = check_times(name, value)
            except FieldError:
                raise
            except DchatOpsError as exc:
                raise FieldError(name, str(exc)) from None
            setattr(spec, attr, value)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Refuse what a server would refuse later: bad subjects, networks, connection types, time
        windows and zones, limits beyond int64, a start not before the expiry.  Raises FieldError."""
        for attr, queue_ok in (("pub_allow", False), ("pub_deny", False), ("sub_allow", True), ("sub_deny", True)):
            v = getattr(self, attr)
            if v is not None:
                check_subjects(_NAME_OF[attr], v, queue_ok=queue_ok)
        for k in ("subs", "data", "payload", "resp_max"):
            v = getattr(self, k)
            if v is not None:
                check_limit(k, v)
        if self.resp_ttl_s is not None:
            check_duration("resp_ttl", self.resp_ttl_s)
        if self.bearer is not None and not isinstance(self.bearer, bool):
            raise FieldError("bearer", "must be true or false")
        if self.connection_types is not None:
            check_connection_types("connection_types", self.connection_types)
        if self.source_networks is not None:
            check_source_networks("source_networks", self.source_networks)
        if self.times is not None:
            check_times("times", self.times)
        if self.times_location is not None:
            check_time_zone("times_location", self.times_location)
        if self.expires is not None:
            check_time("expiry", self.expires)
        if self.not_before is not None:
            check_time("start", self.not_before)
        check_validity(self.not_before, self.expires)
        if self.tags is not None:
            check_tags("tags", self.tags)

    def apply(self, u: UserClaims) -> None:
        self.validate()
        lim = u.limits
        p = lim.permissions
        for attr, perm, part in (
            ("pub_allow", p.pub, "allow"),
            ("pub_deny", p.pub, "deny"),
            ("sub_allow", p.sub, "allow"),
            ("sub_deny", p.sub, "deny"),
        ):
            v = getattr(self, attr)
            if v is not None:
                setattr(perm, part, dedupe(v))
        if self.resp_max is not None or self.resp_ttl_s is not None:
            cur = p.resp or ResponsePermission()
            max_ = cur.max if self.resp_max is None else self.resp_max
            ttl = cur.ttl_ns if self.resp_ttl_s is None else round(self.resp_ttl_s * 1e9)
            p.resp = None if max_ == 0 and self.resp_max == 0 else ResponsePermission(max_, ttl)
        for k in ("subs", "data", "payload"):
            v = getattr(self, k)
            if v is not None:
                setattr(lim, k, v)
        if self.bearer is not None:
            lim.bearer_token = self.bearer
        if self.connection_types is not None:
            lim.allowed_connection_types = [t.upper() for t in self.connection_types]
        if self.source_networks is not None:
            lim.src = list(self.source_networks)
        if self.times is not None:
            lim.times = [TimeRange(a, b) for a, b in self.times]
        if self.times_location is not None:
            lim.times_location = self.times_location
        if self.expires is not None:
            u.expires = self.expires
        if self.not_before is not None:
            u.not_before = self.not_before
        if self.tags is not None:
            u.tags = dedupe(t.strip().lower() for t in self.tags)

    @classmethod
    def from_claims(cls, u: UserClaims) -> UserSpec:
        """Every field of ``u`` (what :meth:`apply` on a fresh user would set to make ``u`` again)."""
        lim = u.limits
        p = lim.permissions
        return cls(
            pub_allow=list(p.pub.allow),
            pub_deny=list(p.pub.deny),
            sub_allow=list(p.sub.allow),
            sub_deny=list(p.sub.deny),
            resp_max=None if p.resp is None else p.resp.max,
            resp_ttl_s=None if p.resp is None or not p.resp.ttl_ns else p.resp.ttl_ns / 1e9,
            subs=lim.subs,
            data=lim.data,
            payload=lim.payload,
            bearer=lim.bearer_token,
            connection_types=list(lim.allowed_connection_types),
            source_networks=list(lim.src),
            times=[(t.start, t.end) for t in lim.times],
            times_location=lim.times_location,
            expires=u.expires,
            not_before=u.not_before,
            tags=list(u.tags),
        )

    def to_fields(self, known: Mapping[str, tuple[str, str]] = USER_FIELDS) -> dict[str, Any]:
        """The fields as a spec file writes them (``times: ["08:00:00-18:00:00"]``, ``expiry:
        "2027-06-30T00:00:00Z"``, ``resp_ttl: "1500ms"``), those at their default left out: what
        :meth:`from_fields` reads back into the same claims."""
        out: dict[str, Any] = {}
        for name, (attr, shape) in known.items():
            v = getattr(self, attr)
            if v is None or v == [] or v == "" or v is False:
                continue
            if shape == "int" and v == -1 and name != "resp_max":
                continue
            if shape == "time":
                if not v:
                    continue
                v = time_text(v)
            elif shape == "duration":
                v = duration_text(v)
            elif name == "times":
                v = [f"{a}-{b}" for a, b in v]
            elif isinstance(v, list):
                v = list(v)
            out[name] = v
        return out

    def has_permissions_or_limits(self) -> bool:
        return any(
            getattr(self, k) is not None
            for k in (
                "pub_allow",
                "pub_deny",
                "sub_allow",
                "sub_deny",
                "resp_max",
                "resp_ttl_s",
                "subs",
                "data",
                "payload",
                "bearer",
                "connection_types",
                "source_networks",
                "times",
                "times_location",
            )
        )


@dataclass
class UserChanges:
    """Additions and removals on a user's lists; turned into a :class:`UserSpec` against the current claims."""

    allow_pub: list[str] = field(default_factory=list)
    allow_sub: list[str] = field(default_factory=list)
    deny_pub: list[str] = field(default_factory=list)
    deny_sub: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)  # subjects removed from every list
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    add_connection_types: list[str] = field(default_factory=list)
    remove_connection_types: list[str] = field(default_factory=list)
    add_source_networks: list[str] = field(default_factory=list)
    remove_source_networks: list[str] = field(default_factory=list)
    add_times: list[tuple[str, str]] = field(default_factory=list)
    clear_times: bool = False

    def to_spec(self, current: UserClaims, base: Optional[UserSpec] = None) -> UserSpec:
        spec = base or UserSpec()
        p = current.permissions
        rm = set(self.remove)

        def merged(cur: list[str], add: list[str], drop: set[str]) -> Optional[list[str]]:
            if not add and not (drop & set(cur)):
                return None
            return dedupe([x for x in cur if x not in drop] + list(add))

        for attr, cur, add in (
            ("pub_allow", p.pub.allow, self.allow_pub),
            ("pub_deny", p.pub.deny, self.deny_pub),
            ("sub_allow", p.sub.allow, self.allow_sub),
            ("sub_deny", p.sub.deny, self.deny_sub),
        ):
            v = merged(cur, add, rm)
            if v is not None:
                setattr(spec, attr, v)
        lim = current.limits
        tags = merged(current.tags, [t.lower() for t in self.add_tags], {t.lower() for t in self.remove_tags})
        if tags is not None:
            spec.tags = tags
        ct = merged(
            lim.allowed_connection_types,
            [t.upper() for t in self.add_connection_types],
            {t.upper() for t in self.remove_connection_types},
        )
        if ct is not None:
            spec.connection_types = ct
        src = merged(lim.src, self.add_source_networks, set(self.remove_source_networks))
        if src is not None:
            spec.source_networks = src
        if self.clear_times or self.add_times:
            cur_times = [] if self.clear_times else [(t.start, t.end) for t in lim.times]
            spec.times = cur_times + list(self.add_times)
        return spec
