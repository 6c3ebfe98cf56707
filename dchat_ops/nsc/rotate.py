"""Key rotation in the store: each step one unit of work, in the order that keeps a network working.

Replacing a signing key is three steps, and running servers must hold each one before the next is
made (:mod:`dchat_ops.runtime.rotation` runs them with pushes and restarts in between):

1. the new key is added next to the old one (the account JWT, or the operator JWT, trusts both);
2. what the old key signed is signed again by the new one: every user it issued (same user nkey, so
   the user's seed does not change; a new JWT and creds) or every account JWT;
3. the old key is removed: what it signed is refused from then on.

    >>> plan = plan_account_key(store, "chat")                 # what would change; nothing written
    >>> new = add_account_key(store, "chat", plan.old_key)      # step 1
    >>> reissue_users(store, "chat", plan.old_key, new)         # step 2
    >>> retire_account_key(store, "chat", plan.old_key)         # step 3

A user's own key is replaced by :func:`new_user_key` (a new nkey, JWT and creds for the same name) and
:func:`revoke_user_key` (every JWT of the old nkey revoked in the account).

The checks that refuse removing a key that still signs something live here too
(:func:`check_account_key_removal`, :func:`check_operator_key_removal`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from dchat_ops.errors import DchatOpsError, KeyInUseError, StoreError
from dchat_ops.nsc.claims import AccountClaims, ScopedSigningKey, UserClaims
from dchat_ops.nsc.creds import format_creds, parse_creds
from dchat_ops.nsc.keys import KeyPair, check_public_key
from dchat_ops.nsc.store import Entity, Store, user_signer

__all__ = [
    "AccountKeyPlan",
    "OperatorKeyPlan",
    "UserKeyPlan",
    "account_key_users",
    "add_account_key",
    "add_operator_key",
    "check_account_key_removal",
    "check_operator_key_removal",
    "new_user_key",
    "operator_key_accounts",
    "plan_account_key",
    "plan_operator_key",
    "plan_user_key",
    "reissue_users",
    "resign_accounts",
    "retire_account_key",
    "retire_operator_key",
    "revoke_user_key",
]


# --- who a key signed ------------------------------------------------------------------------------------


def _users(store: Store, account: str) -> list[Entity[UserClaims]]:
    out = []
    for name in store.user_names(account):
        try:
            out.append(store.user(account, name))
        except StoreError:  # a damaged JWT signs nothing that connects
            continue
    return out


def account_key_users(store: Store, account: str, key: str, *, revoked: bool = True) -> list[str]:
    """The users of ``account`` in the store whose JWT ``key`` signed; with ``revoked`` False, not those whose
    JWT the account revoked."""
    acc = store.account(account).claims
    return [
        u.name
        for u in _users(store, account)
        if u.claims.issuer == key and (revoked or not acc.is_revoked(u.public_key, u.claims.issued_at))
    ]


def operator_key_accounts(store: Store, key: str) -> list[str]:
    """The accounts in the store whose JWT ``key`` signed."""
    return [a.name for a in store.accounts() if a.claims.issuer == key]


def _account_key(claims: AccountClaims, name: str, key_or_role: str) -> str:
    """The public key of the account's signing key given by public key or role (StoreError: none)."""
    for k in claims.signing_keys:
        pub = k if isinstance(k, str) else k.key
        if pub == key_or_role or (isinstance(k, ScopedSigningKey) and k.role == key_or_role):
            return pub
    raise StoreError(f"account {name} has no signing key or role {key_or_role!r}")


def check_account_key_removal(store: Store, account: str, key_or_role: str, *, force: bool = False) -> Optional[str]:
    """Refuse (:class:`KeyInUseError`) removing a signing key of ``account`` that still signs users in the store:
    their JWTs would be refused once the account JWT without the key reaches a server.  With ``force`` the
    removal goes ahead: the warning to show is returned (None when the key signs nobody)."""
    acc = store.account(account)
    key = _account_key(acc.claims, account, key_or_role)
    users = account_key_users(store, account, key)
    if not users:
        return None
    what = f"signing key {key_or_role} of account {account} still signs {len(users)} user(s)"
    if not force:
        option = f"--role {key_or_role}" if key_or_role != key else f"--key {key}"
        raise KeyInUseError(
            f"{what} ({_names(users)}): their JWTs would be refused; replace the key with: "
            f"dchat-ops rotate account-key {account} {option} (or remove it anyway with --force)"
        )
    return f"{what}: their JWTs will be refused once the account JWT reaches the servers"


