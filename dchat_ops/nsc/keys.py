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

Ed25519 runs in libsodium through PyNaCl (the fastest Ed25519 at hand: key generation, signing and
verifying); curve keys are X25519 keys of the ``cryptography`` package, imported when one is made.
Base32 goes through big-integer arithmetic and ``bytes.translate`` rather than the standard
library's per-5-byte Python loop.  A key pair's ``repr`` never shows the seed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from dchat_ops.errors import NKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "KINDS",
    "KeyPair",
    "PublicKey",
    "check_public_key",
    "fresh_keys",
    "is_public_key",
    "kind_of_public",
    "kind_of_seed",
    "looks_like_seed",
    "open_sealed",
    "read_key_file",
    "seal",
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

_B32 = re.compile(r"^[A-Z2-7]+\Z", re.ASCII)


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), as used by the nkeys encoding."""
    return binascii.crc_hqx(data, 0)


# --- base32 (RFC 4648 alphabet, no padding) -----------------------------------------------------------
#
# The standard library's base32 is a Python loop over 5-byte groups.  Here up to 40 bytes are one
# integer: six mask-and-shift steps move each 5-bit group into its own byte (``_SPREAD``), and
# ``bytes.translate`` maps those bytes to letters; decoding runs the same steps backwards.  Longer
# input (only the 67-byte private key form) goes through the standard library.

_B32_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_LETTERS = bytes(_B32_ALPHABET[i & 31] for i in range(256))  # 5-bit value -> letter
_B32_VALUES = bytes(_B32_ALPHABET.find(bytes([i])) & 0xFF for i in range(256))  # letter -> 5-bit value
_SLOTS = 64  # 5-bit groups one integer holds: 40 bytes


def _spread_steps(slots: int) -> list[tuple[int, int, int]]:
    """(keep mask, move mask, shift) per step: group ``i`` (bits 5i..5i+4) ends in byte ``i`` (bits 8i..8i+4)."""
    steps = []
    block = slots
    while block > 1:
        half = block // 2
        keep = move = 0
        for i in range(slots // block):
            base = i * block * 8
            keep |= ((1 << half * 5) - 1) << base
            move |= ((1 << half * 5) - 1) << (base + half * 5)
        steps.append((keep, move, half * 3))
        block = half
    return steps


_SPREAD = _spread_steps(_SLOTS)
_GATHER = _SPREAD[::-1]


def _b32encode(raw: bytes) -> str:
    n = len(raw)
    if n > _SLOTS * 5 // 8:
        return base64.b32encode(raw).decode("ascii").rstrip("=")
    pad = -n % 5
    groups = (n + pad) * 8 // 5
    x = int.from_bytes(raw, "big") << pad * 8
    for keep, move, shift in _SPREAD:
        x = (x & keep) | ((x & move) << shift)
    start = _SLOTS - groups
    return x.to_bytes(_SLOTS, "big")[start : start + (n * 8 + 4) // 5].translate(_B32_LETTERS).decode("ascii")


_BATCH = 64  # values per integer in _b32encode_many


@functools.lru_cache(maxsize=1)
def _wide_spread() -> list[tuple[int, int, int]]:
    """``_SPREAD`` for ``_BATCH`` values side by side, ``_SLOTS`` bytes apart."""
    wide = []
    for keep, move, shift in _SPREAD:
        k = m = 0
        for i in range(_BATCH):
            k |= keep << i * _SLOTS * 8
            m |= move << i * _SLOTS * 8
        wide.append((k, m, shift))
    return wide


def _b32encode_many(raws: list[bytes]) -> list[str]:
    """``[_b32encode(r) for r in raws]`` for values of one length, ``_BATCH`` of them per integer."""
    if not raws:
        return []
    n = len(raws[0])
    if n > _SLOTS * 5 // 8 or any(len(r) != n for r in raws):
        return [_b32encode(r) for r in raws]
    pad = -n % 5
    head, tail = b"\0" * (_SLOTS - n - pad), b"\0" * pad
    start, chars = _SLOTS - (n + pad) * 8 // 5, (n * 8 + 4) // 5
    steps = _wide_spread()
    out: list[str] = []
    for i in range(0, len(raws), _BATCH):
        part = raws[i : i + _BATCH]
        x = int.from_bytes(head + (tail + head).join(part) + tail, "big")
        for keep, move, shift in steps:
            x = (x & keep) | ((x & move) << shift)
        text = x.to_bytes(_SLOTS * len(part), "big").translate(_B32_LETTERS).decode("ascii")
        out += [text[j : j + chars] for j in range(start, start + len(text), _SLOTS)]
    return out


def _b32decode(text: str, what: str) -> bytes:
    """Base32 text without padding -> bytes (bits past the last whole byte are dropped, as the standard
    library drops them); NKeyError when it is not base32."""
    if not text or not _B32.match(text):
        raise NKeyError(f"{what} is not valid base32 text")
    n = len(text)
    if n % 8 in (1, 3, 6):  # no whole byte ends there: what the standard library calls bad padding
        raise NKeyError(f"{what} is not valid base32 text")
    if n > _SLOTS:
        return base64.b32decode(text + "=" * (-n % 8))
    chars = n + -n % 8
    x = int.from_bytes(text.encode("ascii").translate(_B32_VALUES), "big") << (chars - n) * 8
    for keep, move, shift in _GATHER:
        x = (x & keep) | ((x >> shift) & move)
    return x.to_bytes(chars * 5 // 8, "big")[: n * 5 // 8]


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
    return _decode_public_text(text)


@functools.lru_cache(maxsize=4096)
def _decode_public_text(text: str) -> tuple[str, bytes]:
    """:func:`_decode_public` of 56 characters; cached: the same issuers come again with every token they signed."""
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


def _seed_prefix(kind: str) -> bytes:
    prefix = _PREFIXES[kind]
    return bytes([_PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3])


def _encode_seed(kind: str, raw: bytes) -> str:
    return _b32encode(_with_crc(_seed_prefix(kind) + raw))


def fresh_keys(kind: str, count: int) -> tuple[list[str], list[str]]:
    """``count`` new random key pairs of an Ed25519 ``kind`` as (public keys, seeds), text, without
    :class:`KeyPair` objects: what bulk issuance needs of its users' keys.  The seeds are secrets."""
    kind = _kind_name(kind)
    if kind == "curve":
        raise NKeyError("fresh_keys makes Ed25519 keys; use KeyPair.generate('curve') for a curve key")
    pool = os.urandom(32 * count)
    raws = [pool[i : i + 32] for i in range(0, 32 * count, 32)]
    prefix, seed_prefix = bytes([_PREFIXES[kind]]), _seed_prefix(kind)
    publics = [prefix + crypto_sign_seed_keypair(raw)[0] for raw in raws]
    seeds = [seed_prefix + raw for raw in raws]
    crc = binascii.crc_hqx
    return (
        _b32encode_many([b + crc(b, 0).to_bytes(2, "little") for b in publics]),
        _b32encode_many([b + crc(b, 0).to_bytes(2, "little") for b in seeds]),
    )


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
def _verifying_key(text: str) -> bytes:
    """The 32 raw bytes of the Ed25519 key behind a public nkey (cached: the same keys verify again and again)."""
    kind, raw = _decode_public(text)
    if kind == "curve":
        raise NKeyError("curve (X) keys cannot verify signatures")
    return raw


