"""Account claims beyond limits and keys: subject mappings, default permissions, JetStream tiers, role
templates, the info URL, and moving a store to strict signing key usage.

Each change is checked first with the rules nats-server and the JWT library apply (a refused value raises
:class:`~dchat_ops.errors.FieldError`, nothing is written) and made in the store's unit of work:

    >>> add_mapping(store, "chat", "orders.*", [Destination("shard.a.$1", 50), Destination("shard.b.$1", 50)])
    >>> edit_role(store, "chat", "reader", changes=UserChanges(remove=["chat.secret"]))
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

from dchat_ops.errors import FieldError, StoreError
from dchat_ops.nsc.claims import AccountClaims, JetStreamLimits, OperatorClaims, ScopedSigningKey, UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.limits import check_text, tier_problem
from dchat_ops.nsc.mappings import MAX_WEIGHT, check_cluster, check_mapping, check_weight
from dchat_ops.nsc.spec import UserChanges, UserSpec
from dchat_ops.nsc.store import Entity, Store, operator_signer
from dchat_ops.nsc.supersede import taken_away

__all__ = [
    "Destination",
    "RoleResult",
    "StrictResult",
    "add_mapping",
    "apply_default_permissions",
    "apply_js_tier",
    "check_info_url",
    "check_jetstream_layout",
    "check_js_tier",
    "edit_role",
    "make_strict",
    "remove_mapping",
    "role_users",
    "strict_problems",
]


# --- subject mappings -------------------------------------------------------------------------------------


@dataclass
class Destination:
    """Where a mapping sends a share of the messages: a subject, a weight in percent, and a cluster ('' for all)."""

    subject: str
    weight: int = MAX_WEIGHT
    cluster: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"subject": self.subject, "weight": self.weight}
        if self.cluster:
            d["cluster"] = self.cluster
        return d


def add_mapping(
    store: Store, account: str, source: str, destinations: list[Destination]
) -> tuple[Entity[AccountClaims], bool]:
    """Map ``source`` to ``destinations`` in an account: each replaces a destination of the same subject, the
    others of the mapping stay.  The whole mapping is checked (:func:`~dchat_ops.nsc.mappings.check_mapping`:
    weights per cluster at most 100) before anything is written.  Returns (account, changed)."""
    if not destinations:
        raise FieldError("mapping.to", "give at least one destination")
    for d in destinations:
        check_weight(d.weight)
        check_cluster(d.cluster)
    check_mapping(source, [d.to_dict() for d in destinations])
    with store.edit_account(account) as claims:
        before = claims.to_dict()
        new = {d.subject for d in destinations}
        current = [t for t in claims.mappings.get(source, []) if t.get("subject") not in new]
        merged = current + [d.to_dict() for d in destinations]
        check_mapping(source, merged)
        claims.mappings[source] = merged
        changed = claims.to_dict() != before
    return store.account(account), changed


def remove_mapping(
    store: Store, account: str, source: str, destination: Optional[str] = None
) -> tuple[Entity[AccountClaims], bool]:
    """Remove the mapping of ``source`` (or only its ``destination``); StoreError when there is none."""
    with store.edit_account(account) as claims:
        targets = claims.mappings.get(source)
        if targets is None:
            known = ", ".join(sorted(claims.mappings)) or "none"
            raise StoreError(f"account {account} has no mapping of {source!r} (mappings: {known})")
        if destination is None:
            del claims.mappings[source]
        else:
            keep = [t for t in targets if t.get("subject") != destination]
            if len(keep) == len(targets):
                raise StoreError(f"mapping {source!r} of account {account} has no destination {destination!r}")
            if keep:
                claims.mappings[source] = keep
            else:
                del claims.mappings[source]
    return store.account(account), True


# --- default permissions ---------------------------------------------------------------------------------


def apply_default_permissions(claims: AccountClaims, changes: UserChanges) -> None:
    """Add to or remove from the account's default permissions (what a user with no permissions of its own
    gets from the server); subjects are checked as a user's are."""
    holder = UserClaims()
    holder.limits.permissions = copy.deepcopy(claims.default_permissions)
    spec = UserChanges(
        allow_pub=changes.allow_pub,
        allow_sub=changes.allow_sub,
        deny_pub=changes.deny_pub,
        deny_sub=changes.deny_sub,
        remove=changes.remove,
    ).to_spec(holder)
    try:
        spec.apply(holder)
    except FieldError as exc:
        raise FieldError(f"default_{exc.field}", exc.reason, exc.index) from None
    claims.default_permissions = holder.limits.permissions


