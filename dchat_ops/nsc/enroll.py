"""Enrollment files: a device asks for its identities as one asks for a certificate, the operator answers.

A device makes its own keys (its user, its node's user, its system user) and writes a **request**
that holds only public keys, names and the node it wants, signed with its user key.  The operator's
machine checks it and answers with a **response** signed by the operator: the operator and account
JWTs, the device's three user JWTs and the node it may run, and never a seed.  The device checks the
response against what it asked for and the operator it named, and only then writes anything.

A **grant request** is what a device writes when it wants to subscribe beyond what its operator
granted it: signed by the device's user key, answered by a response like an enrollment's.

Each file is one signed envelope (:func:`seal`, :func:`unseal`)::

    -----BEGIN DCHAT ENROLLMENT REQUEST-----
    <base64url of the body, compact JSON with sorted keys>
    <base64url of the Ed25519 signature over the line above>
    -----END DCHAT ENROLLMENT REQUEST-----

The body names its kind and its signer; any changed byte (a space, a line break, another JSON
spelling of the same body) is refused, as are files larger than :data:`MAX_FILE`.

What a device holds is seeds of its own keys only: it cannot sign a user its account accepts, nor
widen what its users may subscribe to (docs/trust.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from pathlib import Path
from typing import Any, Optional

from dchat_ops._decode import load_json
from dchat_ops.errors import DchatOpsError, EnrollError, JWTError, NKeyError, StoreError
from dchat_ops.nsc.admin import check_account_jwt, now, user_signer
from dchat_ops.nsc.claims import AccountClaims, OperatorClaims, UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.jwt import decode, verify_chain
from dchat_ops.nsc.keys import KeyPair, PublicKey, check_public_key
from dchat_ops.nsc.spec import UserSpec
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.subjects import check_subject, covers, inbox_prefix

__all__ = [
    "DEVICE_SYSTEM_PUB",
    "KINDS",
    "MAX_FILE",
    "DeviceRecord",
    "add_accounts",
    "beyond_grant",
    "device_info",
    "device_record",
    "device_records",
    "device_user_spec",
    "install_response",
    "issue_for_key",
    "key_proofs",
    "keys_in_use",
    "new_request_id",
    "pending",
    "read_envelope",
    "record_device",
    "seal",
    "system_user_spec",
    "unseal",
    "write_grant_request",
    "write_pending",
]

KINDS = {
    "request": "DCHAT ENROLLMENT REQUEST",
    "response": "DCHAT ENROLLMENT RESPONSE",
    "grant": "DCHAT GRANT REQUEST",
}
_ARTICLE = {"request": "an enrollment request", "response": "an enrollment response", "grant": "a grant request"}
MAX_FILE = 1 << 20  # bytes: a response holds a few JWTs; anything larger is not read
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")

# What a device's system user may ask the servers: what they hold (list, lookup) and to take a newer
# account JWT the operator signed (a server verifies it against the operator before it keeps it), and the
# routes a node holds (for its health).  Nothing that changes a server otherwise (no reload, kick, delete).
DEVICE_SYSTEM_PUB = [
    "$SYS.REQ.CLAIMS.LIST",
    "$SYS.REQ.CLAIMS.UPDATE",
    "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
    "$SYS.REQ.SERVER.*.ROUTEZ",
]


# --- envelopes --------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    if not _B64.match(text):
        raise EnrollError(f"{what} was changed or is damaged (not base64url)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EnrollError(f"{what} was changed or is damaged (not base64url)") from None


def _render(title: str, payload: str, sig: str) -> str:
    return f"-----BEGIN {title}-----\n{payload}\n{sig}\n-----END {title}-----\n"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal(kind: str, body: dict[str, Any], signer: KeyPair) -> str:
    """The envelope text of ``body`` as a ``kind`` file (see :data:`KINDS`), signed by ``signer``."""
    full = {**body, "kind": kind, "version": 1, "signer": signer.public_key}
    payload = _b64(_canonical(full))
    return _render(KINDS[kind], payload, _b64(signer.sign(payload.encode("ascii"))))


def unseal(text: str | bytes, kind: str, what: str = "") -> dict[str, Any]:
    """The body of a ``kind`` envelope whose signature holds (its signer is ``body["signer"]``).

    :class:`EnrollError` for anything else: another kind of file, a changed byte, a bad signature.
    """
    what = what or f"enrollment {kind}"
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise EnrollError(f"not {_ARTICLE[kind]} file (not text)") from None
    if len(text) > MAX_FILE:
        raise EnrollError(f"not {_ARTICLE[kind]} file (larger than {MAX_FILE} bytes)")
    lines = text.split("\n")
    title = KINDS[kind]
    if len(lines) != 5 or lines[4] != "" or not lines[0].startswith("-----BEGIN "):
        raise EnrollError(f"not {_ARTICLE[kind]} file, or it was changed (the layout is not the one written)")
    for other, other_title in KINDS.items():
        if other != kind and lines[0] == f"-----BEGIN {other_title}-----":
            raise EnrollError(f"this is {_ARTICLE[other]}, not {_ARTICLE[kind]}")
    if text != _render(title, lines[1], lines[2]):
        raise EnrollError(f"not {_ARTICLE[kind]} file, or it was changed (the layout is not the one written)")
    raw = _unb64(lines[1], what)
    sig = _unb64(lines[2], what)
    body = load_json(raw, f"{what} was changed or is damaged: its body", EnrollError)
    if not isinstance(body, dict) or body.get("kind") != kind or body.get("version") != 1:
        raise EnrollError(f"{what}: not a version 1 {kind}")
    if _canonical(body) != raw:
        raise EnrollError(f"{what} was changed (its body is not as it was signed)")
    signer = body.get("signer")
    try:
        key = PublicKey(str(signer))
    except (NKeyError, DchatOpsError):
        raise EnrollError(f"{what} was changed or is damaged (its signer is not a public key)") from None
    if not key.verify(lines[1].encode("ascii"), sig):
        raise EnrollError(f"{what} was changed or not signed by the key it names (the signature does not hold)")
    return body


def read_envelope(path: str | Path, kind: str, what: str = "") -> dict[str, Any]:
    """:func:`unseal` the file at ``path`` (read at most :data:`MAX_FILE` bytes and one more)."""
    what = what or f"enrollment {kind}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise EnrollError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return unseal(data, kind, what)


def new_request_id() -> str:
    return secrets.token_hex(16)


# --- proofs that the device holds each key it names -------------------------------------------------------


def _proof_message(request_id: str, part: str, key: str) -> bytes:
    return f"dchat-ops enrollment request {request_id}: {part} key {key}".encode()


def key_proofs(request_id: str, keys: dict[str, KeyPair]) -> dict[str, str]:
    """Signatures by the node and system keys over the request id: the device holds their seeds.  (The
    user key signs the whole request.)  Without them a request could name someone else's key, and the
    operator would issue a JWT, and later revoke, for a key the device does not hold."""
    return {
        part: _b64(kp.sign(_proof_message(request_id, part, kp.public_key)))
        for part, kp in keys.items()
        if part != "user"
    }


def _check_key_proofs(body: dict[str, Any], keys: dict[str, Any], what: str) -> None:
    proofs = _field(body, "proofs", dict, what)
    for part in ("node", "system"):
        sig = _unb64(str(proofs.get(part, "")), f"{what}: proof of its {part} key")
        if not PublicKey(keys[part]).verify(_proof_message(body["id"], part, keys[part]), sig):
            raise EnrollError(f"{what}: the device does not hold the seed of its {part} key (its proof does not hold)")


# --- checks of the fields -----------------------------------------------------------------------------------


def _field(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise EnrollError(f"{what}: field {key!r} is missing or not a {kind.__name__}")
    return value


def _subjects(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise EnrollError(f"{what}: not a list of subjects")
    try:
        for v in values:
            check_subject(v)
    except DchatOpsError as exc:
        raise EnrollError(f"{what}: {exc}") from None
    return list(values)


def check_request_body(body: dict[str, Any]) -> dict[str, Any]:
    """The checked fields of a request body (names, keys, subjects); :class:`EnrollError` otherwise.
    The node's fields are checked where nodes are made (:mod:`dchat_ops.config.enroll`)."""
    what = "enrollment request"
    _field(body, "id", str, what)
    _field(body, "created", int, what)
    keys = _field(body, "keys", dict, what)
    names = _field(body, "names", dict, what)
    _field(body, "node", dict, what)
    try:
        check_name(_field(body, "device", str, what), "device name")
        for part in ("user", "node", "system"):
            check_public_key(str(keys.get(part)), "user", f"{part} key")
            check_name(str(names.get(part)), f"{part} name")
        if body.get("operator"):
            check_public_key(str(body["operator"]), "operator", "operator key")
        if body.get("account"):
            check_name(str(body["account"]), "account name")
    except (StoreError, NKeyError) as exc:
        raise EnrollError(f"{what}: {exc}") from None
    if len({keys["user"], keys["node"], keys["system"]}) != 3 or len(set(names.values())) != 3:
        raise EnrollError(f"{what}: the device's three users need three keys and three names")
    if body["signer"] != keys["user"]:
        raise EnrollError(f"{what}: not signed by the device's user key")
    _check_key_proofs(body, keys, what)
    _subjects(body.get("want_sub", []), f"{what}: want_sub")
    return body


