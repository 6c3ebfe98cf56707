"""Account claims a spec carries beyond limits and keys: subject mappings, default permissions, JetStream
tiers, the info URL, service latency of exports, and activation tokens of imports of private exports.

Made with the CLI, exported with `spec export`, applied in a new home: the account JWTs have the same
claims; the spec plans no change on its own store; a changed spec is planned and applied; bad values are
one-line errors naming the file and line."""

import json

import pytest

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.errors import SpecError
from dchat_ops.nsc import admin
from dchat_ops.nsc.exports import verify_activation
from dchat_ops.nsc.store import Store

_PER_HOME = ("iat", "jti", "iss", "sub")


def _cli(home, *args) -> None:
    code = run_cli(cli, ["--home", str(home), *args])
    assert code == 0, args


def build_store(home) -> Store:
    store = Store(home)
    admin.init(store, "dchat", "chat", None)
    admin.add_account(store, "feeds")
    _cli(
        home,
        "add",
        "mapping",
        "-a",
        "chat",
        "--from",
        "orders.*",
        "--to",
        "shard.a.$1",
        "--weight",
        "60",
        "--to",
        "shard.b.$1",
        "--weight",
        "40",
        "--no-push",
    )
    _cli(home, "add", "mapping", "-a", "chat", "--from", "old.>", "--to", "new.>", "--cluster", "east", "--no-push")
    _cli(
        home,
        "edit",
        "account",
        "chat",
        "--default-allow-sub",
        "lobby.>",
        "--default-allow-sub",
        "_INBOX.>",
        "--default-deny-pub",
        "admin.>",
        "--info-url",
        "https://example.com/chat",
    )
    _cli(home, "edit", "account", "chat", "--js-tier", "R1", "--js-disk", "1G", "--js-streams", "10")
    _cli(
        home,
        "edit",
        "account",
        "chat",
        "--js-tier",
        "R3",
        "--js-mem",
        "64M",
        "--js-disk",
        "5G",
        "--js-max-ack-pending",
        "100",
    )
    _cli(
        home,
        "add",
        "export",
        "-a",
        "chat",
        "--subject",
        "help.>",
        "--service",
        "--private",
        "--latency-subject",
        "latency.help",
        "--latency-sampling",
        "50",
        "--no-push",
    )
    _cli(home, "add", "export", "-a", "chat", "--subject", "news.>", "--no-push")
    token = home / "act.jwt"
    _cli(
        home,
        "generate",
        "activation",
        "-a",
        "chat",
        "--subject",
        "help.>",
        "--target-account",
        "feeds",
        "-o",
        str(token),
    )
    _cli(
        home,
        "add",
        "import",
        "-a",
        "feeds",
        "--from-account",
        "chat",
        "--remote-subject",
        "help.>",
        "--service",
        "--token",
        str(token),
        "--no-push",
    )
    _cli(home, "add", "import", "-a", "feeds", "--from-account", "chat", "--remote-subject", "news.>", "--no-push")
    return store


def _claims(d: dict) -> dict:
    """An account's claims without what differs per home (keys, issue times, ids, activation tokens)."""
    d = {k: v for k, v in d.items() if k not in _PER_HOME}
    n = dict(d["nats"])
    n.pop("revocations", None)
    if "imports" in n:
        n["imports"] = [{k: v for k, v in i.items() if k not in ("account", "token")} for i in n["imports"]]
    d["nats"] = n
    return d


def _token_ok(store: Store, importer: str, exporter: str, subject: str) -> None:
    imp = next(i for i in store.account(importer).claims.imports if i.subject == subject)
    exp = store.account(exporter)
    verify_activation(
        imp.token,
        exporter=exp.public_key,
        importer=store.account(importer).public_key,
        subject=subject,
        kind=imp.type,
        now=admin.now(store),
        exporter_claims=exp.claims,
    )