# --- JetStream tiers ---------------------------------------------------------------------------------------

_TIER = re.compile(r"R[1-5]\Z")


def check_js_tier(name: Any) -> str:
    """A JetStream tier name: ``R1`` to ``R5`` (nats-server looks tiers up by a stream's replica count)."""
    if not isinstance(name, str) or not _TIER.match(name):
        raise FieldError(
            "jetstream.tier", f"{str(name)[:40]!r} is not a tier: nats-server uses R1-R5 (the streams' replica count)"
        )
    return name


def apply_js_tier(claims: AccountClaims, tier: str, jetstream: dict[str, Any]) -> None:
    """Set JetStream limits of ``tier`` (made when missing); the keys are those of ``edit_account(jetstream=)``."""
    check_js_tier(tier)
    limits = claims.limits.tiers.setdefault(tier, JetStreamLimits())
    for k, v in jetstream.items():
        setattr(limits, k, v)


def check_jetstream_layout(name: str, claims: AccountClaims, *, tier_edit: bool = False) -> None:
    """FieldError when the account has both account-wide JetStream limits and tiers: the JWT library calls them
    mutually exclusive, and nats-server throws the account-wide ones away when tiers exist."""
    problem = tier_problem(claims.limits)
    if problem is None:
        return
    if tier_edit or not claims.limits.tiers:
        hint = (
            f"remove the account-wide limits first: 'dchat-ops edit account {name} --js-mem 0 --js-disk 0 "
            "--js-streams 0 --js-consumers 0' (and any per-stream one)"
        )
    else:
        tiers = ", ".join(sorted(claims.limits.tiers))
        hint = f"it has tiers ({tiers}): change one with --js-tier NAME, or remove them with --rm-js-tier NAME"
    raise FieldError("jetstream", f"account {name}: {problem.reason}; {hint}")


# --- info URL --------------------------------------------------------------------------------------------


def check_info_url(value: Any) -> str:
    """An account's info URL: '' (none) or an http(s) URL with a host, as the JWT library parses it."""
    text = check_text("info_url", value)
    if not text:
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise FieldError("info_url", f"{text[:80]!r} is not an http(s) URL with a host (like https://example.com/chat)")
    return text


# --- role templates ---------------------------------------------------------------------------------------


@dataclass
class RoleResult:
    entity: Entity[AccountClaims]
    role: str
    changed: bool
    taken_away: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # users issued by the role: what the new template governs

    def to_dict(self) -> dict[str, Any]:
        scope = self.entity.claims.scope_for_role(self.role)
        template: dict[str, Any] = {}
        if scope is not None:
            scope.template.write_upl(template)
        return {
            "account": self.entity.name,
            "role": self.role,
            "key": scope.key if scope is not None else "",
            "template": template,
            "changed": self.changed,
            "taken_away": list(self.taken_away),
            "users": list(self.users),
        }


def role_users(store: Store, account: str, scope: ScopedSigningKey) -> list[str]:
    """The users of ``account`` issued by the scoped key ``scope``."""
    out = []
    for name in store.user_names(account):
        try:
            if store.user(account, name).claims.issuer == scope.key:
                out.append(name)
        except StoreError:
            continue
    return out


def edit_role(
    store: Store,
    account: str,
    role: str,
    spec: Optional[UserSpec] = None,
    changes: Optional[UserChanges] = None,
) -> RoleResult:
    """Change the template of a scoped signing key: its users' permissions and limits.

    The users need no re-issue: the server applies the template of the account JWT it holds to every user
    the key signed (and closes their connections when the template changes, so they come back under it).
    ``spec`` sets fields (as ``edit user``), ``changes`` adds to or removes from its lists; expiry, start
    and tags belong to users, not templates (FieldError).
    """
    spec = spec or UserSpec()
    for k in ("expires", "not_before", "tags"):
        if getattr(spec, k) is not None:
            raise FieldError(k, "a role's template has no expiry, start or tags; set them on the users")
    from dchat_ops.nsc.admin import check_bearer_allowed  # admin uses this module

    with store.edit_account(account) as claims:
        scope = claims.scope_for_role(role)
        if scope is None:
            roles = sorted(k.role for k in claims.signing_keys if isinstance(k, ScopedSigningKey))
            raise StoreError(
                f"account {account} has no role {role!r}" + (f" (roles: {', '.join(roles)})" if roles else "")
            )
        holder = UserClaims(limits=copy.deepcopy(scope.template))
        before = holder.copy()
        full = changes.to_spec(holder, spec) if changes is not None else spec
        full.apply(holder)
        check_bearer_allowed(account, claims, holder.limits)
        scope.template = holder.limits
        changed = holder.to_dict() != before.to_dict()
        removed = taken_away(before, holder) if changed else []
        users = role_users(store, account, scope)
    return RoleResult(store.account(account), role, changed, removed, users)


