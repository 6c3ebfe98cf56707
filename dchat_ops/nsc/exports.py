"""Exports, imports and activation tokens between the accounts of a store (nsc's ``add export``,
``add import``, ``generate activation``, ``revoke activation``).

    >>> add_export(store, "chat", "feed.>")                                   # a public stream
    >>> add_export(store, "chat", "help.ask", service=True, private=True)     # needs an activation token
    >>> token = generate_activation(store, "chat", "help.ask", "ops")        # the exporter signs it
    >>> add_import(store, "ops", "chat", "help.ask", service=True, token=token)   # verified first

The rules of an export and an import are the ones nats-server applies to an account JWT (nats-io/jwt
``Export.Validate`` / ``Import.Validate``): this module is the one place for them.  Provisioning specs
take their export and import fields from :data:`EXPORT_FIELDS` / :data:`IMPORT_FIELDS` and are checked by
:func:`check_exports` / :func:`check_imports` too.  A refused value raises :class:`FieldError` naming the
field the way a spec spells it; nothing is written.  Every change is one unit of work on the account
(:meth:`Store.edit_account`): the account is re-signed by the operator's signer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

from dchat_ops._time import MAX_TIME, format_time, parse_duration
from dchat_ops.errors import DchatOpsError, FieldError, JWTError
from dchat_ops.nsc.claims import AccountClaims, ActivationClaims, Export, Import
from dchat_ops.nsc.jwt import decode
from dchat_ops.nsc.keys import is_public_key
from dchat_ops.nsc.limits import check_duration, check_duration_ns, check_text
from dchat_ops.nsc.store import Entity, Store, user_signer
from dchat_ops.subjects import check_subject, covers

__all__ = [
    "EXPORT_FIELDS",
    "EXPORT_TYPES",
    "IMPORT_FIELDS",
    "LATENCY_FIELDS",
    "RESPONSE_TYPES",
    "Activation",
    "add_export",
    "add_import",
    "check_export",
    "check_exports",
    "check_import",
    "check_imports",
    "exchange_problems",
    "export_from_fields",
    "find_export",
    "generate_activation",
    "latency_fields",
    "remove_export",
    "remove_import",
    "revoke_activation",
    "service_latency",
    "sign_activation",
    "verify_activation",
]

EXPORT_TYPES = ("stream", "service")
RESPONSE_TYPES = ("Singleton", "Stream", "Chunked")
LATENCY_HEADERS = "headers"  # service latency sampled by the requester's headers, not by a percentage

# The optional fields of an export and of an import (spec name = claim attribute) and their kinds: the
# shape of each as a spec writes it.  Every value is then checked by check_export / check_import.
EXPORT_FIELDS = {
    "name": "str",
    "token_req": "bool",
    "advertise": "bool",
    "allow_trace": "bool",
    "response_type": "response_type",
    "response_threshold": "duration",
    "account_token_position": "count",
    "description": "str",
    "info_url": "str",
}
# service latency tracking (Export.service_latency {"sampling", "results"}) as a spec and the CLI write it
LATENCY_FIELDS = {"latency_subject": "subject", "latency_sampling": "sampling"}
# ``token``: the activation JWT of an import of a private export (checked by verify_activation)
IMPORT_FIELDS = {"name": "str", "local_subject": "subject", "share": "bool", "allow_trace": "bool", "token": "token"}


# --- the rules -------------------------------------------------------------------------------------------


def _subject(name: str, value: Any, *, wildcards_ok: bool = True, index: Optional[int] = None) -> str:
    if not isinstance(value, str):
        raise FieldError(name, f"must be a subject, not {value!r}", index)
    try:
        return check_subject(value, wildcards_ok=wildcards_ok)
    except DchatOpsError as exc:
        raise FieldError(name, str(exc), index) from None


def _wildcards(subject: str) -> int:
    return sum(1 for t in subject.split(".") if t == "*")


def _ends_open(subject: str) -> bool:
    return subject == ">" or subject.endswith(".>")


def check_export(x: Export, index: Optional[int] = None) -> Export:
    """FieldError for what nats-server refuses in one export (its subject, type, response type and
    threshold, latency tracking, account token position, texts, revocations)."""
    _subject("subject", x.subject, index=index)
    if x.type not in EXPORT_TYPES:
        raise FieldError("type", f"must be 'stream' or 'service', not {x.type!r}", index)
    service = x.type == "service"
    if x.response_type:
        if not service:
            raise FieldError("response_type", "only a service has a response type", index)
        if x.response_type not in RESPONSE_TYPES:
            raise FieldError("response_type", f"must be one of {', '.join(RESPONSE_TYPES)}, not {x.response_type!r}")
    check_duration_ns("response_threshold", x.response_threshold)
    if x.response_threshold and not service:
        raise FieldError("response_threshold", "only a service has a response threshold", index)
    if x.service_latency is not None:
        if not service:
            raise FieldError("latency", "only a service's latency can be tracked", index)
        lat = x.service_latency
        if not isinstance(lat, dict):
            raise FieldError("latency", "must be an object with sampling and results", index)
        sampling = lat.get("sampling")
        if sampling != LATENCY_HEADERS and (
            isinstance(sampling, bool) or not isinstance(sampling, int) or not 1 <= sampling <= 100
        ):
            raise FieldError("latency_sampling", f"must be a percentage 1 to 100 or 'headers', not {sampling!r}")
        _subject("latency_subject", lat.get("results"), wildcards_ok=False, index=index)
    pos = x.account_token_position
    if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
        raise FieldError("account_token_position", f"must be 0 or more, not {pos!r}", index)
    if pos:
        tokens = x.subject.split(".")
        if pos > len(tokens):
            raise FieldError("account_token_position", f"{pos} is past the last token of {x.subject!r}", index)
        if tokens[pos - 1] != "*":
            raise FieldError("account_token_position", f"token {pos} of {x.subject!r} must be a '*'", index)
    for k in ("name", "description", "info_url"):
        check_text(k, getattr(x, k), index=index)
    for key, t in x.revocations.items():
        if key != "*" and not is_public_key(key, "account"):
            raise FieldError("revocations", f"{key!r} is not an account's public key (nor '*')", index)
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TIME:
            raise FieldError("revocations", f"time of {key} must be a Unix time, not {t!r}", index)
    return x


def check_exports(exports: list[Export]) -> None:
    """Every export (:func:`check_export`), and no two of a kind where one holds the other's subject
    (nats-server refuses the account then: "already exports")."""
    for i, x in enumerate(exports):
        check_export(x, i)
    for i, x in enumerate(exports):
        for j, y in enumerate(exports):
            if i != j and x.type == y.type and covers(y.subject, x.subject):
                raise FieldError(
                    "subject",
                    f"{x.type} export {y.subject!r} already exports {x.subject!r}"
                    + (" (the same subject twice)" if x.subject == y.subject else ""),
                    i if i > j else j,
                )


def _check_local_subject(local: str, subject: str, index: Optional[int]) -> None:
    """The renaming rules of an import's local subject: a valid subject, ending in ``>`` exactly when the
    import's subject does, and as many ``*`` and ``$N`` references as the subject has ``*``."""
    _subject("local_subject", local, index=index)
    if _ends_open(local) != _ends_open(subject):
        raise FieldError("local_subject", f"{local!r} and {subject!r} must both end in '>', or neither", index)
    wild, refs = _wildcards(subject), 0
    for tok in local.split("."):
        if tok == "*":
            refs += 1
        elif len(tok) > 1 and tok[0] == "$":
            if not tok[1:].isdigit() or not 0 < int(tok[1:]) <= wild:
                raise FieldError("local_subject", f"{tok} refers to no '*' of {subject!r}", index)
            refs += 1
    if refs != wild:
        raise FieldError(
            "local_subject", f"{local!r} needs one '*' or $N reference for each of the {wild} '*' of {subject!r}", index
        )


