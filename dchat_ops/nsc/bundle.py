"""Encrypted bundles of creds, keys and JWTs, to move identities between machines.

A bundle is one JSON file::

    {"format": "dchat-ops-bundle", "version": 1,
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "..."}      # to a passphrase
       or {"name": "x25519-hkdf-sha256", "recipient": "X...", "ephemeral": "..."} # to a curve key
     "cipher": "aes-256-gcm", "nonce": "...", "ciphertext": "..."}

The header (everything but the ciphertext) is authenticated with the payload, so changing any byte
of the file makes it fail to open.  The payload is JSON: the operator JWT, account JWTs, user JWTs
and the seeds that go with them.  A ``plain`` export writes nsc's own formats instead.

    >>> data = seal_bundle(payload, passphrase="correct horse")
    >>> open_bundle(data, passphrase="correct horse") == payload
    True
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dchat_ops._decode import cut, load_json
from dchat_ops.errors import BundleError
from dchat_ops.nsc.keys import KeyPair, x25519_public

__all__ = ["FORMAT", "BundleError", "check_payload", "open_bundle", "seal_bundle"]

FORMAT = "dchat-ops-bundle"
SCRYPT_N = 2**15
# What a bundle may ask of scrypt: we seal with n=2**15, r=8, p=1 (32 MiB, about 0.1 s); a bundle may
# ask for up to four times the memory and sixteen times the work, never more (a hostile bundle must not
# make its reader spend gigabytes or minutes before the passphrase is even checked).
SCRYPT_MAX_MEMORY = 2**27  # bytes: 128 * n * r
SCRYPT_MAX_WORK = 2**22  # n * r * p
_INFO = b"dchat-ops bundle v1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any, what: str, size: Optional[tuple[int, int]] = None) -> bytes:
    try:
        if not isinstance(s, str):
            raise TypeError
        out = base64.b64decode(s, validate=True)
    except (ValueError, TypeError):
        raise BundleError(f"bundle field {what} is damaged") from None
    if size is not None and not size[0] <= len(out) <= size[1]:
        raise BundleError(f"bundle field {what} is damaged")
    return out


def _scrypt_parameters(kdf: dict[str, Any]) -> tuple[int, int, int]:
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if not all(type(v) is int for v in (n, r, p)):
        raise BundleError("bundle key derivation parameters are damaged: n, r and p must be whole numbers")
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BundleError(
            "bundle key derivation parameters are damaged: n must be a power of two from 2**10 to 2**20, "
            "r from 1 to 32, p from 1 to 16"
        )
    if 128 * n * r > SCRYPT_MAX_MEMORY or n * r * p > SCRYPT_MAX_WORK:
        raise BundleError(
            f"bundle key derivation parameters ask too much (n={n}, r={r}, p={p}): at most "
            f"{SCRYPT_MAX_MEMORY >> 20} MiB and {SCRYPT_MAX_WORK // SCRYPT_N // 8}x the work of what dchat-ops seals with"
        )
    return n, r, p


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _hkdf(shared: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(shared)


def seal_bundle(payload: dict[str, Any], *, passphrase: Optional[str] = None, recipient: Optional[str] = None) -> bytes:
    """Encrypt ``payload`` to a passphrase or to a recipient's curve public key (``X...``)."""
    kdf: dict[str, Any]
    if passphrase is not None and recipient is None:
        if len(passphrase) < 8:
            raise BundleError("the passphrase must have at least 8 characters")
        salt = os.urandom(16)
        kdf = {"name": "scrypt", "n": SCRYPT_N, "r": 8, "p": 1, "salt": _b64(salt)}
        key = _scrypt(passphrase, salt, SCRYPT_N, 8, 1)
    elif recipient is not None and passphrase is None:
        eph = X25519PrivateKey.generate()
        eph_pub = eph.public_key().public_bytes_raw()
        kdf = {"name": "x25519-hkdf-sha256", "recipient": recipient, "ephemeral": _b64(eph_pub)}
        key = _hkdf(eph.exchange(x25519_public(recipient)), eph_pub)
    else:
        raise BundleError("seal a bundle to a passphrase or to a recipient key, not both or neither")
    nonce = os.urandom(12)
    header = {"format": FORMAT, "version": 1, "kdf": kdf, "cipher": "aes-256-gcm", "nonce": _b64(nonce)}
    plaintext = json.dumps(payload, separators=(",", ":")).encode()
    ct = AESGCM(key).encrypt(nonce, plaintext, _aad(header))
    return _layout({**header, "ciphertext": _b64(ct)})


# The order in which a bundle's keys are written; a bundle is read back only in this layout.
_ORDER = ("format", "version", "kdf", "cipher", "nonce", "ciphertext")
_KDF_ORDER = {"scrypt": ("name", "n", "r", "p", "salt"), "x25519-hkdf-sha256": ("name", "recipient", "ephemeral")}


