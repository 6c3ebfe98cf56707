"""NKeys: Ed25519 (and X25519 curve) keys in the NATS text encoding.

A public key is base32(prefix byte + 32 key bytes + CRC-16 little-endian), 56 characters,
whose first letter tells the kind (``O`` operator, ``A`` account, ``U`` user, ``N`` server,
``C`` cluster, ``X`` curve).  A seed is base32(two prefix bytes + 32 seed bytes + CRC-16),
58 characters starting with ``S`` and the kind letter (``SO``, ``SA``, ``SU``...).

    >>> kp = KeyPair.generate("user")
    >>> kp.public_key.startswith("U")
    True
    >>> KeyPair.from_seed(kp.seed).public_key == kp.public_key
    True

Signing uses the ``cryptography`` package (OpenSSL), so bulk issuance is fast.  A key pair's
``repr`` never shows the seed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from dchat_ops.errors import NKeyError

__all__ = [
    "KINDS",
    "KeyPair",
    "PublicKey",
    "check_public_key",
    "is_public_key",
    "kind_of_public",
    "kind_of_seed",
    "looks_like_seed",
]

_PREFIX_SEED = 18 << 3
_PREFIX_PRIVATE = 15 << 3

# kind -> prefix byte of the public key
_PREFIXES = {
    "operator": 14 << 3,
    "account": 0,
    "user": 20 << 3,
    "server": 13 << 3,
    "cluster": 2 << 3,
    "curve": 23 << 3,
}
KINDS = tuple(_PREFIXES)
_KIND_BY_PREFIX = {v: k for k, v in _PREFIXES.items()}
_LETTER = {"operator": "O", "account": "A", "user": "U", "server": "N", "cluster": "C", "curve": "X"}
_KIND_BY_LETTER = {v: k for k, v in _LETTER.items()}

_B32 = re.compile(r"^[A-Z2-7]+$")


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), as used by the nkeys encoding."""
    return binascii.crc_hqx(data, 0)


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _b32decode(text: str, what: str) -> bytes:
    if not text or not _B32.match(text):
        raise NKeyError(f"{what} is not valid base32 text")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise NKeyError(f"{what} is not valid base32 text") from None


def _with_crc(raw: bytes) -> bytes:
    return raw + _crc16(raw).to_bytes(2, "little")


def _check_crc(raw: bytes, what: str) -> bytes:
    if len(raw) < 3:
        raise NKeyError(f"{what} is too short")
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if _crc16(body) != crc:
        raise NKeyError(f"{what} has a bad checksum")
    return body


def _kind_name(kind: str) -> str:
    k = kind.lower()
    if k in _PREFIXES:
        return k
    if kind.upper() in _KIND_BY_LETTER:
        return _KIND_BY_LETTER[kind.upper()]
    raise NKeyError(f"unknown key kind {kind!r}; expected one of {', '.join(KINDS)}")


def _encode_public(kind: str, raw: bytes) -> str:
    return _b32encode(_with_crc(bytes([_PREFIXES[kind]]) + raw))


def _decode_public(text: str) -> tuple[str, bytes]:
    """Return (kind, 32 raw bytes) of an encoded public key, or raise NKeyError."""
    if not isinstance(text, str) or len(text) != 56:
        raise NKeyError("not a public nkey: expected 56 characters")
    body = _check_crc(_b32decode(text, "public nkey"), "public nkey")
    kind = _KIND_BY_PREFIX.get(body[0])
    if kind is None or len(body) != 33:
        raise NKeyError("not a public nkey: unknown prefix")
    return kind, body[1:]


def _decode_seed(text: str) -> tuple[str, bytes]:
    """Return (kind, 32 raw seed bytes) of an encoded seed, or raise NKeyError (never echoing it)."""
    if not isinstance(text, str) or len(text) != 58 or not text.startswith("S"):
        raise NKeyError("not an nkey seed: expected 58 characters starting with S")
    body = _check_crc(_b32decode(text, "nkey seed"), "nkey seed")
    if len(body) != 34 or (body[0] & 0xF8) != _PREFIX_SEED:
        raise NKeyError("not an nkey seed: bad prefix")
    prefix = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
    kind = _KIND_BY_PREFIX.get(prefix)
    if kind is None:
        raise NKeyError("not an nkey seed: unknown kind")
    return kind, body[2:]


def _encode_seed(kind: str, raw: bytes) -> str:
    prefix = _PREFIXES[kind]
    b1 = _PREFIX_SEED | (prefix >> 5)
    b2 = (prefix & 31) << 3
    return _b32encode(_with_crc(bytes([b1, b2]) + raw))


def kind_of_public(text: str) -> str:
    """The kind (``"user"``, ``"account"``...) of an encoded public key; NKeyError if malformed."""
    return _decode_public(text)[0]


def kind_of_seed(text: str) -> str:
    """The kind of an encoded seed; NKeyError if malformed.  The seed never appears in the error."""
    return _decode_seed(text)[0]


def is_public_key(text: str, kind: str | None = None) -> bool:
    """True when ``text`` is a well-formed public nkey (of ``kind`` when given)."""
    try:
        k = kind_of_public(text)
    except NKeyError:
        return False
    return kind is None or k == _kind_name(kind)