# --- what the operator issues ---------------------------------------------------------------------------------


def device_user_spec(grant: list[str], node_id: str) -> UserSpec:
    """The device's user: publish anywhere, subscribe within ``grant`` and to the replies of its own node's
    inbox prefix (not ``_INBOX.>``: those are every user's replies)."""
    return UserSpec(pub_allow=[], pub_deny=[], sub_allow=[*grant, f"{inbox_prefix(node_id)}.>"], sub_deny=[])


def system_user_spec(node_id: str) -> UserSpec:
    """The device's system user: asks the servers what they hold, nothing else (:data:`DEVICE_SYSTEM_PUB`);
    it reads the answers on its node's inbox prefix only (``_INBOX.>`` in the system account would show it
    the answers to everyone else's system requests)."""
    return UserSpec(
        pub_allow=list(DEVICE_SYSTEM_PUB), pub_deny=[], sub_allow=[f"{inbox_prefix(node_id)}.>"], sub_deny=[]
    )


def beyond_grant(grant: list[str], subject: str) -> bool:
    """True when some subject matched by ``subject`` (a subscribe entry, maybe with a queue group) is outside ``grant``."""
    subj = subject.split(" ")[0]
    return not any(covers(g, subj) for g in grant)


def keys_in_use(store: Store, keys: list[str]) -> list[str]:
    """Those of ``keys`` that are already someone's in this store: a key in the keystore, or the subject of
    a user JWT of any account (a device's user, whose seed is on the device)."""
    wanted = set(keys)
    found = {k for k in wanted if store.has_key(k)}
    op_name = store.current_operator()
    for acc in store.account_names(op_name):
        for name in store.user_names(acc, op_name):
            subject = store.user(acc, name, op_name).claims.subject
            if subject in wanted:
                found.add(subject)
    return sorted(found)


