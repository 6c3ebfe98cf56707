"""Revocations: an account JWT re-signed with users revoked or restored, and the short-lived system user.

    >>> revoke_user(store, "chat", "lost-phone")          # account JWT re-signed with the revocation
    >>> uncovered(store, "chat", "lost-phone", at=1)      # why a revocation time would revoke nothing (or None)
    >>> system_creds(store)                                # creds of a 2-minute system user, never written

Reaching running servers with the new JWT is :mod:`dchat_ops.runtime.push`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Optional

from dchat_ops._time import format_time
from dchat_ops.errors import StoreError
from dchat_ops.nsc.admin import now, user_signer
from dchat_ops.nsc.claims import AccountClaims, UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.jwt import encode
from dchat_ops.nsc.keys import KeyPair, is_public_key
from dchat_ops.nsc.store import Entity, Store

__all__ = [
    "ALL_USERS",
    "list_revocations",
    "revoke_all",
    "revoke_user",
    "revoke_users",
    "system_creds",
    "uncovered",
    "unrevoke",
]

ALL_USERS = "*"


def _edit_revocations(store: Store, account: str, change: Callable[[dict[str, int]], None]) -> Entity[AccountClaims]:
    """Change the account's revocations in one unit of work (lock, load, change, re-sign, write)."""
    with store.edit_account(account) as claims:
        change(claims.revocations)
    return store.account(account)


def _user_key(store: Store, account: str, user: str) -> str:
    """A user given by name (in the store) or by public key (also one the store never held)."""
    return user if is_public_key(user, "user") else store.user(account, user).public_key


def _issued_at(store: Store, account: str, user: str) -> int:
    """The ``iat`` of the user's JWT in the store, by name or public key (0 when the store does not hold it)."""
    if not is_public_key(user, "user"):
        return store.user(account, user).claims.issued_at
    return max((u.claims.issued_at for u in _users(store, account) if u.public_key == user), default=0)


def _users(store: Store, account: str) -> Iterator[Entity[UserClaims]]:
    """The account's users in the store (a damaged JWT is skipped: it cannot connect anyway)."""
    for name in store.user_names(account):
        try:
            yield store.user(account, name)
        except StoreError:
            continue


def _latest_issue(store: Store, account: str) -> int:
    """The highest ``iat`` among the account's users in the store (0 for none)."""
    return max((u.claims.issued_at for u in _users(store, account)), default=0)


def uncovered(store: Store, account: str, user: str, at: Optional[int]) -> Optional[str]:
    """Why revoking ``user`` (or every user: :data:`ALL_USERS`) at ``at`` would revoke nothing; None when it
    would revoke something, or when nothing is known against it.

    A revocation covers the JWTs issued at or before its time.  ``at`` None or 0 is now: never refused.  A time
    before the ``iat`` of the JWT the store holds for the user (for every user: of each user JWT of the account
    it holds) covers none of them.  A JWT the store never held (a user given by public key only, an account
    without users in the store) is not known, so any time is taken.
    """
    if not at:
        return None
    if user == ALL_USERS:
        issued = [u.claims.issued_at for u in _users(store, account)]
        if issued and at < min(issued):
            return (
                f"--at {format_time(at)} is before every user JWT of account {account} was issued "
                f"(the first at {format_time(min(issued))}): it would revoke nothing; give a later time, or none for now"
            )
        return None
    iat = _issued_at(store, account, user)
    if iat and at < iat:
        return (
            f"--at {format_time(at)} is before the JWT of {user} was issued ({format_time(iat)}): it would revoke "
            f"nothing; give a later time, or none for now"
        )
    return None


def _refuse_uncovered(store: Store, account: str, user: str, at: Optional[int]) -> None:
    reason = uncovered(store, account, user, at)
    if reason:
        raise StoreError(reason)


