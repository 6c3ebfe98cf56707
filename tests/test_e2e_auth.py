"""Against real nats-servers: what the store issues is accepted, and every broken credential is refused."""

import asyncio
import base64
import json

import pytest
from click.testing import CliRunner

from dchat_ops._cli.main import cli
from dchat_ops.natsbin import free_port
from dchat_ops.nsc import admin
from dchat_ops.nsc.claims import UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.jwt import encode
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.runtime.client import connect, refused
from dchat_ops.runtime.process import ServerProcess


def forge_user(signer: KeyPair, issuer_account: str = "", **kw) -> str:
    kp = KeyPair.generate("user")
    u = UserClaims(subject=kp.public_key, name="forged", issuer_account=issuer_account, **kw)
    return format_creds(encode(u, signer), kp.seed)


@pytest.fixture
def cli_server(store, tmp_path):
    """A server started from the output of `dchat-ops generate config --nats-resolver`."""
    port, http = free_port(), free_port()
    conf = tmp_path / "server.conf"
    r = CliRunner().invoke(
        cli,
        [
            "--home",
            str(store.home),
            "generate",
            "config",
            "--nats-resolver",
            "-o",
            str(conf),
            "--port",
            str(port),
            "--http-port",
            str(http),
            "--data-dir",
            str(tmp_path / "data"),
        ],
    )
    assert r.exit_code == 0, r.output
    srv = ServerProcess.start(conf, monitor_url=f"http://127.0.0.1:{http}", log_file=tmp_path / "s.log")
    yield f"nats://127.0.0.1:{port}"
    srv.stop()


async def test_init_user_exchanges_messages(store, cli_server):
    nc = await connect(cli_server, store.creds_path("dchat", "chat", "default"))
    sub = await nc.subscribe("chat.general")
    await nc.publish("chat.general", b"hi")
    assert (await sub.next_msg(timeout=2)).data == b"hi"
    await nc.close()


@pytest.mark.parametrize("resolver", ["full", "memory"])
async def test_sub_only_chat_gets_a_permissions_violation(store, servers, resolver):
    admin.add_user(store, "chat", "alice", admin.UserSpec(sub_allow=["chat.>"]))
    url, _ = servers.standalone(store, resolver)
    errors = []
    nc = await connect(url, store.creds_path("dchat", "chat", "alice"), errors=errors)
    ok = await nc.subscribe("chat.room")
    await nc.subscribe("other.room")
    await nc.publish("other.room", b"nope")
    await nc.publish("chat.room", b"yes")
    assert (await ok.next_msg(timeout=2)).data == b"yes"
    await asyncio.sleep(0.1)
    assert any('permissions violation for subscription to "other.room"' in e for e in errors), errors
    assert nc.is_connected  # a permissions violation does not close the connection
    await nc.close()


async def test_tampered_jwt_is_refused(store, cli_server):
    text = store.read_creds("dchat", "chat", "default")
    token = text.splitlines()[1]
    h, p, s = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload["nats"]["sub"] = {"allow": [">"]}
    p2 = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    assert await refused(cli_server, creds_text=text.replace(token, f"{h}.{p2}.{s}")) is not None
    assert await refused(cli_server, creds_text=text) is None  # the untampered creds still work


async def test_expired_user_is_refused(store, cli_server):
    r = admin.add_user(store, "chat", "old", admin.UserSpec(expires=admin.now(store) - 10))
    reason = await refused(cli_server, r.creds_path)
    assert reason is not None and ("expired" in reason or "authorization" in reason)


async def test_user_signed_by_an_unknown_key_is_refused(store, cli_server):
    assert await refused(cli_server, creds_text=forge_user(KeyPair.generate("account"))) is not None


async def test_signing_key_user_needs_issuer_account(store, servers):
    admin.edit_account(store, "chat", add_signing_key=True)
    acc = store.account("chat")
    sk = store.load_key(acc.claims.signing_keys[0])
    url, _ = servers.standalone(store)
    assert await refused(url, creds_text=forge_user(sk, issuer_account="")) is not None
    assert await refused(url, creds_text=forge_user(sk, issuer_account=acc.public_key)) is None


async def test_identity_signed_user_is_refused_under_strict_mode(strict_store, servers):
    url, _ = servers.standalone(strict_store)
    acc = strict_store.account("chat")
    identity = strict_store.load_key(acc.public_key)
    assert await refused(url, creds_text=forge_user(identity)) is not None
    assert await refused(url, strict_store.creds_path("dchat", "chat", "default")) is None


async def test_scoped_role_permissions_are_applied_by_the_server(store, servers):
    admin.edit_account(store, "chat", add_role="guest", role_spec=admin.UserSpec(sub_allow=["lobby.>"]))
    admin.add_user(store, "chat", "visitor", role="guest")
    url, _ = servers.standalone(store)
    errors = []
    nc = await connect(url, store.creds_path("dchat", "chat", "visitor"), errors=errors)
    lobby = await nc.subscribe("lobby.main")
    await nc.subscribe("private.x")
    await nc.publish("lobby.main", b"hello")
    assert (await lobby.next_msg(timeout=2)).data == b"hello"
    await asyncio.sleep(0.1)
    assert any('subscription to "private.x"' in e for e in errors), errors
    await nc.close()


async def test_users_issued_in_bulk_are_accepted_with_their_permissions(store, servers):
    """add_users goes through the bulk encoder; here signed by an account signing key (issuer_account)."""
    admin.edit_account(store, "chat", add_signing_key=True)
    spec = admin.UserSpec(pub_allow=["chat.>"], sub_allow=["chat.>"], tags=["bulk"])
    admin.add_users(store, "chat", ["bulk1", "bulk2"], spec, workers=1)
    user = store.user("chat", "bulk1").claims
    assert user.issuer_account == store.account("chat").public_key != user.issuer
    url, _ = servers.standalone(store)
    errors: list[str] = []
    reader = await connect(url, store.creds_path("dchat", "chat", "bulk1"), errors=errors)
    writer = await connect(url, store.creds_path("dchat", "chat", "bulk2"))
    sub = await reader.subscribe("chat.room")
    await reader.subscribe("other.room")
    await reader.flush()
    await writer.publish("chat.room", b"from bulk")
    await writer.flush()
    assert (await sub.next_msg(timeout=5)).data == b"from bulk"
    await asyncio.sleep(0.1)
    assert any('subscription to "other.room"' in e for e in errors), errors
    await reader.close()
    await writer.close()