def check_import(i: Import, importer: str = "", index: Optional[int] = None) -> Import:
    """FieldError for what nats-server refuses in one import of account ``importer`` (its public key, when
    known): type, subject, local subject, share, the account it imports from."""
    if i.type not in EXPORT_TYPES:
        raise FieldError("type", f"must be 'stream' or 'service', not {i.type!r}", index)
    _subject("subject", i.subject, index=index)
    if i.local_subject:
        if i.to:
            raise FieldError("local_subject", "replaces 'to': give one of them", index)
        _check_local_subject(i.local_subject, i.subject, index)
    if i.share and i.type != "service":
        raise FieldError("share", "only a service import shares the requester's information", index)
    if i.account and not is_public_key(i.account, "account"):
        raise FieldError("account", f"{i.account!r} is not an account's public key", index)
    if importer and i.account == importer:
        raise FieldError("account", "an account does not import from itself", index)
    check_text("name", i.name, index=index)
    return i


def _local(i: Import) -> str:
    return i.to or i.local_subject or i.subject


def check_imports(imports: list[Import], importer: str = "") -> None:
    """Every import (:func:`check_import`), and no two service imports whose local subjects overlap."""
    for n, i in enumerate(imports):
        check_import(i, importer, n)
    services = [(n, _local(i)) for n, i in enumerate(imports) if i.type == "service"]
    for n, a in services:
        for m, b in services:
            if m < n and (covers(a, b) or covers(b, a)):
                raise FieldError("local_subject", f"service imports {b!r} and {a!r} overlap", n)