def _verify(raw_public: bytes, data: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + data, raw_public)
    except BadSignatureError:
        return False
    return True


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
        return _verify(_verifying_key(self.text), data, signature)


class KeyPair:
    """An nkey pair of one kind, made from a seed.

    Ed25519 kinds sign and verify; the curve kind (``X``) is an X25519 key for sealing
    messages (see :meth:`x25519_private`).
    """

    __slots__ = ("_curve", "_public_raw", "_public_text", "_raw_seed", "_secret", "_seed_text", "kind")

    def __init__(self, kind: str, raw_seed: bytes):
        kind = _kind_name(kind)
        if len(raw_seed) != 32:
            raise NKeyError("an nkey seed holds exactly 32 bytes")
        self.kind = kind
        self._raw_seed = bytes(raw_seed)
        self._seed_text: str | None = None
        self._curve: X25519PrivateKey | None = None
        self._secret = b""  # libsodium's 64-byte Ed25519 secret key (seed + public key)
        if kind == "curve":
            from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

            self._curve = X25519PrivateKey.from_private_bytes(self._raw_seed)
            self._public_raw = self._curve.public_key().public_bytes_raw()
        else:
            self._public_raw, self._secret = crypto_sign_seed_keypair(self._raw_seed)
        self._public_text = _encode_public(kind, self._public_raw)

    # construction -------------------------------------------------------------------------
    @classmethod
    def generate(cls, kind: str) -> KeyPair:
        """A fresh random key pair of ``kind`` (operator, account, user, server, cluster, curve)."""
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
        return _b32encode(_with_crc(bytes([_PREFIX_PRIVATE]) + self._raw_seed + self._public_raw))

    # operations -----------------------------------------------------------------------------
    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        if not self._secret:
            raise NKeyError("curve (X) keys cannot sign")
        return crypto_sign(data, self._secret)[:64]

    def verify(self, data: bytes, signature: bytes) -> bool:
        if not self._secret:
            raise NKeyError("curve (X) keys cannot verify signatures")
        return _verify(self._public_raw, data, signature)

    def x25519_private(self) -> X25519PrivateKey:
        """The X25519 private key of a curve key pair, for sealing and opening messages."""
        if self._curve is None:
            raise NKeyError("only curve (X) keys are X25519 keys")
        return self._curve

    def raw_public(self) -> bytes:
        return self._public_raw

    def __repr__(self) -> str:
        return f"KeyPair(kind={self.kind!r}, public_key={self._public_text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyPair) and other._raw_seed == self._raw_seed and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self._public_text)


