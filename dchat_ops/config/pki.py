"""A small certificate authority per store, and node certificates (ECDSA P-256).

Layout under the store's home (the CA key and every node key are 0600 in 0700 folders, written
atomically; certificates are 0644)::

    pki/ca.crt                         the CA certificate (ca_file of every TLS block)
    pki/private/ca.key                 the CA key: it never leaves this folder
    pki/nodes/<id>/server.{key,crt}    client, websocket and leafnode (hub) ports: serverAuth
    pki/nodes/<id>/route.{key,crt}     routes and gateways, which are mutual: serverAuth + clientAuth
    pki/nodes/<id>/client.{key,crt}    leafnode remotes and the toolkit's own clients: clientAuth

    >>> init_ca(store)
    >>> issue(store, "a", "route")
    >>> renew(store)                           # re-issue every certificate with the same names

Which links of a node use TLS, and the config blocks that say so, are :mod:`dchat_ops.config.tls`.
Key material is never put in a message, a log line or a return value.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import math
import re
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dchat_ops.config.node import NodeFile
from dchat_ops.errors import TLSError
from dchat_ops.hosts import host_of, is_ip, is_wildcard
from dchat_ops.nsc.store import Store, check_name

__all__ = [
    "KINDS",
    "SOON_DAYS",
    "ca_paths",
    "cert_paths",
    "check_issued",
    "client_ssl_context",
    "describe_cert",
    "init_ca",
    "issue",
    "issue_for_public_key",
    "list_certs",
    "load_ca",
    "new_key_pair",
    "node_sans",
    "pki_dir",
    "read_cert",
    "renew",
]

KINDS = ("server", "client", "route")
SOON_DAYS = 30  # a certificate with fewer days left is reported as expiring soon

_EKU = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "route": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}
_DNS = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?\Z", re.ASCII)
_SKEW = _dt.timedelta(minutes=5)  # certificates start a little in the past: clocks differ between machines

# --- paths ------------------------------------------------------------------------------------------


def pki_dir(store: Store) -> Path:
    return store.location.pki_dir


def ca_paths(store: Store) -> tuple[Path, Path]:
    """``(key, cert)`` of the store's CA."""
    return pki_dir(store) / "private" / "ca.key", pki_dir(store) / "ca.crt"


def cert_paths(store: Store, node_id: str, kind: str) -> tuple[Path, Path]:
    """``(key, cert)`` of one node certificate."""
    _check_kind(kind)
    d = pki_dir(store) / "nodes" / check_name(node_id, "node id")
    return d / f"{kind}.key", d / f"{kind}.crt"


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise TLSError(f"unknown certificate kind {kind!r} (use {', '.join(KINDS)})")
    return kind


# --- time --------------------------------------------------------------------------------------------


def _now(store: Store) -> _dt.datetime:
    t = (store.clock or time.time)()
    return _dt.datetime.fromtimestamp(int(t), _dt.timezone.utc)


