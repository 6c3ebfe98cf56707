"""The NATS subject grammar: validation with messages that point at the bad token, matching, covering.

A subject is tokens separated by ``.``; a token is non-empty and has no whitespace.  ``*`` matches
one token, ``>`` one or more and only as the last token.  A subscribe permission may name a queue
group after a space: ``"orders.* workers"``.

    >>> check_subject("chat.>")
    'chat.>'
    >>> covers("chat.>", "chat.room.x")
    True
"""

from __future__ import annotations

import re

from dchat_ops.errors import SEED_PATTERN, ConfigError

__all__ = ["check_subject", "covering", "covers", "inbox_prefix", "inbox_prefix_of", "matches", "split_queue"]

_MAX_LEN = 1024


def inbox_prefix(node_id: str) -> str:
    """The reply-inbox prefix of a node's users (its local user, an enrolled device's users): the only
    reply subjects they may subscribe to, and the only ones the node lets in from its routes for them."""
    return f"_INBOX_{node_id.replace('.', '_')}"


_OWN_INBOX = re.compile(r"(_INBOX_[^.\s*>]+)\.>\Z")


def inbox_prefix_of(sub_allow: list[str]) -> str:
    """The inbox prefix a client must use with these subscribe permissions: ``_INBOX_x`` when they allow
    replies only on ``_INBOX_x.>`` (and not on ``_INBOX.>``); "" otherwise (the default inbox)."""
    if any(s in (">", "_INBOX.>", "_INBOX.*") for s in sub_allow):
        return ""
    own = [m.group(1) for s in sub_allow if (m := _OWN_INBOX.match(s))]
    return own[0] if len(own) == 1 else ""


def split_queue(entry: str) -> tuple[str, str]:
    """``"subject queue"`` -> (subject, queue); queue is "" when there is none."""
    parts = entry.split(" ")
    if len(parts) == 2:
        return parts[0], parts[1]
    return entry, ""


def _pointer(subject: str, index: int) -> str:
    tokens = subject.split(".")
    start = sum(len(t) + 1 for t in tokens[:index])
    return f"{subject!r} token {index + 1} (at character {start + 1})"


def check_subject(entry: str, *, queue_ok: bool = False, wildcards_ok: bool = True) -> str:
    """Return ``entry`` when it is a valid subject (or ``subject queue`` with ``queue_ok``); else ConfigError."""
    if not isinstance(entry, str) or entry == "":
        raise ConfigError("empty subject")
    if len(entry) > _MAX_LEN:
        raise ConfigError(f"subject is longer than {_MAX_LEN} characters")
    subject, queue = entry, ""
    if " " in entry:
        if not queue_ok:
            raise ConfigError(f"subject {entry!r} contains a space (a queue group is only allowed for subscribe)")
        parts = entry.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ConfigError(f"{entry!r}: a queue subscription is 'subject queue', with exactly one space")
        subject, queue = parts
        if any(c in queue for c in ".*>\t\r\n"):
            raise ConfigError(f"{entry!r}: queue group {queue!r} must be one plain token")
    for ch in ("\t", "\r", "\n", "\f", "\x00"):  # what nats-server refuses in a subject (with space)
        if ch in subject:
            raise ConfigError(f"subject {subject!r} contains whitespace or a control character")
    if SEED_PATTERN.search(entry):  # a secret pasted in the wrong place: subjects are public, and shown
        raise ConfigError("subject looks like it holds an nkey seed; subjects are public")
    if not entry.isascii():
        try:
            entry.encode("utf-8")
        except UnicodeEncodeError:  # a byte that was not UTF-8 (on a command line: a lone surrogate)
            raise ConfigError(f"subject {entry!r} is not valid UTF-8 text") from None
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if tok == "":
            where = "leading" if i == 0 else ("trailing" if i == len(tokens) - 1 else "double")
            raise ConfigError(f"empty token in {_pointer(subject, i)}: {where} '.'")
        if tok == ">":
            if i != len(tokens) - 1:
                raise ConfigError(f"'>' must be the last token, in {_pointer(subject, i)}")
            if not wildcards_ok:
                raise ConfigError(f"wildcard '>' not allowed here, in {_pointer(subject, i)}")
        elif tok == "*":
            if not wildcards_ok:
                raise ConfigError(f"wildcard '*' not allowed here, in {_pointer(subject, i)}")
        elif "*" in tok or ">" in tok:
            raise ConfigError(f"wildcards must be whole tokens, {tok!r} in {_pointer(subject, i)}")
    return entry


def matches(pattern: str, subject: str) -> bool:
    """True when the literal ``subject`` matches ``pattern`` (with ``*`` / ``>`` wildcards)."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok != "*" and tok != s[i]:
            return False
    return len(p) == len(s)


def covers(general: str, specific: str) -> bool:
    """True when every subject matched by ``specific`` is also matched by ``general``."""
    g, s = general.split("."), specific.split(".")
    for i, tok in enumerate(g):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        st = s[i]
        if st == ">":
            return False
        if tok == "*":
            continue
        if st == "*" or tok != st:
            return False
    return len(g) == len(s)


def covering(entries: list[str], entry: str) -> str | None:
    """The first entry of ``entries`` (other than ``entry`` itself) that already covers ``entry``."""
    subj, queue = split_queue(entry)
    for e in entries:
        if e == entry:
            continue
        es, eq = split_queue(e)
        if eq == queue and covers(es, subj):
            return e
    return None