def test_export_then_apply_gives_the_same_account_claims(tmp_path):
    a = build_store(tmp_path / "a")
    data = provision.export_spec(a)
    text = provision.dump_spec(data)
    chat = next(x for x in data["accounts"] if x["name"] == "chat")
    assert chat["mappings"]["orders.*"] == [
        {"subject": "shard.a.$1", "weight": 60},
        {"subject": "shard.b.$1", "weight": 40},
    ]
    assert chat["default_permissions"] == {"deny_pub": ["admin.>"], "allow_sub": ["lobby.>", "_INBOX.>"]}
    assert set(chat["jetstream"]["tiers"]) == {"R1", "R3"} and "disk" not in chat["jetstream"]
    assert chat["info_url"] == "https://example.com/chat"
    help_export = next(x for x in chat["exports"] if x["subject"] == "help.>")
    assert help_export["latency_subject"] == "latency.help" and help_export["latency_sampling"] == 50
    spec = provision.parse_spec(text, tmp_path / "exported.yaml")
    # its own store: nothing to change (the activation it holds still verifies, and is kept)
    p = provision.plan(a, spec)
    assert not p.has_changes, [c.to_dict() for c in p.changes]

    b = Store(tmp_path / "b")
    provision.apply(b, spec)
    for acc in ("chat", "feeds"):
        ca, cb = a.account(acc).claims.to_dict(), b.account(acc).claims.to_dict()
        assert _claims(ca) == _claims(cb), acc
    assert b.account("chat").claims.limits.tiers["R3"].max_ack_pending == 100
    # the private import got an activation from the new home's exporter, for its new importer
    _token_ok(b, "feeds", "chat", "help.>")
    assert not next(i for i in b.account("feeds").claims.imports if i.subject == "news.>").token
    assert not provision.plan(b, spec).has_changes
    assert provision.export_spec(b) == data


def test_plan_and_apply_make_a_changed_mapping_and_a_removed_tier(tmp_path):
    a = build_store(tmp_path / "a")
    data = provision.export_spec(a)
    chat = next(x for x in data["accounts"] if x["name"] == "chat")
    chat["mappings"]["orders.*"] = [{"subject": "shard.c.$1", "weight": 100}]
    del chat["jetstream"]["tiers"]["R1"]
    chat["default_permissions"]["allow_sub"] = ["lobby.>"]
    spec = provision.parse_spec(provision.dump_spec(data), tmp_path / "x.yaml")
    p = provision.plan(a, spec)
    assert [(c.action, c.kind, c.name) for c in p.changes] == [("update", "account", "chat")]
    provision.apply(a, spec)
    c = a.account("chat").claims
    assert c.mappings["orders.*"] == [{"subject": "shard.c.$1", "weight": 100}]
    assert set(c.limits.tiers) == {"R3"}
    assert c.default_permissions.sub.allow == ["lobby.>"]
    assert not provision.plan(a, spec).has_changes
    # a spec without them: apply takes them away
    for k in ("mappings", "default_permissions", "info_url"):
        del chat[k]
    del chat["jetstream"]
    spec = provision.parse_spec(provision.dump_spec(data), tmp_path / "y.yaml")
    assert provision.plan(a, spec).has_changes
    provision.apply(a, spec)
    c = a.account("chat").claims
    assert not c.mappings and not c.limits.tiers and not c.info_url
    assert c.default_permissions.to_dict() == {"pub": {}, "sub": {}}