def check_public_key(text: str, kind: str, what: str = "key") -> str:
    """Return ``text`` when it is a public nkey of ``kind``, else raise a clear NKeyError."""
    kind = _kind_name(kind)
    try:
        got = kind_of_public(text)
    except NKeyError as exc:
        raise NKeyError(f"{what}: {exc}") from None
    if got != kind:
        raise NKeyError(f"{what}: expected a public {kind} key ({_LETTER[kind]}...), got a {got} key")
    return text


def looks_like_seed(text: str) -> bool:
    """A cheap test for "this string is an nkey seed" (used to keep seeds out of output)."""
    return isinstance(text, str) and len(text) == 58 and text[:1] == "S" and text[1:2] in _KIND_BY_LETTER


@functools.lru_cache(maxsize=4096)
def _ed25519_public(text: str) -> Ed25519PublicKey:
    """The verifying key behind a public nkey (cached: the same keys verify again and again)."""
    kind, raw = _decode_public(text)
    if kind == "curve":
        raise NKeyError("curve (X) keys cannot verify signatures")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class PublicKey:
    """A public nkey that can verify signatures (Ed25519 kinds only)."""

    text: str

    def __post_init__(self) -> None:
        kind_of_public(self.text)

    @property
    def kind(self) -> str:
        return kind_of_public(self.text)

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            _ed25519_public(self.text).verify(signature, data)
            return True
        except InvalidSignature:
            return False


class KeyPair:
    """An nkey pair of one kind, made from a seed.

    Ed25519 kinds sign and verify; the curve kind (``X``) is an X25519 key for sealing
    messages (see :meth:`x25519_private`).
    """

    __slots__ = ("_private", "_public_text", "_raw_seed", "_seed_text", "kind")

    def __init__(self, kind: str, raw_seed: bytes):
        kind = _kind_name(kind)
        if len(raw_seed) != 32:
            raise NKeyError("an nkey seed holds exactly 32 bytes")
        self.kind = kind
        self._raw_seed = bytes(raw_seed)
        self._seed_text: str | None = None
        self._private: Ed25519PrivateKey | X25519PrivateKey
        if kind == "curve":
            self._private = X25519PrivateKey.from_private_bytes(self._raw_seed)
        else:
            self._private = Ed25519PrivateKey.from_private_bytes(self._raw_seed)
        pub = self._private.public_key().public_bytes_raw()
        self._public_text = _encode_public(kind, pub)

    # construction -------------------------------------------------------------------------
    @classmethod
    def generate(cls, kind: str) -> KeyPair:
        """A fresh random key pair of ``kind`` (operator, account, user, server, cluster, curve)."""
        import os

        return cls(kind, os.urandom(32))

    @classmethod
    def from_seed(cls, seed: str | bytes, kind: str | None = None) -> KeyPair:
        """Load a key pair from its encoded seed; with ``kind``, refuse a seed of another kind."""
        if isinstance(seed, bytes):
            seed = seed.decode("ascii", "replace")
        seed = seed.strip()
        got, raw = _decode_seed(seed)
        if kind is not None and got != _kind_name(kind):
            want = _kind_name(kind)
            raise NKeyError(f"expected a {want} seed (S{_LETTER[want]}...), got a {got} seed (S{_LETTER[got]}...)")
        kp = cls(got, raw)
        kp._seed_text = seed
        return kp

    # properties -----------------------------------------------------------------------------
    @property
    def public_key(self) -> str:
        return self._public_text

    @property
    def seed(self) -> str:
        """The encoded seed.  A secret: never print or log it unless the user asked."""
        if self._seed_text is None:
            self._seed_text = _encode_seed(self.kind, self._raw_seed)
        return self._seed_text

    @property
    def private_key(self) -> str:
        """The encoded 64-byte private key (``P...``), as nkeys prints it.  A secret."""
        if self.kind == "curve":
            raise NKeyError("curve keys have no Ed25519 private key form")
        _, pub = _decode_public(self._public_text)
        return _b32encode(_with_crc(bytes([_PREFIX_PRIVATE]) + self._raw_seed + pub))

    # operations -----------------------------------------------------------------------------
    def sign(self, data: bytes) -> bytes:
        if not isinstance(self._private, Ed25519PrivateKey):
            raise NKeyError("curve (X) keys cannot sign")
        return self._private.sign(data)

    def verify(self, data: bytes, signature: bytes) -> bool:
        return PublicKey(self._public_text).verify(data, signature)

    def x25519_private(self) -> X25519PrivateKey:
        """The X25519 private key of a curve key pair, for sealing and opening messages."""
        if not isinstance(self._private, X25519PrivateKey):
            raise NKeyError("only curve (X) keys are X25519 keys")
        return self._private

    def raw_public(self) -> bytes:
        return _decode_public(self._public_text)[1]

    def __repr__(self) -> str:
        return f"KeyPair(kind={self.kind!r}, public_key={self._public_text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyPair) and other._raw_seed == self._raw_seed and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self._public_text)


def x25519_public(public_key: str) -> X25519PublicKey:
    """The X25519 public key behind an encoded curve public key (``X...``)."""
    check_public_key(public_key, "curve")
    return X25519PublicKey.from_public_bytes(_decode_public(public_key)[1])