def check_operator_key_removal(store: Store, key: str, *, force: bool = False) -> Optional[str]:
    """Refuse (:class:`KeyInUseError`) removing an operator signing key that still signs accounts in the store;
    with ``force``, the warning to show (None when it signs none)."""
    op = store.operator()
    if key not in op.claims.signing_keys:
        raise StoreError(f"operator {op.name} has no signing key {key}")
    accounts = operator_key_accounts(store, key)
    if not accounts:
        return None
    what = f"operator signing key {key} still signs {len(accounts)} account(s)"
    if not force:
        raise KeyInUseError(
            f"{what} ({_names(accounts)}): servers would refuse them; replace the key with: "
            f"dchat-ops rotate operator-key --key {key} (or remove it anyway with --force)"
        )
    return f"{what}: servers will refuse them once they no longer trust the key"


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


# --- account signing key ------------------------------------------------------------------------------


@dataclass
class AccountKeyPlan:
    account: str
    old_key: str
    role: str  # "" for a plain signing key
    users: list[str] = field(default_factory=list)  # re-issued with the new key

    def to_dict(self) -> dict[str, Any]:
        return {"account": self.account, "old_key": self.old_key, "role": self.role, "users": list(self.users)}


def plan_account_key(
    store: Store, account: str, *, role: Optional[str] = None, key: Optional[str] = None
) -> AccountKeyPlan:
    """Which signing key of ``account`` a rotation replaces and whose users it re-issues; nothing is written.

    The key is given by ``role`` (a scoped key), by ``key`` (its public key), or else is the plain signing
    key the store signs the account's users with; without one, the account's identity key, whose users then
    move to a new signing key (the identity key itself is not retired)."""
    if role and key:
        raise StoreError("give --role or --key, not both")
    acc = store.account(account)
    if key:
        check_public_key(key, "account", "signing key")
        if key == acc.public_key:
            raise StoreError(f"{key} is the identity key of account {account}, not a signing key: it cannot be retired")
        old = _account_key(acc.claims, account, key)
    elif role:
        scope = acc.claims.scope_for_role(role)
        if scope is None:
            raise StoreError(f"account {account} has no signing key with role {role!r}")
        old = scope.key
    else:
        plain = [k for k in acc.claims.signing_keys if isinstance(k, str)]
        held = [k for k in plain if store.has_key(k)]
        # no plain signing key: the identity key signs the users; they move to a new signing key, and the
        # identity key (which cannot be retired) stays
        old = (held or plain or [acc.public_key])[0]
    scope = acc.claims.signing_key_map().get(old)
    return AccountKeyPlan(account, old, scope.role if scope else "", account_key_users(store, account, old))


def add_account_key(store: Store, account: str, old_key: str) -> str:
    """Step 1: a new signing key next to ``old_key`` in the account (a scoped one gets the same role and
    template); returns its public key.  One unit of work.

    Revoked users ``old_key`` signed move to the new key here, with their revocation moved up to the new
    JWT's ``iat`` in the same account JWT: they stay revoked, and no JWT is left to a retired key."""
    kp = KeyPair.generate("account")
    with store.transaction():
        acc = store.account(account)
        if old_key != acc.public_key and old_key not in acc.claims.signing_key_map():
            raise StoreError(f"account {account} has no signing key {old_key}")
        store.save_key(kp)
        live = set(account_key_users(store, account, old_key, revoked=False))
        revoked = [n for n in account_key_users(store, account, old_key) if n not in live]
        moved = _resign_users(store, account, revoked, kp)
        with store.edit_account(account) as claims:
            scope = claims.signing_key_map().get(old_key)
            if scope is None:
                claims.signing_keys.append(kp.public_key)
            else:
                claims.signing_keys.append(
                    ScopedSigningKey(kp.public_key, scope.role, scope.template, scope.description, dict(scope.extra))
                )
            for user_key, iat in moved.values():
                claims.revocations[user_key] = max(claims.revocations.get(user_key, 0), iat)
    return kp.public_key


