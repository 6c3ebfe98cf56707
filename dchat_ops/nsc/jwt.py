"""NATS JWT v2: encoding, verified decoding, the Go-compatible ``jti``, and chain verification.

A token is ``header.payload.signature``, each base64url without padding: the header
``{"typ":"JWT","alg":"ed25519-nkey"}``, the claims as Go's ``encoding/json`` writes them, and the
issuer's Ed25519 signature over ``header.payload`` (see :mod:`dchat_ops.nsc.keys`).

    >>> op = KeyPair.generate("operator")
    >>> token = encode(OperatorClaims(subject=op.public_key, name="demo"), op)
    >>> decode(token).name
    'demo'

:func:`decode` always verifies the signature against the issuer named in the token.
:class:`Encoder` signs many tokens that differ only in subject and name (bulk issuance), rendering
the rest of the JSON once; its tokens are byte for byte those :func:`encode` makes.
:func:`verify_chain` checks operator -> account -> user (signing keys, ``issuer_account``,
scoped keys, strict signing key usage, expiry, revocation) and raises a
:class:`~dchat_ops.errors.ChainError` naming the link that failed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # json.dumps' own (C) string encoder
from typing import Any, Optional, TypeVar, overload

from dchat_ops._time import iso_time
from dchat_ops.errors import ChainError, JWTError, NKeyError
from dchat_ops.nsc.claims import (
    AccountClaims,
    ActivationClaims,
    Claims,
    OperatorClaims,
    UserClaims,
    claims_class_for,
)
from dchat_ops.nsc.keys import KeyPair, PublicKey, _b32encode, _b32encode_many, kind_of_public

__all__ = [
    "ALGORITHM",
    "ChainResult",
    "Clock",
    "Encoder",
    "compute_jti",
    "decode",
    "decode_unverified",
    "encode",
    "encode_generic",
    "go_json",
    "verify_chain",
]

ALGORITHM = "ed25519-nkey"
Clock = Callable[[], float]

_SUBJECT_LETTER = {"operator": "O", "account": "A", "user": "U"}
_B32_TEXT = re.compile(r"^[A-Z2-7]+\Z", re.ASCII)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z", re.ASCII)
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


_C = TypeVar("_C", bound=Claims)

_HEADER = b"eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ"  # base64url of {"typ":"JWT","alg":"ed25519-nkey"}
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _sign(payload: bytes, signer: KeyPair) -> str:
    """``header.payload.signature`` of the JSON ``payload``, signed by ``signer``."""
    signing_input = _HEADER + b"." + _b64url(payload)
    return (signing_input + b"." + _b64url(signer.sign(signing_input))).decode("ascii")


def go_json(obj: Any) -> str:
    """Compact JSON as Go's ``encoding/json`` writes it (``<``, ``>``, ``&`` escaped; UTF-8 kept)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if _GO_ESCAPE_RE.search(text):
        text = _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text)
    return text


