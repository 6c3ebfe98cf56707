"""Parsing the times and durations people type: ``30d``, ``12h``, ``2026-12-31``, ``0`` (none).

>>> parse_duration("1m30s")
90.0
>>> parse_expiry("0", now=1000)
0
"""

from __future__ import annotations

import datetime as _dt
import math
import re

from dchat_ops.errors import DchatOpsError

__all__ = ["format_time", "iso_time", "parse_duration", "parse_expiry"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", re.ASCII)


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90s``, ``1h30m``, ``7d``.  DchatOpsError when malformed."""
    t = str(text).strip().lower()
    if not t or _PART.sub("", t):
        raise DchatOpsError(f"invalid duration {text!r}: use a number and a unit, like 30s, 15m, 12h, 7d")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(t))
    if not math.isfinite(seconds):  # int() of it would overflow; what fits is checked where it is used
        raise DchatOpsError(f"duration {text!r} is out of range")
    return seconds


def parse_expiry(text: str, now: int) -> int:
    """Unix seconds from a duration (from ``now``), a date / ISO time, or ``0`` for none."""
    t = _parse_expiry(text, now)
    if not 0 <= t <= MAX_TIME:
        raise DchatOpsError(f"time {text!r} is out of range (before 1970 or after 9999)")
    return t


def _parse_expiry(text: str, now: int) -> int:
    t = str(text).strip()
    if t in ("0", "", "never", "none"):
        return 0
    if t.isdigit() and len(t) >= 9:  # Unix seconds
        return int(t) if len(t) <= 12 else MAX_TIME + 1  # (out of range, without reading 5,000 digits)
    if t and not _PART.sub("", t.lower()):  # a duration: its own errors (out of range) are the ones to show
        return now + int(parse_duration(t))
    try:
        d = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise DchatOpsError(f"invalid time {text!r}: use a duration (30d), a date (2026-12-31) or 0 for none") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp())


def iso_time(t: int) -> str:
    """``t`` (Unix seconds) as ``YYYY-MM-DDTHH:MM:SSZ``; a time no calendar date stands for as the number."""
    if not 0 <= t <= MAX_TIME:
        return str(t)
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time(t: int) -> str:
    if not t:
        return "-"
    if not 0 < t <= MAX_TIME:
        return str(t)
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