def test_apply_keeps_the_revoked_activations_of_an_export(tmp_path):
    a = build_store(tmp_path / "a")
    admin.add_account(a, "third")
    _cli(
        tmp_path / "a",
        "revoke",
        "activation",
        "-a",
        "chat",
        "--subject",
        "help.>",
        "--target-account",
        "third",
        "--at",
        "2026-01-01",
        "--no-push",
    )
    data = provision.export_spec(a)
    assert "revocations" not in provision.dump_spec(data)
    chat = next(x for x in data["accounts"] if x["name"] == "chat")
    help_export = next(x for x in chat["exports"] if x["subject"] == "help.>")
    help_export["latency_sampling"] = "headers"
    spec = provision.parse_spec(provision.dump_spec(data), tmp_path / "x.yaml")
    assert [c.detail for c in provision.plan(a, spec).changes] == ["exports"]
    provision.apply(a, spec)
    x = next(x for x in a.account("chat").claims.exports if x.subject == "help.>")
    assert x.service_latency == {"sampling": "headers", "results": "latency.help"}
    assert list(x.revocations) == [a.account("third").public_key]
    _token_ok(a, "feeds", "chat", "help.>")  # the importer's activation was not revoked


def test_a_token_in_the_spec_is_verified_and_used(tmp_path):
    a = build_store(tmp_path / "a")
    data = provision.export_spec(a)
    feeds = next(x for x in data["accounts"] if x["name"] == "feeds")
    held = next(i for i in a.account("feeds").claims.imports if i.subject == "help.>").token
    imp = next(i for i in feeds["imports"] if i["subject"] == "help.>")
    assert "token" not in imp  # the store holds the exporter's key: apply makes the activation
    # a new activation, given in the spec: used instead of the one the account holds
    out = tmp_path / "new.jwt"
    _cli(
        tmp_path / "a",
        "generate",
        "activation",
        "-a",
        "chat",
        "--subject",
        "help.>",
        "--target-account",
        "feeds",
        "--expiry",
        "30d",
        "-o",
        str(out),
    )
    imp["token"] = out.read_text().strip()
    spec = provision.parse_spec(provision.dump_spec(data), tmp_path / "x.yaml")
    assert [c.name for c in provision.plan(a, spec).changes] == ["feeds"]
    provision.apply(a, spec)
    now = next(i for i in a.account("feeds").claims.imports if i.subject == "help.>").token
    assert now == imp["token"] != held
    # a token for another account: refused by plan, naming the line of the token
    other = tmp_path / "other.jwt"
    admin.add_account(a, "third")
    _cli(
        tmp_path / "a",
        "generate",
        "activation",
        "-a",
        "chat",
        "--subject",
        "help.>",
        "--target-account",
        "third",
        "-o",
        str(other),
    )
    imp["token"] = other.read_text().strip()
    text = provision.dump_spec(data)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip().startswith("token:"))
    with pytest.raises(SpecError) as err:
        provision.plan(a, provision.parse_spec(text, tmp_path / "y.yaml"))
    assert str(err.value).startswith(f"{tmp_path / 'y.yaml'}:{line}: accounts[1].imports[")
    assert "issued for account" in str(err.value)


BASE = """\
version: 1
operator: {name: dchat}
accounts:
  - name: chat
    exports:
      - {subject: "help.>", type: service, token_req: true}
  - name: feeds
"""