def export_from_fields(subject: str, kind: str, fields: dict[str, Any]) -> Export:
    """An export of spec fields (:data:`EXPORT_FIELDS`; the response threshold a duration such as ``5s``)."""
    if kind not in EXPORT_TYPES:
        raise FieldError("type", f"must be 'stream' or 'service', not {kind!r}")
    kw = {k: fields[k] for k in EXPORT_FIELDS if k in fields}
    if "response_threshold" in kw:
        kw["response_threshold"] = _threshold_ns(kw["response_threshold"])
    x = Export(subject, kind, **kw)
    if any(k in fields for k in LATENCY_FIELDS):
        x.service_latency = service_latency(fields.get("latency_subject", ""), fields.get("latency_sampling"))
    return x


def service_latency(subject: Any, sampling: Any) -> dict[str, Any]:
    """An export's ``service_latency`` from its subject and its sampling (a percentage ``50`` / ``"50%"``, or
    ``headers``; 100 when None); FieldError when the subject is missing or the sampling is not one."""
    rate = _sampling("100" if sampling is None else str(sampling))
    if not subject:
        raise FieldError("latency_subject", "latency sampling needs the subject the measurements go to")
    return {"sampling": rate, "results": subject}


def latency_fields(x: Export) -> dict[str, Any]:
    """The :data:`LATENCY_FIELDS` of an export (empty when its latency is not tracked)."""
    lat = x.service_latency
    if not isinstance(lat, dict):
        return {}
    return {"latency_subject": lat.get("results", ""), "latency_sampling": lat.get("sampling")}


def _threshold_ns(text: Any) -> int:
    if isinstance(text, str):
        try:
            seconds = parse_duration(text)
        except DchatOpsError as exc:
            raise FieldError("response_threshold", str(exc)) from None
    else:
        seconds = text
    return round(check_duration("response_threshold", seconds) * 1e9)


# --- exports ---------------------------------------------------------------------------------------------


def find_export(claims: AccountClaims, subject: str, kind: Optional[str] = None) -> Optional[Export]:
    """The export of ``claims`` with exactly this subject, else the one whose subject covers it."""
    exports = [x for x in claims.exports if kind is None or x.type == kind]
    exact = [x for x in exports if x.subject == subject]
    if exact:
        return exact[0]
    return next((x for x in exports if covers(x.subject, subject)), None)


def add_export(
    store: Store,
    account: str,
    subject: str,
    *,
    service: bool = False,
    private: bool = False,
    name: str = "",
    response_type: str = "",
    response_threshold: Optional[str] = None,
    latency_subject: str = "",
    latency_sampling: Optional[str] = None,
    description: str = "",
    advertise: bool = False,
) -> tuple[Entity[AccountClaims], Export]:
    """Add a stream (or ``service``) export to ``account``; ``private``: importers need an activation token.

    ``response_threshold`` is a duration (``5s``); ``latency_sampling`` a percentage (``50`` or ``50%``)
    or ``headers``, with ``latency_subject`` where the measurements go.  Refused (FieldError, nothing
    written): a bad value, and a subject that an export of the same kind already holds (or holds it).
    """
    kind = "service" if service else "stream"
    x = Export(subject if isinstance(subject, str) else "", kind, name=name, token_req=private)
    x.response_type = response_type
    x.description, x.advertise = description, advertise
    if response_threshold is not None:
        x.response_threshold = _threshold_ns(response_threshold)
    if latency_subject or latency_sampling is not None:
        x.service_latency = service_latency(latency_subject, latency_sampling or None)
    check_export(x)
    with store.edit_account(account) as claims:
        claims.exports.append(x)
        check_exports(claims.exports)
    return store.account(account), x


