"""Exports, imports and activation tokens from the command line, against a running node: a public stream
crosses accounts, a private service needs a verified activation token, a revoked activation stops the
import once the exporting account reaches the server; bad values are one line, exit 2, nothing written."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json

import pytest
from conftest import snapshot, wait_for

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.nodes import client_url
from dchat_ops.errors import FieldError
from dchat_ops.nsc import admin, exports
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect


def cli_run(store: Store, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, ["--home", str(store.home), *args])
    return code, out.getvalue(), err.getvalue()


def ok(store: Store, *args: str) -> str:
    code, out, err = cli_run(store, *args)
    assert code == 0, (args, out, err)
    return out


def creds(store: Store, account: str, user: str):
    return store.creds_path(store.current_operator(), account, user)


@pytest.fixture
def two_accounts(store):
    """chat (the exporter, user default) and ops (the importer, user bob)."""
    admin.add_account(store, "ops")
    admin.add_user(store, "ops", "bob")
    return store


@pytest.fixture
def node(two_accounts, supervised):
    nodes.add_node(two_accounts, "a")
    return client_url(supervised("a").node())


def confirmed(out_json: str) -> dict:
    data = json.loads(out_json)
    assert data["push"] and data["push"]["ok"], data
    return data


def test_public_stream_export_and_import_deliver_across_accounts(two_accounts, node):
    store = two_accounts
    confirmed(ok(store, "add", "export", "--account", "chat", "--subject", "feed.>", "--json"))
    out = ok(
        store,
        "add", "import", "--account", "ops", "--from-account", "chat",
        "--remote-subject", "feed.>", "--local-subject", "chat.feed.>", "--json",
    )  # fmt: skip
    data = confirmed(out)
    assert data["import"]["local_subject"] == "chat.feed.>"
    assert data["import"]["account"] == store.account("chat").public_key

    async def deliver() -> bytes:
        reader = await connect(node, creds(store, "ops", "bob"))
        writer = await connect(node, creds(store, "chat", "default"))
        sub = await reader.subscribe("chat.feed.news")
        await reader.flush()
        await writer.publish("feed.news", b"across")
        await writer.flush()
        msg = await sub.next_msg(timeout=5)
        await reader.close()
        await writer.close()
        return msg.data

    assert asyncio.run(deliver()) == b"across"
    described = json.loads(ok(store, "describe", "account", "ops", "--json"))
    assert described["claims"]["nats"]["imports"][0]["subject"] == "feed.>"

    # removing the import takes the stream away once the account reaches the server
    confirmed(ok(store, "rm", "import", "--account", "ops", "--subject", "feed.>", "--json"))
    assert store.account("ops").claims.imports == []

    async def nothing_arrives() -> bool:
        reader = await connect(node, creds(store, "ops", "bob"))
        writer = await connect(node, creds(store, "chat", "default"))
        sub = await reader.subscribe("chat.feed.news")
        await reader.flush()
        await writer.publish("feed.news", b"gone")
        await writer.flush()
        try:
            await sub.next_msg(timeout=1)
            return False
        except asyncio.TimeoutError:
            return True
        finally:
            await reader.close()
            await writer.close()

    assert asyncio.run(nothing_arrives())
    confirmed(ok(store, "rm", "export", "--account", "chat", "--subject", "feed.>", "--json"))
    assert store.account("chat").claims.exports == []


async def _ask(url: str, requester, responder, subject: str) -> bytes | None:
    """Request ``subject`` as ``requester`` with ``responder`` answering on it; the answer, or None."""
    server = await connect(url, responder)
    client = await connect(url, requester)

    async def answer(msg):
        await msg.respond(b"answer to " + msg.data)

    await server.subscribe("help.ask", cb=answer)
    await server.flush()
    try:
        return (await client.request(subject, b"q", timeout=2)).data
    except Exception:  # no responders or no answer: the import does not reach the service
        return None
    finally:
        await client.close()
        await server.close()


def test_private_service_needs_a_verified_token_and_a_revoked_one_stops_it(two_accounts, node, tmp_path):
    store = two_accounts
    ok(store, "add", "export", "-a", "chat", "-s", "help.ask", "--service", "--private")
    assert store.account("chat").claims.exports[0].token_req

    # without a token: refused at import time, nothing written
    before = snapshot(store.home)
    code, out, err = cli_run(
        store, "add", "import", "-a", "ops", "--from-account", "chat", "--remote-subject", "help.ask", "--service"
    )
    assert code == 2 and "--token" in err and "private" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(store.home) == before

    act = tmp_path / "ops.act"
    ok(store, "generate", "activation", "-a", "chat", "-s", "help.ask", "--target-account", "ops", "-o", str(act))
    token = act.read_text().strip()
    info = json.loads(ok(store, "describe", "file", str(act), "--json"))
    assert info["claims"]["nats"]["type"] == "activation" and info["claims"]["nats"]["kind"] == "service"
    assert info["claims"]["sub"] == store.account("ops").public_key
    assert info["claims"]["nats"]["subject"] == "help.ask"

    out = ok(
        store,
        "add", "import", "-a", "ops", "--from-account", store.account("chat").public_key,
        "--remote-subject", "help.ask", "--service", "--token", str(act), "--json",
    )  # fmt: skip
    data = confirmed(out)
    assert data["import"]["token"] == token

    requester, responder = creds(store, "ops", "bob"), creds(store, "chat", "default")
    assert asyncio.run(_ask(node, requester, responder, "help.ask")) == b"answer to q"

    out = ok(store, "revoke", "activation", "-a", "chat", "-s", "help.ask", "--target-account", "ops", "--json")
    data = confirmed(out)
    assert store.account("ops").public_key in data["export"]["revocations"]
    # the server now holds the revocation: the import no longer reaches the service
    assert wait_for(lambda: asyncio.run(_ask(node, requester, responder, "help.ask")) is None, timeout=15)
    assert asyncio.run(_ask(node, responder, responder, "help.ask")) == b"answer to q"  # the service still runs

    # and the revoked token is refused when it is offered again
    ok(store, "rm", "import", "-a", "ops", "-s", "help.ask")
    code, _, err = cli_run(
        store,
        "add", "import", "-a", "ops", "--from-account", "chat", "--remote-subject", "help.ask", "--service",
        "--token", token,
    )  # fmt: skip
    assert code == 2 and "revoked" in err, err


def _tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["nats"]["subject"] = "help.>"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


def test_tampered_misdirected_and_expired_tokens_are_refused(two_accounts):
    store = two_accounts
    admin.add_account(store, "third")
    exports.add_export(store, "chat", "help.*", service=True, private=True)
    for_ops = exports.generate_activation(store, "chat", "help.ask", "ops").token
    for_third = exports.generate_activation(store, "chat", "help.ask", "third").token
    base = ["add", "import", "-a", "ops", "--from-account", "chat", "--service"]
    before = snapshot(store.home)
    for token, subject, words in (
        (_tampered(for_ops), "help.ask", "signature"),
        (for_third, "help.ask", "issued for account"),
        (for_ops, "help.other", "does not cover"),
        ("not.a.token", "help.ask", "not a valid activation token"),
    ):
        code, out, err = cli_run(store, *base, "--remote-subject", subject, "--token", token)
        assert code == 2 and words in err and out == "", (words, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert snapshot(store.home) == before, words

    short = exports.generate_activation(store, "chat", "help.ask", "ops", expires=admin.now(store) + 60)
    ops, chat = store.account("ops").public_key, store.account("chat")
    with pytest.raises(FieldError, match="expired"):
        exports.verify_activation(
            short.token,
            exporter=chat.public_key,
            importer=ops,
            subject="help.ask",
            kind="service",
            now=admin.now(store) + 120,
            exporter_claims=chat.claims,
        )
    # a token signed by an account signing key names the exporter as issuer_account, and is taken
    admin.edit_account(store, "chat", add_signing_key=True)
    signed = exports.generate_activation(store, "chat", "help.ask", "ops")
    assert signed.claims.issuer != chat.public_key and signed.claims.issuer_account == chat.public_key
    _, imp = exports.add_import(store, "ops", "chat", "help.ask", service=True, token=signed.token)
    assert imp.token == signed.token


BAD = [
    (["add", "export", "-s", "a..b"], "--subject"),
    (["add", "export", "-s", "feed.x", "--response-type", "Stream"], "--response-type: only a service"),
    (["add", "export", "-s", "x", "--service", "--response-type", "Lots"], "--response-type: must be one of"),
    (["add", "export", "-s", "x", "--service", "--response-threshold", "soon"], "--response-threshold"),
    (["add", "export", "-s", "x", "--service", "--latency-sampling", "500"], "--latency-sampling"),
    (["add", "export", "-s", "x", "--service", "--latency-subject", "lat.*"], "--latency-subject"),
    (["add", "export", "-s", "x", "--latency-subject", "lat.x"], "only a service"),
    (["add", "export", "-s", "feed.a"], "already exports"),
    (["add", "export", "-s", "x", "--description", "bad\x07text"], "--description"),
    (["add", "import", "-a", "ops", "--from-account", "nobody", "--remote-subject", "feed.a"], "--from-account"),
    (["add", "import", "-a", "ops", "--from-account", "chat", "--remote-subject", "other.x"], "exports no stream"),
    (["add", "import", "-a", "ops", "--from-account", "chat", "--remote-subject", "feed.a", "--share"], "--share"),
    (
        ["add", "import", "-a", "ops", "--from-account", "chat", "--remote-subject", "feed.*", "--local-subject", "x"],
        "--local-subject",
    ),
    (["add", "import", "-a", "chat", "--from-account", "chat", "--remote-subject", "feed.a"], "itself"),
    (["generate", "activation", "-s", "feed.a", "--target-account", "ops"], "public"),
    (["generate", "activation", "-s", "nope", "--target-account", "ops"], "no export covering"),
    (["generate", "activation", "-s", "help.ask", "--target-account", "ops", "--expiry", "soonish"], "--expiry"),
    (["generate", "activation", "-s", "help.ask", "--target-account", "ops", "--expiry", "2001-01-01"], "--expiry"),
    (["generate", "activation", "-s", "help.ask", "--target-account", "nobody"], "--target-account"),
    (
        [
            "add",
            "import",
            "-a",
            "ops",
            "--from-account",
            "chat",
            "--remote-subject",
            "help.ask",
            "--service",
            "--token",
            "/nonexistent/file",
        ],
        "--token",
    ),
    (["revoke", "activation", "-s", "feed.>", "--target-account", "ops"], "public"),
    (["revoke", "activation", "-s", "feed.>", "--target-account", "nobody"], "--target-account"),
    (["rm", "export", "--subject", "x", "--name", "y"], "--subject or --name"),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_are_one_line_exit_2_and_write_nothing(two_accounts, args, words):
    store = two_accounts
    exports.add_export(store, "chat", "feed.>")
    exports.add_export(store, "chat", "help.ask", service=True, private=True)
    before = snapshot(store.home)
    code, out, err = cli_run(store, *args)
    assert code == 2, (args, err)
    assert words in err and out == "", (args, err)
    lines = err.strip().splitlines()
    assert (len(lines) == 1 or lines[0].startswith("Usage:")) and "Traceback" not in err, err
    assert snapshot(store.home) == before, args


def test_rm_of_what_is_not_there_fails_and_writes_nothing(two_accounts):
    store = two_accounts
    before = snapshot(store.home)
    for args in (("rm", "export", "-s", "none"), ("rm", "import", "-a", "ops", "-s", "none")):
        code, _, err = cli_run(store, *args)
        assert code == 1 and "has no" in err and "Traceback" not in err, err
    assert snapshot(store.home) == before


def test_without_running_nodes_nothing_is_claimed_pushed(two_accounts):
    out = ok(two_accounts, "add", "export", "-s", "feed.>")
    assert "no node running: nothing pushed" in out and "ok" not in out.split("\n", 1)[1]
    out = ok(two_accounts, "rm", "export", "-s", "feed.>", "--no-push")
    assert "not pushed" in out


SPEC = """\
accounts:
  - name: chat
    exports:
      - {{subject: "feed.>", type: stream}}
      - {export}
  - name: ops
    imports:
      - {import_}