@pytest.mark.parametrize(
    "extra, line, words",  # line: of the extra text
    [
        ('    mappings:\n      "orders": [{subject: "shard.$1"}]\n', 2, "names wildcard 1"),
        (
            '    mappings:\n      "a.*": [{subject: x.$1, weight: 70}, {subject: y.$1, weight: 40}]\n',
            2,
            "add up to 110%",
        ),
        ('    mappings:\n      "a.*": [{subject: x.$1, share: 1}]\n', 2, "unknown field 'share'"),
        ('    default_permissions: {allow_sub: ["a..b"]}\n', 1, "allow_sub"),
        ("    default_permissions: {allow_pub: [a], times: []}\n", 1, "unknown field"),
        ("    jetstream: {disk: 1G, tiers: {R1: {disk: 1G}}}\n", 1, "mutually exclusive"),
        ("    jetstream:\n      tiers: {R9: {disk: 1G}}\n", 2, "not a tier"),
        ("    info_url: ftp://example.com\n", 1, "not an http(s) URL"),
        (
            '    imports: [{account: chat, subject: "help.>", type: service, token: nonsense}]\n',
            1,
            "not a valid activation token",
        ),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_line(tmp_path, extra, line, words):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE + extra)
    code, out, err = _run(tmp_path, "plan", "-f", str(spec))
    assert code == 1, (out, err)
    assert err.count("\n") <= 1 and "Traceback" not in err, err
    assert f"{spec}:{BASE.count(chr(10)) + line}:" in err and words in err, err


def test_bad_latency_names_its_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE.replace("token_req: true}", "token_req: true, latency_sampling: 500}"))
    code, _, err = _run(tmp_path, "plan", "-f", str(spec))
    assert code == 1 and f"{spec}:6:" in err and "latency_sampling" in err, err
    second = '      - {subject: "ask.>", type: service, latency_sampling: 20%}\n'
    spec.write_text(BASE.replace("  - name: feeds\n", second + "  - name: feeds\n"))
    code, _, err = _run(tmp_path, "plan", "-f", str(spec))
    assert code == 1 and f"{spec}:7:" in err and "exports[1].latency_subject" in err, err
    spec.write_text(BASE.replace("token_req: true}", "latency_subject: lat.x, latency_sampling: headers}"))
    code, _, err = _run(tmp_path, "plan", "-f", str(spec))
    assert code == 0, err


def test_a_private_import_is_provisioned_from_a_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE + '    imports: [{account: chat, subject: "help.>", type: service}]\n')
    code, _, err = _run(tmp_path, "apply", "-f", str(spec))
    assert code == 0, err
    store = Store(tmp_path / "home")
    _token_ok(store, "feeds", "chat", "help.>")
    code, out, _ = _run(tmp_path, "plan", "-f", str(spec), "--json")
    assert code == 0 and json.loads(out)["changes"] == []
    # a token in the spec for an account apply has yet to make is refused before anything is made
    other = tmp_path / "spec2.yaml"
    tok = next(i for i in store.account("feeds").claims.imports).token
    other.write_text(BASE + f'    imports: [{{account: chat, subject: "help.>", type: service, token: {tok}}}]\n')
    code, _, err = _run(tmp_path, "plan", "-f", str(other), home=tmp_path / "fresh")
    assert code == 1 and f"{other}:8:" in err and "made by this apply" in err, err


def _run(tmp_path, *args, home=None):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_cli(cli, ["--home", str(home or tmp_path / "home"), *args])
    return code, out.getvalue(), err.getvalue()


LIVE = """\
version: 1
operator: {name: dchat}
accounts:
  - name: chat
    mappings:
      "orders.*": [{subject: "shard.$1", weight: 100}]
    users:
      - {name: poster}
nodes:
  - id: n1
    cluster: false
"""


async def test_a_mapping_of_the_spec_routes_messages_on_a_real_server(tmp_path, supervised_factory):
    import asyncio

    from dchat_ops.config.node import NodeFile
    from dchat_ops.runtime.client import connect

    store = Store(tmp_path / "home")
    path = tmp_path / "network.yaml"
    path.write_text(LIVE)
    provision.apply(store, provision.load_spec(path))
    supervised_factory(store)("n1")
    url = f"nats://127.0.0.1:{NodeFile.load(store, 'n1').node.client_port}"
    nc = await connect(url, store.creds_path("dchat", "chat", "poster"))
    try:
        mapped = await nc.subscribe("shard.>")
        source = await nc.subscribe("orders.>")
        await nc.flush()
        await nc.publish("orders.42", b"hello")
        await nc.flush()
        msg = await mapped.next_msg(timeout=5)
        assert (msg.subject, msg.data) == ("shard.42", b"hello")
        with pytest.raises(asyncio.TimeoutError):  # all of it went on: a weight of 100
            await source.next_msg(timeout=0.3)
    finally:
        await nc.close()