# --- strict signing key usage --------------------------------------------------------------------------------


@dataclass
class StrictResult:
    """What moving to strict signing key usage re-signed."""

    accounts: list[str] = field(default_factory=list)  # re-signed by an operator signing key
    account_keys_added: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # account/user re-signed by an account signing key
    handover: list[str] = field(default_factory=list)  # account/user whose seed is elsewhere: the JWT must travel

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def messages(self) -> list[str]:
        out = []
        if self.account_keys_added:
            out.append(f"added an account signing key to {', '.join(self.account_keys_added)}")
        if self.accounts:
            out.append(f"re-signed account(s) {', '.join(self.accounts)} with the operator signing key")
        if self.users:
            out.append(f"re-signed {len(self.users)} user(s) with their account's signing key, creds rewritten")
        for u in self.handover:
            out.append(f"user {u}: its seed is not in this store; its holder needs the new JWT")
        return out


def strict_problems(store: Store, op: OperatorClaims) -> list[str]:
    """Why the store cannot move to strict signing key usage here (empty: it can)."""
    out = []
    if not store.has_key(op.subject):
        out.append(
            "the keystore does not hold the operator identity seed, which signs the operator JWT: "
            "run this where the operator's keys are"
        )
    return out


def make_strict(store: Store) -> StrictResult:
    """Re-sign what strict signing key usage no longer accepts, in the unit of work under way (or its own).

    Called once the operator JWT holds ``strict_signing_key_usage`` and a signing key the keystore holds.
    Every account signed by the operator identity key is re-signed by that signing key; an account with
    users signed by its identity key gets a plain signing key (when it holds none) that re-signs them, their
    creds rewritten.  A re-signed user that was revoked stays revoked (its revocation is moved up to the new
    JWT).  Users with scoped roles or signing keys were valid already.
    """
    result = StrictResult()
    with store.transaction():
        op = store.operator()
        signer = operator_signer(store, op.claims)
        for name in store.account_names(op.name):
            acc = store.account(name, op.name)
            claims = acc.claims.copy()
            identity_users = [
                u
                for u in store.user_names(name, op.name)
                if store.user(name, u, op.name).claims.issuer == acc.public_key
            ]
            account_signer = None
            if identity_users:
                for k, scope in claims.signing_key_map().items():
                    if scope is None and store.has_key(k):
                        account_signer = store.load_key(k)
                        break
                if account_signer is None:
                    account_signer = KeyPair.generate("account")
                    store.save_key(account_signer)
                    claims.signing_keys.append(account_signer.public_key)
                    result.account_keys_added.append(name)
            for u in identity_users:
                ent = store.user(name, u, op.name)
                uc = ent.claims.copy()
                was_revoked = claims.is_revoked(uc.subject, uc.issued_at)
                uc.issuer_account = acc.public_key
                assert account_signer is not None
                token = store.sign(uc, account_signer, replaces=ent.claims.issued_at)
                store.write_user(op.name, name, u, token)
                if was_revoked:  # the new JWT is newer than the revocation: keep it out too
                    new_iat = store.user(name, u, op.name).claims.issued_at
                    claims.revocations[uc.subject] = max(claims.revocations.get(uc.subject, 0), new_iat)
                if store.has_key(uc.subject):
                    store.write_creds(
                        op.name, name, u, format_creds(token, store.load_key(uc.subject).seed), force=True
                    )
                    result.users.append(f"{name}/{u}")
                else:
                    result.handover.append(f"{name}/{u}")
            if acc.claims.issuer not in op.claims.signing_keys or claims.to_dict() != acc.claims.to_dict():
                store.write_account(op.name, name, store.sign(claims, signer, replaces=acc.claims.issued_at))
                if acc.claims.issuer not in op.claims.signing_keys:
                    result.accounts.append(name)
    return result