def _resign_users(store: Store, account: str, names: list[str], signer: KeyPair) -> dict[str, tuple[str, int]]:
    """Each of ``names`` gets its JWT signed by ``signer`` (an account signing key) and new creds, for the same
    user nkey; returns name -> (user public key, new ``iat``)."""
    op = store.operator()
    acc_key = store.account(account, op.name).public_key
    out = {}
    for name in names:
        user = store.user(account, name, op.name)
        claims = user.claims.copy()
        claims.issuer_account = acc_key
        token = store.sign(claims, signer, replaces=user.claims.issued_at)
        store.write_user(op.name, account, user.name, token)
        seed = _seed(store, op.name, account, user)
        if seed:
            store.write_creds(op.name, account, user.name, format_creds(token, seed), force=True)
        out[name] = (user.public_key, claims.issued_at)
    return out


def reissue_users(store: Store, account: str, old_key: str, new_key: str) -> list[str]:
    """Step 2: every user of ``account`` whose JWT ``old_key`` signed gets a JWT signed by ``new_key`` and new
    creds, for the same user nkey (the seed in the keystore, unchanged); returns their names.  One unit of
    work."""
    with store.transaction():
        acc = store.account(account)
        if new_key not in acc.claims.signing_key_map():
            raise StoreError(f"{new_key} is not a signing key of account {account}")
        names = account_key_users(store, account, old_key, revoked=False)
        return list(_resign_users(store, account, names, store.load_key(new_key)))


def _seed(store: Store, operator: str, account: str, user: Entity[UserClaims]) -> str:
    """The user's seed: from the keystore, else from its creds file (a user imported as creds); "" when the
    store has neither (then only its JWT is re-issued)."""
    if store.has_key(user.public_key):
        return store.load_key(user.public_key).seed
    try:
        creds = parse_creds(store.read_creds(operator, account, user.name))
    except DchatOpsError:
        return ""
    return creds.seed if KeyPair.from_seed(creds.seed).public_key == user.public_key else ""


def retire_account_key(store: Store, account: str, old_key: str, *, force: bool = False) -> None:
    """Step 3: ``old_key`` out of the account's signing keys (refused while it still signs users, unless
    ``force``).  One unit of work."""
    with store.transaction():
        check_account_key_removal(store, account, old_key, force=force)
        with store.edit_account(account) as claims:
            claims.signing_keys = [k for k in claims.signing_keys if (k if isinstance(k, str) else k.key) != old_key]


# --- operator signing key -----------------------------------------------------------------------------


@dataclass
class OperatorKeyPlan:
    old_keys: list[str]  # the signing keys retired at the end (none when the identity key signed)
    accounts: list[str]  # re-signed with the new key
    signed_by: dict[str, str] = field(default_factory=dict)  # account -> its issuer now

    def to_dict(self) -> dict[str, Any]:
        return {"old_keys": list(self.old_keys), "accounts": list(self.accounts), "signed_by": dict(self.signed_by)}


def plan_operator_key(store: Store, key: Optional[str] = None) -> OperatorKeyPlan:
    """Which operator signing keys a rotation retires (``key``, or every one the operator has) and which
    accounts it re-signs (all of them); nothing is written."""
    op = store.operator()
    if key:
        check_public_key(key, "operator", "signing key")
        if key not in op.claims.signing_keys:
            raise StoreError(f"operator {op.name} has no signing key {key}")
    old = [key] if key else list(op.claims.signing_keys)
    accounts = list(store.accounts(op.name))
    return OperatorKeyPlan(old, [a.name for a in accounts], {a.name: a.claims.issuer for a in accounts})


