"""Issuance makes the same bytes on every path: encode(), the bulk encoder, issue_user and issue_users.

Claims of every shape are made here with fixed keys and a fixed clock.
``tests/fixtures/issuance_golden.json`` holds the tokens and creds these made with the PyJWT-based
encoder that preceded the compact one: every path must keep making exactly them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dchat_ops.errors import JWTError, StoreError
from dchat_ops.nsc import admin
from dchat_ops.nsc.claims import (
    AccountClaims,
    ActivationClaims,
    Claims,
    Export,
    Import,
    OperatorClaims,
    ResponsePermission,
    ScopedSigningKey,
    TimeRange,
    UserClaims,
)
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.jwt import Encoder, compute_jti, decode, encode, encode_generic, verify_chain
from dchat_ops.nsc.keys import KeyPair

GOLDEN: dict[str, str] = json.loads((Path(__file__).parent / "fixtures" / "issuance_golden.json").read_text())
CLOCK = 1_800_000_000


def clock() -> float:
    return CLOCK


def key(kind: str, label: str) -> KeyPair:
    """A fixed key pair: its seed is SHA-256 of ``label``."""
    return KeyPair(kind, hashlib.sha256(label.encode()).digest())


OP = key("operator", "op")
OP_SK = key("operator", "op-sk")
SYS = key("account", "sys")
ACC = key("account", "acc")
ACC_SK = key("account", "acc-sk")
SCOPED = key("account", "acc-scoped")
OTHER = key("account", "other")


def user(label: str) -> KeyPair:
    return key("user", label)


def _operator_full() -> OperatorClaims:
    o = OperatorClaims(subject=OP.public_key, name="dchat")
    o.signing_keys = [OP_SK.public_key]
    o.account_server_url = "nats://127.0.0.1:4222"
    o.operator_service_urls = ["nats://a.example:4222", "tls://b.example:4222"]
    o.system_account = SYS.public_key
    o.assert_server_version = "2.10.0"
    o.strict_signing_key_usage = True
    o.tags = ["env:prod", "team:ops"]
    o.expires = CLOCK + 86400 * 365
    return o


def _account_full() -> AccountClaims:
    a = AccountClaims(subject=ACC.public_key, name="chat", expires=CLOCK + 3600, not_before=CLOCK - 60)
    a.limits.conn = 500
    a.limits.subs = 10_000
    a.limits.leaf = 0
    a.limits.disallow_bearer = True
    a.limits.jetstream.mem_storage = 1 << 20
    a.limits.jetstream.disk_storage = -1
    a.limits.jetstream.max_bytes_required = True
    scoped = ScopedSigningKey(SCOPED.public_key, "guest", description="read only")
    scoped.template.permissions.sub.allow = ["public.>"]
    scoped.template.subs = 5
    a.signing_keys = [ACC_SK.public_key, scoped]
    a.exports = [
        Export("svc.time", "service", response_type="Singleton", revocations={OTHER.public_key: CLOCK - 5}),
        Export("feed.>", "stream", name="feed", token_req=True, advertise=True, description="the feed"),
    ]
    a.imports = [Import("feed.>", OTHER.public_key, "stream", local_subject="remote.feed.>", name="theirs")]
    a.revocations = {user("gone").public_key: CLOCK - 100, "*": CLOCK - 1000}
    a.mappings = {"old.>": [{"subject": "new.>", "weight": 100}]}
    a.default_permissions.sub.deny = ["secret.>"]
    a.description = "chat & more <here>"
    a.info_url = "https://example.com/a?x=1&y=2"
    a.tags = ["tier:gold"]
    return a


def _user_full() -> UserClaims:
    u = UserClaims(
        subject=user("full").public_key,
        name="full",
        expires=CLOCK + 600,
        not_before=CLOCK - 30,
        issuer_account=ACC.public_key,
        tags=["team:a", "x"],
    )
    lim = u.limits
    lim.permissions.pub.allow = ["chat.>", "_INBOX.>"]
    lim.permissions.pub.deny = ["chat.admin"]
    lim.permissions.sub.allow = ["chat.* workers", "_INBOX.>"]
    lim.permissions.sub.deny = ["chat.secret"]
    lim.permissions.resp = ResponsePermission(5, 1_000_000_000)
    lim.src = ["127.0.0.0/8", "::1/128"]
    lim.times = [TimeRange("08:00:00", "18:00:00"), TimeRange("22:00:00", "02:00:00")]
    lim.times_location = "Europe/Berlin"
    lim.subs, lim.data, lim.payload = 10, 1000, 100
    lim.bearer_token = True
    lim.allowed_connection_types = ["STANDARD", "WEBSOCKET"]
    return u


def _user_extra() -> UserClaims:
    u = UserClaims(subject=user("extra").public_key, name="extra", audience="some-audience")
    u.extra["future_field"] = {"x": [1, 2], "s": "a<b"}
    u.extra_top["custom"] = "kept"
    return u


def _activation() -> ActivationClaims:
    return ActivationClaims(
        subject=OTHER.public_key, name="feed", import_subject="feed.>", import_type="stream", expires=CLOCK + 99
    )


# label -> (claims factory, signer)
SHAPES: dict[str, tuple[Callable[[], Claims], KeyPair]] = {
    "operator-plain": (lambda: OperatorClaims(subject=OP.public_key, name="demo"), OP),
    "operator-full": (_operator_full, OP),
    "account-plain": (lambda: AccountClaims(subject=ACC.public_key, name="chat"), OP),
    "account-full-by-signing-key": (_account_full, OP_SK),
    "user-plain": (lambda: UserClaims(subject=user("plain").public_key, name="alice"), ACC),
    "user-full-by-signing-key": (_user_full, ACC_SK),
    "user-no-name": (lambda: UserClaims(subject=user("noname").public_key), ACC),
    "user-escaped-name": (
        lambda: UserClaims(subject=user("esc").public_key, name='Zoë <a&b> "q" \\ \u2028\u2029 \t 😀'),
        ACC,
    ),
    "user-extra-fields": (_user_extra, ACC),
    "user-scoped": (lambda: _scoped_user(), SCOPED),
    "activation": (_activation, ACC),
}


def _scoped_user() -> UserClaims:
    u = UserClaims(subject=user("scoped").public_key, name="guest1", issuer_account=ACC.public_key)
    u.limits.clear_for_scope()
    return u


# label -> (user name, spec fields, signer, role scope or None); issued through admin.issue_user
ISSUES: dict[str, tuple[str, dict[str, Any], KeyPair, bool]] = {
    "issue-plain": ("bob", {}, ACC, False),
    "issue-sub-allow": ("carol", {"sub_allow": ["chat.>", "_INBOX.>"]}, ACC, False),
    "issue-permissions-limits": (
        "dave",
        {
            "pub_allow": ["chat.>", "chat.>"],
            "pub_deny": ["chat.admin"],
            "sub_allow": ["chat.* q", "_INBOX.>"],
            "sub_deny": ["chat.secret"],
            "resp_max": 3,
            "resp_ttl_s": 2.5,
            "subs": 100,
            "data": 0,
            "payload": 4096,
            "bearer": True,
            "connection_types": ["standard", "WEBSOCKET"],
            "source_networks": ["10.0.0.0/8"],
            "times": [("08:00:00", "17:00:00")],
            "times_location": "UTC",
        },
        ACC_SK,
        False,
    ),
    "issue-tags-expiry": (
        "erin",
        {"tags": [" Team:A ", "team:a", "B"], "expires": CLOCK + 3600, "not_before": CLOCK - 10},
        ACC,
        False,
    ),
    "issue-escaped-name": ("<&>\u2028é", {"sub_allow": ["x"]}, ACC, False),
    "issue-scoped": ("frank", {"tags": ["guest"]}, SCOPED, True),
}


def scope_of(signer: KeyPair) -> ScopedSigningKey | None:
    if signer is SCOPED:
        return _account_full().scope_for_role("guest")
    return None


def issue(label: str) -> tuple[str, str]:
    """(JWT, creds) of ISSUES[label] through admin.issue_user, with the fixed user key and clock."""
    name, fields, signer, scoped = ISSUES[label]
    spec = admin.UserSpec(**fields)
    _, _, token, creds = admin.issue_user(
        name,
        ACC.public_key,
        signer,
        spec,
        scope=scope_of(signer) if scoped else None,
        user_key=user(label),
        clock=clock,
    )
    return token, creds


# --- encode() and the bulk encoder against the tokens the PyJWT-based encoder made ----------------------


@pytest.mark.parametrize("label", list(SHAPES))
def test_encode_makes_the_same_tokens_as_before(label):
    make, signer = SHAPES[label]
    claims = make()
    token = encode(claims, signer, clock=clock)
    assert token == GOLDEN[label]
    again = decode(token)
    assert again.to_dict() == claims.to_dict() and again.jti == compute_jti(again)


def test_generic_jwt_is_the_same_as_before():
    data = {"accounts": [ACC.public_key, OTHER.public_key]}
    assert encode_generic(data, OP, clock=clock) == GOLDEN["generic-delete"]


@pytest.mark.parametrize("label", list(SHAPES))
def test_the_bulk_encoder_makes_what_encode_makes(label):
    make, signer = SHAPES[label]
    claims = make()
    encode_one = Encoder(claims, signer, clock=clock)
    assert encode_one(claims.subject, claims.name) == GOLDEN[label]
    assert claims.to_dict() == make().to_dict()  # the template is left as it was
    # more tokens of the same shape: other subjects and names, the name left out when empty
    for i, name in enumerate(["", "x", "ünï", "a<b>&c", "\u2028"]):
        subject = key(claims.SUBJECT_KIND, f"{label}-{i}").public_key
        claims.subject, claims.name = subject, name
        token = encode_one(subject, name)
        assert token == encode(claims.copy(), signer, clock=clock)
        assert decode(token).jti == compute_jti(decode(token))


def test_the_bulk_encoder_falls_back_when_a_shape_cannot_be_cut():
    u = UserClaims(subject=user("odd").public_key, name="odd")
    u.extra_top["sub"] = "overridden"  # to_dict() puts it where the subject was
    expected = encode(u.copy(), ACC, clock=clock)
    assert Encoder(u, ACC, clock=clock)(u.subject, u.name) == expected


def test_the_bulk_encoder_checks_signer_and_subjects():
    with pytest.raises(JWTError, match="must be signed by an account key"):
        Encoder(UserClaims(), OP)
    encode_one = Encoder(UserClaims(), ACC, clock=clock)
    with pytest.raises(JWTError, match="must be a user key"):
        encode_one(ACC.public_key, "x")
    with pytest.raises(JWTError, match="no subject"):
        encode_one("", "x")
    with pytest.raises(JWTError, match="subject of the user JWT"):
        encode_one("u" * 56, "x")


# --- issue_user and issue_users -------------------------------------------------------------------------


@pytest.mark.parametrize("label", list(ISSUES))
def test_issue_user_makes_the_same_jwt_and_creds_as_before(label):
    token, creds = issue(label)
    assert token == GOLDEN[label]
    assert creds == GOLDEN[label + ":creds"]


def _same_as_issue_user(row, signer, spec, scope):
    """The row of issue_users is what issue_user makes of the same name, spec and user key."""
    name, public, seed, token, creds = row
    kp = KeyPair.from_seed(seed)
    assert kp.public_key == public
    _, _, want_token, want_creds = admin.issue_user(
        name, ACC.public_key, signer, spec, scope=scope, user_key=kp, clock=clock
    )
    assert token == want_token
    assert creds == want_creds


@pytest.mark.parametrize("label", list(ISSUES))
def test_issue_users_makes_what_issue_user_makes(label):
    name, fields, signer, scoped = ISSUES[label]
    scope = scope_of(signer) if scoped else None
    names = [name, f"{name}-2", ""]
    rows = admin.issue_users(
        names, ACC.public_key, signer, admin.UserSpec(**fields), scope=scope, clock=clock, workers=1
    )
    assert [r[0] for r in rows] == names and len({r[1] for r in rows}) == 3
    for row in rows:
        _same_as_issue_user(row, signer, admin.UserSpec(**fields), scope)


def test_issue_users_with_a_spec_per_user_in_processes(monkeypatch):
    """Equal specs (distinct objects), other specs and no spec, spread over two processes."""
    monkeypatch.setattr(admin, "PARALLEL_THRESHOLD", 4)
    kinds = [{"sub_allow": ["a.>"]}, {"sub_allow": ["b.>"], "tags": ["t"]}, {}, None]
    specs = [None if f is None else admin.UserSpec(**f) for f in kinds] * 5
    names = [f"p{i}" for i in range(len(specs))]
    rows = admin.issue_users(names, ACC.public_key, ACC_SK, specs=specs, clock=clock, workers=2)
    assert [r[0] for r in rows] == names
    for row, spec in zip(rows, specs, strict=True):
        _same_as_issue_user(row, ACC_SK, spec, None)


def test_one_iat_for_a_batch_and_a_valid_chain(store):
    acc = store.account("chat")
    signer = store.load_key(acc.public_key)
    rows = admin.issue_users([f"c{i}" for i in range(5)], acc.public_key, signer, workers=1)
    claims = [verify_chain(store.operator().token, acc.token, row[3]).user for row in rows]
    assert len({c.issued_at for c in claims}) == 1
    assert len({c.jti for c in claims}) == 5
    for row, c in zip(rows, claims, strict=True):
        assert parse_creds(row[4]).keypair().public_key == c.subject == row[1]


def test_a_bad_spec_is_refused_before_any_user_is_made():
    bad = admin.UserSpec(sub_allow=["a..b"])
    with pytest.raises(admin.FieldError, match="allow_sub"):
        admin.issue_users(["x", "y"], ACC.public_key, ACC, bad, workers=1)
    with pytest.raises(StoreError, match="scoped"):
        admin.issue_users(["x"], ACC.public_key, SCOPED, admin.UserSpec(subs=1), scope=scope_of(SCOPED), workers=1)


# --- what importing the JWT module costs ----------------------------------------------------------------


def test_jwt_module_imports_neither_pyjwt_nor_x509():
    code = (
        "import json, sys\n"
        "import dchat_ops.nsc.jwt\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'jwt' or m.startswith(('jwt.', 'cryptography.x509')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == []


def test_tokens_keep_the_wire_format():
    h, _p, s = GOLDEN["user-plain"].split(".")
    assert base64.urlsafe_b64decode(h + "==") == b'{"typ":"JWT","alg":"ed25519-nkey"}'
    assert len(base64.urlsafe_b64decode(s + "==")) == 64