def x25519_public(public_key: str) -> X25519PublicKey:
    """The X25519 public key behind an encoded curve public key (``X...``)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    check_public_key(public_key, "curve")
    return X25519PublicKey.from_public_bytes(_decode_public(public_key)[1])


# Sealed messages as nkeys' curve keys make them (Go nkeys ``Seal`` / ``Open``): the version tag, a random
# 24-byte nonce, then NaCl's box of the message (X25519, XSalsa20-Poly1305: a 16-byte tag, then the text).
XKEY_VERSION = b"xkv1"
_NONCE_LEN = 24
_BOX_TAG_LEN = 16


def _curve_pair(kp: KeyPair, what: str) -> bytes:
    if kp.kind != "curve":
        raise NKeyError(
            f"{what} must be a curve (X) key, not an {kp.kind} key"
            if kp.kind[0] in "aeiou"
            else f"{what} must be a curve (X) key, not a {kp.kind} key"
        )
    return kp._raw_seed


def seal(data: bytes, recipient: str, sender: KeyPair, *, nonce: bytes | None = None) -> bytes:
    """``data`` sealed to the curve public key ``recipient`` (``X...``) by the curve key pair ``sender``:
    ``xkv1`` + nonce + box, what nkeys' ``Seal`` makes and ``Open`` reads.  ``nonce``: 24 bytes (a fresh
    random one by default; never use one twice with the same keys)."""
    from nacl.bindings import crypto_box

    secret = _curve_pair(sender, "the sender")
    check_public_key(recipient, "curve")
    if nonce is None:
        nonce = os.urandom(_NONCE_LEN)
    elif len(nonce) != _NONCE_LEN:
        raise NKeyError(f"a nonce is {_NONCE_LEN} bytes")
    return XKEY_VERSION + nonce + crypto_box(data, nonce, _decode_public(recipient)[1], secret)


def open_sealed(data: bytes, sender: str, recipient: KeyPair) -> bytes:
    """The message in ``data`` (sealed by :func:`seal` or nkeys' ``Seal``) from the curve public key
    ``sender``, opened with the recipient's curve key pair.  :class:`NKeyError` when it is not such a
    message, or was not sealed by ``sender`` to ``recipient`` (or was changed)."""
    from nacl.bindings import crypto_box_open
    from nacl.exceptions import CryptoError

    secret = _curve_pair(recipient, "the key that opens")
    check_public_key(sender, "curve")
    if len(data) < len(XKEY_VERSION) + _NONCE_LEN + _BOX_TAG_LEN:
        raise NKeyError("not a sealed message: too short")
    if data[: len(XKEY_VERSION)] != XKEY_VERSION:
        raise NKeyError("not a sealed message: it does not start with xkv1")
    nonce = data[len(XKEY_VERSION) : len(XKEY_VERSION) + _NONCE_LEN]
    try:
        return crypto_box_open(data[len(XKEY_VERSION) + _NONCE_LEN :], nonce, _decode_public(sender)[1], secret)
    except CryptoError:
        raise NKeyError(f"cannot open: not sealed by {sender} to this key, or changed since") from None


_SEED_IN_TEXT = re.compile(r"\bS[OACUNX][A-Z2-7]{56}\b")
MAX_KEY_FILE = 64 * 1024


def read_key_file(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair of a seed file: an ``.nk`` file (the seed, as nsc writes it) or a creds file (its
    seed block); ``-`` reads standard input.  :class:`NKeyError` says what is wrong, never the seed."""
    import sys

    try:
        if os.fspath(path) == "-":
            data = sys.stdin.buffer.read(MAX_KEY_FILE + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise NKeyError(f"cannot read the key file {os.fspath(path)}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise NKeyError(f"{os.fspath(path)} is not a key file (larger than {MAX_KEY_FILE} bytes)")
    seeds = set(_SEED_IN_TEXT.findall(data.decode("ascii", "replace")))
    if len(seeds) != 1:
        what = "no seed" if not seeds else "more than one seed"
        raise NKeyError(f"{os.fspath(path)} holds {what}: expected an .nk file or a creds file")
    return KeyPair.from_seed(seeds.pop())
