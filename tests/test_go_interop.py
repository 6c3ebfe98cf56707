"""Interop with the reference implementation: the NATS Go libraries (nats-io/jwt/v2, nats-io/nkeys).

A small Go program (tests/go/jwtcheck) is built once per session against the libraries Debian
packages (golang-go, golang-github-nats-io-jwt-dev, golang-github-nats-io-nkeys-dev: GOPATH mode,
no network).  It decodes and validates every JWT, creds file and seed of a dchat-ops home the way
nats-server's own library does (Decode*Claims, Validate, the issuer chain with signing keys and
scoped keys, ParseDecorated*), signs and verifies with nkeys, and makes operators, accounts, users
and creds of its own, which dchat-ops must then read, import and validate.

Without Go or the libraries the tests are skipped, and say what to install; with
``DCHAT_OPS_REQUIRE_GO=1`` (set by CI, which installs them) they fail instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.nsc.claims import JetStreamLimits
from dchat_ops.nsc.store import Store

GO_SOURCE = Path(__file__).parent / "go" / "jwtcheck"
GOPATH = Path(os.environ.get("DCHAT_OPS_GOPATH", "/usr/share/gocode"))
PACKAGES = "golang-go golang-github-nats-io-jwt-dev golang-github-nats-io-nkeys-dev"
BUILD_TIMEOUT = 300  # seconds; a cold build takes a few seconds
RUN_TIMEOUT = 60


def _missing() -> str:
    """Why the checker cannot be built here, or '' when it can."""
    if shutil.which("go") is None:
        return "the go toolchain is not installed"
    for lib in ("github.com/nats-io/jwt/v2", "github.com/nats-io/nkeys"):
        if not (GOPATH / "src" / lib).is_dir():
            return f"the Go library {lib} is not under {GOPATH}/src"
    return ""


def _unavailable(reason: str) -> None:
    message = f"Go interop: {reason} (apt-get install {PACKAGES})"
    if os.environ.get("DCHAT_OPS_REQUIRE_GO") == "1":
        pytest.fail(message + "; DCHAT_OPS_REQUIRE_GO=1 requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def jwtcheck(tmp_path_factory) -> Path:
    """The checker, built once into a temporary folder, offline, against Debian's Go libraries."""
    reason = _missing()
    if reason:
        _unavailable(reason)
    out = tmp_path_factory.mktemp("go")
    exe = out / "jwtcheck"
    env = {
        **os.environ,
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOCACHE": str(out / "cache"),
        "CGO_ENABLED": "0",
    }
    try:
        res = subprocess.run(
            ["go", "build", "-o", str(exe), "."],
            cwd=GO_SOURCE,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"go build took longer than {BUILD_TIMEOUT}s")
    if res.returncode != 0:
        _unavailable("go build failed: " + (res.stderr.strip().splitlines() or ["?"])[-1])
    return exe


def go(exe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=RUN_TIMEOUT)