def compute_jti(claims: Claims | dict[str, Any]) -> str:
    """The Go-compatible ``jti``: base32 (no padding) of SHA-512/256 over the standard claims only.

    The hash input is the compact JSON of ``aud, exp, iat, iss, name, nbf, sub`` in that order,
    empty ones omitted and ``jti`` itself left out.
    """
    if isinstance(claims, Claims):
        std = claims.standard_claims()
    else:
        std = {k: claims[k] for k in ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub") if claims.get(k)}
    std.pop("jti", None)
    return _b32encode(_sha512_256(go_json(std).encode("utf-8")))


_SHA512_256: list[Any] = []  # hashlib's SHA-512/256, made at the first use and copied per use after


def _now(clock: Optional[Clock]) -> int:
    return int((clock or time.time)())


def encode(claims: Claims, signer: KeyPair, *, clock: Optional[Clock] = None) -> str:
    """Sign ``claims`` with ``signer`` and return the token.

    Sets ``claims.issuer`` to the signer, ``claims.issued_at`` to now (from ``clock``) and a fresh
    ``claims.jti``.  The signer must be of the kind that may issue this claim type.
    """
    _check_signer_kind(claims, signer)
    claims.issuer = signer.public_key
    claims.issued_at = _now(clock)
    claims.jti = ""
    claims.jti = compute_jti(claims)
    payload = go_json(claims.to_dict()).encode("utf-8")
    return _sign(payload, signer)


def encode_generic(data: dict[str, Any], signer: KeyPair, *, clock: Optional[Clock] = None) -> str:
    """A self-signed generic JWT (``sub`` = ``iss`` = the signer) carrying ``data`` as its ``nats`` object.

    nats-server takes such a JWT, signed by the operator, as a request to delete accounts.
    """
    std: dict[str, Any] = {"iat": _now(clock), "iss": signer.public_key, "sub": signer.public_key}
    std["jti"] = compute_jti(std)
    claims = {
        "jti": std["jti"],
        "iat": std["iat"],
        "iss": std["iss"],
        "sub": std["sub"],
        "nats": {**data, "type": "generic", "version": 2},
    }
    return _sign(go_json(claims).encode("utf-8"), signer)


class Encoder:
    """Many tokens of one shape, for bulk issuance: copies of ``template`` with other subjects and names.

    Each token is what :func:`encode` makes of a copy of ``template`` with that subject and name, byte
    for byte; the JSON of everything else is rendered once, here, and ``iat`` is now (from ``clock``)
    for every token.  The signer's kind is checked here, each subject's shape per token.

        >>> tokens = Encoder(UserClaims(), account_key).many([user_key1, user_key2], ["ann", "bob"])
    """

    def __init__(self, template: Claims, signer: KeyPair, *, clock: Optional[Clock] = None):
        _check_signer_kind(template, signer, check_subject=False)
        self._template = template.copy()
        self._signer = signer
        self._iat = _now(clock)
        self._letter = _SUBJECT_LETTER[template.SUBJECT_KIND]
        self._named = _Layout.of(template, signer, self._iat, named=True)
        self._unnamed = _Layout.of(template, signer, self._iat, named=False)

    def __call__(self, subject: str, name: str) -> str:
        return self.many([subject], [name])[0]

    def many(self, subjects: list[str], names: list[str]) -> list[str]:
        """The tokens for ``subjects`` and ``names`` (one name per subject; an empty name is left out)."""
        if len(subjects) != len(names):
            raise JWTError("one name per subject")
        letter, shape = self._letter, _B32_TEXT.match
        for subject in subjects:
            if len(subject) != 56 or subject[0] != letter or not shape(subject):
                self._encode_in_full(subject, "")  # raises the error encode() raises
        if self._named is None or self._unnamed is None:  # a shape the layout cannot cut
            return [self._encode_in_full(s, n) for s, n in zip(subjects, names, strict=True)]
        j0, j1, j2 = self._named.jti_parts
        p0, p1, p2, p3 = self._named.payload_parts
        u0, u1 = self._unnamed.jti_parts
        q0, q1, q2 = self._unnamed.payload_parts
        quoted = [_json_name(n) for n in names]
        pairs = list(zip(subjects, quoted, strict=True))
        jtis = _b32encode_many(
            [_sha512_256((f"{j0}{n}{j1}{s}{j2}" if n else f"{u0}{s}{u1}").encode()) for s, n in pairs]
        )
        payloads = [
            (f"{p0}{jti}{p1}{n}{p2}{s}{p3}" if n else f"{q0}{jti}{q1}{s}{q2}").encode()
            for (s, n), jti in zip(pairs, jtis, strict=True)
        ]
        header, sign = _HEADER + b".", self._signer.sign
        signing_inputs = [header + _b64url(p) for p in payloads]
        return [(si + b"." + _b64url(sign(si))).decode("ascii") for si in signing_inputs]

    def _encode_in_full(self, subject: str, name: str) -> str:
        claims = self._template.copy()
        claims.subject, claims.name = subject, name
        return encode(claims, self._signer, clock=lambda: self._iat)


def _json_name(name: str) -> str:
    """The JSON string of a name as :func:`go_json` writes it inside a document; "" for no name."""
    if not name:
        return ""
    text: str = _json_string(name)
    if _GO_ESCAPE_RE.search(text):
        text = _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text)
    return text