def revoke_user(store: Store, account: str, user: str, at: Optional[int] = None) -> Entity[AccountClaims]:
    """Revoke every JWT of ``user`` (a name, or a public key, also one the store never held) issued at or
    before ``at``.  Returns the account.

    ``at`` None or 0 (as in nsc) means now, and then also covers the user's current JWT in the store, whose
    ``iat`` may be a few seconds ahead after several re-signs within one second.  An explicit ``at`` is kept;
    one that would revoke nothing (:func:`uncovered`) is refused with :class:`StoreError`, nothing written.
    """

    def change(revocations: dict[str, int]) -> None:
        _refuse_uncovered(store, account, user, at)
        key = _user_key(store, account, user)
        revocations[key] = at if at else max(now(store), _issued_at(store, account, user))

    return _edit_revocations(store, account, change)


def revoke_users(store: Store, account: str, users: list[str]) -> Entity[AccountClaims]:
    """Revoke every JWT of each of ``users`` (names in the store, or public keys) issued until now, in one
    re-signing of the account: what :func:`revoke_user` does for one, for thousands at the cost of one.
    Returns the account."""

    def change(revocations: dict[str, int]) -> None:
        t = now(store)
        for user in users:
            if is_public_key(user, "user"):
                key, iat = user, _issued_at(store, account, user)
            else:
                claims = store.user(account, user).claims
                key, iat = claims.subject, claims.issued_at
            revocations[key] = max(t, iat)

    return _edit_revocations(store, account, change)


def revoke_all(store: Store, account: str, at: Optional[int] = None) -> Entity[AccountClaims]:
    """Revoke every user JWT of the account issued at or before ``at``.

    ``at`` None or 0 means now, and then also covers every user JWT the store holds for the account (the
    highest ``iat`` among them, which may be ahead of the clock).  An explicit ``at`` is kept; one before every
    user JWT the store holds for the account (:func:`uncovered`) is refused with :class:`StoreError`.
    """

    def change(revocations: dict[str, int]) -> None:
        _refuse_uncovered(store, account, ALL_USERS, at)
        revocations[ALL_USERS] = at if at else max(now(store), _latest_issue(store, account))

    return _edit_revocations(store, account, change)


def unrevoke(store: Store, account: str, user: str) -> Entity[AccountClaims]:
    def change(revocations: dict[str, int]) -> None:
        key = ALL_USERS if user == ALL_USERS else _user_key(store, account, user)
        if key not in revocations:
            raise StoreError(f"{user} is not revoked in account {account}")
        del revocations[key]

    return _edit_revocations(store, account, change)


def list_revocations(store: Store, account: str) -> list[dict[str, Any]]:
    acc = store.account(account)
    names: dict[str, str] = {}
    for u in store.user_names(account):
        try:
            names[store.user(account, u).public_key] = u
        except StoreError:
            continue
    return [
        {"key": k, "user": names.get(k, "*" if k == ALL_USERS else ""), "at": t}
        for k, t in sorted(acc.claims.revocations.items())
    ]


def system_creds(store: Store, ttl: int = 120) -> str:
    """Creds text of a short-lived user of the system account (never written to disk).

    A store that holds no key to sign system users with (an enrolled device) uses its own system user,
    which its operator issued with narrow permissions (:mod:`dchat_ops.nsc.enroll`).
    """
    op = store.operator()
    sys_key = op.claims.system_account
    sys_acc = store.find_account(sys_key, op.name)
    try:
        signer, _ = user_signer(store, op.claims, sys_acc.claims)
    except StoreError:
        for name in store.user_names(sys_acc.name, op.name):
            try:
                user = store.user(sys_acc.name, name, op.name)
                if store.has_key(user.public_key):
                    return store.read_creds(op.name, sys_acc.name, name)
            except StoreError:
                continue
        raise
    kp = KeyPair.generate("user")
    u = UserClaims(subject=kp.public_key, name="dchat-ops-push", expires=now(store) + ttl)
    if signer.public_key != sys_acc.public_key:
        u.issuer_account = sys_acc.public_key
    return format_creds(encode(u, signer, clock=store.clock), kp.seed)
