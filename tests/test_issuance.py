"""Issuance makes the same bytes on every path: encode(), issue_user.

Claims of every shape are made here with fixed keys and a fixed clock.
``tests/fixtures/issuance_golden.json`` holds the tokens and creds these made with the PyJWT-based
encoder that preceded the compact one: every path must keep making exactly them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
from dchat_ops.nsc.jwt import compute_jti, decode, encode, encode_generic
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


# --- encode() against the tokens the PyJWT-based encoder made ----------------- ----------------------


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


# --- issue_user and issue_users -------------------------------------------------------------------------


@pytest.mark.parametrize("label", list(ISSUES))
def test_issue_user_makes_the_same_jwt_and_creds_as_before(label):
    token, creds = issue(label)
    assert token == GOLDEN[label]
    assert creds == GOLDEN[label + ":creds"]