def _sha512_256(data: bytes) -> bytes:
    if not _SHA512_256:
        # hashlib loads OpenSSL (2-3 ms): only JWTs encoded or jti-checked need it, not every reader
        import hashlib

        _SHA512_256.append(hashlib.new("sha512_256"))
    h = _SHA512_256[0].copy()
    h.update(data)
    digest: bytes = h.digest()
    return digest


@dataclass(frozen=True)
class _Layout:
    """The JSON of a template's jti input and payload, cut where the jti, name and subject go."""

    jti_parts: tuple[str, ...]
    payload_parts: tuple[str, ...]

    @classmethod
    def of(cls, template: Claims, signer: KeyPair, iat: int, *, named: bool) -> Optional[_Layout]:
        """The layout for names (``named``) or for no name; None when the rendered JSON does not hold each
        mark once and in the order jti, name, subject (e.g. ``extra_top`` overriding a standard claim)."""
        tag = os.urandom(8).hex()
        marks = {"jti": f"jti{tag}", "name": f"name{tag}", "sub": f"sub{tag}"}
        claims = template.copy()
        claims.issuer, claims.issued_at = signer.public_key, iat
        claims.jti, claims.subject, claims.name = marks["jti"], marks["sub"], marks["name"] if named else ""
        payload = go_json(claims.to_dict())
        claims.jti = ""
        jti_input = go_json(claims.standard_claims())
        # the name goes in as a JSON string: its mark is cut out with the quotes around it
        cut_at = {"jti": marks["jti"], "name": f'"{marks["name"]}"', "sub": marks["sub"]}
        order = ("name", "sub") if named else ("sub",)
        jti_parts = cls._cut(jti_input, [cut_at[k] for k in order])
        payload_parts = cls._cut(payload, [cut_at[k] for k in ("jti", *order)])
        if jti_parts is None or payload_parts is None:
            return None
        return cls(jti_parts, payload_parts)

    @staticmethod
    def _cut(text: str, marks: list[str]) -> Optional[tuple[str, ...]]:
        """``text`` cut at each of ``marks`` (each once, in this order), or None."""
        if any(text.count(mark) != 1 for mark in marks):
            return None
        parts = []
        for mark in marks:
            before, found, text = text.partition(mark)
            if not found:
                return None
            parts.append(before)
        return (*parts, text)


