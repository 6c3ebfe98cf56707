"""The table of field limits: what nats-server accepts in a JWT, checked at every door.

The CLI, the library (``admin.add_user``, ``edit_user``, ``edit_account``, ``edit_operator``), provisioning
specs, imports and ``validate`` all use the checks here, so a value one of them accepts the others accept
too, and a value the server would refuse is refused before anything is written.  A refused value raises
:class:`~dchat_ops.errors.FieldError` naming the field as specs and the CLI spell it:

    >>> check_cidr("source_networks", "127.0.0.1")
    Traceback (most recent call last):
    FieldError: source_networks: '127.0.0.1' is an address, not a network: write 127.0.0.1/32
    >>> check_cidr("source_networks", "10.0.0.1/8")
    Traceback (most recent call last):
    FieldError: source_networks: 10.0.0.1/8 has bits set past its prefix: write 10.0.0.0/8 for the network, or 10.0.0.1/32 for the one address

:data:`RULES` says each rule in words (the docs and ``validate`` use it).  The ``*_problems`` functions check
claims made elsewhere (a JWT in the store, one being imported) against the same rules.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from typing import Any, Optional

from dchat_ops.errors import SEED_PATTERN, ConfigError, FieldError
from dchat_ops.hosts import check_url
from dchat_ops.nsc.claims import (
    ACCOUNT_LIMIT_KEYS,
    JETSTREAM_LIMIT_KEYS,
    AccountClaims,
    AccountLimits,
    OperatorClaims,
    ScopedSigningKey,
    UserPermissionLimits,
    jetstream_field,
)

__all__ = [
    "INT64_MAX",
    "MAX_TAG",
    "MAX_TEXT",
    "RULES",
    "Problem",
    "account_problems",
    "check_account_server_url",
    "check_cidr",
    "check_duration",
    "check_duration_ns",
    "check_limit",
    "check_service_url",
    "check_tag",
    "check_text",
    "operator_problems",
    "parse_size",
    "template_problems",
    "tier_problem",
    "user_problems",
]

INT64_MAX = 2**63 - 1
MAX_TEXT = 8 * 1024  # the JWT library's limit on a description
MAX_TAG = 255

# The rules in words, one per kind of field: docs/concepts.md shows this table.
RULES: dict[str, str] = {
    "limit": "a whole number from -1 (unlimited) to 9223372036854775807 (int64); -1 is the only negative",
    "duration": "at most 9223372036854775807 nanoseconds (about 292 years), not negative",
    "cidr": "a network in CIDR form with no bits set past the prefix: 10.0.0.0/8, 127.0.0.1/32, fd00::/64 "
    "(no bare address, no netmask, no IPv6 zone)",
    "name": "1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit (no spaces or "
    "control characters); not an nkey seed",
    "tag": f"1-{MAX_TAG} characters, no control characters, not an nkey seed",
    "text": f"at most {MAX_TEXT} characters, no control characters, not an nkey seed",
    "host": "an IP address (IPv6 bare or in brackets) or a host name",
    "url": "scheme://host:port with a known scheme, a valid host and a port 1-65535",
    "size": "a limit in bytes, with an optional unit: 512K, 64M, 1G, 2T (powers of 1024, as nats-server "
    "reads them; KB/MB/GB/TB and KiB/MiB/GiB/TiB mean the same), or -1",
}

_SIZE = re.compile(r"(-?[0-9]+)\s*([KMGT]?)(I?B?)", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(name: str, text: Any) -> int:
    """A size limit from ``1G``, ``512M``, ``64KiB``, ``1024`` or ``-1``, checked like any limit."""
    if isinstance(text, int) and not isinstance(text, bool):
        return check_limit(name, text)
    m = _SIZE.fullmatch(str(text).strip())
    if m is None or (m.group(3) and not m.group(2) and m.group(3).upper() != "B"):
        raise FieldError(name, f"{str(text)!r} is not a size: {RULES['size']}")
    if len(m.group(1)) > 4000:  # more digits than int() reads at once: far outside int64 either way
        if m.group(1).startswith("-"):
            raise FieldError(name, f"must be -1 (unlimited) or more, not {str(text)!r}")
        raise FieldError(name, f"{str(text)!r} is larger than the server's limit {INT64_MAX} (int64)")
    n, unit = int(m.group(1)), m.group(2).upper()
    if n < 0 and unit:
        raise FieldError(name, f"{str(text)!r}: only -1 (unlimited) may be negative, with no unit")
    return check_limit(name, n * _SIZE_UNITS[unit])


# --- numbers ----------------------------------------------------------------------------------------------


def check_limit(name: str, value: Any, *, minimum: int = -1, index: Optional[int] = None) -> int:
    """A count or size limit: -1 (unlimited) or more, at most int64."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"must be a whole number, not {value!r}", index)
    if value < minimum:
        what = "-1 (unlimited) or more" if minimum == -1 else f"{minimum} or more"
        raise FieldError(name, f"must be {what}, not {value}", index)
    if value > INT64_MAX:
        raise FieldError(name, f"{value} is larger than the server's limit {INT64_MAX} (int64)", index)
    return value