def _sampling(text: str) -> int | str:
    t = str(text).strip().lower()
    if t == LATENCY_HEADERS:
        return LATENCY_HEADERS
    t = t[:-1] if t.endswith("%") else t
    if not t.isdigit() or not 1 <= int(t) <= 100:
        raise FieldError("latency_sampling", f"must be a percentage 1 to 100 or 'headers', not {text!r}")
    return int(t)


def remove_export(store: Store, account: str, subject: str = "", name: str = "") -> Export:
    """Remove the export of ``account`` with this subject (or name).  Imports other accounts made of it
    stop working once the account reaches the servers."""
    with store.edit_account(account) as claims:
        hits = [x for x in claims.exports if (subject and x.subject == subject) or (name and x.name == name)]
        if not hits:
            raise DchatOpsError(f"account {account} has no export {subject or name!r}" + _listing(claims.exports))
        if len(hits) > 1:
            raise DchatOpsError(f"account {account} has {len(hits)} exports {subject or name!r}: give --subject")
        claims.exports.remove(hits[0])
    return hits[0]


def _listing(items: list[Export] | list[Import]) -> str:
    subjects = [x.subject for x in items]
    return f" (it has: {', '.join(subjects)})" if subjects else " (it has none)"


# --- activations -----------------------------------------------------------------------------------------


@dataclass
class Activation:
    token: str
    claims: ActivationClaims
    export: Export

    def to_dict(self) -> dict[str, Any]:
        c = self.claims
        return {
            "token": self.token,
            "subject": c.import_subject,
            "kind": c.import_type,
            "target_account": c.subject,
            "issuer": c.issuer,
            "issuer_account": c.issuer_account or c.issuer,
            "issued_at": c.issued_at,
            "expires": c.expires,
            "export": self.export.subject,
        }


def _now(store: Store) -> int:
    return int((store.clock or time.time)())


def _account_key(store: Store, name_or_key: str, what: str) -> str:
    """An account's public key: a name of the store or any account public key."""
    if is_public_key(name_or_key, "account"):
        return name_or_key
    try:
        return store.find_account(name_or_key).public_key
    except DchatOpsError:
        raise FieldError(
            what, f"no account {name_or_key!r} in the store (give a name or an account public key)"
        ) from None


def generate_activation(
    store: Store, account: str, subject: str, target: str, *, expires: int = 0, now: int = 0
) -> Activation:
    """An activation token (signed by ``account`` or its signing key) that lets ``target`` (a name or an
    account public key) import ``subject`` of a private export of ``account``.  Nothing is written."""
    _subject("subject", subject)
    exporter = store.account(account)
    x = find_export(exporter.claims, subject)
    if x is None:
        raise FieldError(
            "subject", f"account {account} has no export covering {subject!r}" + _listing(exporter.claims.exports)
        )
    if not x.token_req:
        raise FieldError("subject", f"export {x.subject!r} of {account} is public: importers need no activation")
    target_key = _account_key(store, target, "target_account")
    if target_key == exporter.public_key:
        raise FieldError("target_account", "an account does not import from itself")
    if expires and expires <= (now or _now(store)):
        raise FieldError("expiry", "is in the past")
    return sign_activation(store, exporter, x, subject, target_key, expires=expires)