def ops(home: Path, *args: str) -> tuple[int, str, str]:
    """Run the dchat-ops command line on ``home``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, ["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


def ok(home: Path, *args: str) -> str:
    code, out, err = ops(home, *args)
    assert code == 0, f"dchat-ops {' '.join(args)}: exit {code}: {err}"
    return out


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def go_report(exe: Path, home: Path) -> dict[str, Any]:
    res = go(exe, "store", str(home))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["problems"] == []
    return report


def comparable(claims: dict[str, Any]) -> dict[str, Any]:
    """Claims as both sides can be compared: an account's signing keys in key order (Go holds them in a
    map, and writes them in any order), and without the fields newer than Debian's library (jwt 2.3.0),
    which it drops when it reads them: the description of a scoped signing key (a label; the server
    does not use it)."""
    out = json.loads(json.dumps(claims))
    nats = out.get("nats", {})
    if nats.get("type") == "account" and "signing_keys" in nats:
        for key in nats["signing_keys"]:
            if isinstance(key, dict):
                key.pop("description", None)
        nats["signing_keys"].sort(key=lambda k: k["key"] if isinstance(k, dict) else k)
    return out


def assert_all_valid(report: dict[str, Any], home: Path, *, time_checks: frozenset[str] = frozenset()) -> None:
    """Every JWT decodes, validates without a blocking error and chains up; every creds file and seed
    parses and matches; what Go read of each JWT is what the file says (nothing dropped or misread)."""
    for kind in ("operators", "accounts", "users"):
        assert report[kind], f"Go found no {kind}"
        for e in report[kind]:
            where = f"{e['kind']} {e.get('name')} ({e['path']})"
            assert e["chain"] == "ok", f"{where}: {e['chain']}"
            assert e["errors"] == [], f"{where}: {e['errors']}"
            assert e["warnings"] == [], f"{where}: {e['warnings']}"
            if e["name"] not in time_checks:
                assert e["time_checks"] == [], f"{where}: {e['time_checks']}"
            token = Path(e["path"]).read_text().strip()
            assert comparable(e["claims"]) == comparable(payload(token)), f"{where}: Go reads it otherwise"
    for e in report["creds"] + report["keys"]:
        assert e["chain"] == "ok", f"{e['path']}: {e['chain']}"
    # every file dchat-ops wrote was seen
    assert len(report["creds"]) == len(list((home / "keys" / "creds").rglob("*.creds")))
    assert len(report["keys"]) == len(list((home / "keys" / "keys").rglob("*.nk")))
    assert len(report["users"]) == len(list((home / "stores").rglob("users/*.jwt")))


def by_name(report: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in report[kind]}


# --- what dchat-ops writes, read by Go ------------------------------------------------------------------


def test_a_strict_operator_its_accounts_and_users_of_every_kind_are_valid_in_go(jwtcheck, tmp_path):
    home = tmp_path / "home"
    ok(home, "init", "--strict")
    ok(home, "edit", "operator", "--sk", "--tag", "interop", "--service-url", "nats://127.0.0.1:4222")
    ok(home, "add", "account", "shop", "--signing-key")
    ok(
        home,
        *("edit", "account", "shop", "--conn", "10", "--leaf", "1", "--subs", "100", "--data", "1M"),
        *("--payload", "64K", "--imports", "5", "--exports", "5", "--js-mem", "1M", "--js-disk", "10M"),
        *("--js-streams", "3", "--js-consumers", "30", "--tag", "shop", "--description", "a shop"),
        *("--role", "reader", "--role-allow-sub", "news.>", "--role-allow-sub", "_INBOX.>"),
        *("--role-deny-pub", ">"),
    )
    ok(
        home,
        *("add", "user", "full", "-a", "shop", "--allow-pub", "orders.>", "--allow-sub", "q.work workers"),
        *("--deny-sub", "orders.secret", "--deny-pub", "orders.secret", "--resp-max", "1", "--resp-ttl", "1s"),
        *("--subs", "10", "--data", "1M", "--payload", "1K", "--conn-type", "STANDARD", "--conn-type", "WEBSOCKET"),
        *("--source-network", "127.0.0.0/8", "--time", "08:00:00-18:00:00", "--locale", "Europe/Berlin"),
        *("--expiry", "30d", "--start", "2026-01-01", "--tag", "t1"),
    )
    ok(home, "add", "user", "later", "-a", "shop", "--start", "2d", "--allow-sub", "orders.>")
    ok(home, "add", "user", "reader1", "-a", "shop", "--role", "reader", "--tag", "staff")
    ok(home, "add", "user", "tok", "-a", "shop", "--bearer", "--allow-sub", "orders.>")
    ok(home, "add", "user", "gone", "-a", "shop")
    ok(home, "revoke", "user", "gone", "-a", "shop", "--no-push")
    ok(home, "revoke", "--all-users", "-a", "chat", "--no-push")
    ok(home, "edit", "user", "default", "-a", "chat", "--allow-sub", "chat.>")  # re-issued after the revocation
    # JetStream tiers and subject mappings: no command sets them yet, but the claims keep them (from JWTs
    # made elsewhere), and the store signs them; they must come out the way the server's library reads them
    store = Store(home)
    with store.edit_account("chat") as c:
        c.limits.tiers = {
            "R1": JetStreamLimits(mem_storage=1 << 20, disk_storage=1 << 24, streams=4, consumer=8),
            "R3": JetStreamLimits(mem_storage=-1, disk_storage=-1, streams=-1, consumer=-1, max_ack_pending=1000),
        }
        c.mappings = {"orders.new": [{"subject": "orders.v2", "weight": 80}, {"subject": "orders.v1", "weight": 20}]}

    report = go_report(jwtcheck, home)
    assert_all_valid(report, home, time_checks=frozenset({"later"}))

    (op,) = report["operators"]
    assert op["claims"]["nats"]["strict_signing_key_usage"] is True
    op_sks = op["claims"]["nats"]["signing_keys"]
    assert len(op_sks) == 2
    accounts = by_name(report, "accounts")
    for acc in accounts.values():  # strict: every account by a signing key, none by the identity key
        assert acc["issuer"] in op_sks and acc["issuer"] != op["subject"]
    shop = accounts["shop"]["claims"]["nats"]
    assert shop["limits"]["conn"] == 10 and shop["limits"]["mem_storage"] == 1 << 20
    assert shop["tags"] == ["shop"] and shop["description"] == "a shop"
    roles = [k for k in shop["signing_keys"] if isinstance(k, dict)]
    assert [r["role"] for r in roles] == ["reader"] and roles[0]["template"]["pub"]["deny"] == [">"]
    gone_key = next(e["subject"] for e in report["users"] if e["name"] == "gone")
    assert gone_key in shop["revocations"]
    chat = accounts["chat"]["claims"]["nats"]
    assert set(chat["limits"]["tiered_limits"]) == {"R1", "R3"} and "*" in chat["revocations"]
    assert chat["mappings"]["orders.new"][0] == {"subject": "orders.v2", "weight": 80}

    users = by_name(report, "users")
    assert users["reader1"]["scope"] == "reader"  # issued by the scoped key, with no permissions of its own
    assert users["reader1"]["claims"]["nats"]["issuer_account"] == accounts["shop"]["subject"]
    assert users["full"]["issuer"] != accounts["shop"]["subject"]  # the account's signing key
    full = users["full"]["claims"]["nats"]
    assert full["sub"]["allow"] == ["q.work workers"] and full["allowed_connection_types"] == ["STANDARD", "WEBSOCKET"]
    assert full["times_location"] == "Europe/Berlin" and full["resp"] == {"max": 1, "ttl": 1_000_000_000}
    assert users["tok"]["claims"]["nats"]["bearer_token"] is True
    assert users["later"]["time_checks"]  # not valid before two days from now: Go sees it too
    # revocations mean the same to both: a JWT issued at or before the revocation time is revoked
    for acc_name in ("chat", "shop"):
        acc_claims = store.account(acc_name).claims
        for name in store.user_names(acc_name):
            u = store.user(acc_name, name).claims
            assert users[name].get("revoked", False) == acc_claims.is_revoked(u.subject, u.issued_at), name
    assert users["gone"]["revoked"] and not users["full"].get("revoked")


def test_a_plain_operator_with_exports_imports_and_roles_from_a_spec_is_valid_in_go(jwtcheck, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        """
version: 1
operator: {name: plainop, tags: [interop], service_urls: ["nats://127.0.0.1:4222"]}
accounts:
  - name: shop
    description: orders and prices
    tags: [shop, team-a]
    limits: {conn: 50, leaf: 2, subs: 500, payload: 1048576, data: 104857600, imports: 10, exports: 10,
             wildcards: true, disallow_bearer: true}
    jetstream: {mem: 1048576, disk: 10485760, streams: 5, consumers: 50, max_ack_pending: 100,
                mem_max_stream_bytes: 524288, disk_max_stream_bytes: 1048576, max_bytes_required: true}
    exports:
      - {subject: "orders.>", type: stream, name: orders, description: every order,
         info_url: "https://example.com/orders"}
      - {subject: "price.*", type: service, name: price, response_type: Stream, response_threshold: 2s}
      - {subject: "private.*.>", type: stream, name: private, token_req: true, account_token_position: 2}
    plain_signing_keys: 1
    signing_keys:
      - {role: clerk, description: shop staff, allow_pub: ["orders.>"], allow_sub: ["price.*", "_INBOX.>"],
         deny_sub: ["orders.secret"], subs: 10, payload: 4096, resp_max: 1, resp_ttl: 1s,
         connection_types: [STANDARD, WEBSOCKET], source_networks: ["127.0.0.0/8"],
         times: ["08:00:00-18:00:00"], times_location: Europe/Berlin}
    users:
      - {name: clerk1, role: clerk, tags: [staff], expiry: 2030-01-01}
      - {name: admin, allow_pub: ["orders.>", "price.*"], allow_sub: ["orders.>", "q.work workers"],
         deny_pub: ["orders.secret"], subs: 100, data: 1048576, payload: 65536, connection_types: [STANDARD],
         source_networks: ["10.0.0.0/8", "127.0.0.1/32"], times: ["00:00:00-23:59:59"], times_location: UTC,
         start: 2026-01-01, expiry: 2031-06-30, tags: [admin]}
  - name: buyer
    imports:
      - {account: shop, subject: "orders.>", type: stream, name: orders, local_subject: "shop.orders.>"}
      - {account: shop, subject: "price.*", type: service, name: price, local_subject: "prices.*"}
    users:
      - {name: tok, bearer: true, allow_sub: ["shop.orders.>"], allow_pub: ["prices.*"]}