def check_duration(name: str, seconds: Any) -> float:
    """A duration in seconds whose nanoseconds fit the JWT's int64."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        raise FieldError(name, f"must be a duration, not {seconds!r}")
    if seconds < 0:
        raise FieldError(name, "must not be negative")
    if seconds * 1e9 > INT64_MAX or round(seconds * 1e9) > INT64_MAX:
        raise FieldError(name, f"{seconds:g}s is longer than the server's limit of about 292 years (int64 nanoseconds)")
    return seconds


def check_duration_ns(name: str, ns: Any) -> int:
    """A duration as a JWT holds it: whole nanoseconds, 0 to int64."""
    if isinstance(ns, bool) or not isinstance(ns, int):
        raise FieldError(name, f"must be whole nanoseconds, not {ns!r}")
    if ns < 0:
        raise FieldError(name, f"must not be negative, not {ns}ns")
    if ns > INT64_MAX:
        raise FieldError(name, f"{ns}ns is longer than the server's limit of about 292 years (int64 nanoseconds)")
    return ns


# --- networks -----------------------------------------------------------------------------------------------

_PREFIX = re.compile(r"[0-9]{1,3}")


def check_cidr(name: str, text: Any, index: Optional[int] = None, *, canonical: bool = True) -> str:
    """A source network as the server parses it (Go's ``net.ParseCIDR``): an IPv4 or IPv6 address, ``/``,
    a prefix length in decimal.  Refused besides: a bare address (hint ``/32``), a netmask, an IPv6 zone,
    and (with ``canonical``) bits set past the prefix, which the server would silently drop."""
    if not isinstance(text, str):
        raise FieldError(name, f"must be text, not {text!r}", index)
    addr, slash, prefix = text.partition("/")
    shown = repr(text)
    if "%" in addr:
        raise FieldError(name, f"{shown} has an IPv6 zone ('%...'), which a source network cannot have", index)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise FieldError(name, f"{shown} is not an address or CIDR (write a network like 10.0.0.0/8)", index) from None
    bits = ip.max_prefixlen
    if not slash:
        raise FieldError(name, f"{shown} is an address, not a network: write {ip}/{bits}", index)
    if not _PREFIX.fullmatch(prefix):
        try:
            mask = ipaddress.ip_address(prefix)
        except ValueError:
            mask = None
        if mask is not None and mask.version == ip.version:
            try:
                length = ipaddress.ip_network(f"{ip}/{prefix}", strict=False).prefixlen
                hint = f": write {ipaddress.ip_network(f'{ip}/{length}', strict=False)}"
            except ValueError:
                hint = ""
            raise FieldError(name, f"{shown} has a netmask; the server takes only a prefix length{hint}", index)
        raise FieldError(name, f"{shown}: the prefix length must be a number 0-{bits}", index)
    if int(prefix) > bits:
        raise FieldError(name, f"{shown}: the prefix length must be 0-{bits}", index)
    if canonical:
        net = ipaddress.ip_network(f"{ip}/{int(prefix)}", strict=False)
        if net.network_address != ip:
            raise FieldError(
                name,
                f"{text} has bits set past its prefix: write {net} for the network, or {ip}/{bits} for the one address",
                index,
            )
    return text


# --- text ----------------------------------------------------------------------------------------------------


def _control(text: str) -> Optional[str]:
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return ch
    return None


def check_text(name: str, value: Any, *, index: Optional[int] = None, max_len: int = MAX_TEXT) -> str:
    """Free text put into a JWT (a description, a tag): no control characters, no seed, not too long."""
    if not isinstance(value, str):
        raise FieldError(name, f"must be text, not {type(value).__name__}", index)
    if SEED_PATTERN.search(value.upper()):  # tags are kept in lower case: a seed is a secret in any case
        raise FieldError(name, "it looks like an nkey seed; this field is public", index)
    bad = _control(value)
    if bad is not None:
        raise FieldError(name, f"{value!r} holds a control character ({bad!r})", index)
    if len(value) > max_len:
        raise FieldError(name, f"is {len(value)} characters long; at most {max_len}", index)
    return value


def check_tag(name: str, value: Any, index: Optional[int] = None) -> str:
    text = check_text(name, value, index=index, max_len=MAX_TAG)
    if not text.strip():
        raise FieldError(name, "empty tag", index)
    return text


SERVICE_URL_SCHEMES = ("nats", "tls")


def check_service_url(name: str, value: Any, index: Optional[int] = None) -> str:
    """An operator service URL: ``nats://`` or ``tls://`` host:port (the JWT library refuses paths and
    credentials)."""
    if not isinstance(value, str):
        raise FieldError(name, f"must be text, not {type(value).__name__}", index)
    try:
        check_url(value, SERVICE_URL_SCHEMES, "URL")
    except ConfigError as exc:
        raise FieldError(name, str(exc).removeprefix("URL: "), index) from None
    return value


def check_account_server_url(name: str, value: Any) -> str:
    """The operator's account server URL: any URL with a scheme, no spaces or control characters."""
    text = check_text(name, value)
    if text and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s]+", text):
        raise FieldError(name, f"{text!r} is not a URL with a scheme (like https://host/jwt/v1)")
    return text


