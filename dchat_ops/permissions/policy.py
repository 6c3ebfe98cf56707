"""Permission edits: allow / deny / remove a subject for publish or subscribe, with what they mean.

An edit is computed on plain lists first (:func:`plan_edit`), so a dry run, a node policy and a
user JWT all share one set of rules:

- ``allow`` adds the subject to the allow list and takes it off the deny list (deny would win);
- ``deny`` adds it to the deny list and takes it off the allow list;
- ``rm`` takes it off both lists;
- a subject already present, or already covered by a wildcard entry, is reported and not added;
- a subject that a deny wildcard still blocks is reported.

    >>> plan_edit({"allow": ["chat.>"], "deny": []}, "allow", "chat.room").notes
    ['chat.room is already covered by chat.> in the allow list']

Whether a change of the lists takes something away (and so must retire the JWT it replaces) is
:func:`taken_away`:

    >>> taken_away({"allow": ["chat.>"], "deny": []}, {"allow": ["chat.>"], "deny": ["chat.secret"]})
    ['chat.secret is denied']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dchat_ops.errors import ConfigError
from dchat_ops.subjects import check_subject, covering, covers, split_queue

__all__ = ["ACTIONS", "Edit", "parse_action", "plan_edit", "taken_away"]

# command name -> (direction, verb)
ACTIONS = {
    "allow-sub": ("subscribe", "allow"),
    "deny-sub": ("subscribe", "deny"),
    "rm-sub": ("subscribe", "rm"),
    "allow-pub": ("publish", "allow"),
    "deny-pub": ("publish", "deny"),
    "rm-pub": ("publish", "rm"),
}


_PAST = {"allow": "allowed", "deny": "denied"}


def parse_action(action: str) -> tuple[str, str]:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ConfigError(f"unknown permission action {action!r} (one of {', '.join(ACTIONS)})") from None


@dataclass
class Edit:
    """The outcome of one edit on an allow / deny pair."""

    direction: str
    verb: str
    subject: str
    before: dict[str, list[str]]
    after: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def to_dict(self) -> dict:
        return {
            "direction": self.direction,
            "action": self.verb,
            "subject": self.subject,
            "changed": self.changed,
            "before": self.before,
            "after": self.after,
            "notes": self.notes,
        }


def plan_edit(lists: dict[str, list[str]], verb: str, subject: str, direction: str = "subscribe") -> Edit:
    """Apply ``verb`` (allow / deny / rm) for ``subject`` to copies of ``lists`` (keys allow, deny)."""
    try:
        check_subject(subject, queue_ok=(direction == "subscribe"))
    except ConfigError as exc:
        raise ConfigError(f"invalid subject: {exc}") from None
    allow = list(lists.get("allow") or [])
    deny = list(lists.get("deny") or [])
    before = {"allow": list(allow), "deny": list(deny)}
    notes: list[str] = []
    if verb in ("allow", "deny"):
        target, other = (allow, deny) if verb == "allow" else (deny, allow)
        other_name = "deny" if verb == "allow" else "allow"
        if subject in other:
            other.remove(subject)
            notes.append(f"{subject} was {_PAST[other_name]}; the {other_name} entry is removed")
        if subject in target:
            notes.append(f"{subject} is already {_PAST[verb]}")
        else:
            cover = covering(target, subject)
            if cover:
                notes.append(f"{subject} is already covered by {cover} in the {verb} list")
            else:
                target.append(subject)
        blocker = _deny_cover(deny, subject) if verb == "allow" else None
        if blocker:
            notes.append(f"{subject} stays blocked: {blocker} in the deny list wins over any allow")
    elif verb == "rm":
        found = False
        for lst in (allow, deny):
            if subject in lst:
                lst.remove(subject)
                found = True
        if not found:
            notes.append(f"{subject} is in neither the allow nor the deny list; nothing to remove")
    else:
        raise ConfigError(f"unknown verb {verb!r}")
    return Edit(direction, verb, subject, before, {"allow": allow, "deny": deny}, notes)


def _deny_cover(deny: list[str], entry: str) -> str | None:
    subj, _ = split_queue(entry)
    for d in deny:
        if covers(split_queue(d)[0], subj):
            return d
    return None


def _holds(entries: list[str], entry: str) -> bool:
    """True when one of ``entries`` is ``entry`` or covers it: its subject covers ``entry``'s and it names
    no queue group or the same one (a plain entry applies to every queue group)."""
    subj, queue = split_queue(entry)
    for e in entries:
        es, eq = split_queue(e)
        if e == entry or (eq in ("", queue) and covers(es, subj)):
            return True
    return False


def _all(allow: list[str]) -> bool:
    """An allow list that allows every subject: none at all, or one with a plain ``>``."""
    return not allow or ">" in allow


def taken_away(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    """What ``after`` (an allow / deny pair) no longer allows that ``before`` did, one phrase each; empty
    when nothing is taken away (the lists only grew what they allow, or did not change).

    Taken away: an allow list where there was none (no allow list allows everything), an allow entry
    that no entry of the new allow list covers, and a deny entry that no old deny entry covers.  The
    comparison is by entries, not by what is published: a deny of a subject nothing allowed still
    counts (it costs a revocation, nothing else).
    """
    b_allow, a_allow = list(before.get("allow") or []), list(after.get("allow") or [])
    b_deny, a_deny = list(before.get("deny") or []), list(after.get("deny") or [])
    out: list[str] = []
    if _all(a_allow):
        pass
    elif _all(b_allow):
        out.append(f"only {', '.join(a_allow)} allowed (before: everything not denied)")
    else:
        out.extend(f"{e} no longer allowed" for e in b_allow if not _holds(a_allow, e))
    out.extend(f"{d} is denied" for d in a_deny if not _holds(b_deny, d))
    return out