def _iso(d: _dt.datetime) -> str:
    return d.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading and writing keys and certificates ----------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise TLSError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_cert(path: Path) -> x509.Certificate:
    data = _read_pem(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TLSError(f"{path} is not a PEM certificate") from None


def _read_key(path: Path):
    data = _read_pem(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # never echo the content: it is (or should have been) a private key
        raise TLSError(f"{path} is not an unencrypted PEM private key") from None


def load_ca(store: Store):
    key_path, crt_path = ca_paths(store)
    if not crt_path.is_file() or not key_path.is_file():
        raise TLSError(f"no TLS certificate authority in {pki_dir(store)}: run 'dchat-ops tls init-ca' first")
    cert = read_cert(crt_path)
    key = _read_key(key_path)
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise TLSError(f"the CA key in {key_path.parent} does not belong to {crt_path}")
    return key, cert


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _operator_name(store: Store) -> str:
    try:
        return store.current_operator()
    except Exception:  # a CA can exist before (or without) an operator
        return "dchat"


# --- the CA ---------------------------------------------------------------------------------------------


def init_ca(store: Store, *, days: int = 3650, force: bool = False) -> dict:
    """Create the store's CA (``pki/ca.crt`` and ``pki/private/ca.key``).

    An existing CA is kept (``created: False``) unless ``force``: a new CA invalidates every
    certificate issued by the old one, so every node certificate must then be re-issued.
    Key and certificate are written in one unit of work (both or neither, also across a kill).
    """
    with store.transaction():
        return _init_ca(store, days, force)


def _init_ca(store: Store, days: int, force: bool) -> dict:
    if not 0 < days <= 36500:
        raise TLSError("a CA is valid for 1 to 36500 days")
    key_path, crt_path = ca_paths(store)
    if crt_path.is_file() and key_path.is_file() and not force:
        cert = read_cert(crt_path)
        return {**describe_cert(store, cert, crt_path, None, "ca"), "created": False, "key_path": str(key_path)}
    if (crt_path.exists() or key_path.exists()) and not force and not (crt_path.is_file() and key_path.is_file()):
        raise TLSError(f"{pki_dir(store)} holds half a CA (certificate or key missing); use --force to replace it")
    now = _now(store)
    key = _new_key()
    pub = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    tag = hashlib.sha256(ski.digest).hexdigest()[:8]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dchat-ops"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"dchat-ops CA {_operator_name(store)} {tag}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # the key first: a certificate without its key would look like a usable CA
    store.write_file(key_path, _key_pem(key), private=True)
    store.write_file(crt_path, _cert_pem(cert))
    return {**describe_cert(store, cert, crt_path, None, "ca"), "created": True, "key_path": str(key_path)}


# --- names ------------------------------------------------------------------------------------------------


def node_sans(node) -> list[str]:
    """The names a node's certificates carry: id, server_name, localhost, 127.0.0.1 and its specific hosts."""
    names: list[str] = [node.id, node.server_name, "localhost", "127.0.0.1"]
    hosts = [node.host, host_of(node.advertise)]
    for section in (node.cluster, node.gateway, node.leafnodes, node.websocket):
        if section:
            hosts.append(section.get("host") or "")
            hosts.append(host_of(section.get("advertise") or ""))
    names.extend(h for h in hosts if h and not is_wildcard(h))
    out: list[str] = []
    for n in names:
        if n and n not in out and (is_ip(n) or _DNS.match(n)):
            out.append(n)
    return out


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        n = str(n).strip()
        if is_ip(n):
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        elif _DNS.match(n) and len(n) <= 253:
            out.append(x509.DNSName(n))
        else:
            raise TLSError(f"invalid subject alternative name {n!r}: use a host name or an IP address")
    return out


def _sans_of(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
    out += [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
    return out


# --- node certificates --------------------------------------------------------------------------------------


def _sign(
    store: Store, node_id: str, kind: str, names: list[str], days: int, not_before: Optional[_dt.datetime]
) -> dict:
    key = _new_key()
    cert, ca_cert = _certificate(store, node_id, kind, names, days, not_before, key.public_key())
    key_path, crt_path = cert_paths(store, node_id, kind)
    store.write_file(key_path, _key_pem(key), private=True)
    store.write_file(crt_path, _cert_pem(cert))
    return {**describe_cert(store, cert, crt_path, node_id, kind, ca_cert), "key_path": str(key_path)}


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh key for a certificate made elsewhere: (private key PEM, public key PEM)."""
    key = _new_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _key_pem(key), public


def issue_for_public_key(
    store: Store, node_id: str, kind: str, public_key_pem: bytes, names: list[str], days: int = 397
) -> bytes:
    """The PEM of a ``kind`` certificate of node ``node_id`` for a key held elsewhere (an enrolled
    device's), signed by the store's CA; nothing is written."""
    _check_kind(kind)
    try:
        public = serialization.load_pem_public_key(public_key_pem)
    except ValueError:
        raise TLSError(f"the {kind} key of node {node_id} is not a PEM public key") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise TLSError(f"the {kind} key of node {node_id} is not an ECDSA P-256 key")
    cert, _ca = _certificate(store, node_id, kind, names, days, None, public)
    return _cert_pem(cert)


def check_issued(cert_pem: bytes, ca_pem: bytes, key_pem: bytes) -> None:
    """TLSError unless ``cert_pem`` is signed by the CA ``ca_pem`` and is for the private key ``key_pem``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        raise TLSError("a certificate, the CA or the key is not PEM") from None
    if not _signed_by(cert, ca):
        raise TLSError("a certificate is not signed by the CA given with it")
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise TLSError("a certificate is not for the key this node made")


def _certificate(
    store: Store,
    node_id: str,
    kind: str,
    names: list[str],
    days: int,
    not_before: Optional[_dt.datetime],
    public_key,
) -> tuple[x509.Certificate, x509.Certificate]:
    ca_key, ca_cert = load_ca(store)
    now = _now(store)
    if ca_cert.not_valid_after_utc <= now:
        raise TLSError(
            f"the CA expired on {_iso(ca_cert.not_valid_after_utc)}: create a new one with "
            "'dchat-ops tls init-ca --force' and re-issue every certificate"
        )
    if not 0 < days <= 36500:
        raise TLSError("a certificate is valid for 1 to 36500 days")
    start = not_before.astimezone(_dt.timezone.utc) if not_before else now - _SKEW
    end = start + _dt.timedelta(days=days) + (_SKEW if not not_before else _dt.timedelta(0))
    end = min(end, ca_cert.not_valid_after_utc)  # never outlive the CA
    if end <= start:
        raise TLSError("the requested validity window is empty")
    sans = _san_entries(names)
    if not sans:
        raise TLSError(f"a {kind} certificate for {node_id} needs at least one name")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dchat-ops"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(_EKU[kind]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, ca_cert


def issue(
    store: Store,
    node_id: str,
    kind: str,
    sans: Iterable[str] = (),
    days: int = 397,
    *,
    not_before: Optional[_dt.datetime] = None,
    node=None,
) -> dict:
    """Issue (or replace) the ``kind`` certificate of a node: its names and addresses plus ``sans``.

    ``not_before`` overrides the start of the validity window (for tests of expired
    certificates); ``node`` gives the :class:`Node` instead of loading ``nodes/<id>.yaml``.
    """
    _check_kind(kind)
    if node is None:
        node = NodeFile.load(store, node_id).node
    names = node_sans(node)
    for s in sans or ():
        s = str(s).strip()
        if s and s not in names:
            names.append(s)
    with store.transaction():  # key and certificate: both or neither
        return _sign(store, node_id, kind, names, days, not_before)


def describe_cert(
    store: Store,
    cert: x509.Certificate,
    path: Path,
    node_id: Optional[str],
    kind: str,
    ca_cert: Optional[x509.Certificate] = None,
) -> dict:
    now = _now(store)
    after = cert.not_valid_after_utc
    before = cert.not_valid_before_utc
    left = (after - now).total_seconds()
    days_left = math.ceil(left / 86400) if left > 0 else math.floor(left / 86400)
    expired = after <= now
    d = {
        "node": node_id,
        "kind": kind,
        "path": str(path),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "sans": _sans_of(cert),
        "not_before": _iso(before),
        "not_after": _iso(after),
        "days_left": days_left,
        "expired": expired,
        "not_yet_valid": before > now,
        "expiring_soon": (not expired) and days_left < SOON_DAYS,
        "fingerprint_sha256": _fingerprint(cert),
    }
    if ca_cert is not None:
        d["signed_by_ca"] = _signed_by(cert, ca_cert)
    return d


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _node_cert_files(store: Store, node_id: Optional[str] = None) -> list[tuple[str, str, Path, Path]]:
    """``(node_id, kind, key_path, cert_path)`` of every node certificate on disk (or of one node)."""
    base = pki_dir(store) / "nodes"
    if node_id is not None:
        dirs = [base / check_name(node_id, "node id")]
    else:
        dirs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    out = []
    for d in dirs:
        for kind in KINDS:
            crt = d / f"{kind}.crt"
            if crt.is_file():
                out.append((d.name, kind, d / f"{kind}.key", crt))
    return out


def list_certs(store: Store) -> list[dict]:
    """The CA and every node certificate: subject, names, validity (expired, expiring soon), issuer.

    ``signed_by_ca`` is False for a certificate the current CA did not sign (an old or foreign CA);
    ``key_present`` is False when its key file is missing.  An unreadable file is listed with ``error``.
    """
    out: list[dict] = []
    key_path, crt_path = ca_paths(store)
    ca_cert = None
    if crt_path.is_file():
        try:
            ca_cert = read_cert(crt_path)
            d = describe_cert(store, ca_cert, crt_path, None, "ca")
            d["key_present"] = key_path.is_file()
            out.append(d)
        except TLSError as exc:
            out.append({"node": None, "kind": "ca", "path": str(crt_path), "error": str(exc)})
    for node_id, kind, kpath, cpath in _node_cert_files(store):
        try:
            cert = read_cert(cpath)
        except TLSError as exc:
            out.append({"node": node_id, "kind": kind, "path": str(cpath), "error": str(exc)})
            continue
        d = describe_cert(store, cert, cpath, node_id, kind)
        d["signed_by_ca"] = _signed_by(cert, ca_cert) if ca_cert is not None else False
        d["key_present"] = kpath.is_file()
        out.append(d)
    return out


def renew(store: Store, node_id: Optional[str] = None, *, days: int = 397) -> list[dict]:
    """Re-issue the existing certificates (of one node, or all) with the same names and a new key: all of
    them or none (one unit of work; a kill is rolled back by the next command, and running it again
    renews them all)."""
    with store.transaction():  # every certificate or none, also across a kill
        files = _node_cert_files(store, node_id)
        if node_id is not None and not files:
            raise TLSError(f"node {node_id} has no certificates to renew: issue them with 'dchat-ops tls issue'")
        load_ca(store)  # fail before touching anything when there is no CA
        out = []
        for nid, kind, _kpath, cpath in files:
            try:
                names = _sans_of(read_cert(cpath))
            except TLSError:
                names = []
            if not names:  # unreadable or nameless: fall back to the node's current names
                names = node_sans(NodeFile.load(store, nid).node)
            out.append(_sign(store, nid, kind, names, days, None))
        return out


def client_ssl_context(store: Store, *, node_id: Optional[str] = None, kind: str = "client") -> ssl.SSLContext:
    """An :class:`ssl.SSLContext` trusting the store's CA (for nats-py ``connect(..., tls=ctx)``).

    With ``node_id`` it also presents that node's ``kind`` certificate (for ports that verify clients).
    """
    _key, ca_crt = ca_paths(store)
    if not ca_crt.is_file():
        raise TLSError(f"no TLS certificate authority in {pki_dir(store)}: run 'dchat-ops tls init-ca' first")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_crt))
    if node_id is not None:
        kpath, cpath = cert_paths(store, node_id, kind)
        try:
            ctx.load_cert_chain(str(cpath), str(kpath))
        except (OSError, ssl.SSLError):
            raise TLSError(f"cannot load the {kind} certificate of node {node_id} ({cpath})") from None
    return ctx