def sign_activation(
    store: Store, exporter: Entity[AccountClaims], x: Export, subject: str, target_key: str, *, expires: int = 0
) -> Activation:
    """An activation of ``subject`` (covered by the private export ``x`` of ``exporter``) for the account
    ``target_key``, signed by the exporter's signing key (or identity key) the keystore holds."""
    signer, _ = user_signer(store, store.operator().claims, exporter.claims)
    act = ActivationClaims(
        subject=target_key, name=subject, import_subject=subject, import_type=x.type, expires=expires
    )
    if signer.public_key != exporter.public_key:
        act.issuer_account = exporter.public_key
    token = store.sign(act, signer)
    return Activation(token, decode(token, ActivationClaims), x)


def verify_activation(
    token: str,
    *,
    exporter: str,
    importer: str,
    subject: str,
    kind: str,
    now: int,
    exporter_claims: Optional[AccountClaims] = None,
) -> ActivationClaims:
    """The activation's claims when ``token`` lets account ``importer`` import ``subject`` (a ``kind``)
    from account ``exporter``: signed by the exporter or one of its signing keys, for this importer, for a
    subject it covers, of this kind, valid now and not revoked.  Else FieldError ``token``."""
    try:
        act = decode(token.strip(), ActivationClaims)
    except (JWTError, DchatOpsError) as exc:
        raise FieldError("token", f"not a valid activation token: {exc}") from None
    if act.issuer != exporter:
        if act.issuer_account != exporter:
            raise FieldError(
                "token", f"issued by {act.issuer_account or act.issuer}, not by the exporting account {exporter}"
            )
        if exporter_claims is not None and act.issuer not in exporter_claims.signing_key_map():
            raise FieldError("token", f"signed by {act.issuer}, which is not a signing key of account {exporter}")
    if act.subject != importer:
        raise FieldError("token", f"issued for account {act.subject}, not for {importer}")
    if act.import_type != kind:
        raise FieldError("token", f"activates a {act.import_type} import, not a {kind} import")
    if not covers(act.import_subject, subject):
        raise FieldError("token", f"activates {act.import_subject!r}, which does not cover {subject!r}")
    if act.expires and act.expires <= now:
        raise FieldError("token", "has expired")
    if act.not_before and act.not_before > now:
        raise FieldError("token", "is not valid yet")
    if exporter_claims is not None:
        x = find_export(exporter_claims, act.import_subject, kind)
        if x is not None:
            for key in (importer, "*"):
                t = x.revocations.get(key)
                if t is not None and act.issued_at <= t:
                    raise FieldError(
                        "token", f"was revoked by the exporting account (activations issued until {format_time(t)})"
                    )
    return act


def revoke_activation(store: Store, account: str, subject: str, target: str, *, at: int) -> Export:
    """Revoke activations of the private export ``subject`` of ``account`` issued to ``target`` (a name, an
    account public key, or ``*``) at or before ``at`` (Unix seconds): the export's ``revocations``."""
    target_key = "*" if target == "*" else _account_key(store, target, "target_account")
    with store.edit_account(account) as claims:
        x = find_export(claims, subject)
        if x is None:
            raise FieldError("subject", f"account {account} has no export {subject!r}" + _listing(claims.exports))
        if not x.token_req:
            raise FieldError(
                "subject", f"export {x.subject!r} of {account} is public: there is no activation to revoke"
            )
        x.revocations[target_key] = max(at, x.revocations.get(target_key, 0))
    return x


# --- imports ---------------------------------------------------------------------------------------------