def _ordered(doc: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    known = {k: doc[k] for k in order if k in doc}
    return {**known, **{k: doc[k] for k in sorted(doc, key=str) if k not in known}}


def _layout(doc: dict[str, Any]) -> bytes:
    """The bytes of a bundle document exactly as they are written, keys in their order (the one layout
    read back: a blank, a line end or a key moved is a changed bundle)."""
    out = _ordered(doc, _ORDER)
    kdf = out.get("kdf")
    if isinstance(kdf, dict):
        out["kdf"] = _ordered(kdf, _KDF_ORDER.get(str(kdf.get("name")), ("name",)))
    return (json.dumps(out, indent=1) + "\n").encode()


def _parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        doc = load_json(data, "the bundle", BundleError)
    except BundleError as exc:
        raise BundleError(f"not a dchat-ops bundle, or a truncated one ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError("not a dchat-ops bundle")
    version = doc.get("version")
    if type(version) is not int or version != 1 or doc.get("cipher") != "aes-256-gcm":
        raise BundleError("unsupported bundle version or cipher")
    if not isinstance(doc.get("kdf"), dict):
        raise BundleError("bundle field kdf is damaged")
    ct = _unb64(doc.get("ciphertext", ""), "ciphertext", (16, 1 << 40))
    if _layout(doc) != data:  # the header is authenticated as parsed; its bytes must be the ones written too
        raise BundleError("the bundle was changed (a byte outside the encrypted content is not as written)")
    header = {k: v for k, v in doc.items() if k != "ciphertext"}
    return header, ct


def open_bundle(
    data: bytes, *, passphrase: Optional[str] = None, curve_key: Optional[KeyPair] = None
) -> dict[str, Any]:
    """Decrypt a bundle; BundleError for a wrong secret, a damaged or a truncated file."""
    header, ct = _parse(data)
    kdf = header["kdf"]
    nonce = _unb64(header.get("nonce", ""), "nonce", (12, 12))
    name = kdf.get("name")
    if name == "scrypt":
        if passphrase is None:
            raise BundleError("this bundle is sealed to a passphrase; give one")
        n, r, p = _scrypt_parameters(kdf)
        key = _scrypt(passphrase, _unb64(kdf.get("salt", ""), "salt", (8, 64)), n, r, p)
    elif name == "x25519-hkdf-sha256":
        recipient = kdf.get("recipient")
        if not isinstance(recipient, str) or not recipient.startswith("X") or len(recipient) != 56:
            raise BundleError("bundle field kdf.recipient is damaged")
        if curve_key is None:
            raise BundleError(f"this bundle is sealed to curve key {recipient}; give its seed")
        if curve_key.public_key != recipient:
            raise BundleError(f"this bundle is sealed to {recipient}, not to {curve_key.public_key}")
        eph = _unb64(kdf.get("ephemeral", ""), "ephemeral", (32, 32))
        try:
            shared = curve_key.x25519_private().exchange(X25519PublicKey.from_public_bytes(eph))
        except ValueError:
            raise BundleError("bundle ephemeral key is damaged") from None
        key = _hkdf(shared, eph)
    else:
        raise BundleError(f"unknown bundle key derivation {cut(str(name))!r}")
    try:
        plaintext = AESGCM(key).decrypt(nonce, ct, _aad(header))
    except (InvalidTag, ValueError):
        raise BundleError("cannot open the bundle: wrong passphrase or key, or the file was changed") from None
    payload = load_json(plaintext, "the bundle's content", BundleError)
    check_payload(payload)
    assert isinstance(payload, dict)  # check_payload refuses anything else
    return payload


# The shape of a bundle's content: each field, and what each item of its list holds (key -> required).
_ITEMS = {
    "accounts": {"jwt": True, "name": False},
    "users": {"jwt": True, "name": False, "account": False},
}


def check_payload(payload: Any) -> None:
    """BundleError naming the first field of ``payload`` that is not what an export writes."""

    def bad(where: str, what: str) -> BundleError:
        return BundleError(f"the bundle's content is damaged: {where} {what}")

    if not isinstance(payload, dict):
        raise bad("the content", "is not a mapping")
    if "kind" in payload and not isinstance(payload["kind"], str):
        raise bad("kind", "is not text")
    op = payload.get("operator")
    if not isinstance(op, dict):
        raise bad("operator", "is missing or not a mapping")
    if not isinstance(op.get("jwt"), str):
        raise bad("operator.jwt", "is missing or not text")
    if op.get("name") is not None and not isinstance(op["name"], str):
        raise bad("operator.name", "is not text")
    for field, keys in _ITEMS.items():
        items = payload.get(field, [])
        if not isinstance(items, list):
            raise bad(field, "is not a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad(f"{field}[{i}]", "is not a mapping")
            for key, required in keys.items():
                value = item.get(key)
                if (value is not None or required) and not isinstance(value, str):
                    raise bad(f"{field}[{i}].{key}", "is missing or not text" if required else "is not text")
    seeds = payload.get("seeds", [])
    if not isinstance(seeds, list):
        raise bad("seeds", "is not a list")
    for i, seed in enumerate(seeds):
        if not isinstance(seed, str):
            raise bad(f"seeds[{i}]", "is not text")