"""
    )
    home = tmp_path / "home"
    ok(home, "apply", "-f", str(spec))
    report = go_report(jwtcheck, home)
    assert_all_valid(report, home)

    (op,) = report["operators"]
    assert "signing_keys" not in op["claims"]["nats"] and "strict_signing_key_usage" not in op["claims"]["nats"]
    accounts = by_name(report, "accounts")
    for acc in accounts.values():  # no operator signing key: the identity key signs
        assert acc["issuer"] == op["subject"]
    shop, buyer = accounts["shop"]["claims"]["nats"], accounts["buyer"]["claims"]["nats"]
    exports = {x["name"]: x for x in shop["exports"]}
    assert exports["price"]["type"] == "service" and exports["price"]["response_threshold"] == 2_000_000_000
    assert exports["private"]["token_req"] is True and exports["private"]["account_token_position"] == 2
    imports = {x["name"]: x for x in buyer["imports"]}
    assert imports["orders"]["account"] == accounts["shop"]["subject"]
    assert imports["price"]["local_subject"] == "prices.*"
    users = by_name(report, "users")
    assert users["clerk1"]["scope"] == "clerk"
    assert users["admin"]["claims"]["nats"]["src"] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert users["tok"]["claims"]["nats"]["bearer_token"] is True
    assert {c["name"] for c in report["creds"]} == {"sys", "clerk1", "admin", "tok"}


def test_the_go_checker_catches_what_it_should(jwtcheck, tmp_path):
    """The checks can fail: a user re-signed by a stranger key, a seed that is not its file's key, a user
    signed by the account's identity key under a strict operator."""
    from dchat_ops.nsc.claims import UserClaims
    from dchat_ops.nsc.jwt import decode, encode
    from dchat_ops.nsc.keys import KeyPair

    home = tmp_path / "home"
    ok(home, "init")
    store = Store(home)
    path = store.user_jwt_path("dchat", "chat", "default")
    claims = decode(path.read_text().strip(), UserClaims)
    path.write_text(encode(claims, KeyPair.generate("account")) + "\n")
    seed_file = next((home / "keys" / "keys").rglob("U*.nk"))
    seed_file.write_text(KeyPair.generate("user").seed + "\n")
    report = go_report(jwtcheck, home)
    users = by_name(report, "users")
    assert "is not the account nor one of its signing keys" in users["default"]["chain"]
    assert next(e for e in report["creds"] if e["name"] == "default")["chain"] != "ok"  # no longer the store's JWT
    assert next(e for e in report["keys"] if e["path"] == str(seed_file))["chain"].startswith("the seed's public key")

    # under a strict operator the account's identity key signs no user (nats-server refuses such a user)
    strict = tmp_path / "strict"
    ok(strict, "init", "--strict")
    sstore = Store(strict)
    acc = sstore.account("chat")
    path = sstore.user_jwt_path("dchat", "chat", "default")
    claims = decode(path.read_text().strip(), UserClaims)
    claims.issuer_account = ""
    path.write_text(encode(claims, sstore.load_key(acc.public_key)) + "\n")
    users = by_name(go_report(jwtcheck, strict), "users")
    assert users["default"]["chain"] == "strict operator: user signed by the account's identity key"
    assert users["sys"]["chain"] == "ok"


