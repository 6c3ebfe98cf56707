"""Looking at a store: describe an entity or a JWT / creds file, list the tree, validate everything.

>>> describe_token(open("alice.jwt").read())["kind"]
'user'
>>> [f.message for f in validate_store(store) if f.level == "error"]
[]
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dchat_ops._decode import read_text
from dchat_ops._fs import JOURNAL_NAME, find_temps, process_gone, read_file
from dchat_ops._time import iso_time
from dchat_ops.errors import (
    ChainError,
    CredsError,
    DchatOpsError,
    FieldError,
    JWTError,
    StoreError,
    cut,
    scrub_seeds,
)
from dchat_ops.nsc.claims import (
    ACCOUNT_LIMIT_KEYS,
    AccountClaims,
    Claims,
    OperatorClaims,
    ScopedSigningKey,
    UserClaims,
    UserPermissionLimits,
)
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.jwt import Clock, compute_jti, decode, decode_unverified, verify_chain
from dchat_ops.nsc.limits import Problem, account_problems, operator_problems, user_problems
from dchat_ops.nsc.store import Entity, Store, check_name

__all__ = [
    "Finding",
    "describe_claims",
    "describe_file",
    "describe_token",
    "effective_limits",
    "expirations",
    "leftovers",
    "list_operators",
    "list_store",
    "validate_store",
    "validity",
]

EXPIRY_WARNING_S = 7 * 24 * 3600
_T = TypeVar("_T")


def _iso(t: int) -> str:
    return iso_time(t) if t else ""


def effective_limits(account: AccountClaims, user: UserClaims) -> tuple[str, UserPermissionLimits]:
    """What the server applies to ``user``: the template of the scoped signing key that issued it (its role
    name, and the template), or its own permissions and limits ("" and the user's)."""
    for sk in account.signing_keys:
        if isinstance(sk, ScopedSigningKey) and sk.key == user.issuer:
            return sk.role, sk.template
    return "", user.limits


def validity(c: Claims, now: int | None = None) -> str:
    """ "valid", "expired" or "not yet valid" (its ``nbf`` is ahead) at ``now`` (default: the clock)."""
    now = int(time.time()) if now is None else now
    if c.expires and c.expires <= now:
        return "expired"
    if c.not_before and c.not_before > now:
        return "not yet valid"
    return "valid"


def describe_claims(c: Claims, token: str = "", *, now: int | None = None) -> dict[str, Any]:
    """A JSON-ready description: kind, name, keys, times, whether it is valid now, and the full claims."""
    d: dict[str, Any] = {
        "kind": c.TYPE,
        "name": c.name,
        "public_key": c.subject,
        "issuer": c.issuer,
        "jti": c.jti,
        "issued_at": _iso(c.issued_at),
        "expires": _iso(c.expires),
        "not_before": _iso(c.not_before),
        "validity": validity(c, now),
        "claims": c.to_dict(),
    }
    if token:
        d["jti_matches"] = compute_jti(c) == c.jti
    if isinstance(c, UserClaims):
        d["issuer_account"] = c.issuer_account
    if isinstance(c, AccountClaims):
        d["signing_keys"] = [k if isinstance(k, str) else {"key": k.key, "role": k.role} for k in c.signing_keys]
        d["jetstream"] = c.limits.jetstream.enabled() or bool(c.limits.tiers)
    if isinstance(c, OperatorClaims):
        d["system_account"] = c.system_account
        d["strict_signing_key_usage"] = c.strict_signing_key_usage
    return d


def describe_token(token: str) -> dict[str, Any]:
    """Describe a JWT after verifying its signature (JWTError when it does not verify)."""
    return describe_claims(decode(token), token)


def describe_file(path: Path) -> dict[str, Any]:
    """Describe a ``.jwt`` or ``.creds`` file.  The seed of a creds file is never shown."""
    path = Path(path)
    try:
        if path.exists() and (not path.is_file() or path.stat().st_size > 1 << 20):
            raise StoreError(f"{cut(str(path))} is not a JWT or creds file")
        text = read_text(path, StoreError)
    except FileNotFoundError:
        raise StoreError(f"no such file: {cut(str(path))}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {cut(str(path))}: {exc.strerror}") from None
    if "-----BEGIN" in text:
        creds = parse_creds(text)
        d = describe_token(creds.jwt)
        kp = creds.keypair()
        d["creds"] = {"seed_matches_jwt": kp.public_key == d["public_key"]}
        if kp.public_key != d["public_key"]:
            raise CredsError(f"{path}: the seed in the creds file does not belong to the JWT's user")
        return d
    return describe_token(text.strip())


def list_store(store: Store, *, workers: int | None = None) -> dict[str, Any]:
    """The operator, its accounts and their users, as a tree of names and public keys.

    Each user's JWT is read and its signature verified (a user whose JWT does not verify is listed
    with its error); many users are spread over processes (``workers``, one per core by default).
    """
    op = store.operator()
    system_account = op.claims.system_account
    accounts: list[dict[str, Any]] = []
    out: dict[str, Any] = {"operator": {"name": op.name, "public_key": op.public_key}, "accounts": accounts}
    for acc in store.accounts(op.name):
        names = store.user_names(acc.name, op.name)
        accounts.append(
            {
                "name": acc.name,
                "public_key": acc.public_key,
                "system": acc.public_key == system_account,
                "users": _per_user(_list_users, _Job(store, op.name, acc, names), workers),
            }
        )
    return out


def list_keys(store: Store, *, users: bool = True) -> dict[str, Any]:
    """The keys of the current operator, its accounts (and their users): for each, what it is (identity
    or signing key, a scoped key's role), its public key, and whether this home's keystore holds its seed
    (``seed``: True/False; a seed's value is never shown)."""
    op = store.operator()
    rows: list[dict[str, Any]] = []

    def row(kind: str, owner: str, key: str, role: str = "") -> None:
        rows.append({"kind": kind, "owner": owner, "role": role, "public_key": key, "seed": store.has_key(key)})

    row("operator", op.name, op.public_key)
    for k in op.claims.signing_keys:
        row("operator signing key", op.name, k)
    for acc in store.accounts(op.name):
        row("account", acc.name, acc.public_key)
        for k, scope in acc.claims.signing_key_map().items():
            row("account signing key", acc.name, k, scope.role if scope is not None else "")
        if users:
            for name in store.user_names(acc.name, op.name):
                try:
                    row("user", f"{acc.name}/{name}", store.user(acc.name, name, op.name).public_key)
                except DchatOpsError as exc:
                    rows.append({"kind": "user", "owner": f"{acc.name}/{name}", "error": str(exc)})
    return {"operator": op.name, "keys": rows}


def list_operators(store: Store) -> dict[str, Any]:
    """The operators of the home: name, public key, number of accounts, and which one is current (the
    Store's chosen operator, else the context's, else the only one; None when several and none chosen)."""
    store.require()
    try:
        current: str | None = store.current_operator()
    except FieldError:  # a chosen operator the home does not hold
        raise
    except StoreError:  # several, none chosen
        current = None
    rows = []
    for name in store.operator_names():
        row: dict[str, Any] = {"name": name, "public_key": None, "accounts": len(store.account_names(name))}
        try:
            row["public_key"] = store.operator(name).public_key
        except StoreError as exc:  # a damaged JWT: listed with its error ('validate' says more)
            row["error"] = str(exc)
        row["current"] = name == current
        rows.append(row)
    return {"current": current, "operators": rows}


def expirations(
    store: Store, within: int, *, clock: Clock | None = None, workers: int | None = None
) -> list[dict[str, Any]]:
    """The operator, accounts and users whose JWT expires within ``within`` seconds from now, or has
    expired, or is not valid yet: one row each (``kind``, ``name``, ``account``, ``expires``,
    ``not_before``, ``state``: "expired", "expires" or "not yet valid"), soonest first.  JWTs without
    an expiry never show."""
    now = int((clock or time.time)())
    op = store.operator()
    rows: list[dict[str, Any]] = []
    _expiry_row(rows, "operator", op.name, "", op.claims, now, within)
    for acc in store.accounts(op.name):
        _expiry_row(rows, "account", acc.name, "", acc.claims, now, within)
        names = store.user_names(acc.name, op.name)
        job = _Job(store, op.name, acc, names, now=now)
        for row in _per_user(_user_expiries, job, workers):
            if row["state"] != "expires" or row["expires"] - now <= within:
                rows.append(row)
    return sorted(rows, key=lambda r: (r["expires"] or r["not_before"], r["kind"], r["account"], r["name"]))


def _expiry_row(
    rows: list[dict[str, Any]], kind: str, name: str, account: str, c: Claims, now: int, within: int
) -> None:
    row = _expiry_of(kind, name, account, c, now)
    if row is not None and (row["state"] != "expires" or row["expires"] - now <= within):
        rows.append(row)


def _expiry_of(kind: str, name: str, account: str, c: Claims, now: int) -> dict[str, Any] | None:
    if c.not_before and c.not_before > now:
        state = "not yet valid"
    elif c.expires and c.expires <= now:
        state = "expired"
    elif c.expires:
        state = "expires"
    else:
        return None
    return {
        "kind": kind,
        "name": name,
        "account": account,
        "expires": c.expires or 0,
        "expires_at": _iso(c.expires or 0),
        "not_before": c.not_before or 0,
        "not_before_at": _iso(c.not_before or 0),
        "state": state,
    }


def _user_expiries(job: _Job, start: int, end: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    folder = os.fspath(job.store.user_jwt_path(job.op_name, job.acc.name, "x").parent)
    for u in job.names[start:end]:
        try:
            row = _expiry_of("user", u, job.acc.name, _read_user(folder, u), job.now)
        except StoreError:
            continue  # validate reports a JWT that does not read
        if row is not None:
            out.append(row)
    return out


@dataclass
class _Job:
    """What a pass over an account's users needs: given to forked processes as they start (not pickled)."""

    store: Store
    op_name: str
    acc: Entity[AccountClaims]
    names: list[str]
    opc: OperatorClaims | None = None
    clock: Clock | None = None
    now: int = 0


# Below this many users a pass runs in the calling process; above, in one process per core.
PARALLEL_USERS = 4000
_JOB: _Job | None = None  # the job of a pool's processes (set before they are forked)


def _per_user(fn: Callable[[_Job, int, int], list[_T]], job: _Job, workers: int | None) -> list[_T]:
    """``fn(job, start, end)`` over the users ``job.names[start:end]``, in order: spread over forked
    processes when there are many."""
    global _JOB
    n = len(job.names)
    workers = workers or (os.cpu_count() or 1)
    if workers <= 1 or n < PARALLEL_USERS:
        return fn(job, 0, n)
    import multiprocessing  # here: a small store's list or validate starts without it
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        return fn(job, 0, n)

    size = -(-n // (workers * 16))
    bounds = [(i, min(i + size, n)) for i in range(0, n, size)]
    _JOB = job
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = pool.map(_run_part, [fn] * len(bounds), bounds)
            return [row for part in parts for row in part]
    finally:
        _JOB = None


def _run_part(fn: Callable[[_Job, int, int], list[_T]], bounds: tuple[int, int]) -> list[_T]:
    assert _JOB is not None
    return fn(_JOB, *bounds)


def _list_users(job: _Job, start: int, end: int) -> list[dict[str, str]]:
    store, op_name, acc = job.store, job.op_name, job.acc
    users: list[dict[str, str]] = []
    folder = ""
    for u in job.names[start:end]:
        try:
            folder = folder or os.fspath(store.user_jwt_path(op_name, acc.name, u).parent)
            users.append({"name": u, "public_key": _read_user(folder, u).subject})
        except StoreError as exc:
            users.append({"name": scrub_seeds(u), "error": str(exc)})
    return users


def _read_user(folder: str, name: str) -> UserClaims:
    """A user's JWT, read and verified (as :meth:`Store.user` does, without its checks of the account and
    its cache); StoreError says what is wrong."""
    path = f"{folder}/{check_name(name, 'user name')}.jwt"
    try:
        token = read_file(path)[0].decode("utf-8", "replace").strip()
    except FileNotFoundError:
        raise StoreError(f"no user named {name!r} in the store") from None
    try:
        return decode(token, UserClaims)
    except JWTError as exc:
        raise StoreError(f"{path}: {exc}") from None


@dataclass
class Finding:
    level: str  # "error" or "warning"
    entity: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def validate_store(store: Store, clock: Clock | None = None, *, workers: int | None = None) -> list[Finding]:
    """Check every signature, chain link, expiry, key and creds file of the current operator, and what a
    killed command leaves (:func:`leftovers`).  Each finding that can be repaired names the command.

    Many users are checked in several processes (``workers``, one per core by default).
    """
    clock = clock or store.clock
    now = int((clock or time.time)())
    out: list[Finding] = leftovers(store)
    try:
        op = store.operator()
        opc = op.claims
    except DchatOpsError as exc:
        return [Finding("error", "operator", str(exc))]
    label = f"operator {op.name}"
    try:
        verify_chain(op.token, clock=clock)
    except ChainError as exc:
        out.append(Finding("error", label, str(exc)))
    if opc.expires and opc.expires <= now:
        out.append(Finding("warning", label, "operator JWT has expired (nats-server does not enforce this)"))
    if not store.has_key(opc.subject):
        out.append(Finding("warning", label, "the keystore does not hold the operator identity seed"))
    if not opc.system_account:
        out.append(Finding("error", label, "no system account set"))
    out.extend(_rule_findings(label, operator_problems(opc), _operator_fix))
    account_keys: dict[str, str] = {}
    for name in store.account_names(op.name):
        alabel = f"account {name}"
        try:
            acc = store.account(name, op.name)
            accc = acc.claims
        except StoreError as exc:
            out.append(Finding("error", alabel, str(exc)))
            continue
        account_keys[acc.public_key] = name
        if accc.name != name:
            out.append(Finding("warning", alabel, f"JWT name is {accc.name!r}, folder is {name!r}"))
        try:
            verify_chain(opc, acc.token, clock=clock)
        except ChainError as exc:
            out.append(Finding("error", alabel, str(exc)))
        _expiry_warning(out, alabel, accc, now)
        if not store.has_key(acc.public_key):
            out.append(Finding("warning", alabel, "the keystore does not hold the account seed"))
        out.extend(_rule_findings(alabel, account_problems(accc), functools.partial(_account_fix, name)))
        from dchat_ops.nsc.exports import exchange_problems  # (only validate needs it: not at every start)

        out.extend(Finding(level, alabel, message) for level, message in exchange_problems(store, acc, now))
        if acc.public_key == opc.system_account and accc.limits.jetstream.enabled():
            out.append(Finding("error", alabel, "the system account must not have JetStream limits"))
        job = _Job(store, op.name, acc, store.user_names(name, op.name), opc, clock, now)
        out.extend(_per_user(_validate_users, job, workers))
    if opc.system_account and opc.system_account not in account_keys:
        out.append(Finding("error", label, f"system account {opc.system_account} is not in the store"))
    return out


def leftovers(store: Store) -> list[Finding]:
    """What a killed command leaves: the journal of an unfinished change, and temporary files of
    processes that are gone.  Both are cleared by the next command that changes the store."""
    out = []
    home = store.home
    if (home / JOURNAL_NAME).exists():
        out.append(
            Finding(
                "error",
                "store",
                f"a change was interrupted and not rolled back yet ({home / JOURNAL_NAME}); "
                "run 'dchat-ops recover' to roll it back, then run that command again",
            )
        )
    temps = sorted(str(p.relative_to(home)) for p, pid in find_temps(home) if process_gone(pid))
    for rel in temps[:20]:
        out.append(
            Finding("error", "store", f"temporary file {rel} of a process that is gone; run 'dchat-ops recover'")
        )
    if len(temps) > 20:
        out.append(Finding("error", "store", f"{len(temps) - 20} more such temporary files"))
    return out


_JS_OPTIONS = {"jetstream.mem": "--js-mem", "jetstream.disk": "--js-disk", "jetstream.streams": "--js-streams"}
_JS_OPTIONS["jetstream.consumers"] = "--js-consumers"
_USER_OPTIONS = {"subs": "--subs N", "data": "--data N", "payload": "--payload N", "resp_max": "--resp-max N"}
_USER_OPTIONS["resp_ttl"] = "--resp-ttl 5s"


def _user_fix(field: str, edit: str) -> str:
    """The repair of a user (or role template) field that breaks the rules of :mod:`dchat_ops.nsc.limits`."""
    if field in _USER_OPTIONS:
        return f"run '{edit} {_USER_OPTIONS[field]}'"
    if field == "source_networks":
        return f"run '{edit} --rm-source-network NET --source-network CIDR'"
    return f"run '{edit} --rm-tag TAG'"


def _account_fix(name: str, field: str) -> str:
    edit = f"dchat-ops edit account {name}"
    if field in ACCOUNT_LIMIT_KEYS:
        return f"run '{edit} --{field} N'"
    if field in _JS_OPTIONS:
        return f"run '{edit} {_JS_OPTIONS[field]} N'"
    if field.startswith("role "):
        role, _, sub = field[5:].partition(": ")
        return _user_fix(sub, f"dchat-ops edit role {name} {role}")
    if field == "description":
        return f"run '{edit} --description TEXT'"
    if field == "tags":
        return f"run '{edit} --rm-tag TAG'"
    if field.startswith("mapping."):
        return f"run 'dchat-ops rm mapping --account {name} --from SUBJECT' and add it again"
    if field in ("jetstream", "jetstream.tiers"):
        return f"run '{edit} --js-mem 0 --js-disk 0' (account-wide) or '{edit} --rm-js-tier NAME'"
    return "re-sign the account where it was made"


def _operator_fix(field: str) -> str:
    if field == "service_urls":
        return "run 'dchat-ops edit operator --service-url nats://HOST:PORT'"
    if field == "account_server_url":
        return "run 'dchat-ops edit operator --account-server-url URL'"
    return "run 'dchat-ops edit operator --rm-tag TAG'"


def _rule_findings(label: str, problems: list[Problem], fix: Callable[[str], str]) -> list[Finding]:
    """Findings for values that break the table of field limits, each naming its repair."""
    out = []
    for level, exc in problems:
        why = "the server refuses this JWT" if level == "error" else "the tool would not write this"
        out.append(Finding(level, label, f"{exc}; {why}; {fix(exc.field)}"))
    return out


def _expiry_warning(out: list[Finding], label: str, c: Claims, now: int) -> None:
    if c.expires and now < c.expires <= now + EXPIRY_WARNING_S:
        out.append(Finding("warning", label, f"expires soon ({_iso(c.expires)})"))


def _validate_users(job: _Job, start: int, end: int) -> list[Finding]:
    assert job.opc is not None
    out: list[Finding] = []
    folders: tuple[str, str] | None = None
    for uname in job.names[start:end]:
        try:
            if folders is None:
                jwt_path = job.store.user_jwt_path(job.op_name, job.acc.name, uname)
                folders = (
                    os.fspath(jwt_path.parent),
                    os.fspath(job.store.creds_path(job.op_name, job.acc.name, uname).parent),
                )
            out.extend(_validate_user(job.store, folders, job.opc, job.acc, uname, job.clock, job.now))
        except StoreError as exc:  # a file name the store refuses (a seed as a name): say so, never show it
            out.append(Finding("error", scrub_seeds(f"user {job.acc.name}/{uname}"), str(exc)))
    return out


def _validate_user(
    store: Store,
    folders: tuple[str, str],
    opc: OperatorClaims,
    acc: Entity[AccountClaims],
    uname: str,
    clock: Clock | None,
    now: int,
) -> list[Finding]:
    out: list[Finding] = []
    ulabel = f"user {acc.name}/{uname}"
    check_name(uname, "user name")
    try:
        token = read_file(f"{folders[0]}/{uname}.jwt")[0].decode("utf-8", "replace").strip()
    except OSError as exc:
        return [Finding("error", ulabel, f"cannot read its JWT: {exc.strerror}")]
    u: Claims
    try:
        res = verify_chain(opc, acc.claims, token, clock=clock)
    except ChainError as exc:
        # revoked, expired or not valid yet is a state the operator chose or let happen, not damage: a warning
        state = exc.reason in ("revoked", "expired", "not-yet-valid")
        out.append(Finding("warning" if state else "error", ulabel, str(exc)))
        try:
            u = decode_unverified(token)
        except JWTError:
            return out
    else:
        if res.user is None:  # not reached: the chain was given a user
            return out
        u = res.user
    _expiry_warning(out, ulabel, u, now)
    if isinstance(u, UserClaims):
        edit = f"dchat-ops edit user {uname} -a {acc.name}"
        out.extend(_rule_findings(ulabel, user_problems(u), lambda f: _user_fix(f, edit)))
    repair = f"run 'dchat-ops generate creds -a {acc.name} -u {uname}'"
    try:
        text, mode = read_file(f"{folders[1]}/{uname}.creds")
    except FileNotFoundError:
        if not store.has_key(u.subject):
            out.append(Finding("warning", ulabel, "neither a creds file nor the user seed is held"))
        else:
            out.append(Finding("error", ulabel, f"no creds file, though its seed is held; {repair}"))
        return out
    except OSError as exc:
        out.append(Finding("error", ulabel, f"cannot read its creds file: {exc.strerror}"))
        return out
    try:
        creds = parse_creds(text)
        if creds.jwt != token:
            out.append(Finding("error", ulabel, f"creds file holds another JWT than the store; {repair}"))
        if creds.keypair().public_key != u.subject:
            out.append(Finding("error", ulabel, "creds file seed does not belong to the user"))
    except CredsError as exc:
        out.append(Finding("error", ulabel, f"creds file: {exc}"))
    if mode & 0o077:
        out.append(Finding("error", ulabel, f"creds file is readable by others (mode {mode:o})"))
    return out