# --- claims made elsewhere -------------------------------------------------------------------------------------

# (level, field error): "error" for a value the server refuses, "warning" for one it takes but the tool would
# not write (a tag with a control character, a network with bits past its prefix)
Problem = tuple[str, FieldError]


def _collect(out: list[Problem], level: str, check: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """``check(*args, **kwargs)``; a FieldError it raises goes into ``out`` at ``level``.  True when it passed."""
    try:
        check(*args, **kwargs)
    except FieldError as exc:
        out.append((level, exc))
        return False
    return True


def template_problems(upl: UserPermissionLimits) -> list[Problem]:
    """What breaks the rules in a user's permissions and limits (a user JWT, or a role's template)."""
    out: list[Problem] = []
    for k in ("subs", "data", "payload"):
        _collect(out, "error", check_limit, k, getattr(upl, k))
    resp = upl.permissions.resp
    if resp is not None:
        _collect(out, "error", check_limit, "resp_max", resp.max)
        _collect(out, "error", check_duration_ns, "resp_ttl", resp.ttl_ns)
    for i, net in enumerate(upl.src):
        if _collect(out, "error", check_cidr, "source_networks", net, i, canonical=False):
            _collect(out, "warning", check_cidr, "source_networks", net, i)
    return out


def _tag_problems(tags: list[str]) -> list[Problem]:
    out: list[Problem] = []
    for i, t in enumerate(tags):
        _collect(out, "warning", check_tag, "tags", t, i)
    return out


def user_problems(claims: Any) -> list[Problem]:
    """What breaks the rules in a user JWT's claims."""
    return template_problems(claims.limits) + _tag_problems(claims.tags)


def account_problems(c: AccountClaims) -> list[Problem]:
    """What breaks the rules in an account JWT: limits (JetStream tiers included), role templates, tags.
    A role's problem names the field ``role <role>: <field>``."""
    out: list[Problem] = []
    lim = c.limits
    for k in ACCOUNT_LIMIT_KEYS:
        _collect(out, "error", check_limit, k, getattr(lim, k))
    for tier, js in [("", lim.jetstream), *sorted(lim.tiers.items())]:
        for k in JETSTREAM_LIMIT_KEYS:
            _collect(out, "error", check_limit, jetstream_field(f"{tier}.{k}" if tier else k), getattr(js, k))
    for sk in c.signing_keys:
        if isinstance(sk, ScopedSigningKey):
            for level, exc in template_problems(sk.template):
                out.append((level, FieldError(f"role {sk.role}: {exc.field}", exc.reason, exc.index)))
    _collect(out, "warning", check_text, "description", c.description)
    tiers = tier_problem(lim)
    if tiers is not None:
        out.append(("error", tiers))
    from dchat_ops.nsc.mappings import check_mapping  # (only accounts with mappings need it)

    for source, targets in sorted(c.mappings.items()):
        _collect(out, "error", check_mapping, source, targets)
    return out + _tag_problems(c.tags)


def tier_problem(lim: AccountLimits) -> Optional[FieldError]:
    """The JetStream layout the JWT library refuses: account-wide limits beside tiers (nats-server would use only
    the tiers), or a tier named ''.  None when it is fine."""
    if not lim.tiers:
        return None
    if "" in lim.tiers:
        return FieldError("jetstream.tiers", "a tier may not be named ''")
    if lim.jetstream.to_dict():
        set_ = ", ".join(sorted(lim.jetstream.to_dict()))
        return FieldError(
            "jetstream",
            f"account-wide JetStream limits ({set_}) and tiers are mutually exclusive: nats-server throws the "
            "account-wide ones away when tiers exist",
        )
    return None


def operator_problems(c: OperatorClaims) -> list[Problem]:
    """What breaks the rules in an operator JWT: service URLs, the account server URL, tags."""
    out: list[Problem] = []
    for i, u in enumerate(c.operator_service_urls):
        _collect(out, "error", check_service_url, "service_urls", u, i)
    if c.account_server_url:
        _collect(out, "error", check_account_server_url, "account_server_url", c.account_server_url)
    return out + _tag_problems(c.tags)