def issue_for_key(
    store: Store,
    account: str,
    name: str,
    public_key: str,
    spec: UserSpec,
    *,
    replace: bool = False,
    replaces_key: str = "",
) -> str:
    """Sign and write the JWT of user ``name`` of ``account`` for a public key whose seed is elsewhere (no
    creds file: the device makes its own).  Inside the store's unit of work.  Returns the JWT.

    An existing user of that name is replaced only when ``replace`` and it has this key (a wider grant), or
    when it has ``replaces_key`` (a revoked device enrolling again with new keys: the old stays revoked)."""
    check_public_key(public_key, "user", "user key")
    with store.transaction():
        op = store.operator()
        acc = store.account(account, op.name)
        path = store.user_jwt_path(op.name, account, name)
        previous = 0
        if path.exists():
            old = store.user(account, name, op.name).claims
            same = replace and old.subject == public_key
            if not same and not (replaces_key and old.subject == replaces_key):
                raise StoreError(f"user {name} already exists in account {account}")
            previous = old.issued_at
        signer, scope = user_signer(store, op.claims, acc.claims)
        if scope is not None:
            raise StoreError(f"account {account}: its user signer is a scoped key; enrollment needs a plain one")
        u = UserClaims(subject=public_key, name=name)
        spec.apply(u)
        if signer.public_key != acc.public_key:
            u.issuer_account = acc.public_key
        token = store.sign(u, signer, replaces=previous)
        store.write_user(op.name, account, name, token)
        return token


