"""Looking at a store: describe an entity or a JWT / creds file, list the tree, validate everything.

>>> describe_token(open("alice.jwt").read())["kind"]
'user'
>>> [f.message for f in validate_store(store) if f.level == "error"]
[]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dchat_ops.errors import ChainError, CredsError, DchatOpsError, FieldError, JWTError, StoreError, scrub_seeds
from dchat_ops.nsc.claims import (
    ACCOUNT_LIMIT_KEYS,
    JETSTREAM_LIMIT_KEYS,
    AccountClaims,
    Claims,
    OperatorClaims,
    UserClaims,
    jetstream_field,
)
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.jwt import Clock, compute_jti, decode, decode_unverified, verify_chain
from dchat_ops.nsc.spec import check_limit
from dchat_ops.nsc.store import Entity, Store

__all__ = ["Finding", "describe_claims", "describe_file", "describe_token", "list_store", "validate_store"]

EXPIRY_WARNING_S = 7 * 24 * 3600


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else ""


def describe_claims(c: Claims, token: str = "") -> dict[str, Any]:
    """A JSON-ready description: kind, name, keys, times and the full claims."""
    d: dict[str, Any] = {
        "kind": c.TYPE,
        "name": c.name,
        "public_key": c.subject,
        "issuer": c.issuer,
        "jti": c.jti,
        "issued_at": _iso(c.issued_at),
        "expires": _iso(c.expires),
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
    if path.exists() and (not path.is_file() or path.stat().st_size > 1 << 20):
        raise StoreError(f"{path} is not a JWT or creds file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StoreError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if "-----BEGIN" in text:
        creds = parse_creds(text)
        d = describe_token(creds.jwt)
        kp = creds.keypair()
        d["creds"] = {"seed_matches_jwt": kp.public_key == d["public_key"]}
        if kp.public_key != d["public_key"]:
            raise CredsError(f"{path}: the seed in the creds file does not belong to the JWT's user")
        return d
    return describe_token(text.strip())


def list_store(store: Store) -> dict[str, Any]:
    """The operator, its accounts and their users, as a tree of names and public keys."""
    op = store.operator()
    system_account = op.claims.system_account
    accounts: list[dict[str, Any]] = []
    out: dict[str, Any] = {"operator": {"name": op.name, "public_key": op.public_key}, "accounts": accounts}
    for acc in store.accounts(op.name):
        users: list[dict[str, str]] = []
        for u in store.user_names(acc.name, op.name):
            try:
                ue = store.user(acc.name, u, op.name)
                users.append({"name": u, "public_key": ue.public_key})
            except StoreError as exc:
                users.append({"name": scrub_seeds(u), "error": str(exc)})
        accounts.append(
            {
                "name": acc.name,
                "public_key": acc.public_key,
                "system": acc.public_key == system_account,
                "users": users,
            }
        )
    return out


@dataclass
class Finding:
    level: str  # "error" or "warning"
    entity: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def validate_store(store: Store, clock: Clock | None = None) -> list[Finding]:
    """Check every signature, chain link, expiry, key and creds file of the current operator."""
    clock = clock or store.clock
    now = int((clock or time.time)())
    out: list[Finding] = []
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
        out.extend(Finding("error", alabel, m) for m in _limit_problems(accc))
        if acc.public_key == opc.system_account and accc.limits.jetstream.enabled():
            out.append(Finding("error", alabel, "the system account must not have JetStream limits"))
        for uname in store.user_names(name, op.name):
            try:
                out.extend(_validate_user(store, op.name, opc, acc, accc, uname, clock, now))
            except StoreError as exc:  # a file name the store refuses (a seed as a name): say so, never show it
                out.append(Finding("error", scrub_seeds(f"user {name}/{uname}"), str(exc)))
    if opc.system_account and opc.system_account not in account_keys:
        out.append(Finding("error", label, f"system account {opc.system_account} is not in the store"))
    return out


def _limit_problems(c: AccountClaims) -> list[str]:
    """Limits the server would refuse the account for (beyond int64 or below -1), checked as edits are."""
    lim = c.limits
    values: list[tuple[str, Any]] = [(k, getattr(lim, k)) for k in ACCOUNT_LIMIT_KEYS]
    for tier, js in [("", lim.jetstream), *sorted(lim.tiers.items())]:
        values += [(jetstream_field(f"{tier}.{k}" if tier else k), getattr(js, k)) for k in JETSTREAM_LIMIT_KEYS]
    out = []
    for name, value in values:
        try:
            check_limit(name, value)
        except FieldError as exc:
            out.append(f"limit {exc}: the server refuses this account JWT")
    return out


def _expiry_warning(out: list[Finding], label: str, c: Claims, now: int) -> None:
    if c.expires and now < c.expires <= now + EXPIRY_WARNING_S:
        out.append(Finding("warning", label, f"expires soon ({_iso(c.expires)})"))


def _validate_user(
    store: Store,
    op_name: str,
    opc: OperatorClaims,
    acc: Entity[AccountClaims],
    accc: AccountClaims,
    uname: str,
    clock: Clock | None,
    now: int,
) -> list[Finding]:
    out: list[Finding] = []
    ulabel = f"user {acc.name}/{uname}"
    path = store.user_jwt_path(op_name, acc.name, uname)
    token = path.read_text().strip()
    u: Claims
    try:
        res = verify_chain(opc, accc, token, clock=clock)
    except ChainError as exc:
        # revoked or expired is a state the operator chose or let happen, not damage: a warning
        out.append(Finding("warning" if exc.reason in ("revoked", "expired") else "error", ulabel, str(exc)))
        try:
            u = decode_unverified(token)
        except JWTError:
            return out
    else:
        if res.user is None:  # not reached: the chain was given a user
            return out
        u = res.user
    _expiry_warning(out, ulabel, u, now)
    creds_path = store.creds_path(op_name, acc.name, uname)
    if creds_path.exists():
        try:
            creds = parse_creds(creds_path.read_text())
            if creds.jwt != token:
                out.append(
                    Finding(
                        "warning", ulabel, "creds file holds another JWT than the store; run 'dchat-ops generate creds'"
                    )
                )
            if creds.keypair().public_key != u.subject:
                out.append(Finding("error", ulabel, "creds file seed does not belong to the user"))
        except CredsError as exc:
            out.append(Finding("error", ulabel, f"creds file: {exc}"))
        mode = creds_path.stat().st_mode & 0o777
        if mode & 0o077:
            out.append(Finding("error", ulabel, f"creds file is readable by others (mode {mode:o})"))
    elif not store.has_key(u.subject):
        out.append(Finding("warning", ulabel, "neither a creds file nor the user seed is held"))
    return out