def add_operator_key(store: Store) -> str:
    """Step 1: a new operator signing key next to the others; returns its public key.  One unit of work."""
    kp = KeyPair.generate("operator")
    with store.edit_operator() as claims:
        claims.signing_keys.append(kp.public_key)
        store.save_key(kp)
    return kp.public_key


def resign_accounts(store: Store, new_key: str) -> list[str]:
    """Step 2: every account JWT signed again by the operator signing key ``new_key``; returns their names.
    One unit of work."""
    with store.transaction():
        op = store.operator()
        if new_key not in op.claims.signing_keys:
            raise StoreError(f"{new_key} is not a signing key of operator {op.name}")
        signer = store.load_key(new_key)
        names = []
        for acc in list(store.accounts(op.name)):
            token = store.sign(acc.claims.copy(), signer, replaces=acc.claims.issued_at)
            store.write_account(op.name, acc.name, token)
            names.append(acc.name)
        return names


def retire_operator_key(store: Store, old_keys: list[str], *, force: bool = False) -> None:
    """Step 3: ``old_keys`` out of the operator's signing keys (refused while one still signs accounts,
    unless ``force``).  One unit of work."""
    with store.transaction():
        for k in old_keys:
            check_operator_key_removal(store, k, force=force)
        with store.edit_operator() as claims:
            claims.signing_keys = [k for k in claims.signing_keys if k not in old_keys]
            if claims.strict_signing_key_usage and not claims.signing_keys:
                raise StoreError("a strict operator needs a signing key: none would be left")


# --- a user's own key ---------------------------------------------------------------------------------


@dataclass
class UserKeyPlan:
    account: str
    user: str
    old_key: str
    issuer: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_user_key(store: Store, account: str, user: str) -> UserKeyPlan:
    """What :func:`new_user_key` replaces; a revoked user is refused (its new key would not be revoked)."""
    u = store.user(account, user)
    if store.account(account).claims.is_revoked(u.public_key, u.claims.issued_at):
        raise StoreError(
            f"user {account}/{user} is revoked: a new key would let it back in (lift the revocation first: "
            f"dchat-ops unrevoke {user} --account {account})"
        )
    return UserKeyPlan(account, user, u.public_key, u.claims.issuer)


def new_user_key(store: Store, account: str, user: str) -> tuple[str, str, str]:
    """A new nkey for ``user``: the same claims in a JWT for the new key (signed as the old one was, when
    the store holds that key and the account still trusts it), its creds, its seed in the keystore.  The old
    key is not revoked (:func:`revoke_user_key`).  Returns (old public key, new public key, old JWT).
    One unit of work."""
    with store.transaction():
        op = store.operator()
        acc = store.account(account, op.name)
        old = store.user(account, user, op.name)
        issuer = old.claims.issuer
        if store.has_key(issuer) and acc.claims.may_sign_users(issuer):
            signer = store.load_key(issuer)
        else:
            signer, _ = user_signer(store, op.claims, acc.claims)
        kp = KeyPair.generate("user")
        claims = old.claims.copy()
        claims.subject = kp.public_key
        claims.issuer_account = "" if signer.public_key == acc.public_key else acc.public_key
        token = store.sign(claims, signer, replaces=old.claims.issued_at)
        store.save_key(kp)
        store.write_user(op.name, account, user, token)
        store.write_creds(op.name, account, user, format_creds(token, kp.seed), force=True)
        return old.public_key, kp.public_key, old.token


def revoke_user_key(store: Store, account: str, user_key: str, issued_at: int = 0) -> int:
    """Revoke in ``account`` every JWT of the user nkey ``user_key`` issued until now (and at least until
    ``issued_at``, its last JWT's); returns the revocation time.  One unit of work."""
    check_public_key(user_key, "user", "user key")
    with store.edit_account(account) as claims:
        at = max(claims.revocations.get(user_key, 0), int((store.clock or time.time)()), issued_at)
        claims.revocations[user_key] = at
    return at
