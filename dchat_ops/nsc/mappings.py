"""Subject mappings of an account: a published subject sent on to other subjects, by weight.

An account JWT holds them as ``mappings``: ``{"orders.*": [{"subject": "shard.{{wildcard(1)}}", "weight": 50},
...]}``.  nats-server applies them to what the account's clients publish.  The rules here are the ones the
JWT library and the server check (a mapping they refuse is never written):

- the source is a subject (wildcards allowed); each destination is a subject with no ``*`` token, and has
  ``>`` as its last token exactly when the source does;
- a destination token ``$N`` or ``{{wildcard(N)}}`` (and the indexes given to ``partition``, ``split``,
  ``splitFromLeft`` ... ``right``) names the N-th ``*`` of the source, 1 to the number of ``*`` there; a source
  without ``*`` allows no such token;
- a weight is a whole percent 1-100; the weights of the destinations of one cluster (or of those without a
  cluster) add up to at most 100 -- the server keeps the rest of the messages on the source subject;
- a destination subject appears once per source.

    >>> check_mapping("orders.*", [{"subject": "shard.$1", "weight": 100}])
    >>> check_mapping("orders", [{"subject": "shard.$1", "weight": 100}])
    Traceback (most recent call last):
    FieldError: mapping.to: 'shard.$1': token '$1' names wildcard 1, but the source 'orders' has no '*'
"""

from __future__ import annotations

import re
from typing import Any, Optional

from dchat_ops.errors import DchatOpsError, FieldError
from dchat_ops.subjects import check_subject

__all__ = ["MAX_WEIGHT", "check_cluster", "check_mapping", "check_weight", "mapping_weights"]

MAX_WEIGHT = 100

# The destination functions nats-server knows, by lower-case name: (fewest, most) arguments (None: no most).
# Every argument is a whole number but split's second (a delimiter); the wildcard indexes among them are the
# first, or for partition (count, index, index...) all but the first.
_FUNCTIONS: dict[str, tuple[int, Optional[int]]] = {
    "wildcard": (1, 1),
    "partition": (2, None),
    "splitfromleft": (2, 2),
    "splitfromright": (2, 2),
    "slicefromleft": (2, 2),
    "slicefromright": (2, 2),
    "split": (2, 2),
    "left": (2, 2),
    "right": (2, 2),
}
_KNOWN = "wildcard, partition, split, splitFromLeft, splitFromRight, sliceFromLeft, sliceFromRight, left, right"
_FUNCTION = re.compile(r"\{\{\s*([A-Za-z]+)\s*\((.*)\)\s*\}\}", re.DOTALL)


def _int(text: str) -> Optional[int]:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _indexes(token: str, what: str) -> list[int]:
    """The source wildcard indexes a destination token refers to (empty for a plain token)."""
    if len(token) > 1 and token[0] == "$":
        n = _int(token[1:])
        return [] if n is None else [n]  # '$name' is a plain token to the server
    if not (len(token) > 4 and token.startswith("{{") and token.endswith("}}")):
        return []
    m = _FUNCTION.fullmatch(token)
    if m is None or m.group(1).lower() not in _FUNCTIONS:
        raise FieldError("mapping.to", f"{what}: unknown function in token {token!r} (known: {_KNOWN})")
    name = m.group(1).lower()
    args = [a.strip() for a in m.group(2).split(",")]
    fewest, most = _FUNCTIONS[name]
    if args == [""] or len(args) < fewest:
        raise FieldError("mapping.to", f"{what}: token {token!r} has too few arguments")
    if most is not None and len(args) > most:
        raise FieldError("mapping.to", f"{what}: token {token!r} has too many arguments")
    numbers = args[:1] if name == "split" else args
    if name == "split" and (" " in args[1] or "." in args[1] or not args[1]):
        raise FieldError(
            "mapping.to", f"{what}: the delimiter of {token!r} must be one or more characters, no space or '.'"
        )
    values = [_int(a) for a in numbers]
    ints = [v for v in values if v is not None]
    if len(ints) != len(values):
        raise FieldError("mapping.to", f"{what}: token {token!r} takes whole numbers as arguments")
    return ints[1:] if name == "partition" else ints[:1]