def add_import(
    store: Store,
    account: str,
    from_account: str,
    subject: str,
    *,
    local_subject: str = "",
    service: bool = False,
    token: str = "",
    name: str = "",
    share: bool = False,
    now: int = 0,
) -> tuple[Entity[AccountClaims], Import]:
    """Import ``subject`` exported by ``from_account`` (a name or an account public key) into ``account``.

    The exporting account must be in the store and export ``subject`` (of this kind); a private export
    needs ``token``, verified (:func:`verify_activation`).  An account only known by its key needs a
    token, which is then what is verified.  Refused with FieldError (nothing written).
    """
    kind = "service" if service else "stream"
    importer = store.account(account)
    i = Import(
        subject if isinstance(subject, str) else "", "", kind, name=name, local_subject=local_subject, share=share
    )
    check_import(i)
    exporter_key = _account_key(store, from_account, "from_account")
    i.account = exporter_key
    check_import(i, importer.public_key)
    exporter_claims: Optional[AccountClaims] = None
    try:
        exporter_claims = store.find_account(exporter_key).claims
    except DchatOpsError:
        if not token:
            raise FieldError(
                "from_account", f"account {exporter_key} is not in this store: give its activation token (--token)"
            ) from None
    if exporter_claims is not None:
        x = find_export(exporter_claims, subject, kind)
        if x is None:
            raise FieldError(
                "subject",
                f"account {exporter_claims.name} exports no {kind} covering {subject!r}"
                + _listing([e for e in exporter_claims.exports if e.type == kind]),
            )
        if x.token_req and not token:
            raise FieldError(
                "token",
                f"export {x.subject} of {exporter_claims.name} is private: an activation token is needed; "
                f"the exporter makes one with: dchat-ops generate activation --account {exporter_claims.name} "
                f"--subject {subject} --target-account {account}",
            )
        if not x.token_req and token:
            token = ""  # a public export needs none; a stale token would only be a reason to refuse later
    if token:
        verify_activation(
            token,
            exporter=exporter_key,
            importer=importer.public_key,
            subject=subject,
            kind=kind,
            now=now or _now(store),
            exporter_claims=exporter_claims,
        )
        i.token = token.strip()
    with store.edit_account(account) as claims:
        for other in claims.imports:
            if other.account == exporter_key and other.subject == subject and other.type == kind:
                raise FieldError("subject", f"account {account} already imports {subject!r} from that account")
        claims.imports.append(i)
        check_imports(claims.imports, claims.subject)
    return store.account(account), i


def remove_import(store: Store, account: str, subject: str = "", name: str = "", from_account: str = "") -> Import:
    """Remove the import of ``account`` with this subject (its remote or local subject) or name; with
    ``from_account`` only one from that account."""
    source = _account_key(store, from_account, "from_account") if from_account else ""
    with store.edit_account(account) as claims:
        hits = [
            i
            for i in claims.imports
            if ((subject and subject in (i.subject, i.local_subject, i.to)) or (name and i.name == name))
            and (not source or i.account == source)
        ]
        if not hits:
            raise DchatOpsError(f"account {account} has no import {subject or name!r}" + _listing(claims.imports))
        if len(hits) > 1:
            raise DchatOpsError(f"account {account} has {len(hits)} imports {subject or name!r}: give --from-account")
        claims.imports.remove(hits[0])
    return hits[0]


# --- what validate finds ---------------------------------------------------------------------------------


def exchange_problems(store: Store, account: Entity[AccountClaims], now: int) -> list[tuple[str, str]]:
    """(level, message) for an account's exports and imports: what nats-server refuses in the JWT
    (errors), and imports the server skips (warnings): an export that is gone or became private, an
    activation token that is invalid, expired, revoked or not for this import."""
    out: list[tuple[str, str]] = []
    c = account.claims
    try:
        check_exports(c.exports)
    except FieldError as exc:
        out.append(("error", f"exports: {exc}"))
    try:
        check_imports(c.imports, c.subject)
    except FieldError as exc:
        out.append(("error", f"imports: {exc}"))
    if not c.imports:
        return out
    names: dict[str, Entity[AccountClaims]] = {}
    for n in store.account_names():
        try:
            e = store.account(n)
        except DchatOpsError:  # validate reports it on its own
            continue
        names[e.public_key] = e
    for i in c.imports:
        exporter = names.get(i.account)
        label = f"{i.type} import {i.subject} from {exporter.name if exporter else i.account}"
        x = find_export(exporter.claims, i.subject, i.type) if exporter else None
        if exporter is not None and x is None:
            out.append(("warning", f"{label}: that account exports no {i.type} covering it (the server skips it)"))
            continue
        if not i.token:
            if x is not None and x.token_req:
                out.append(("warning", f"{label}: the export is private and the import has no activation token"))
            continue
        try:
            verify_activation(
                i.token,
                exporter=i.account,
                importer=c.subject,
                subject=i.to if i.type == "service" and i.to else i.subject,
                kind=i.type,
                now=now,
                exporter_claims=exporter.claims if exporter else None,
            )
        except FieldError as exc:
            out.append(("warning", f"{label}: activation token {exc.reason} (the server skips the import)"))
    return out
