"""What a person does with a store: init, add and edit operators, accounts and users, make creds.

Every function takes a :class:`~dchat_ops.nsc.store.Store` and returns a small result; the CLI
only formats these.  Signing follows the store's keys: accounts are signed by an operator signing
key when one is held (the identity key otherwise, unless the operator is strict), users by an
account signing key when one is held, or by the scoped key of a ``role``.

    >>> store = Store("/tmp/dchat-home")
    >>> result = init(store)                       # operator, SYS + sys user, app account + user
    >>> add_user(store, "chat", "bob", sub_allow=["chat.>"])
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from dchat_ops._fs import deferred_sync, die_with_parent, journal_new_files, untracked
from dchat_ops.errors import ExistsError, JWTError, StoreError
from dchat_ops.nsc import accounts as _accounts
from dchat_ops.nsc.claims import ACCOUNT_LIMIT_KEYS as _ACCOUNT_LIMITS
from dchat_ops.nsc.claims import JETSTREAM_LIMIT_KEYS as _JS_LIMITS
from dchat_ops.nsc.claims import (
    AccountClaims,
    OperatorClaims,
    ScopedSigningKey,
    UserClaims,
    UserPermissionLimits,
    jetstream_field,
)
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.jwt import Clock, Encoder, decode, encode, verify_chain
from dchat_ops.nsc.keys import KeyPair, fresh_keys
from dchat_ops.nsc.limits import check_account_server_url, check_service_url, check_text
from dchat_ops.nsc.rotate import check_account_key_removal, check_operator_key_removal
from dchat_ops.nsc.spec import FieldError, UserChanges, UserSpec, check_limit, check_tags, check_time
from dchat_ops.nsc.spec import dedupe as _dedupe
from dchat_ops.nsc.store import Entity, Store, check_name, operator_signer, user_signer
from dchat_ops.nsc.supersede import retire, taken_away

__all__ = [
    "FieldError",
    "InitResult",
    "UserChanges",
    "UserResult",
    "UserSpec",
    "add_account",
    "add_user",
    "add_users",
    "adopt_account_jwts",
    "check_account_changes",
    "check_account_jwt",
    "check_bearer_allowed",
    "edit_account",
    "edit_operator",
    "edit_user",
    "generate_creds",
    "init",
    "issue_user",
    "issue_users",
    "journal_user_files",
    "operator_signer",
    "remove_account",
    "resign_account",
    "user_signer",
]

DEFAULT_OPERATOR = "dchat"
DEFAULT_ACCOUNT = "chat"
DEFAULT_USER = "default"
SYSTEM_ACCOUNT = "SYS"
SYSTEM_USER = "sys"


@dataclass
class InitResult:
    created: bool
    operator: str
    system_account: str
    account: str
    user: Optional[str]  # None only when asked for no first user on a store that already had an operator
    system_user: str
    creds: dict[str, str] = field(default_factory=dict)  # user name -> creds path
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UserResult:
    entity: Entity[UserClaims]
    creds_path: str
    changed: bool = True
    warnings: list[str] = field(default_factory=list)  # for a person: e.g. a revoked user re-issued
    # a re-issue that took something away: what, the revocation time of the user's earlier JWTs in the
    # account, and the JWT it replaced (whose connections the revocation closes)
    taken_away: list[str] = field(default_factory=list)
    revoked_at: int = 0
    superseded: str = ""

    def to_dict(self) -> dict[str, Any]:
        c = self.entity.claims
        return {
            "name": self.entity.name,
            "public_key": c.subject,
            "issuer": c.issuer,
            "issuer_account": c.issuer_account,
            "jwt_path": str(self.entity.path),
            "creds_path": self.creds_path,
            "changed": self.changed,
            "warnings": list(self.warnings),
            "taken_away": list(self.taken_away),
            "revoked_at": self.revoked_at,
        }


# --- signers: operator_signer and user_signer live with the store (its unit of work re-signs) --------


# --- in-memory issuance ----------------------------------------------------------------------------


def issue_user(
    name: str,
    account_public_key: str,
    signer: KeyPair,
    spec: Optional[UserSpec] = None,
    *,
    scope: Optional[ScopedSigningKey] = None,
    user_key: Optional[KeyPair] = None,
    clock: Optional[Clock] = None,
) -> tuple[KeyPair, UserClaims, str, str]:
    """Make a user in memory: (key pair, claims, JWT, creds text).  Nothing is written."""
    kp = user_key or KeyPair.generate("user")
    u = _user_template(account_public_key, signer, spec, scope)
    u.subject, u.name = kp.public_key, name
    token = encode(u, signer, clock=clock)
    return kp, u, token, format_creds(token, kp.seed)


def _user_template(
    account_public_key: str, signer: KeyPair, spec: Optional[UserSpec], scope: Optional[ScopedSigningKey]
) -> UserClaims:
    """The claims of a user of ``spec`` signed by ``signer``, but for its subject and name (the spec is
    validated here)."""
    u = UserClaims()
    if scope is not None:
        if spec is not None and spec.has_permissions_or_limits():
            raise StoreError(
                f"users of scoped signing key role {scope.role!r} take their permissions from the role; "
                "set none on the user"
            )
        u.limits.clear_for_scope()
    if spec is not None:
        spec.apply(u)
    if signer.public_key != account_public_key:
        u.issuer_account = account_public_key
    return u


def _spec_key(spec: Optional[UserSpec]) -> Hashable:
    """Equal specs, equal keys: a batch validates and renders each distinct spec once."""
    if spec is None:
        return None
    key = tuple(tuple(v) if isinstance(v, list) else v for v in vars(spec).values())
    try:
        hash(key)
    except TypeError:  # e.g. lists inside a list: this spec object alone
        return ("id", id(spec))
    return key


# (name, public key, seed, JWT, creds); seed and creds are None when the worker wrote them itself
IssuedUser = tuple[str, str, Optional[str], str, Optional[str]]
# (signer seed, account public key, (name, spec) items, scope, iat, write_to)
_ChunkArgs = tuple[
    str,
    str,
    list[tuple[str, Optional[UserSpec]]],
    Optional[ScopedSigningKey],
    int,
    Optional[tuple[str, str, str]],
]


_BATCH = 256  # users made together: key pairs, then JWTs (see keys.fresh_keys, jwt.Encoder.many)


def _issue_chunk(args: _ChunkArgs) -> list[IssuedUser]:
    """Worker for :func:`issue_users`: (name, public key, seed, JWT, creds) for each (name, spec).

    Each distinct spec is validated and rendered once (:class:`~dchat_ops.nsc.jwt.Encoder`); per user
    there remain a key pair, the jti, one signature and the creds text, made for up to ``_BATCH`` users
    at a time.  With ``write_to`` = (store home, operator, account), the worker writes each user's seed,
    JWT and creds itself (atomic renames, flushed later by the caller) and returns seed and creds as None.
    """
    signer_seed, account_public_key, items, scope, iat, write_to = args
    signer = KeyPair.from_seed(signer_seed)
    encoders: dict[Hashable, Encoder] = {}
    store = Store(write_to[0]) if write_to else None
    out: list[IssuedUser] = []

    def encoder_for(spec: Optional[UserSpec]) -> Encoder:
        key = _spec_key(spec)
        enc = encoders.get(key)
        if enc is None:
            template = _user_template(account_public_key, signer, spec, scope)
            enc = encoders[key] = Encoder(template, signer, clock=lambda: iat)
        return enc

    keys_folder = os.fspath(store.keys_dir) if store is not None else ""
    with deferred_sync(flush=False), untracked():  # the caller journaled the JWTs and creds as new files
        i = 0
        while i < len(items):
            spec = items[i][1]
            j = i + 1  # items[i:j]: users of one spec, at most _BATCH
            while j < len(items) and j - i < _BATCH and (items[j][1] is spec or items[j][1] == spec):
                j += 1
            names = [name for name, _ in items[i:j]]
            publics, seeds = fresh_keys("user", j - i)
            if store is not None:  # the seeds' files, named only now, into the journal of the change under way
                journal_new_files(str(store.home), keys_folder, [f"{p[0]}/{p[1:3]}/{p}.nk" for p in publics])
            tokens = encoder_for(spec).many(publics, names)
            for name, public, seed, token in zip(names, publics, seeds, tokens, strict=True):
                if store is not None and write_to is not None:
                    store.save_seed(public, seed, force=True)
                    store.write_user(write_to[1], write_to[2], name, token)
                    store.write_creds(write_to[1], write_to[2], name, format_creds(token, seed), force=True)
                    out.append((name, public, None, token, None))
                else:
                    out.append((name, public, seed, token, format_creds(token, seed)))
            i = j
    return out


PARALLEL_THRESHOLD = 2000


def issue_users(
    names: list[str],
    account_public_key: str,
    signer: KeyPair,
    spec: Optional[UserSpec] = None,
    *,
    specs: Optional[list[Optional[UserSpec]]] = None,
    scope: Optional[ScopedSigningKey] = None,
    clock: Optional[Clock] = None,
    workers: Optional[int] = None,
    write_to: Optional[tuple[str, str, str]] = None,
) -> list[IssuedUser]:
    """Make many users in memory: (name, public key, seed, JWT, creds) each, in the order of ``names``.

    ``spec`` applies to every user, or ``specs`` gives one per name; each distinct spec is validated once.
    Every JWT of the batch has the same ``iat``: the clock's second at the start.  Large batches are spread over
    processes (one per core by default); ``workers=1`` keeps it in this process.  Nothing is written,
    unless ``write_to`` = (store home, operator, account): then each process writes its users' files
    (without flushing them: the caller runs ``os.sync()``) and rows carry no seed or creds.
    """
    if specs is not None and len(specs) != len(names):
        raise StoreError("issue_users: one spec per name")
    items = list(zip(names, specs if specs is not None else [spec] * len(names), strict=False))
    now = int((clock or time.time)())  # one iat for the batch
    workers = workers or (os.cpu_count() or 1)
    if workers <= 1 or len(items) < PARALLEL_THRESHOLD:
        return _issue_chunk((signer.seed, account_public_key, items, scope, now, write_to))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(items) // (workers * 4))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent) as pool:
        parts = pool.map(_issue_chunk, [(signer.seed, account_public_key, c, scope, now, write_to) for c in chunks])
        return [row for part in parts for row in part]


def journal_user_files(store: Store, operator: str, account: str, names: list[str], *, replaced: bool) -> None:
    """Journal the JWT and creds files of ``names`` before a bulk step writes them: as new files in two
    entries (no file read), or, with ``replaced``, the ones that exist by content."""
    tx = store.current_transaction()
    if tx is None or not names:
        return
    jwt_dir = store.user_jwt_path(operator, account, names[0]).parent
    creds_dir = store.creds_path(operator, account, names[0]).parent
    new = list(names)
    if replaced:
        existing = {n for n in names if (jwt_dir / f"{n}.jwt").exists() or (creds_dir / f"{n}.creds").exists()}
        tx.remember_many(p for n in existing for p in (jwt_dir / f"{n}.jwt", creds_dir / f"{n}.creds"))
        new = [n for n in names if n not in existing]
    tx.expect_new(jwt_dir, [f"{n}.jwt" for n in new])
    tx.expect_new(creds_dir, [f"{n}.creds" for n in new])


# --- store operations ------------------------------------------------------------------------------


def _new_account(
    store: Store, name: str, op: Entity[OperatorClaims], *, signing_key: bool
) -> tuple[KeyPair, AccountClaims, str]:
    kp = KeyPair.generate("account")
    acc = AccountClaims(subject=kp.public_key, name=name)
    sk = None
    if signing_key:
        sk = KeyPair.generate("account")
        acc.signing_keys.append(sk.public_key)
    token = store.sign(acc, operator_signer(store, op.claims))
    store.save_key(kp)
    if sk is not None:
        store.save_key(sk)
    store.write_account(op.name, name, token)
    return kp, acc, token


def init(
    store: Store,
    operator: Optional[str] = None,
    account: str = DEFAULT_ACCOUNT,
    user: Optional[str] = DEFAULT_USER,
    *,
    system_account: str = SYSTEM_ACCOUNT,
    system_user: str = SYSTEM_USER,
    strict: bool = False,
    user_spec: Optional[UserSpec] = None,
) -> InitResult:
    """Create an operator, its system account and user, an application account and its first user.

    ``operator``: its name; None: the store's current operator when it has one (the Store's chosen one
    included), else ``DEFAULT_OPERATOR``.  A name the home does not hold yet makes a new operator next to
    the ones it holds (as nsc keeps several), which becomes the current one.

    ``user=None`` makes no first user.  On an operator the store already has, only what an init left
    out is made (a store made before changes were journaled, or with files removed by hand: see
    :func:`_complete_init`); when nothing is, nothing is changed and ``created`` is False.  All in one
    unit of work: a kill in it is rolled back by the next command, and running init again does it all.
    """
    if operator is None:
        operator = store.selected_operator or DEFAULT_OPERATOR
        chosen = bool(store.selected_operator)
    elif store.selected_operator and store.selected_operator != operator:
        raise FieldError(
            "operator",
            "two operators named",
            message=f"init: operator {operator!r} is not the chosen operator {store.selected_operator!r}",
        )
    else:
        chosen = True
    for n, what in (
        (operator, "operator name"),
        (account, "account name"),
        (user or "x", "user name"),
        (system_account, "system account name"),
        (system_user, "system user name"),
    ):
        check_name(n, what)
    if account == system_account:
        raise StoreError("the application account and the system account need different names")
    selected = store.selected_operator
    with store.transaction():  # two inits at once make one operator; a failed one leaves no half store
        if chosen:  # what init makes goes to the operator it names, whichever is current
            store.selected_operator = operator if operator in store.operator_names() else None
        try:
            return _init(store, operator, account, user, system_account, system_user, strict, user_spec, chosen)
        finally:
            store.selected_operator = selected


def _init(
    store: Store,
    operator: str,
    account: str,
    user: Optional[str],
    system_account: str,
    system_user: str,
    strict: bool,
    user_spec: Optional[UserSpec],
    chosen: bool = True,
) -> InitResult:
    existing = store.operator_names()
    if existing and (operator in existing or not chosen):
        op = operator if chosen else store.current_operator()
        done = _complete_init(store, op, account, user, system_account, system_user, strict, user_spec)
        ctx = store.context()
        if done:
            return InitResult(
                True,
                op,
                system_account,
                ctx.get("account", ""),
                user,
                system_user,
                message=f"completed the store of operator {op}: added {', '.join(done)}",
            )
        return InitResult(
            False,
            op,
            system_account,
            ctx.get("account", ""),
            user,
            system_user,
            message=f"store at {store.home} already holds operator {op}; nothing changed",
        )
    if existing and store.operator_dir(operator).exists():
        raise StoreError(
            f"{store.operator_dir(operator)} exists but holds no operator JWT; remove it or choose another name"
        )
    op_kp = KeyPair.generate("operator")
    op_claims = OperatorClaims(subject=op_kp.public_key, name=operator)
    op_sk = None
    if strict:
        op_sk = KeyPair.generate("operator")
        op_claims.signing_keys.append(op_sk.public_key)
        op_claims.strict_signing_key_usage = True
    sys_kp = KeyPair.generate("account")
    op_claims.system_account = sys_kp.public_key
    store.save_key(op_kp)
    if op_sk is not None:
        store.save_key(op_sk)
    store.write_operator(operator, store.sign(op_claims, op_kp))
    op_entity = store.operator(operator)

    signer = operator_signer(store, op_claims)
    # system account: fixed key chosen above so the operator can name it
    sys_claims = AccountClaims(subject=sys_kp.public_key, name=system_account)
    sys_sk = None
    if strict:
        sys_sk = KeyPair.generate("account")
        sys_claims.signing_keys.append(sys_sk.public_key)
    store.save_key(sys_kp)
    if sys_sk is not None:
        store.save_key(sys_sk)
    store.write_account(operator, system_account, store.sign(sys_claims, signer))
    _new_account(store, account, op_entity, signing_key=strict)
    store.set_context(operator=operator, account=account)

    creds = {}
    creds[system_user] = add_user(store, system_account, system_user).creds_path
    if user:
        creds[user] = add_user(store, account, user, user_spec).creds_path
    also = f"; it is now the current operator (the home also holds {', '.join(existing)})" if existing else ""
    return InitResult(
        True,
        operator,
        system_account,
        account,
        user or "",
        system_user,
        creds,
        message=f"created operator {operator} with accounts {system_account} (system) and {account}{also}",
    )


def _complete_init(
    store: Store,
    op_name: str,
    account: str,
    user: Optional[str],
    system_account: str,
    system_user: str,
    strict: bool,
    user_spec: Optional[UserSpec],
) -> list[str]:
    """What an init left out of a store that has its operator (a store made before changes were
    journaled, or files removed by hand): the system account, the application account and their first
    users, and the creds of users whose seed is held.  Only what is missing is made; returns what was."""
    done: list[str] = []
    op = store.operator(op_name)
    accounts = {e.public_key: e.name for e in store.accounts(op_name)}
    sys_key = op.claims.system_account
    if sys_key and sys_key not in accounts and store.has_key(sys_key) and system_account not in accounts.values():
        claims = AccountClaims(subject=sys_key, name=system_account)
        store.write_account(op_name, system_account, store.sign(claims, operator_signer(store, op.claims)))
        accounts[sys_key] = system_account
        done.append(f"system account {system_account}")
    apps = [n for k, n in accounts.items() if k != sys_key]
    if not apps and account not in accounts.values():
        _new_account(store, account, op, signing_key=strict)
        store.set_context(operator=op_name, account=account)
        apps = [account]
        done.append(f"account {account}")
    sys_name = accounts.get(sys_key)
    wanted: list[tuple[str, str, Optional[UserSpec]]] = [(sys_name, system_user, None)] if sys_name else []
    # the first user, when the store holds no user but (at most) the system user: an init stopped there
    others = [n for n in accounts.values() if n != sys_name and store.user_names(n, op_name)]
    if user and account in apps and not others:
        wanted.append((account, user, user_spec))
    for acc_name, uname, spec in wanted:
        names = store.user_names(acc_name, op_name)
        if not names:  # (a creds file left without its JWT is replaced)
            add_user(store, acc_name, uname, spec, force=True)
            done.append(f"user {acc_name}/{uname}")
            continue
        if uname in names and not store.creds_path(op_name, acc_name, uname).exists():
            ent = store.user(acc_name, uname, op_name)
            if store.has_key(ent.public_key):
                text = format_creds(ent.token, store.load_key(ent.public_key).seed)
                store.write_creds(op_name, acc_name, uname, text)
                done.append(f"creds of {acc_name}/{uname}")
    return done


def add_account(store: Store, name: str, *, signing_key: bool = False, force: bool = False) -> Entity[AccountClaims]:
    """Add an account signed by the operator (with an account signing key when ``signing_key``)."""
    check_name(name, "account name")
    with store.transaction():
        return _add_account(store, name, signing_key, force)


def _add_account(store: Store, name: str, signing_key: bool, force: bool) -> Entity[AccountClaims]:
    op = store.operator()
    path = store.account_jwt_path(op.name, name)
    if path.exists() and not force:
        raise ExistsError(f"account {name} already exists; use --force to replace it")
    if path.exists() and store.user_names(name, op.name):
        raise StoreError(
            f"account {name} has users: a new account key would cut every one of them off; "
            "remove them first (or remove the account with 'dchat-ops rm account')"
        )
    _new_account(store, name, op, signing_key=signing_key or op.claims.strict_signing_key_usage)
    return store.account(name, op.name)


def remove_account(store: Store, name: str) -> None:
    """Remove an account's JWTs (its users' too) and creds from the store; seeds stay in the keystore."""
    import shutil

    with store.transaction() as tx:  # every file goes back if it is cut short (kill included)
        op = store.operator()
        acc = store.account(name, op.name)
        if acc.public_key == op.claims.system_account:
            raise StoreError("the system account cannot be removed")
        folders = [store.account_dir(op.name, name), store.creds_dir / op.name / name]
        files = [p for d in folders if d.is_dir() for p in sorted(d.rglob("*")) if not p.is_dir()]
        tx.remember_many(files)
        for p in files:
            p.unlink()
        for d in folders:
            shutil.rmtree(d, ignore_errors=True)


def add_user(
    store: Store,
    account: str,
    name: str,
    spec: Optional[UserSpec] = None,
    *,
    role: Optional[str] = None,
    signing_key: Optional[str] = None,
    force: bool = False,
) -> UserResult:
    """Add a user to ``account``: keep its seed, write its JWT and its creds file."""
    check_name(name, "user name")
    with store.transaction():
        return _add_user(store, account, name, spec, role, signing_key, force)


def _add_user(
    store: Store,
    account: str,
    name: str,
    spec: Optional[UserSpec],
    role: Optional[str],
    signing_key: Optional[str],
    force: bool,
) -> UserResult:
    op = store.operator()
    acc = store.account(account, op.name)
    jwt_path = store.user_jwt_path(op.name, account, name)
    creds_path = store.creds_path(op.name, account, name)
    if not force:
        for p in (jwt_path, creds_path):
            if p.exists():
                raise ExistsError(f"user {name} already exists in account {account}; use --force to replace it")
    signer, scope = user_signer(store, op.claims, acc.claims, role, signing_key)
    kp, claims, token, creds = issue_user(name, acc.public_key, signer, spec, scope=scope, clock=store.issue_clock())
    check_bearer_allowed(account, acc.claims, scope.template if scope is not None else claims.limits)
    store.save_key(kp)
    store.write_user(op.name, account, name, token)
    store.write_creds(op.name, account, name, creds, force=True)
    return UserResult(Entity("user", name, token, claims, jwt_path), str(creds_path))


def add_users(
    store: Store,
    account: str,
    names: list[str],
    spec: Optional[UserSpec] = None,
    *,
    role: Optional[str] = None,
    force: bool = False,
    workers: Optional[int] = None,
) -> list[str]:
    """Add many users with the same permissions in one go; returns their public keys.

    All names are checked before anything is written; files are replaced atomically and flushed
    to disk once at the end.  All or nothing, also across a kill (one unit of work; new files are
    journaled by name, replaced ones by content).
    """
    with store.transaction():
        return _add_users(store, account, names, spec, role, force, workers)


def _add_users(
    store: Store,
    account: str,
    names: list[str],
    spec: Optional[UserSpec],
    role: Optional[str],
    force: bool,
    workers: Optional[int],
) -> list[str]:
    op = store.operator()
    acc = store.account(account, op.name)
    seen = set()
    for name in names:
        check_name(name, "user name")
        if name in seen:
            raise StoreError(f"user {name} is listed twice")
        seen.add(name)
        if not force and (
            store.user_jwt_path(op.name, account, name).exists() or store.creds_path(op.name, account, name).exists()
        ):
            raise ExistsError(f"user {name} already exists in account {account}; use --force to replace it")
    signer, scope = user_signer(store, op.claims, acc.claims, role)
    if scope is not None and spec is not None and spec.has_permissions_or_limits():
        raise StoreError(f"users of scoped signing key role {scope.role!r} take their permissions from the role")
    if scope is not None:
        check_bearer_allowed(account, acc.claims, scope.template)
    elif spec is not None:
        probe = UserClaims(subject="", limits=UserPermissionLimits())
        spec.apply(probe)
        check_bearer_allowed(account, acc.claims, probe.limits)
    journal_user_files(store, op.name, account, names, replaced=force)
    rows = issue_users(
        list(names),
        acc.public_key,
        signer,
        spec,
        scope=scope,
        clock=store.clock,
        workers=workers,
        write_to=(str(store.home), op.name, account),
    )
    os.sync()  # the writers skipped their per-file flushes
    return [row[1] for row in rows]


def edit_user(
    store: Store, account: str, name: str, spec: Optional[UserSpec] = None, changes: Optional[UserChanges] = None
) -> UserResult:
    """Change a user's permissions, limits, expiry or tags; re-issue its JWT and creds when anything changed.

    ``spec`` sets fields outright; ``changes`` adds to and removes from the current lists.

    A change that takes something away (:func:`dchat_ops.nsc.supersede.taken_away`: a subject denied or
    no longer allowed, a lower limit, ...) also revokes the JWTs of the user issued before the new one,
    in the same unit of work: the account JWT is re-signed with the revocation (``revoked_at``), so a
    copy of the old creds loses what was taken away wherever the account JWT reaches (pushing it to
    running servers is :mod:`dchat_ops.runtime.push`).  A change that only adds revokes nothing.

    As in nsc, a revocation covers JWTs issued until its time, so re-issuing a revoked user makes a JWT
    the revocation does not cover: the user is back in.  That is done, and said in ``warnings``.
    """
    with store.transaction():
        prev = store.user(account, name)
        old = prev.claims
        with store.edit_user(account, name) as claims:
            acc = store.account(account)
            if changes is not None:
                spec = changes.to_spec(claims, spec)
            spec = spec or UserSpec()
            before = claims.nats_dict(), claims.expires, claims.not_before
            scope = acc.claims.signing_key_map().get(claims.issuer)
            if scope is not None and spec.has_permissions_or_limits():
                raise StoreError(
                    f"user {name} is issued by scoped role {scope.role!r}; change the role's template instead "
                    f"('dchat-ops edit role {account} {scope.role} ...')"
                )
            spec.apply(claims)
            check_bearer_allowed(account, acc.claims, claims.limits)
            changed = (claims.nats_dict(), claims.expires, claims.not_before) != before
        op_name = store.current_operator()
        user = store.user(account, name, op_name)
        removed = taken_away(old, user.claims) if changed else []
        revoked_at = 0
        if removed:
            with store.edit_account(account, op_name) as acc_claims:
                revoked_at = retire(acc_claims, user.public_key, user.claims.issued_at)
    warnings = []
    was_revoked = acc.claims.is_revoked(old.subject, old.issued_at)
    if (
        changed
        and was_revoked
        and not store.account(account, op_name).claims.is_revoked(user.public_key, user.claims.issued_at)
    ):
        warnings.append(
            f"user {name} was revoked; the re-issued JWT is not covered by that revocation "
            f"(revoke it again with 'dchat-ops revoke user {name}')"
        )
    return UserResult(
        user,
        str(store.creds_path(op_name, account, name)),
        changed,
        warnings,
        taken_away=removed,
        revoked_at=revoked_at,
        superseded=prev.token if revoked_at else "",
    )


def resign_account(
    store: Store, op: Entity[OperatorClaims], acc: Entity[AccountClaims], claims: AccountClaims
) -> Entity[AccountClaims]:
    """Make ``claims`` the account's new version (through the store's unit of work); returns the account."""
    new = claims.copy()
    with store.edit_account(acc.name, op.name) as current:
        for f in dataclasses.fields(current):
            setattr(current, f.name, getattr(new, f.name))
    return store.account(acc.name, op.name)


def check_account_jwt(op: OperatorClaims, token: str, subject: str = "") -> AccountClaims:
    """The claims of an account JWT that belongs to operator ``op``; :class:`JWTError` (or ChainError) otherwise.

    Checked: the signature, that it is an account JWT, that its issuer is the operator or one of its signing
    keys (a signing key when the operator is strict) and, with ``subject``, that it is that account's JWT.
    Expiry is not checked: an account JWT that expired is still the version its issuer made last.
    """
    claims = decode(token, AccountClaims)
    if subject and claims.subject != subject:
        raise JWTError(f"it is the JWT of account {claims.subject}, not of {subject}")
    verify_chain(op, claims, check_expiry=False)
    return claims


def adopt_account_jwts(store: Store, tokens: list[str]) -> list[Entity[AccountClaims]]:
    """Make each of ``tokens`` (account JWTs made elsewhere, e.g. held by a server) the store's version of its
    account, as it is: not re-signed.  All or nothing, in one unit of work.

    Each must verify against the store's operator (:func:`check_account_jwt`), be of an account the store
    holds, and be newer (a larger ``iat``) than the store's version; otherwise :class:`StoreError` or
    :class:`JWTError` and nothing is written.  Returns the accounts as written.
    """
    with store.transaction():
        op = store.operator()
        names = []
        for token in tokens:
            claims = check_account_jwt(op.claims, token)
            ent = store.find_account(claims.subject, op.name)
            if claims.issued_at <= ent.claims.issued_at:
                raise StoreError(
                    f"account {ent.name}: the store's JWT (issued at {ent.claims.issued_at}) is not older than "
                    f"the one given (issued at {claims.issued_at})"
                )
            store.write_account(op.name, ent.name, token)
            names.append(ent.name)
        return [store.account(n, op.name) for n in names]


def edit_account(
    store: Store,
    name: str,
    *,
    limits: Optional[dict[str, int | bool]] = None,
    jetstream: Optional[dict[str, int]] = None,
    add_signing_key: bool = False,
    add_role: Optional[str] = None,
    role_spec: Optional[UserSpec] = None,
    remove_signing_key: Optional[str] = None,
    expires: Optional[int] = None,
    tags: Optional[list[str]] = None,
    description: Optional[str] = None,
    add_tags: Optional[list[str]] = None,
    remove_tags: Optional[list[str]] = None,
    js_tier: Optional[str] = None,
    remove_js_tiers: Optional[list[str]] = None,
    default_permissions: Optional[UserChanges] = None,
    info_url: Optional[str] = None,
    force: bool = False,
) -> tuple[Entity[AccountClaims], bool]:
    """Change an account's limits, JetStream limits, signing keys (plain or scoped roles), expiry or tags.

    With ``js_tier`` (``R1``...``R5``) the ``jetstream`` limits are those of that tier (made when missing);
    ``remove_js_tiers`` removes tiers.  An account has account-wide JetStream limits or tiers, not both
    (FieldError).  ``default_permissions`` changes what users with no permissions of their own get;
    ``info_url`` ('' removes it) is shown by tools.

    Returns (account, changed).  A new signing key's seed goes to the keystore.  Every limit, the role
    name, the tags and the expiry are checked first (FieldError, nothing written) with the validators specs
    use: a limit is -1 (unlimited) or more and fits int64, or the server refuses the account JWT.

    ``tags`` sets the tags outright; ``add_tags`` and ``remove_tags`` change the current ones (as
    ``edit user --tag`` / ``--rm-tag`` do).

    Removing a signing key that still signs users of the account is refused (:class:`KeyInUseError`:
    ``dchat-ops rotate account-key`` replaces it without breaking them), unless ``force``.
    """
    check_account_changes(limits, jetstream, add_role, expires, tags)
    check_tags("tags", list(add_tags or []))
    if description is not None:
        check_text("description", description)
    if js_tier is not None:
        _accounts.check_js_tier(js_tier)
    if info_url is not None:
        _accounts.check_info_url(info_url)
    with store.edit_account(name) as claims:
        if remove_signing_key:
            check_account_key_removal(store, name, remove_signing_key, force=force)
        before = claims.to_dict()
        new_keys = _edit_account_claims(
            name,
            claims,
            limits,
            None if js_tier is not None else jetstream,
            add_signing_key,
            add_role,
            role_spec,
            remove_signing_key,
        )
        if js_tier is not None:
            _accounts.apply_js_tier(claims, js_tier, dict(jetstream or {}))
        for tier in remove_js_tiers or ():
            if claims.limits.tiers.pop(tier, None) is None:
                raise FieldError("jetstream.tier", f"account {name} has no JetStream tier {tier!r}")
        if default_permissions is not None:
            _accounts.apply_default_permissions(claims, default_permissions)
        if info_url is not None:
            claims.info_url = info_url
        if expires is not None:
            claims.expires = expires
        claims.tags = _changed_tags(claims.tags, tags, add_tags, remove_tags)
        if description is not None:
            claims.description = description
        changed = claims.to_dict() != before
        if changed:
            _refuse_what_the_server_refuses(store, name, claims)
            _accounts.check_jetstream_layout(name, claims, tier_edit=js_tier is not None)
        for kp in new_keys if changed else ():  # last: nothing above may fail once a seed is kept
            store.save_key(kp)
    return store.account(name), changed


def _refuse_what_the_server_refuses(store: Store, name: str, claims: AccountClaims) -> None:
    """An account the server would refuse, or whose users it would: JetStream on the system account, a
    no-bearer account that still has bearer users or a bearer role (FieldError: nothing is written)."""
    op = store.operator()
    if claims.subject == op.claims.system_account and (claims.limits.jetstream.enabled() or claims.limits.tiers):
        raise FieldError("jetstream", f"account {name} is the system account: nats-server refuses JetStream on it")
    if claims.limits.disallow_bearer:
        roles = [k.role for k in claims.signing_keys if isinstance(k, ScopedSigningKey) and k.template.bearer_token]
        users = [u for u in store.user_names(name, op.name) if store.user(name, u, op.name).claims.limits.bearer_token]
        if roles or users:
            what = ", ".join([*(f"role {r}" for r in roles), *(f"user {u}" for u in users)])
            raise FieldError(
                "disallow_bearer",
                f"{what} of account {name} use bearer tokens, which nats-server would then refuse: "
                "give them --no-bearer first",
            )


def check_bearer_allowed(account: str, acc: AccountClaims, upl: UserPermissionLimits) -> None:
    """FieldError when a user (or a role's template) with a bearer token is for an account that disallows them."""
    if upl.bearer_token and acc.limits.disallow_bearer:
        raise FieldError(
            "bearer",
            f"account {account} disallows bearer tokens (edit account --disallow-bearer): nats-server would refuse "
            "the user",
        )


_ACCOUNT_FLAGS = ("wildcards", "disallow_bearer")
_JS_FLAGS = ("max_bytes_required",)


def check_account_changes(
    limits: Optional[Mapping[str, Any]] = None,
    jetstream: Optional[Mapping[str, Any]] = None,
    role: Optional[str] = None,
    expires: Optional[int] = None,
    tags: Optional[list[str]] = None,
) -> None:
    """Refuse what the server would refuse in an account change: raises FieldError naming the field."""
    for k, v in (limits or {}).items():
        if k in _ACCOUNT_FLAGS:
            if not isinstance(v, bool):
                raise FieldError(k, "must be true or false")
        elif k in _ACCOUNT_LIMITS:
            check_limit(k, v)
        else:
            raise FieldError(k, f"unknown account limit (known: {', '.join(_ACCOUNT_LIMITS + _ACCOUNT_FLAGS)})")
    for k, v in (jetstream or {}).items():
        where = jetstream_field(k)
        if k in _JS_FLAGS:
            if not isinstance(v, bool):
                raise FieldError(where, "must be true or false")
        elif k in _JS_LIMITS:
            check_limit(where, v)
        else:
            raise FieldError(where, f"unknown JetStream limit (known: {', '.join(_JS_LIMITS + _JS_FLAGS)})")
    if role is not None:
        try:
            check_name(role, "role name")
        except StoreError as exc:
            raise FieldError("role", str(exc)) from None
    if expires is not None:
        check_time("expiry", expires)
    if tags is not None:
        check_tags("tags", tags)


def _edit_account_claims(
    name: str,
    claims: AccountClaims,
    limits: Optional[dict[str, int | bool]],
    jetstream: Optional[dict[str, int]],
    add_signing_key: bool,
    add_role: Optional[str],
    role_spec: Optional[UserSpec],
    remove_signing_key: Optional[str],
) -> list[KeyPair]:
    new_keys: list[KeyPair] = []
    check_account_changes(limits, jetstream, add_role)
    for k, v in (limits or {}).items():
        setattr(claims.limits, k, v)
    for k, v in (jetstream or {}).items():
        setattr(claims.limits.jetstream, k, v)
    if add_signing_key:
        kp = KeyPair.generate("account")
        new_keys.append(kp)
        claims.signing_keys.append(kp.public_key)
    if add_role:
        if claims.scope_for_role(add_role) is not None:
            raise ExistsError(f"account {name} already has a signing key with role {add_role!r}")
        kp = KeyPair.generate("account")
        new_keys.append(kp)
        template = UserClaims(subject="", limits=UserPermissionLimits())
        if role_spec is not None:
            role_spec.apply(template)
        claims.signing_keys.append(ScopedSigningKey(kp.public_key, add_role, template.limits))
    if remove_signing_key:
        keep = [
            k
            for k in claims.signing_keys
            if (k if isinstance(k, str) else k.key) != remove_signing_key
            and (isinstance(k, str) or k.role != remove_signing_key)
        ]
        if len(keep) == len(claims.signing_keys):
            raise StoreError(f"account {name} has no signing key or role {remove_signing_key!r}")
        claims.signing_keys = keep
    return new_keys


def _changed_tags(
    current: list[str], tags: Optional[list[str]], add: Optional[list[str]], remove: Optional[list[str]]
) -> list[str]:
    """The tags after setting ``tags`` (when given), adding ``add`` and taking ``remove`` away (lower case, as
    the JWT library keeps them)."""
    base = current if tags is None else [t.strip().lower() for t in tags]
    drop = {t.strip().lower() for t in remove or []}
    return _dedupe([t for t in base if t not in drop] + [t.strip().lower() for t in add or []])


def edit_operator(
    store: Store,
    *,
    add_signing_key: bool = False,
    strict: Optional[bool] = None,
    service_urls: Optional[list[str]] = None,
    account_server_url: Optional[str] = None,
    system_account: Optional[str] = None,
    tags: Optional[list[str]] = None,
    add_tags: Optional[list[str]] = None,
    remove_tags: Optional[list[str]] = None,
    report: Optional[list[str]] = None,
    remove_signing_key: Optional[str] = None,
    force: bool = False,
) -> tuple[Entity[OperatorClaims], bool]:
    """Change the operator's signing keys, strict mode, service URLs, account server URL, system account or
    tags (``tags`` sets them, ``add_tags`` / ``remove_tags`` change them).  Every value is checked first
    (FieldError, nothing written): service URLs are ``nats://`` or ``tls://`` host:port.

    Turning strict signing key usage on migrates the store in the same unit of work
    (:func:`~dchat_ops.nsc.accounts.make_strict`): an operator signing key is added when the keystore holds
    none, accounts and users signed by identity keys are re-signed by signing keys.  What it did goes into
    ``report`` (lines for a person).  The store stays valid throughout.

    Removing a signing key that still signs accounts is refused (:class:`KeyInUseError`: ``dchat-ops rotate
    operator-key`` replaces it without breaking them), unless ``force``."""
    for i, u in enumerate(service_urls or []):
        check_service_url("service_urls", u, i)
    if account_server_url:
        check_account_server_url("account_server_url", account_server_url)
    check_tags("tags", list(tags or []) + list(add_tags or []))
    with store.transaction():
        was_strict = store.operator().claims.strict_signing_key_usage
        e, changed = _edit_operator(
            store,
            add_signing_key,
            strict,
            service_urls,
            account_server_url,
            system_account,
            tags,
            add_tags,
            remove_tags,
            report,
            remove_signing_key,
            force,
        )
        if strict and not was_strict:
            done = _accounts.make_strict(store)
            if report is not None:
                report.extend(done.messages())
            e = store.operator()
    return e, changed


def _edit_operator(
    store: Store,
    add_signing_key: bool,
    strict: Optional[bool],
    service_urls: Optional[list[str]],
    account_server_url: Optional[str],
    system_account: Optional[str],
    tags: Optional[list[str]],
    add_tags: Optional[list[str]],
    remove_tags: Optional[list[str]],
    report: Optional[list[str]],
    remove_signing_key: Optional[str] = None,
    force: bool = False,
) -> tuple[Entity[OperatorClaims], bool]:
    with store.edit_operator() as claims:
        before = claims.to_dict()
        new_key = None
        turning_strict = bool(strict) and not claims.strict_signing_key_usage
        if turning_strict:
            problems = _accounts.strict_problems(store, claims)
            if problems:
                raise StoreError("cannot turn on strict signing key usage: " + "; ".join(problems))
        if add_signing_key or (turning_strict and not any(store.has_key(k) for k in claims.signing_keys)):
            new_key = KeyPair.generate("operator")
            claims.signing_keys.append(new_key.public_key)
            if not add_signing_key and report is not None:
                report.append("added an operator signing key (its seed is in the keystore)")
        if remove_signing_key:
            check_operator_key_removal(store, remove_signing_key, force=force)
            claims.signing_keys = [k for k in claims.signing_keys if k != remove_signing_key]
        if strict is not None:
            claims.strict_signing_key_usage = strict
        if claims.strict_signing_key_usage and not claims.signing_keys:
            raise StoreError("a strict operator needs a signing key: none would be left (or turn --no-strict)")
        if service_urls is not None:
            claims.operator_service_urls = list(service_urls)
        if account_server_url is not None:
            claims.account_server_url = account_server_url
        if system_account is not None:
            sys_acc = store.find_account(system_account)
            js = sys_acc.claims.limits
            if js.jetstream.enabled() or js.tiers:
                raise FieldError(
                    "system_account",
                    f"account {sys_acc.name} has JetStream limits, which nats-server refuses on the system account: "
                    f"take them off first (dchat-ops edit account {sys_acc.name} --js-mem 0 --js-disk 0)",
                )
            claims.system_account = sys_acc.public_key
        claims.tags = _changed_tags(claims.tags, tags, add_tags, remove_tags)
        changed = claims.to_dict() != before
        if new_key is not None and changed:
            store.save_key(new_key)
    return store.operator(), changed


def generate_creds(store: Store, account: str, name: str) -> str:
    """The creds text of a user (a secret), checked against the chain; made from the keystore's seed."""
    op = store.operator()
    acc = store.account(account, op.name)
    user = store.user(account, name, op.name)
    verify_chain(op.claims, acc.claims, user.token, clock=store.clock)
    kp = store.load_key(user.claims.subject)
    return format_creds(user.token, kp.seed)


def now(store: Store) -> int:
    return int((store.clock or time.time)())