def check_weight(weight: Any) -> int:
    """A destination's weight: a whole percent 1-100."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise FieldError("mapping.weight", f"must be a whole percent 1-{MAX_WEIGHT}, not {weight!r}")
    return weight


def check_cluster(cluster: Any) -> str:
    """A cluster name a destination is for ('' for every cluster): one token of printable characters."""
    if not isinstance(cluster, str) or any(c.isspace() or not c.isprintable() for c in cluster):
        raise FieldError("mapping.cluster", f"{cluster!r} is not a cluster name (no spaces or control characters)")
    return cluster


def _check_destination(source: str, stars: int, has_fwc: bool, dest: str) -> None:
    what = repr(dest)
    try:
        check_subject(dest)
    except DchatOpsError as exc:
        raise FieldError("mapping.to", str(exc)) from None
    tokens = dest.split(".")
    if "*" in tokens:
        raise FieldError("mapping.to", f"{what}: a destination has no '*' (name a wildcard of the source with $1)")
    if (tokens[-1] == ">") != has_fwc:
        need = "ends with '>', so the destination must too" if has_fwc else "has no '>', so the destination may not"
        raise FieldError("mapping.to", f"{what}: the source {source!r} {need}")
    for token in tokens:
        for n in _indexes(token, what):
            if stars == 0:
                raise FieldError(
                    "mapping.to", f"{what}: token {token!r} names wildcard {n}, but the source {source!r} has no '*'"
                )
            if not 1 <= n <= stars:
                raise FieldError(
                    "mapping.to",
                    f"{what}: token {token!r} names wildcard {n}, but the source {source!r} has {stars} '*' "
                    f"(1-{stars})",
                )


def mapping_weights(destinations: list[dict[str, Any]]) -> dict[str, int]:
    """Per cluster ('' for none): the sum of the weights (an absent weight is 100, as the JWT library reads it)."""
    out: dict[str, int] = {}
    for d in destinations:
        w = d.get("weight") or MAX_WEIGHT
        c = str(d.get("cluster") or "")
        out[c] = out.get(c, 0) + (w if isinstance(w, int) else 0)
    return out


def check_mapping(source: Any, destinations: Any) -> None:
    """Refuse a mapping the JWT library or nats-server would refuse (FieldError naming ``mapping.*``)."""
    if not isinstance(source, str):
        raise FieldError("mapping.from", f"must be a subject, not {source!r}")
    try:
        check_subject(source)
    except DchatOpsError as exc:
        raise FieldError("mapping.from", str(exc)) from None
    if not isinstance(destinations, list) or not destinations:
        raise FieldError("mapping.to", f"mapping {source!r} has no destination")
    tokens = source.split(".")
    stars, has_fwc = tokens.count("*"), tokens[-1] == ">"
    seen: set[str] = set()
    for d in destinations:
        if not isinstance(d, dict) or not isinstance(d.get("subject"), str):
            raise FieldError("mapping.to", f"mapping {source!r}: a destination is {{subject, weight, cluster}}")
        dest = d["subject"]
        _check_destination(source, stars, has_fwc, dest)
        if dest in seen:
            raise FieldError("mapping.to", f"mapping {source!r} names destination {dest!r} twice")
        seen.add(dest)
        if "weight" in d and d["weight"] != 0:
            check_weight(d["weight"])
        check_cluster(d.get("cluster", ""))
    for cluster, total in mapping_weights(destinations).items():
        if total > MAX_WEIGHT:
            where = f" in cluster {cluster!r}" if cluster else ""
            raise FieldError(
                "mapping.weight",
                f"the weights of mapping {source!r}{where} add up to {total}%; at most {MAX_WEIGHT}%",
            )