# --- the operator's record of devices --------------------------------------------------------------------------

DeviceRecord = dict[str, Any]


def _devices_dir(store: Store) -> Path:
    return store.home / "devices"


def device_record(store: Store, device: str) -> Optional[DeviceRecord]:
    path = _devices_dir(store) / f"{check_name(device, 'device name')}.json"
    try:
        data = load_json(path.read_bytes(), str(path), StoreError)
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def device_records(store: Store) -> list[DeviceRecord]:
    folder = _devices_dir(store)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.json")):
        if p.name.startswith(".tmp-"):
            continue
        rec = device_record(store, p.stem)
        if rec is not None:
            out.append(rec)
    return out


def record_device(store: Store, record: DeviceRecord) -> Path:
    """Write the operator's record of a device (inside the unit of work under way)."""
    path = _devices_dir(store) / f"{check_name(record['device'], 'device name')}.json"
    store.write_file(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


# --- the device's side: its pending request and its own record ------------------------------------------------


def _pending_path(home: Path) -> Path:
    return home / "enroll" / "pending.json"


def pending(store: Store) -> Optional[dict[str, Any]]:
    """The device's enrollment: what it asked for (and when it was answered: ``imported``), or None."""
    try:
        data = load_json(_pending_path(store.home).read_bytes(), str(_pending_path(store.home)), StoreError)
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def write_pending(store: Store, data: dict[str, Any]) -> None:
    store.write_file(_pending_path(store.home), json.dumps(data, indent=2, sort_keys=True) + "\n")


def device_info(store: Store) -> Optional[dict[str, Any]]:
    """This home's device enrollment once a response was imported (None on an operator's machine)."""
    p = pending(store)
    return p if p is not None and p.get("imported") else None


def write_grant_request(store: Store, subjects: list[str], node_id: str) -> Path:
    """Sign a request for a wider grant with the device's user key and write it under ``<home>/enroll``."""
    info = device_info(store)
    if info is None:
        raise EnrollError("this home is not an enrolled device")
    user = store.load_key(info["keys"]["user"])
    rid = new_request_id()
    body = {
        "id": rid,
        "created": now(store),
        "device": info["device"],
        "operator": info["operator"],
        "node": node_id,
        "want_sub": list(subjects),
    }
    path = store.home / "enroll" / f"grant-{rid[:12]}.req"
    with store.transaction():
        store.write_file(path, seal("grant", body, user))
        asked = dict(info)
        asked["grant_requests"] = [*info.get("grant_requests", []), rid]
        write_pending(store, asked)
    return path


# --- the device's side: checking and writing a response ---------------------------------------------------------


def check_response(body: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """Check a response body against this device's pending enrollment ``mine``.

    Returns the decoded pieces (``operator``, ``accounts``, ``users``); :class:`EnrollError` when it is
    for another device or request, replayed, signed by another operator, or does not hold together.
    """
    what = "enrollment response"
    if body.get("device_key") != mine["keys"]["user"]:
        raise EnrollError(
            f"{what}: it is for another device ({body.get('device')!r}, key {str(body.get('device_key'))[:12]}…), "
            f"not for this one ({mine['device']!r})"
        )
    rid = body.get("request")
    grant_requests = mine.get("grant_requests", [])
    if rid != mine["request"] and rid not in grant_requests:
        raise EnrollError(f"{what}: it answers another request than this device's ({str(rid)[:12]}…)")
    if rid in mine.get("answered", []) or (rid == mine["request"] and mine.get("imported")):
        raise EnrollError(f"{what}: already imported (a replayed response is refused)")
    op_token = _field(body, "operator_jwt", str, what)
    try:
        op = decode(op_token, OperatorClaims)
    except JWTError as exc:
        raise EnrollError(f"{what}: operator JWT: {exc}") from None
    if op.subject != mine["operator"]:
        raise EnrollError(
            f"{what}: signed for another operator ({op.subject[:12]}…) than the one this device asked ({mine['operator'][:12]}…)"
        )
    if op.issuer != op.subject:  # its signing keys are the operator's word only once the operator signed them
        raise EnrollError(f"{what}: the operator JWT is not signed by the operator's own key")
    if body["signer"] != op.subject and body["signer"] not in op.signing_keys:
        raise EnrollError(f"{what}: not signed by operator {op.subject[:12]}… or one of its signing keys")
    accounts: dict[str, tuple[str, AccountClaims]] = {}
    for name, token in _field(body, "accounts", dict, what).items():
        try:
            check_name(name, "account name")
            accounts[name] = (token, check_account_jwt(op, str(token)))
        except (JWTError, StoreError) as exc:
            raise EnrollError(f"{what}: account {name}: {exc}") from None
    account = _field(body, "account", str, what)
    if account not in accounts:
        raise EnrollError(f"{what}: it does not hold the JWT of account {account}")
    if not any(c.subject == op.system_account for _, c in accounts.values()):
        raise EnrollError(f"{what}: it does not hold the system account's JWT")
    users: dict[str, tuple[str, str, str]] = {}  # part -> (account name, user name, jwt)
    for part, entry in _field(body, "users", dict, what).items():
        if part not in ("user", "node", "system") or not isinstance(entry, dict):
            raise EnrollError(f"{what}: unknown user entry {part!r}")
        acc_name, name, token = str(entry.get("account")), str(entry.get("name")), str(entry.get("jwt"))
        if acc_name not in accounts:
            raise EnrollError(f"{what}: user {name}: its account {acc_name} is not in the response")
        try:
            check_name(name, "user name")
            claims = verify_chain(op, accounts[acc_name][1], decode(token, UserClaims), check_expiry=False).user
        except (JWTError, StoreError) as exc:
            raise EnrollError(f"{what}: user {name}: {exc}") from None
        if claims is None or claims.subject != mine["keys"][part]:
            raise EnrollError(f"{what}: user {name} is not the key this device made for its {part} user")
        if part != "system" and acc_name != account:
            raise EnrollError(f"{what}: user {name} is not in account {account}")
        users[part] = (acc_name, name, token)
    want = {"user", "node", "system"} if rid == mine["request"] else {"user", "node"}
    if set(users) != want:
        raise EnrollError(
            f"{what}: it holds the JWTs of {', '.join(sorted(users)) or 'no user'}, not of {', '.join(sorted(want))}"
        )
    if "system" in users and accounts[users["system"][0]][1].subject != op.system_account:
        raise EnrollError(f"{what}: the device's system user is not in the system account")
    return {"operator": op, "accounts": accounts, "users": users}


def install_response(store: Store, body: dict[str, Any], checked: dict[str, Any], mine: dict[str, Any]) -> None:
    """Write what a checked response holds into the device's store (inside the caller's unit of work): the
    operator, the accounts, the device's users with creds made from its own seeds, and its record."""
    op: OperatorClaims = checked["operator"]
    op_name = op.name
    check_name(op_name, "operator name")
    existing = store.operator_names()
    if existing and existing != [op_name]:
        raise EnrollError(f"this home holds another operator ({', '.join(existing)}); enroll into an empty home")
    store.write_operator(op_name, body["operator_jwt"])
    for name, (token, _claims) in checked["accounts"].items():
        path = store.account_jwt_path(op_name, name)
        if path.exists():
            held = store.account(name, op_name).claims
            if held.issued_at >= _claims.issued_at:
                continue  # the device holds this version or a newer one already
        store.write_account(op_name, name, token)
    for part, (acc_name, name, token) in checked["users"].items():
        store.write_user(op_name, acc_name, name, token)
        seed = store.load_key(mine["keys"][part]).seed
        store.write_creds(op_name, acc_name, name, format_creds(token, seed), force=True)
    store.set_context(operator=op_name, account=body["account"])


def add_accounts(store: Store, tokens: list[str]) -> list[str]:
    """On an enrolled device: write accounts the store does not hold yet, as the cluster holds them (each
    verified against the operator, named as its JWT says).  Inside one unit of work; returns the names."""
    names = []
    with store.transaction():
        op = store.operator()
        held = {e.public_key for e in store.accounts(op.name)}
        for token in tokens:
            claims = check_account_jwt(op.claims, token)
            if claims.subject in held:
                raise StoreError(f"account {claims.name} is in the store already")
            name = check_name(claims.name, "account name")
            if store.account_jwt_path(op.name, name).exists():
                raise StoreError(f"the store holds another account named {name}")
            store.write_account(op.name, name, token)
            names.append(name)
    return names