def _check_signer_kind(claims: Claims, signer: KeyPair, *, check_subject: bool = True) -> None:
    want = {
        OperatorClaims: "operator",
        AccountClaims: "operator",
        UserClaims: "account",
        ActivationClaims: "account",
    }.get(type(claims))
    if want and signer.kind != want:
        raise JWTError(f"a {claims.TYPE} JWT must be signed by an {want} key, not a {signer.kind} key")
    if not check_subject:
        return
    subject = claims.subject
    if not subject:
        raise JWTError(f"the {claims.TYPE} JWT has no subject")
    # A cheap shape check on this hot path; decode() checks subjects in full.
    if len(subject) != 56 or subject[0] != _SUBJECT_LETTER[claims.SUBJECT_KIND] or not _B32_TEXT.match(subject):
        try:
            got = kind_of_public(subject)
        except NKeyError as exc:
            raise JWTError(f"subject of the {claims.TYPE} JWT: {exc}") from None
        raise JWTError(f"the subject of a {claims.TYPE} JWT must be a {claims.SUBJECT_KIND} key, not {got}")


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, payload, token without surrounding blanks) of a token, its signature not checked yet."""
    if not isinstance(token, str):
        raise JWTError("a JWT must be text")
    token = token.strip()
    if not _TOKEN.match(token):
        raise JWTError("malformed JWT: expected three base64url segments without padding")
    h, p, _ = token.split(".")
    try:
        header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
        payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise JWTError("malformed JWT: header or payload is not base64url JSON") from None
    except RecursionError:
        raise JWTError("malformed JWT: header or payload is nested too deeply") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise JWTError("malformed JWT: header and payload must be JSON objects")
    return header, payload, token


def _verify_signature(token: str, issuer: str) -> None:
    """Check the signature of ``token`` (well formed: three base64url segments) against ``issuer``."""
    signing_input, _, sig = token.rpartition(".")
    try:
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (ValueError, binascii.Error):
        raise JWTError("malformed JWT: the signature is not base64url") from None
    if not PublicKey(issuer).verify(signing_input.encode("ascii"), signature):
        raise JWTError("JWT signature does not verify against its issuer")


def decode_unverified(token: str) -> Claims:
    """Parse a token WITHOUT checking its signature.  Only for showing what a bad token says."""
    _, payload, _ = _segments(token)
    return claims_class_for(payload).from_dict(payload)


@overload
def decode(token: str, expected: None = None) -> Claims: ...


@overload
def decode(token: str, expected: type[_C]) -> _C: ...


def decode(token: str, expected: type[Claims] | None = None) -> Claims:
    """Parse a token and verify its signature against its issuer (``iss``).

    With ``expected``, refuse a token of another claim type.  Raises :class:`JWTError`.
    """
    header, payload, token = _segments(token)
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise JWTError(f"not a JWT: typ is {typ!r}")
    alg = header.get("alg")
    if alg != ALGORITHM:
        if alg == "ed25519":
            raise JWTError("this is a v1 JWT (alg ed25519); only v2 JWTs are supported")
        raise JWTError(f"unsupported JWT algorithm {alg!r}")
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise JWTError("the JWT has no issuer")
    try:
        issuer_kind = kind_of_public(issuer)
    except NKeyError:
        raise JWTError("the JWT's issuer is not a public nkey") from None
    if issuer_kind not in ("operator", "account"):
        raise JWTError(f"the JWT's issuer is a {issuer_kind} key; only operators and accounts issue JWTs")
    _verify_signature(token, issuer)
    cls = claims_class_for(payload)
    if expected is not None and cls is not expected:
        raise JWTError(f"expected a {expected.TYPE} JWT, got a {cls.TYPE} JWT")
    claims = cls.from_dict(payload)
    want_issuer = {
        "operator": ("operator",),
        "account": ("operator", "account"),
        "user": ("account",),
        "activation": ("account",),
    }
    if issuer_kind not in want_issuer[cls.TYPE]:
        raise JWTError(f"a {cls.TYPE} JWT cannot be issued by a {issuer_kind} key")
    if claims.subject:
        try:
            sub_kind = kind_of_public(claims.subject)
        except NKeyError:
            raise JWTError(f"the {cls.TYPE} JWT's subject is not a public nkey") from None
        if sub_kind != cls.SUBJECT_KIND:
            raise JWTError(f"the subject of a {cls.TYPE} JWT is a {sub_kind} key")
    return claims


# --- chain verification ---------------------------------------------------------------------------


@dataclass
class ChainResult:
    """The decoded, verified links of a chain."""

    operator: OperatorClaims
    account: Optional[AccountClaims] = None
    user: Optional[UserClaims] = None
    user_scope_role: str = ""  # the role of the scoped signing key that issued the user, if any


def _check_times(link: str, c: Claims, now: int) -> None:
    if c.expires and c.expires <= now:
        raise ChainError(link, "expired", f"{c.TYPE} JWT {c.name or c.subject} expired at {_iso(c.expires)}")
    if c.not_before and c.not_before > now:
        raise ChainError(
            link, "not-yet-valid", f"{c.TYPE} JWT {c.name or c.subject} is not valid before {_iso(c.not_before)}"
        )


def _iso(t: int) -> str:
    return iso_time(t)


def _decode_link(link: str, token: str | Claims, cls: type[_C]) -> _C:
    if isinstance(token, Claims):
        if not isinstance(token, cls):
            raise ChainError(link, "wrong-type", f"expected a {cls.TYPE} JWT")
        return token
    try:
        return decode(token, cls)
    except ChainError:
        raise
    except JWTError as exc:
        raise ChainError(link, "invalid", str(exc)) from None


def verify_chain(
    operator: str | OperatorClaims,
    account: str | AccountClaims | None = None,
    user: str | UserClaims | None = None,
    *,
    clock: Optional[Clock] = None,
    check_expiry: bool = True,
    check_revocation: bool = True,
) -> ChainResult:
    """Verify operator -> account -> user and return the decoded claims.

    Tokens are decoded (signatures verified); already-decoded claims are trusted as decoded.
    ``check_expiry`` / ``check_revocation`` off: only signatures and trust (a backup restores
    expired and revoked users too).
    Raises :class:`ChainError` whose ``link`` and ``reason`` say what failed.
    """
    now = _now(clock)
    op = _decode_link("operator", operator, OperatorClaims)
    # Self-signed only: a signing key the JWT itself lists proves nothing (anyone can list their own key and
    # sign with it); the operator's signing keys are trusted once its identity key has signed the list.
    if op.issuer != op.subject:
        raise ChainError("operator", "untrusted-issuer", "operator JWT is not signed by the operator's own key")
    # An operator JWT's expiry is not enforced by nats-server; the store's validate warns about it.
    result = ChainResult(op)
    if account is None:
        if user is not None:
            raise ChainError("account", "missing", "a user cannot be verified without its account")
        return result

    acc = _decode_link("account", account, AccountClaims)
    if acc.issuer != op.subject and acc.issuer not in op.signing_keys:
        raise ChainError(
            "account",
            "untrusted-issuer",
            f"account {acc.name or acc.subject} is signed by {acc.issuer}, which is neither the operator nor one of its signing keys",
        )
    if op.strict_signing_key_usage and acc.issuer not in op.signing_keys:
        raise ChainError(
            "account",
            "strict-signing",
            f"account {acc.name or acc.subject} is signed by the operator identity key, but the operator requires signing keys",
        )
    if check_expiry:
        _check_times("account", acc, now)
    result.account = acc
    if user is None:
        return result

    usr = _decode_link("user", user, UserClaims)
    label = usr.name or usr.subject
    sk_map = acc.signing_key_map()
    if usr.issuer == acc.subject:
        if op.strict_signing_key_usage:
            raise ChainError(
                "user",
                "strict-signing",
                f"user {label} is signed by the account identity key, but the operator requires signing keys",
            )
        if usr.issuer_account and usr.issuer_account != acc.subject:
            raise ChainError(
                "user", "issuer-account", f"user {label} names issuer_account {usr.issuer_account}, not {acc.subject}"
            )
    elif usr.issuer in sk_map:
        if not usr.issuer_account:
            raise ChainError(
                "user", "issuer-account", f"user {label} is signed by an account signing key but has no issuer_account"
            )
        if usr.issuer_account != acc.subject:
            raise ChainError(
                "user", "issuer-account", f"user {label} names issuer_account {usr.issuer_account}, not {acc.subject}"
            )
        scope = sk_map[usr.issuer]
        if scope is not None:
            if usr.limits.has_limits_or_permissions():
                raise ChainError(
                    "user",
                    "scoped-with-permissions",
                    f"user {label} is signed by scoped key role {scope.role!r} but carries its own permissions or limits",
                )
            result.user_scope_role = scope.role
    else:
        raise ChainError(
            "user",
            "untrusted-issuer",
            f"user {label} is signed by {usr.issuer}, which is neither account {acc.name or acc.subject} nor one of its signing keys",
        )
    if check_expiry:
        _check_times("user", usr, now)
    if check_revocation and acc.is_revoked(usr.subject, usr.issued_at):
        raise ChainError("user", "revoked", f"user {label} is revoked by account {acc.name or acc.subject}")
    result.user = usr
    return result
