"""`spec export` is lossless: every operator, account, role and user field a store holds comes back
from applying the exported spec in a new home (claim by claim), and the spec plans no change on the
store it came from."""

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.nsc import admin, revoke
from dchat_ops.nsc.claims import ScopedSigningKey
from dchat_ops.nsc.spec import UserSpec
from dchat_ops.nsc.store import Store

NOW = 1_800_000_000

# a user carrying every field a user can have
EVERY_FIELD = {
    "allow_pub": ["chat.>", "room.1"],
    "deny_pub": ["admin.>"],
    "allow_sub": ["chat.>", "orders.* workers", "_INBOX.>"],
    "deny_sub": ["secret.>"],
    "resp_max": 3,
    "resp_ttl": "1025ms",
    "subs": 10,
    "data": 0,
    "payload": 4096,
    "bearer": True,
    "connection_types": ["STANDARD", "WEBSOCKET"],
    "source_networks": ["10.0.0.0/8", "fd00::/8"],
    "times": ["08:00:00-18:00:00", "22:00:00-02:00:00"],
    "times_location": "Europe/Berlin",
    "expiry": "2031-06-30",
    "start": "2026-01-01T12:30:00Z",
    "tags": ["team:a", "ops"],
}
ROLE_TEMPLATE = {k: v for k, v in EVERY_FIELD.items() if k not in ("expiry", "start", "tags")}


def build_store(home) -> Store:
    store = Store(home)
    admin.init(store, "dchat", "chat", None)
    admin.edit_operator(store, add_signing_key=True)
    admin.edit_operator(
        store, service_urls=["nats://a.example:4222"], account_server_url="https://acc.example", tags=["prod"]
    )
    admin.add_user(store, "chat", "full", UserSpec.from_fields(EVERY_FIELD, now=NOW))
    admin.add_user(store, "chat", "plain", UserSpec(sub_allow=["chat.>"]))
    admin.edit_account(
        store,
        "chat",
        limits={
            "conn": 100,
            "leaf": 5,
            "subs": 1000,
            "data": 10**9,
            "payload": 2**20,
            "imports": 7,
            "exports": 8,
            "wildcards": False,
            "disallow_bearer": False,
        },
        jetstream={
            "mem_storage": 2**20,
            "disk_storage": 2**30,
            "streams": 4,
            "consumer": 9,
            "max_ack_pending": 100,
            "mem_max_stream_bytes": 2**19,
            "disk_max_stream_bytes": 2**29,
            "max_bytes_required": True,
        },
        add_signing_key=True,
        expires=NOW + 10 * 365 * 86400,
        tags=["region:eu", "tier:1"],
        description="the chat account",
    )
    admin.edit_account(store, "chat", add_role="guest", role_spec=UserSpec.from_fields(ROLE_TEMPLATE, now=NOW))
    admin.add_user(
        store,
        "chat",
        "visitor",
        UserSpec.from_fields({"expiry": "2030-01-01", "tags": ["guest"]}, now=NOW),
        role="guest",
    )
    admin.add_user(store, "chat", "gone", UserSpec(sub_allow=["chat.>"]))
    revoke.revoke_user(store, "chat", "gone")
    # the CLI's own flags, as a person would type them
    code = run_cli(
        cli,
        [
            "--home",
            str(home),
            "add",
            "user",
            "typed",
            "--account",
            "chat",
            "--allow-pub",
            "chat.typed",
            "--deny-sub",
            "chat.secret",
            "--source-network",
            "192.168.0.0/16",
            "--time",
            "09:00:00-17:00:00",
            "--locale",
            "UTC",
            "--conn-type",
            "MQTT",
            "--subs",
            "5",
            "--no-bearer",
            "--start",
            "2026-02-01",
            "--expiry",
            "2032-01-01",
            "--tag",
            "cli",
        ],
    )
    assert code == 0
    admin.add_account(store, "feeds")
    return store


_PER_HOME = ("iat", "jti", "iss", "sub")


