"""Revocations: an account JWT re-signed with users revoked or restored, and the short-lived system user.

    >>> revoke_user(store, "chat", "lost-phone")          # account JWT re-signed with the revocation
    >>> system_creds(store)                                # creds of a 2-minute system user, never written

Reaching running servers with the new JWT is :mod:`dchat_ops.runtime.push`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Optional

from dchat_ops.errors import StoreError
from dchat_ops.nsc.admin import now, user_signer
from dchat_ops.nsc.claims import AccountClaims, UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.jwt import encode
from dchat_ops.nsc.keys import KeyPair, is_public_key
from dchat_ops.nsc.store import Entity, Store

__all__ = ["ALL_USERS", "list_revocations", "revoke_all", "revoke_user", "system_creds", "unrevoke"]

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


def revoke_user(store: Store, account: str, user: str, at: Optional[int] = None) -> Entity[AccountClaims]:
    """Revoke every JWT of ``user`` (a name, or a public key, also one the store never held) issued at or
    before ``at``.  Returns the account.

    ``at`` None or 0 (as in nsc) means now, and then also covers the user's current JWT in the store, whose
    ``iat`` may be a few seconds ahead after several re-signs within one second.  An explicit ``at`` is kept.
    """

    def change(revocations: dict[str, int]) -> None:
        key = _user_key(store, account, user)
        revocations[key] = at if at else max(now(store), _issued_at(store, account, user))

    return _edit_revocations(store, account, change)


def revoke_all(store: Store, account: str, at: Optional[int] = None) -> Entity[AccountClaims]:
    """Revoke every user JWT of the account issued at or before ``at``.

    ``at`` None or 0 means now, and then also covers every user JWT the store holds for the account (the
    highest ``iat`` among them, which may be ahead of the clock).  An explicit ``at`` is kept.
    """

    def change(revocations: dict[str, int]) -> None:
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
    """Creds text of a short-lived user of the system account (never written to disk)."""
    op = store.operator()
    sys_key = op.claims.system_account
    sys_acc = store.find_account(sys_key, op.name)
    signer, _ = user_signer(store, op.claims, sys_acc.claims)
    kp = KeyPair.generate("user")
    u = UserClaims(subject=kp.public_key, name="dchat-ops-push", expires=now(store) + ttl)
    if signer.public_key != sys_acc.public_key:
        u.issuer_account = sys_acc.public_key
    return format_creds(encode(u, signer, clock=store.clock), kp.seed)
