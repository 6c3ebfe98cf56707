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

from dchat_ops.errors import BundleError
from dchat_ops.nsc.keys import KeyPair, x25519_public

__all__ = ["FORMAT", "BundleError", "open_bundle", "seal_bundle"]

FORMAT = "dchat-ops-bundle"
SCRYPT_N = 2**15
_INFO = b"dchat-ops bundle v1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any, what: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (ValueError, TypeError):
        raise BundleError(f"bundle field {what} is damaged") from None


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
    return (json.dumps({**header, "ciphertext": _b64(ct)}, indent=1) + "\n").encode()


def _parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BundleError("not a dchat-ops bundle, or a truncated one") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError("not a dchat-ops bundle")
    if doc.get("version") != 1 or doc.get("cipher") != "aes-256-gcm" or not isinstance(doc.get("kdf"), dict):
        raise BundleError("unsupported bundle version or cipher")
    ct = _unb64(doc.get("ciphertext", ""), "ciphertext")
    header = {k: v for k, v in doc.items() if k != "ciphertext"}
    return header, ct


def open_bundle(
    data: bytes, *, passphrase: Optional[str] = None, curve_key: Optional[KeyPair] = None
) -> dict[str, Any]:
    """Decrypt a bundle; BundleError for a wrong secret, a damaged or a truncated file."""
    header, ct = _parse(data)
    kdf = header["kdf"]
    nonce = _unb64(header.get("nonce", ""), "nonce")
    if kdf.get("name") == "scrypt":
        if passphrase is None:
            raise BundleError("this bundle is sealed to a passphrase; give one")
        try:
            n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            if not (2**10 <= n <= 2**20 and r <= 32 and p <= 16):
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise BundleError("bundle key derivation parameters are damaged") from None
        key = _scrypt(passphrase, _unb64(kdf.get("salt", ""), "salt"), n, r, p)
    elif kdf.get("name") == "x25519-hkdf-sha256":
        if curve_key is None:
            raise BundleError(f"this bundle is sealed to curve key {kdf.get('recipient')}; give its seed")
        if curve_key.public_key != kdf.get("recipient"):
            raise BundleError(f"this bundle is sealed to {kdf.get('recipient')}, not to {curve_key.public_key}")
        eph = _unb64(kdf.get("ephemeral", ""), "ephemeral")
        try:
            shared = curve_key.x25519_private().exchange(X25519PublicKey.from_public_bytes(eph))
        except ValueError:
            raise BundleError("bundle ephemeral key is damaged") from None
        key = _hkdf(shared, eph)
    else:
        raise BundleError(f"unknown bundle key derivation {kdf.get('name')!r}")
    try:
        plaintext = AESGCM(key).decrypt(nonce, ct, _aad(header))
    except (InvalidTag, ValueError):
        raise BundleError("cannot open the bundle: wrong passphrase or key, or the file was changed") from None
    try:
        payload = json.loads(plaintext)
    except ValueError:
        raise BundleError("the bundle's content is not valid") from None
    if not isinstance(payload, dict):
        raise BundleError("the bundle's content is not valid")
    return payload