"""


@pytest.mark.parametrize(
    ("export", "import_", "line", "message"),
    [
        ('{subject: "feed.x", type: stream}', '{account: chat, subject: "feed.>"}', 5, "already exports 'feed.x'"),
        ("{subject: a.b, type: stream, response_type: Stream}", '{account: chat, subject: "feed.>"}', 5, "service"),
        (
            "{subject: help.ask, type: service}",
            "{account: chat, subject: help.ask, type: service, local_subject: 'x.>'}",
            8,
            "must both end in '>'",
        ),
        ("{subject: help.ask, type: service}", '{account: chat, subject: "feed.>", share: true}', 8, "share"),
    ],
)
def test_a_spec_is_checked_by_the_same_rules(tmp_path, export, import_, line, message):
    from dchat_ops.errors import SpecError
    from dchat_ops.provision import parse_spec

    with pytest.raises(SpecError) as exc:
        parse_spec(SPEC.format(export=export, import_=import_), tmp_path / "net.yaml")
    assert f"net.yaml:{line}:" in str(exc.value) and message in str(exc.value), str(exc.value)


def test_revoking_every_importer_and_a_narrower_activation(two_accounts):
    store = two_accounts
    exports.add_export(store, "chat", "help.*", service=True, private=True)
    act = exports.generate_activation(store, "chat", "help.ask", "ops")
    assert act.claims.import_subject == "help.ask" and act.export.subject == "help.*"
    x = exports.revoke_activation(store, "chat", "help.*", "*", at=act.claims.issued_at)
    assert x.revocations == {"*": act.claims.issued_at}
    with pytest.raises(FieldError, match="revoked"):
        exports.add_import(store, "ops", "chat", "help.ask", service=True, token=act.token)


def test_validate_names_imports_the_server_would_skip(two_accounts):
    from dchat_ops.nsc.describe import validate_store

    store = two_accounts
    exports.add_export(store, "chat", "help.ask", service=True, private=True)
    exports.add_export(store, "chat", "feed.>")
    act = exports.generate_activation(store, "chat", "help.ask", "ops")
    exports.add_import(store, "ops", "chat", "help.ask", service=True, token=act.token)
    exports.add_import(store, "ops", "chat", "feed.>")
    assert [f for f in validate_store(store) if "import" in f.message] == []

    exports.revoke_activation(store, "chat", "help.ask", "ops", at=act.claims.issued_at)
    exports.remove_export(store, "chat", "feed.>")
    found = {f.message for f in validate_store(store) if f.entity == "account ops"}
    assert any("help.ask" in m and "revoked" in m for m in found), found
    assert any("feed.>" in m and "exports no stream" in m for m in found), found
    assert f"activation of {store.account('ops').public_key} revoked at" in ok(store, "describe", "account", "chat")
    code, out, _ = cli_run(store, "validate")
    assert code == 0 and "warning: account ops: service import help.ask from chat" in out, out


def test_the_server_takes_every_option_of_an_export(two_accounts, node):
    """Each optional field as the server reads it: the push is confirmed ("jwt updated")."""
    store = two_accounts
    for args in (
        ["-s", "svc.a", "--service", "--response-type", "Stream", "--response-threshold", "5s"],
        ["-s", "svc.b", "--service", "--latency-subject", "lat.b", "--latency-sampling", "headers"],
        ["-s", "svc.c", "--service", "--private", "--latency-subject", "lat.c", "--latency-sampling", "25%"],
        ["-s", "str.*", "--name", "streams", "--description", "every str", "--advertise"],
    ):
        data = confirmed(ok(store, "add", "export", *args, "--json"))
        assert data["push"]["results"][0]["message"] == "jwt updated", data
    x = {e.subject: e for e in store.account("chat").claims.exports}
    assert x["svc.a"].response_threshold == 5_000_000_000 and x["svc.a"].response_type == "Stream"
    assert x["svc.b"].service_latency == {"sampling": "headers", "results": "lat.b"}
    assert x["svc.c"].service_latency == {"sampling": 25, "results": "lat.c"} and x["svc.c"].token_req
    assert x["str.*"].name == "streams" and x["str.*"].advertise


def test_rm_by_name(two_accounts):
    store = two_accounts
    ok(store, "add", "export", "-s", "feed.>", "--name", "feed")
    ok(store, "add", "import", "-a", "ops", "--from-account", "chat", "--remote-subject", "feed.a", "--name", "news")
    assert [i.name for i in store.account("ops").claims.imports] == ["news"]
    removed = json.loads(ok(store, "rm", "import", "-a", "ops", "--name", "news", "--json"))["removed"]
    assert removed["subject"] == "feed.a" and store.account("ops").claims.imports == []
    ok(store, "rm", "export", "--name", "feed")
    assert store.account("chat").claims.exports == []