# --- nkeys: sign in one, verify in the other ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["operator", "account", "user", "server", "cluster"])
def test_nkeys_signatures_verify_both_ways(jwtcheck, tmp_path, kind):
    home = tmp_path / "home"
    seed_file = tmp_path / "keys" / f"{kind}.nk"
    public = json.loads(ok(home, "nkey", "gen", kind, "-o", str(seed_file), "--json"))["public_key"]
    data = tmp_path / "data.bin"
    data.write_bytes(b"nonce \x00\xff" + kind.encode())
    other = tmp_path / "other.bin"
    other.write_bytes(b"another nonce")

    go_sig = go(jwtcheck, "sign", str(seed_file), str(data))  # Go reads dchat-ops's seed file
    assert go_sig.returncode == 0, go_sig.stderr
    go_sig_text = go_sig.stdout.strip()
    ops_sig = ok(home, "nkey", "sign", str(seed_file), str(data)).strip()
    assert go_sig_text == ops_sig  # Ed25519 is deterministic: the same key and bytes give the same signature

    assert ops(home, "nkey", "verify", "--", public, str(data), go_sig_text)[0] == 0
    assert go(jwtcheck, "verify", public, str(data), ops_sig).returncode == 0
    assert ops(home, "nkey", "verify", "--", public, str(other), go_sig_text)[0] == 1
    assert go(jwtcheck, "verify", public, str(other), ops_sig).returncode == 1
    stranger = json.loads(ok(home, "nkey", "gen", kind, "-o", str(tmp_path / "s.nk"), "--json"))["public_key"]
    assert go(jwtcheck, "verify", stranger, str(data), ops_sig).returncode == 1