def _claims(d: dict) -> dict:
    """A claims dict without what differs per home (keys, issue times, ids)."""
    d = {k: v for k, v in d.items() if k not in _PER_HOME}
    n = dict(d["nats"])
    n.pop("issuer_account", None)
    n.pop("system_account", None)
    n.pop("revocations", None)
    if "signing_keys" in n:
        n["signing_keys"] = sorted(
            ("plain" if isinstance(k, str) else repr({kk: vv for kk, vv in k.items() if kk != "key"}))
            for k in n["signing_keys"]
        )
    if "imports" in n:
        n["imports"] = [{k: v for k, v in i.items() if k != "account"} for i in n["imports"]]
    d["nats"] = n
    return d


def test_export_then_apply_issues_the_same_claims(tmp_path):
    a = build_store(tmp_path / "a")
    text = provision.dump_spec(provision.export_spec(a))
    for field in ("times", "source_networks", "connection_types", "bearer", "resp_ttl", "start", "tags"):
        assert f"{field}:" in text, field
    spec = provision.parse_spec(text, tmp_path / "exported.yaml")
    # the spec plans nothing on the store it came from
    p = provision.plan(a, spec)
    assert not p.has_changes, [c.to_dict() for c in p.changes]

    b = Store(tmp_path / "b")
    provision.apply(b, spec)
    assert _claims(a.operator().claims.to_dict()) == _claims(b.operator().claims.to_dict())
    assert len(a.operator().claims.signing_keys) == len(b.operator().claims.signing_keys)
    for acc in ("chat", "feeds"):
        ca, cb = a.account(acc).claims, b.account(acc).claims
        assert _claims(ca.to_dict()) == _claims(cb.to_dict()), acc
        roles_a = [k for k in ca.signing_keys if isinstance(k, ScopedSigningKey)]
        assert roles_a and all(k.template.times for k in roles_a) if acc == "chat" else True
        for user in a.user_names(acc):
            ua = a.user(acc, user).claims
            if ca.is_revoked(ua.subject, ua.issued_at):
                assert user not in b.user_names(acc)  # a revoked user is not issued again
                continue
            ub = b.user(acc, user).claims
            assert _claims(ua.to_dict()) == _claims(ub.to_dict()), user
            scope_a = ca.signing_key_map().get(ua.issuer)
            scope_b = cb.signing_key_map().get(ub.issuer)
            assert (scope_a and scope_a.role) == (scope_b and scope_b.role), user
    full = b.user("chat", "full").claims.limits
    assert full.times and full.src and full.bearer_token and full.allowed_connection_types
    assert full.permissions.resp is not None and full.permissions.resp.ttl_ns == 1_025_000_000
    # and the new home's export is the same spec (but for the revoked user, which it never issued)
    again = provision.export_spec(b)
    want = provision.export_spec(a)
    for acc in want["accounts"]:
        if "users" in acc:
            acc["users"] = [u for u in acc["users"] if not u.get("revoked")]
    assert again == want


def test_plan_notices_a_changed_start(tmp_path):
    a = build_store(tmp_path / "a")
    data = provision.export_spec(a)
    full = next(u for u in data["accounts"][0]["users"] if u["name"] == "full")
    full["start"] = "2026-03-01T00:00:00Z"
    p = provision.plan(a, provision.parse_spec(provision.dump_spec(data), tmp_path / "x.yaml"))
    assert [(c.action, c.name) for c in p.changes] == [("reissue", "chat/full")]


def test_export_keeps_a_user_revoked(tmp_path):
    a = build_store(tmp_path / "a")
    spec = provision.parse_spec(provision.dump_spec(provision.export_spec(a)), tmp_path / "x.yaml")
    gone = next(u for acc in spec.accounts for u in acc.get("users", []) if u["name"] == "gone")
    assert gone == {"name": "gone", "revoked": True}
    # a store where that user is not revoked: apply revokes it
    admin.add_user(a, "chat", "gone", UserSpec(sub_allow=["chat.>"]), force=True)
    p = provision.plan(a, spec)
    assert [(c.action, c.name) for c in p.changes] == [("revoke", "chat/gone")]
