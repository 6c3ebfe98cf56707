import base64
import json
from pathlib import Path

import pytest

from dchat_ops.errors import JWTError
from dchat_ops.nsc.claims import (
    AccountClaims,
    Export,
    Import,
    OperatorClaims,
    ResponsePermission,
    ScopedSigningKey,
    TimeRange,
    UserClaims,
)
from dchat_ops.nsc.jwt import compute_jti, decode, decode_unverified, encode
from dchat_ops.nsc.keys import KeyPair

FIXTURES = Path(__file__).parent / "fixtures"
GO_JWTS = json.loads((FIXTURES / "go_jwts.json").read_text())


def b64(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def fixed_clock():
    return 1_800_000_000


@pytest.fixture
def op():
    return KeyPair.generate("operator")


@pytest.fixture
def acc():
    return KeyPair.generate("account")


def test_header_and_segments_are_what_the_server_expects(op):
    token = encode(OperatorClaims(subject=op.public_key, name="o"), op)
    h, p, _s = token.split(".")
    assert base64.urlsafe_b64decode(h + "==").decode() == '{"typ":"JWT","alg":"ed25519-nkey"}'
    assert "=" not in token and "+" not in token and "/" not in token
    payload = b64(p)
    assert payload["nats"]["type"] == "operator" and payload["nats"]["version"] == 2
    assert "type" not in payload  # a top-level type would make it v1


def test_user_defaults_let_a_user_in(acc):
    u = UserClaims(subject=KeyPair.generate("user").public_key, name="u")
    n = b64(encode(u, acc).split(".")[1])["nats"]
    assert n["pub"] == {} and n["sub"] == {}
    assert (n["subs"], n["data"], n["payload"]) == (-1, -1, -1)


def test_account_defaults_are_unlimited_without_jetstream(op, acc):
    n = b64(encode(AccountClaims(subject=acc.public_key, name="a"), op).split(".")[1])["nats"]
    assert n["limits"] == {
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
    }
    assert n["default_permissions"] == {"pub": {}, "sub": {}}


def test_iat_and_jti_follow_the_clock_and_change_with_claims(acc):
    u = UserClaims(subject=KeyPair.generate("user").public_key, name="u")
    t1 = encode(u, acc, clock=fixed_clock)
    c1 = decode(t1)
    assert c1.issued_at == 1_800_000_000 and c1.jti == compute_jti(c1) and len(c1.jti) == 52
    u.name = "v"
    c2 = decode(encode(u, acc, clock=fixed_clock))
    assert c2.jti != c1.jti


@pytest.mark.parametrize("entry", GO_JWTS, ids=[f"{e['kind']}:{e['repo']}:{e['path']}" for e in GO_JWTS])
def test_tokens_made_by_go_tooling_verify_and_their_jti_recomputes(entry):
    c = decode(entry["token"])
    assert entry["kind"] == c.TYPE
    assert c.jti and compute_jti(c) == c.jti


def test_unknown_fields_survive_a_round_trip(acc):
    u = UserClaims(subject=KeyPair.generate("user").public_key, name="u")
    u.extra["future_field"] = {"x": [1, 2]}
    u.extra_top["custom"] = "kept"
    token = encode(u, acc)
    again = decode(token)
    assert again.extra["future_field"] == {"x": [1, 2]} and again.extra_top["custom"] == "kept"
    assert decode(encode(again, acc)).to_dict()["nats"]["future_field"] == {"x": [1, 2]}


def test_go_tokens_round_trip_every_field():
    for entry in GO_JWTS:
        payload = b64(entry["token"].split(".")[1])
        c = decode(entry["token"])
        assert c.to_dict() == payload, entry["path"]


def test_every_user_field_round_trips(acc):
    u = UserClaims(
        subject=KeyPair.generate("user").public_key,
        name="full",
        expires=2_000_000_000,
        issuer_account="",
        tags=["team:a"],
    )
    lim = u.limits
    lim.permissions.pub.allow = ["chat.>"]
    lim.permissions.pub.deny = ["chat.admin"]
    lim.permissions.sub.allow = ["chat.* workers"]
    lim.permissions.resp = ResponsePermission(5, 1_000_000_000)
    lim.src = ["127.0.0.0/8"]
    lim.times = [TimeRange("08:00:00", "18:00:00")]
    lim.times_location = "Europe/Berlin"
    lim.subs, lim.data, lim.payload = 10, 1000, 100
    lim.bearer_token = True
    lim.allowed_connection_types = ["STANDARD", "WEBSOCKET"]
    again = decode(encode(u, acc))
    assert again.to_dict()["nats"] == u.to_dict()["nats"]
    assert again.limits.permissions.sub.allow == ["chat.* workers"]
    assert again.expires == 2_000_000_000


def test_every_account_field_round_trips(op, acc):
    other = KeyPair.generate("account").public_key
    sk = KeyPair.generate("account").public_key
    a = AccountClaims(subject=acc.public_key, name="a")
    a.limits.conn = 5
    a.limits.jetstream.mem_storage = 1 << 20
    a.limits.jetstream.disk_storage = -1
    a.signing_keys = [sk, ScopedSigningKey(KeyPair.generate("account").public_key, "guest")]
    a.signing_keys[1].template.permissions.sub.allow = ["public.>"]
    a.exports = [Export("svc.time", "service", response_type="Singleton"), Export("feed.>", "stream")]
    a.imports = [Import("feed.>", other, "stream", local_subject="remote.feed.>")]
    a.revocations = {KeyPair.generate("user").public_key: 1_700_000_000}
    a.mappings = {"old.>": [{"subject": "new.>", "weight": 100}]}
    a.default_permissions.sub.deny = ["secret.>"]
    again = decode(encode(a, op))
    assert again.to_dict()["nats"] == a.to_dict()["nats"]
    assert again.scope_for_role("guest").template.permissions.sub.allow == ["public.>"]
    assert again.limits.jetstream.enabled()


def test_tampered_payload_fails_signature(acc):
    token = encode(UserClaims(subject=KeyPair.generate("user").public_key, name="u"), acc)
    h, p, s = token.split(".")
    payload = b64(p)
    payload["name"] = "mallory"
    forged = h + "." + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=") + "." + s
    with pytest.raises(JWTError, match="signature"):
        decode(forged)


def _token(acc):
    return encode(UserClaims(subject=KeyPair.generate("user").public_key, name="u"), acc)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda t: t + "==", "malformed"),  # padded
        (lambda t: t.replace("-", "+").replace("_", "/") + "+/", "malformed"),  # standard base64
        (lambda t: t.rsplit(".", 1)[0], "malformed"),  # two segments
        (lambda t: "", "malformed"),
        (lambda t: "a.b.c", "malformed"),
        (lambda t: t.split(".")[0] + ".e30." + t.split(".")[2], "issuer"),  # {} payload
    ],
)
def test_malformed_tokens(acc, mangle, message):
    with pytest.raises(JWTError, match=message):
        decode(mangle(_token(acc)))


def test_wrong_issuer_kind_is_refused():
    user = KeyPair.generate("user")
    with pytest.raises(JWTError, match="must be signed by an account key"):
        encode(UserClaims(subject=KeyPair.generate("user").public_key), KeyPair.generate("operator"))
    with pytest.raises(JWTError, match="subject"):
        encode(UserClaims(subject=KeyPair.generate("account").public_key), KeyPair.generate("account"))
    assert user.kind == "user"


def test_expected_type_is_enforced(acc):
    with pytest.raises(JWTError, match="expected a account JWT"):
        decode(_token(acc), AccountClaims)


def test_v1_tokens_are_named_as_such():
    header = base64.urlsafe_b64encode(b'{"typ":"jwt","alg":"ed25519"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"type":"user","iss":"x"}').decode().rstrip("=")
    with pytest.raises(JWTError, match="v1"):
        decode(f"{header}.{payload}.AAAA")


def test_decode_unverified_reads_a_bad_token(acc):
    token = _token(acc)
    h, p, s = token.split(".")
    assert decode_unverified(f"{h}.{p}.{'A' * len(s)}").name == "u"