# --- what Go writes, read by dchat-ops ------------------------------------------------------------------


@pytest.fixture
def go_files(jwtcheck, tmp_path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "from-go"
    res = go(jwtcheck, "make", str(out))
    assert res.returncode == 0, res.stderr
    return out, json.loads(res.stdout)


def test_jwts_and_creds_made_by_go_are_described_by_dchat_ops(go_files, tmp_path):
    folder, keys = go_files
    home = tmp_path / "home"
    op = json.loads(ok(home, "describe", "file", str(folder / "goop.jwt"), "--json"))
    assert op["kind"] == "operator" and op["public_key"] == keys["operator"]
    assert op["strict_signing_key_usage"] is True and op["claims"]["nats"]["signing_keys"] == [keys["operator-sk"]]
    acc = json.loads(ok(home, "describe", "file", str(folder / "goacc.jwt"), "--json"))
    assert acc["kind"] == "account" and acc["public_key"] == keys["account"] and acc["issuer"] == keys["operator-sk"]
    scoped = [k for k in acc["claims"]["nats"]["signing_keys"] if isinstance(k, dict)]
    assert scoped[0]["key"] == keys["account-scoped"] and scoped[0]["role"] == "reader"
    for name, signer in (("alice", "account-sk"), ("bob", "account-sk"), ("carol", "account-scoped")):
        code, out, err = ops(home, "describe", "file", str(folder / f"{name}.creds"), "--json")
        assert code == 0, err
        user = json.loads(out)
        assert user["kind"] == "user" and user["public_key"] == keys[f"user-{name}"] and user["issuer"] == keys[signer]
        seed = (folder / f"user-{name}.nk").read_text().strip()
        assert seed not in out and seed not in err
        assert ok(home, "nkey", "pub", str(folder / f"{name}.creds")).strip() == keys[f"user-{name}"]
    for name in ("operator", "account-sk", "user-bob"):
        assert ok(home, "nkey", "pub", str(folder / f"{name}.nk")).strip() == keys[name]


def test_a_store_imported_from_go_files_validates_and_grows_in_both(jwtcheck, go_files, tmp_path):
    folder, keys = go_files
    home = tmp_path / "home"
    code, out, err = ops(home, "import", "keys", str(folder), "--trust-operator", "--json")
    assert code == 0, err
    listing = json.loads(ok(home, "list", "--json"))
    text = json.dumps(listing)
    for name in ("goop", "goacc", "SYS", "alice", "bob", "carol"):
        assert name in text
    code, out, err = ops(home, "validate")
    assert code == 0, out + err
    carol = json.loads(ok(home, "describe", "user", "carol", "-a", "goacc", "--json"))
    assert carol["issuer"] == keys["account-scoped"]
    # dchat-ops signs with Go's keys: an account under the strict operator, users under Go's account
    ok(home, "add", "account", "more")
    ok(home, "add", "user", "dave", "-a", "goacc", "--allow-sub", "chat.>")
    ok(home, "add", "user", "erin", "-a", "goacc", "--role", "reader")
    ok(home, "edit", "account", "goacc", "--subs", "2000")
    report = go_report(jwtcheck, home)
    assert_all_valid(report, home)
    accounts = by_name(report, "accounts")
    assert accounts["more"]["issuer"] == keys["operator-sk"]  # strict: Go's signing key, not its identity
    assert accounts["goacc"]["claims"]["nats"]["limits"]["subs"] == 2000
    users = by_name(report, "users")
    assert users["erin"]["scope"] == "reader" and users["carol"]["scope"] == "reader"
    assert users["dave"]["claims"]["nats"]["issuer_account"] == keys["account"]


async def test_a_server_dchat_ops_configures_admits_go_users_with_their_scopes(jwtcheck, go_files, tmp_path, servers):
    """Go's operator imported, dchat-ops renders the server config: Go's users (signed by the account's
    signing key, and by its scoped key) and a user dchat-ops signed with Go's keys talk to each other, and
    the scoped user is held to its role's template."""
    from dchat_ops.runtime.client import close_quietly, connect

    folder, keys = go_files
    home = tmp_path / "home"
    ok(home, "import", "keys", str(folder), "--trust-operator")
    ok(home, "add", "user", "dave", "-a", "goacc", "--allow-pub", "news.>", "--allow-sub", "chat.bob.>")
    dave_jwt = json.loads(ok(home, "describe", "user", "dave", "-a", "goacc", "--json"))
    assert dave_jwt["issuer"] == keys["account-sk"]  # the operator is strict: Go's account signing key signs
    store = Store(home)
    url, _ = servers.standalone(store)

    errors: list[str] = []
    carol = await connect(url, folder / "carol.creds", errors=errors)  # Go: the scoped key of role "reader"
    bob = await connect(url, folder / "bob.creds")  # Go: the account's plain signing key
    dave = await connect(url, store.creds_path("goop", "goacc", "dave"))  # dchat-ops, with Go's keys
    try:
        news = await carol.subscribe("news.>")
        chat = await dave.subscribe("chat.bob.>")
        await carol.flush()
        await dave.flush()
        await dave.publish("news.today", b"from dchat-ops")
        await bob.publish("chat.bob.hi", b"from go")
        assert (await news.next_msg(timeout=5)).data == b"from dchat-ops"
        assert (await chat.next_msg(timeout=5)).data == b"from go"
        fake = await bob.subscribe("news.fake")
        await bob.flush()
        await carol.publish("news.fake", b"the role denies every publish")
        await carol.flush()
        for _ in range(100):  # the server's -ERR reaches the error callback a moment after the flush
            if any('permissions violation for publish to "news.fake"' in e.lower() for e in errors):
                break
            await asyncio.sleep(0.05)
        assert any('permissions violation for publish to "news.fake"' in e.lower() for e in errors), errors
        with pytest.raises(asyncio.TimeoutError):
            await fake.next_msg(timeout=0.5)
    finally:
        for nc in (carol, bob, dave):
            await close_quietly(nc)


def test_activation_tokens_are_valid_in_go_and_chain_to_the_exporting_account(jwtcheck, tmp_path):
    home = tmp_path / "home"
    ok(home, "init")
    ok(home, "add", "account", "ops")
    ok(home, "add", "export", "--account", "chat", "--subject", "help.>", "--service", "--private")
    token = tmp_path / "ops.act"
    ok(
        home,
        "generate",
        "activation",
        "--account",
        "chat",
        "--subject",
        "help.ask",
        "--target-account",
        "ops",
        "-o",
        str(token),
        "--expiry",
        "30d",
    )
    store = Store(home)
    acc_jwt = store.account_jwt_path(store.current_operator(), "chat")
    res = go(jwtcheck, "activation", str(token), str(acc_jwt))
    assert res.returncode == 0, res.stdout + res.stderr
    entry = json.loads(res.stdout)
    assert entry["chain"] == "ok" and entry["errors"] == []
    claims = entry["claims"]
    assert claims["sub"] == store.account("ops").public_key
    assert claims["nats"]["subject"] == "help.ask" and claims["nats"]["kind"] == "service"
    # another account's JWT does not stand behind it, and a changed byte is caught
    other = store.account_jwt_path(store.current_operator(), "ops")
    assert go(jwtcheck, "activation", str(token), str(other)).returncode == 1
    text = token.read_text().strip()
    head, body, sig = text.split(".")
    bad = tmp_path / "bad.act"
    bad.write_text(f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}")
    assert go(jwtcheck, "activation", str(bad), str(acc_jwt)).returncode != 0
