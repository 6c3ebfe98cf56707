"""A re-issued user JWT that takes something away retires the one it replaces: revocation by issue time.

A user's permissions live in its JWT, and a copy of an older JWT (a creds file copied before the
change) stays valid until it expires: by default never.  So when a user is re-issued with less than
it had (:func:`taken_away`), the account revokes the user's JWTs issued before the new one
(:func:`retire`): nats-server treats a user JWT whose ``iat`` is at or before the account's
revocation time for that user as revoked, refuses it at connect and closes connections that
present it when the account update arrives.

``iat`` has one-second resolution.  The store signs a re-issued JWT with an ``iat`` after the one it
replaces, also within one second (:meth:`~dchat_ops.nsc.store.Store.issue_clock`), so the revocation
time is the new ``iat`` minus one: it covers the old JWT (and every earlier one) and not the new.
Two removals within the same second give ``iat`` t+1 and t+2 and revocation times t and t+1.

    >>> taken_away(old_claims, new_claims)        # ['room.secret is denied (subscribe)'] or []
    >>> retire(account_claims, user_key, new_iat)  # the revocation time written
"""

from __future__ import annotations

from collections.abc import Sequence

from dchat_ops.nsc.claims import AccountClaims, Permission, UserClaims
from dchat_ops.permissions.policy import taken_away as _lists_taken_away

__all__ = ["retire", "taken_away"]


def _lists(p: Permission) -> dict[str, list[str]]:
    return {"allow": p.allow, "deny": p.deny}


def _lower(before: int, after: int) -> bool:
    """A limit went down (-1 is unlimited, above every number)."""
    if before < 0:
        return after >= 0
    return 0 <= after < before


def _narrowed(before: Sequence[object], after: Sequence[object]) -> bool:
    """A list that restricts when it is not empty (source networks, time windows, connection types)
    now restricts more: set where it was empty, or an entry dropped."""
    return bool(after) and (not before or any(x not in after for x in before))


def taken_away(before: UserClaims, after: UserClaims) -> list[str]:
    """What the user JWT ``after`` no longer allows that ``before`` did, one phrase each (empty: nothing).

    Publish and subscribe lists are judged by :func:`dchat_ops.permissions.policy.taken_away`; also
    taken away: response permission removed or changed (or added while no publish allow list
    exists: it then allows only replies), a lower subscription / data / payload limit, source networks,
    time windows or connection types narrowed, bearer use dropped, an earlier expiry or a later start.
    """
    b, a = before.limits, after.limits
    out = [f"{x} (publish)" for x in _lists_taken_away(_lists(b.permissions.pub), _lists(a.permissions.pub))]
    out += [f"{x} (subscribe)" for x in _lists_taken_away(_lists(b.permissions.sub), _lists(a.permissions.sub))]
    br, ar = b.permissions.resp, a.permissions.resp
    if br is not None and ar != br:
        out.append("response permission removed or changed")
    elif br is None and ar is not None and not a.permissions.pub.allow:
        out.append("response permission added without a publish allow list (publishing only replies)")
    out += [f"{k} limit lowered" for k in ("subs", "data", "payload") if _lower(getattr(b, k), getattr(a, k))]
    if _narrowed(b.src, a.src):
        out.append("source networks narrowed")
    if _narrowed(b.times, a.times) or (a.times and a.times_location != b.times_location):
        out.append("connection time windows narrowed")
    if _narrowed(b.allowed_connection_types, a.allowed_connection_types):
        out.append("connection types narrowed")
    if b.bearer_token and not a.bearer_token:
        out.append("bearer use dropped")
    if after.expires and (not before.expires or after.expires < before.expires):
        out.append("expires earlier")
    if after.not_before > before.not_before:
        out.append("valid from a later time")
    return out


def retire(account: AccountClaims, user_key: str, new_issued_at: int) -> int:
    """Revoke in ``account`` the JWTs of ``user_key`` issued before ``new_issued_at`` (the new JWT's ``iat``).

    The revocation time is ``new_issued_at - 1``, or a later one already there (kept: lowering it would
    let JWTs back in that it covered).  Returns the revocation time in force for the user.
    """
    at = max(account.revocations.get(user_key, 0), new_issued_at - 1)
    account.revocations[user_key] = at
    return at
