"""Enrollment: three homes stand for three machines (an operator, device 2 joining through the operator's
node, device 3 joining through device 2), real nats-servers on loopback.  No seed leaves the machine that
made it; a device chooses within its grant live and cannot widen it or mint users; a revocation on the
operator's machine cuts a device off everywhere (docs/moving-credentials.md, docs/trust.md)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import snapshot, wait_for

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.errors import SEED_PATTERN
from dchat_ops.nsc import admin
from dchat_ops.nsc.claims import UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.enroll import pending
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect, refused
from dchat_ops.runtime.supervisor import Supervisor


def dchat(home: Path, *args: str, capsys=None) -> tuple[int, str, str]:
    if capsys is not None:
        capsys.readouterr()
    code = run_cli(cli, ["--home", str(home), *args])
    if capsys is None:
        return code, "", ""
    out, err = capsys.readouterr()
    return code, out, err


def route_of(store: Store, node_id: str) -> str:
    n = NodeFile.load(store, node_id).node
    return f"nats-route://127.0.0.1:{n.cluster['port']}"


def url(store: Store, node_id: str) -> str:
    return nodes.client_url(NodeFile.load(store, node_id).node)


def creds_of(store: Store, user: str, account: str = "chat") -> Path:
    return store.creds_path(store.current_operator(), account, user)


def minted(signer: KeyPair, account: str) -> str:
    """A user JWT signed by ``signer`` for ``account``, allowed everything (made by hand: the encoder refuses
    a signer that is not an account key)."""
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    user = KeyPair.generate("user")
    claims = UserClaims(subject=user.public_key, name="mallory", issuer_account=account)
    claims.permissions.sub.allow = [">"]
    body = {"jti": "X" * 52, "iat": 1, "iss": signer.public_key, "name": "mallory", "sub": user.public_key}
    body["nats"] = {**claims.nats_dict(), "type": "user", "version": 2}
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + b64(json.dumps(body).encode())
    return head + "." + b64(signer.sign(head.encode()))


def seeds_in(folder: Path) -> dict[str, list[str]]:
    """Every seed in every file under ``folder`` (public key -> files)."""
    out: dict[str, list[str]] = {}
    for p in folder.rglob("*"):
        if p.is_file():
            for m in SEED_PATTERN.findall(p.read_bytes().decode("utf-8", "replace")):
                out.setdefault(KeyPair.from_seed(m).public_key, []).append(str(p))
    return out


async def receives(sub_url: str, sub_creds: Path, pub_url: str, pub_creds: Path, subject: str) -> bool:
    """Whether a message published on one node reaches a subscriber on another (tried for a few seconds)."""
    sub = await connect(sub_url, sub_creds)
    pub = await connect(pub_url, pub_creds)
    try:
        s = await sub.subscribe(subject)
        await sub.flush()
        for i in range(30):
            await pub.publish(subject, f"hello {i}".encode())
            await pub.flush()
            try:
                await s.next_msg(timeout=0.2)
                return True
            except asyncio.TimeoutError:
                continue
        return False
    finally:
        await sub.close()
        await pub.close()


async def gets(sub_url: str, sub_creds: Path, pub_url: str, pub_creds: Path, subject: str, tries: int) -> bool:
    """Whether a subscriber on one node gets a message published on another within ``tries`` sends."""
    sub = await connect(sub_url, sub_creds)
    pub = await connect(pub_url, pub_creds)
    try:
        s = await sub.subscribe(subject)
        await sub.flush()
        for i in range(tries):
            await pub.publish(subject, f"m{i}".encode())
            await pub.flush()
            try:
                await s.next_msg(timeout=0.2)
                return True
            except asyncio.TimeoutError:
                continue
        return False
    finally:
        await sub.close()
        await pub.close()


@pytest.fixture
def machines(tmp_path):
    """An operator's home with node ``a`` running; homes for device 2 and 3.  Every node started here is
    stopped by pid at the end."""
    op = Store(tmp_path / "operator")
    admin.init(op)
    assert run_cli(cli, ["--home", str(op.home), "node", "add", "a"]) == 0
    homes = {"op": op, "d2": Store(tmp_path / "device2"), "d3": Store(tmp_path / "device3")}
    started: list[Supervisor] = []

    def up(store: Store, node_id: str) -> None:
        assert dchat(store.home, "node", "up", node_id)[0] == 0
        started.append(Supervisor(store, node_id))

    up(op, "a")
    yield homes, up
    for sup in started:
        sup.down()


def enroll(tmp_path, op: Store, dev: Store, device: str, *request_args: str, sign_args=()) -> None:
    req, resp = tmp_path / f"{device}.req", tmp_path / f"{device}.resp"
    key = op.operator().public_key
    assert (
        dchat(dev.home, "enroll", "request", "--device", device, "--operator", key, *request_args, "-o", str(req))[0]
        == 0
    )
    assert dchat(op.home, "enroll", "sign", str(req), "-o", str(resp), *sign_args)[0] == 0
    assert dchat(dev.home, "enroll", "import", str(resp))[0] == 0


def test_three_machines_enroll_chat_stay_within_their_grants_and_are_revoked_everywhere(tmp_path, machines, capsys):
    homes, up = machines
    op, d2, d3 = homes["op"], homes["d2"], homes["d3"]
    # device 2 joins through the operator's node, device 3 through device 2
    enroll(tmp_path, op, d2, "dev2", "--seed-route", route_of(op, "a"), "--want-sub", "chat.>")
    up(d2, "dev2-node")
    enroll(
        tmp_path,
        op,
        d3,
        "dev3",
        "--seed-route",
        route_of(d2, "dev2-node"),
        sign_args=("--grant-sub", "chat.>", "--grant-sub", "dm.dev3"),
    )
    up(d3, "dev3-node")
    assert NodeFile.load(d3, "dev3-node").node.cluster["routes"] == [route_of(d2, "dev2-node")]
    code, out, _ = dchat(d3.home, "validate", capsys=capsys)
    assert code == 0 and "store is valid" in out

    # no seed on a device but its own keys; none in the files that travelled
    for dev in (d2, d3):
        own = set(pending(dev)["keys"].values())
        found = seeds_in(dev.home)
        assert set(found) == own, {k: v for k, v in found.items() if k not in own}
    for f in tmp_path.glob("dev*.re*"):
        assert not SEED_PATTERN.search(f.read_text()), f
    code, out, _ = dchat(op.home, "enroll", "list", "--json", capsys=capsys)
    assert [r["device"] for r in json.loads(out)] == ["dev2", "dev3"]

    # users on devices 2 and 3 talk across the nodes, once each node lets the room in (within its grant)
    for store in (d2, d3):  # each device's only node
        code, out, _ = dchat(store.home, "allow-sub", "chat.room", capsys=capsys)
        assert code == 0 and "applied live" in out, out
    assert asyncio.run(
        receives(url(d2, "dev2-node"), creds_of(d2, "dev2"), url(d3, "dev3-node"), creds_of(d3, "dev3"), "chat.room")
    )
    assert asyncio.run(
        receives(url(d3, "dev3-node"), creds_of(d3, "dev3"), url(d2, "dev2-node"), creds_of(d2, "dev2"), "chat.room")
    )

    # allow-sub within the grant on device 3 takes effect live: the node is reloaded, not restarted, and
    # nothing is re-signed
    dm = (url(d3, "dev3-node"), creds_of(d3, "dev3"), url(op, "a"), creds_of(op, "default"), "dm.dev3")
    assert not asyncio.run(gets(*dm, tries=5))  # its JWT allows it; the node's route imports do not
    pid = Supervisor(d3, "dev3-node").pid()
    jwt_before = d3.user("chat", "dev3-node").token
    code, out, _ = dchat(d3.home, "allow-sub", "dm.dev3", "--json", capsys=capsys)
    result = json.loads(out)
    assert code == 0 and result["outcome"] == "live", result
    assert Supervisor(d3, "dev3-node").pid() == pid and d3.user("chat", "dev3-node").token == jwt_before
    assert asyncio.run(gets(*dm, tries=30))
    # nothing was re-signed on the device: its users' JWTs are the operator's
    assert d3.user("chat", "dev3-node").claims.issuer == op.account("chat").public_key

    # beyond the grant: refused, nothing changed, and a request for the operator is written
    node_file = NodeFile.load(d3, "dev3-node").path.read_bytes()
    code, _, err = dchat(d3.home, "allow-sub", "secret.x", capsys=capsys)
    assert code == 1
    m = re.search(r"a request for the operator is in (\S+)", err)
    assert m and Path(m.group(1)).is_file() and "beyond what this device's operator granted" in err
    assert NodeFile.load(d3, "dev3-node").path.read_bytes() == node_file

    # a user minted on a device, with whatever the device holds (its own keys, or an account key it makes
    # up), is refused by every node
    acc = d3.account("chat")
    for signer in [*(d3.load_key(k) for k in pending(d3)["keys"].values()), KeyPair.generate("account")]:
        text = format_creds(minted(signer, acc.public_key), KeyPair.generate("user").seed)
        for store, node in ((op, "a"), (d2, "dev2-node"), (d3, "dev3-node")):
            reason = asyncio.run(refused(url(store, node), creds_text=text))
            assert reason and "authorization" in reason, (node, reason)
    code, _, err = dchat(d3.home, "add", "user", "mallory", capsys=capsys)
    assert code == 1 and "holds no key that signs users of account chat" in err

    # revoking device 3's user on the operator's machine cuts it off on all three nodes
    assert asyncio.run(refused(url(d3, "dev3-node"), creds_of(d3, "dev3"))) is None
    assert dchat(op.home, "revoke", "user", "dev3")[0] == 0
    for store, node in ((op, "a"), (d2, "dev2-node"), (d3, "dev3-node")):
        assert wait_for(lambda s=store, n=node: asyncio.run(refused(url(s, n), creds_of(d3, "dev3"))), 5), node
    assert asyncio.run(refused(url(d2, "dev2-node"), creds_of(d2, "dev2"))) is None
    # ... also after device 3's node restarts (its store still holds the older account JWT)
    assert dchat(d3.home, "node", "down", "dev3-node")[0] == 0
    assert dchat(d3.home, "node", "up", "dev3-node")[0] == 0
    assert asyncio.run(refused(url(d3, "dev3-node"), creds_of(d3, "dev3")))
    # and the device's store takes the newer account JWT from its node
    assert not d3.account("chat").claims.revocations
    code, out, _ = dchat(d3.home, "pull", "--update", capsys=capsys)
    assert code == 0, out
    assert pending(d3)["keys"]["user"] in Store(d3.home).account("chat").claims.revocations


def test_a_device_node_that_was_down_during_a_revocation_refuses_the_user_when_it_starts(tmp_path, machines, capsys):
    homes, up = machines
    op, d2 = homes["op"], homes["d2"]
    enroll(tmp_path, op, d2, "dev2", "--want-sub", "chat.>")  # the operator's nodes are its seed routes
    assert NodeFile.load(d2, "dev2-node").node.cluster["routes"] == [route_of(op, "a")]
    up(d2, "dev2-node")
    # a user the operator adds later connects to the device's node; an account it adds later reaches the
    # device's node and, with pull --update, its store
    assert dchat(op.home, "add", "user", "carol")[0] == 0
    assert asyncio.run(refused(url(d2, "dev2-node"), creds_of(op, "carol"))) is None
    assert dchat(op.home, "add", "account", "news")[0] == 0
    assert dchat(op.home, "push")[0] == 0
    code, out, _ = dchat(d2.home, "pull", "--update", capsys=capsys)
    assert code == 0 and "news" in Store(d2.home).account_names(), out
    assert dchat(d2.home, "validate")[0] == 0
    assert dchat(d2.home, "node", "down", "dev2-node")[0] == 0
    assert dchat(op.home, "revoke", "user", "dev2")[0] == 0
    # the device's node asks the cluster through itself, with the device's own system user
    code, out, _ = dchat(d2.home, "node", "up", "dev2-node", capsys=capsys)
    assert code == 0 and "caught up chat from cluster" in out, out
    assert asyncio.run(refused(url(d2, "dev2-node"), creds_of(d2, "dev2")))
    # revoking the device revokes its node's user and its system user too, on every node
    assert asyncio.run(refused(url(op, "a"), creds_of(d2, "dev2-sys", "SYS"))) is None
    code, out, _ = dchat(op.home, "enroll", "revoke", "dev2", capsys=capsys)
    assert code == 0 and "pushed: ok" in out
    for user, account in (("dev2-node", "chat"), ("dev2-sys", "SYS")):
        for store, node in ((op, "a"), (d2, "dev2-node")):
            assert wait_for(
                lambda s=store, n=node, u=user, a=account: asyncio.run(refused(url(s, n), creds_of(d2, u, a))), 5
            )
    code, out, _ = dchat(op.home, "enroll", "list", capsys=capsys)
    assert code == 0 and "dev2: revoked" in out


def test_a_grant_request_answered_by_the_operator_widens_the_grant(tmp_path, store, capsys):
    dev = Store(tmp_path / "device")
    enroll(tmp_path, store, dev, "phone", "--want-sub", "chat.>")
    # the node file's copy of the grant, widened by hand, widens nothing
    nf = NodeFile.load(dev, "phone-node")
    nf.set(("identity", "grant"), ["chat.>", "news.>"])
    nf.save()
    code, _, err = dchat(dev.home, "allow-sub", "news.y", capsys=capsys)
    assert code == 1 and "beyond what this device's operator granted (chat.>)" in err, err
    nf.set(("identity", "grant"), ["chat.>"])
    nf.save()
    code, _, err = dchat(dev.home, "allow-sub", "news.x", capsys=capsys)
    path = re.search(r"a request for the operator is in (\S+)", err).group(1)
    resp = tmp_path / "grant.resp"
    code, out, _ = dchat(store.home, "enroll", "sign", path, "-o", str(resp), capsys=capsys)
    assert code == 0 and "news.x" in out
    assert dchat(dev.home, "enroll", "import", str(resp))[0] == 0
    assert "news.x" in dev.user("chat", "phone").claims.permissions.sub.allow
    assert dchat(dev.home, "allow-sub", "news.x")[0] == 0
    # answered once only
    assert dchat(dev.home, "enroll", "import", str(resp))[0] == 1
    assert dchat(store.home, "enroll", "sign", path, "-o", str(resp), "--force")[0] == 1


# --- bad input: refused with a clear message, nothing written ----------------------------------------------


def _flip(text: str) -> str:
    lines = text.split("\n")
    body = lines[1]
    i = len(body) // 2
    lines[1] = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1 :]
    return "\n".join(lines)


@pytest.fixture
def requested(tmp_path, store):
    dev = Store(tmp_path / "device")
    req = tmp_path / "phone.req"
    key = store.operator().public_key
    assert (
        dchat(
            dev.home,
            "enroll",
            "request",
            "--device",
            "phone",
            "--operator",
            key,
            "--want-sub",
            "chat.>",
            "-o",
            str(req),
        )[0]
        == 0
    )
    return dev, req


@pytest.mark.parametrize(
    "change, message",
    [
        (_flip, "was changed"),
        (lambda t: t.replace("\n", "\r\n"), "was changed"),
        (lambda t: t + "\n", "was changed"),
        (lambda t: t.replace("-----\n", "-----\n ", 1), "was changed"),
        (lambda t: t.split("\n")[0], "was changed"),
        (lambda t: t.replace("REQUEST", "RESPONSE"), "this is an enrollment response, not an enrollment request"),
    ],
)
def test_a_changed_request_is_refused_and_nothing_written(tmp_path, store, requested, capsys, change, message):
    _, req = requested
    bad = tmp_path / "bad.req"
    bad.write_text(change(req.read_text()))
    before = snapshot(store.home)
    code, _, err = dchat(store.home, "enroll", "sign", str(bad), "-o", str(tmp_path / "x.resp"), capsys=capsys)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert snapshot(store.home) == before and not (tmp_path / "x.resp").exists()


def test_a_request_for_another_operator_or_replayed_is_refused(tmp_path, store, requested, capsys):
    _, req = requested
    other = Store(tmp_path / "other-operator")
    admin.init(other)
    code, _, err = dchat(other.home, "enroll", "sign", str(req), "-o", str(tmp_path / "o.resp"), capsys=capsys)
    assert code == 1 and "for another operator" in err
    assert dchat(store.home, "enroll", "sign", str(req), "-o", str(tmp_path / "1.resp"))[0] == 0
    before = snapshot(store.home)
    code, _, err = dchat(store.home, "enroll", "sign", str(req), "-o", str(tmp_path / "2.resp"), capsys=capsys)
    assert code == 1 and "replayed request" in err
    assert snapshot(store.home) == before and not (tmp_path / "2.resp").exists()


def test_bad_responses_are_refused_and_nothing_written(tmp_path, store, requested, capsys):
    dev, req = requested
    resp = tmp_path / "phone.resp"
    assert dchat(store.home, "enroll", "sign", str(req), "-o", str(resp))[0] == 0

    def refused_with(path: Path, message: str) -> None:
        before = snapshot(dev.home)
        code, _, err = dchat(dev.home, "enroll", "import", str(path), capsys=capsys)
        assert code == 1 and message in err and err.count("\n") == 1, err
        assert snapshot(dev.home) == before

    tampered = tmp_path / "tampered.resp"
    tampered.write_text(_flip(resp.read_text()))
    refused_with(tampered, "changed")

    # a response for another device: a second device's request, answered
    dev_b = Store(tmp_path / "device-b")
    req_b, resp_b = tmp_path / "b.req", tmp_path / "b.resp"
    key = store.operator().public_key
    assert dchat(dev_b.home, "enroll", "request", "--device", "tablet", "--operator", key, "-o", str(req_b))[0] == 0
    assert dchat(store.home, "enroll", "sign", str(req_b), "-o", str(resp_b))[0] == 0
    refused_with(resp_b, "for another device")

    # a response signed by another operator (one that would answer a request not meant for it)
    other = Store(tmp_path / "other-operator")
    admin.init(other)
    import dchat_ops.config.enroll as ce

    real = ce._refuse_other_operator
    ce._refuse_other_operator = lambda *a: None
    try:
        forged = tmp_path / "forged.resp"
        assert dchat(other.home, "enroll", "sign", str(req), "-o", str(forged))[0] == 0
    finally:
        ce._refuse_other_operator = real
    refused_with(forged, "another operator")

    # signed by the operator, but not all the device needs: refused before anything is written
    from dchat_ops.nsc.enroll import seal, unseal

    body = unseal(resp.read_text(), "response")
    del body["users"]["system"]
    short = tmp_path / "short.resp"
    short.write_text(seal("response", body, store.load_key(store.operator().public_key)))
    refused_with(short, "not of node, system, user")

    # forged by someone who knows only the operator's public key: an operator JWT with the operator's key as
    # subject that lists the forger's key as a signing key and is signed by it, and the envelope signed by it
    from dchat_ops.nsc.claims import OperatorClaims
    from dchat_ops.nsc.jwt import decode, encode

    forger = KeyPair.generate("operator")
    fake_op = decode(body["operator_jwt"], OperatorClaims)
    fake_op.signing_keys = [*fake_op.signing_keys, forger.public_key]
    body = unseal(resp.read_text(), "response")
    body["operator_jwt"] = encode(fake_op, forger)
    forged_op = tmp_path / "forged-operator.resp"
    forged_op.write_text(seal("response", body, forger))
    refused_with(forged_op, "not signed by the operator's own key")

    # the right one is taken once; the same response again is a replay
    assert dchat(dev.home, "enroll", "import", str(resp))[0] == 0
    refused_with(resp, "replayed response")


def test_request_options_and_homes_are_checked(tmp_path, store, capsys):
    key = store.operator().public_key
    out = tmp_path / "x.req"
    for args, message in (
        (["--device", "a/b", "--operator", key], "invalid device name"),
        (["--device", "p", "--operator", "OXYZ"], "--operator"),
        (["--device", "p", "--operator", key, "--want-sub", "a..b"], "--want-sub"),
        (["--device", "p", "--operator", key, "--seed-route", "http://x:1"], "--seed-route"),
    ):
        code, _, err = dchat(tmp_path / "d", "enroll", "request", *args, "-o", str(out), capsys=capsys)
        assert code == 2 and message in err and not out.exists() and not (tmp_path / "d").exists(), err
    code, _, err = dchat(
        store.home, "enroll", "request", "--device", "p", "--operator", key, "-o", str(out), capsys=capsys
    )
    assert code == 1 and "holds a store already" in err and not out.exists()
    code, _, err = dchat(tmp_path / "d", "enroll", "import", str(out), capsys=capsys)
    assert code == 1 and "made no enrollment request" in err


def test_export_keys_account_warns_it_hands_over_signing_keys(tmp_path, store, capsys):
    env = {**os.environ, "PW": "a long passphrase here"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dchat_ops",
            "--home",
            str(store.home),
            "export",
            "keys",
            "--account",
            "chat",
            "-o",
            str(tmp_path / "chat.bundle"),
            "--passphrase-env",
            "PW",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "signing key" in r.stderr and "every user's seed" in r.stderr and "enroll" in r.stderr


def _walkthrough() -> str:
    text = (Path(__file__).parent.parent / "docs" / "moving-credentials.md").read_text()
    section = text.split("## Equip a device: enrollment", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_docs_walkthrough_runs_as_written(tmp_path):
    """docs/moving-credentials.md's enrollment, each machine's lines run in that machine's home."""
    import shutil

    if shutil.which("jq") is None:
        pytest.skip("the walk-through uses jq")
    lines = []
    for line in _walkthrough().splitlines():
        if line.startswith("# on the operator's machine"):
            lines.append('export DCHAT_OPS_HOME="$OP"')
        elif line.startswith("# on the device"):
            lines.append('export DCHAT_OPS_HOME="$DEV"')
        lines.append(line)
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    env = {
        **os.environ,
        "OP": str(tmp_path / "operator"),
        "DEV": str(tmp_path / "device"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    try:
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    finally:
        for home, node in (("operator", "a"), ("device", "phone-node")):
            if (tmp_path / home / "nodes" / f"{node}.yaml").exists():
                Supervisor(Store(tmp_path / home), node).down()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "applied live" in r.stdout and "asked the operator" in r.stdout
    assert "a request for the operator is in" in r.stderr
    assert "revoked device phone" in r.stdout
    dev = Store(tmp_path / "device")
    assert set(seeds_in(dev.home)) == set(pending(dev)["keys"].values())


def test_a_network_on_tls_routes_enrolls_a_device_with_certificates_for_its_own_keys(tmp_path, machines, capsys):
    homes, up = machines
    op, d2 = homes["op"], homes["d2"]
    assert dchat(op.home, "tls", "init-ca")[0] == 0
    assert dchat(op.home, "node", "down", "a")[0] == 0
    assert dchat(op.home, "tls", "enable", "--node", "a", "--route")[0] == 0
    assert dchat(op.home, "node", "up", "a")[0] == 0
    req, resp = tmp_path / "dev2.req", tmp_path / "dev2.resp"
    key = op.operator().public_key
    assert (
        dchat(
            d2.home, "enroll", "request", "--device", "dev2", "--operator", key, "--want-sub", "chat.>", "-o", str(req)
        )[0]
        == 0
    )
    code, out, _ = dchat(op.home, "enroll", "sign", str(req), "-o", str(resp), capsys=capsys)
    assert code == 0 and "TLS on route" in out, out
    assert "PRIVATE KEY" not in resp.read_text()
    assert dchat(d2.home, "enroll", "import", str(resp))[0] == 0
    node = NodeFile.load(d2, "dev2-node").node
    assert node.tls == {"route": True}
    assert not (d2.home / "pki" / "private").exists()  # the CA's key stays with the operator
    up(d2, "dev2-node")
    code, out, _ = dchat(d2.home, "node", "status", "dev2-node", "--json", capsys=capsys)
    status = json.loads(out)
    assert code == 0 and status["links"]["routes_to"] == ["a"], status
    assert dchat(d2.home, "allow-sub", "chat.room")[0] == 0
    assert asyncio.run(
        receives(url(d2, "dev2-node"), creds_of(d2, "dev2"), url(op, "a"), creds_of(op, "default"), "chat.room")
    )
    # a certificate for another key than the device's is refused
    bad = Store(tmp_path / "device-x")
    assert (
        dchat(bad.home, "enroll", "request", "--device", "devx", "--operator", key, "-o", str(tmp_path / "x.req"))[0]
        == 0
    )
    for kind in ("route", "client", "server"):  # the device's keys replaced by others: its certificate no longer fits
        p = bad.home / "pki" / "nodes" / "devx-node" / f"{kind}.key"
        p.write_bytes((d2.home / "pki" / "nodes" / "dev2-node" / f"{kind}.key").read_bytes())
    assert dchat(op.home, "enroll", "sign", str(tmp_path / "x.req"), "-o", str(tmp_path / "x.resp"))[0] == 0
    before = snapshot(bad.home)
    code, _, err = dchat(bad.home, "enroll", "import", str(tmp_path / "x.resp"), capsys=capsys)
    assert code == 1 and "not for the key this node made" in err, err
    assert snapshot(bad.home) == before


def test_a_device_enrolls_as_a_leaf_node_of_the_operators_hub(tmp_path, machines, capsys):
    from dchat_ops.natsbin import free_port

    homes, up = machines
    op, d2 = homes["op"], homes["d2"]
    port = free_port()
    assert dchat(op.home, "node", "add", "hub", "--no-cluster", "--leaf-port", str(port))[0] == 0
    up(op, "hub")
    enroll(tmp_path, op, d2, "phone", "--leaf-of", f"nats-leaf://127.0.0.1:{port}", "--want-sub", "chat.>")
    node = NodeFile.load(d2, "phone-node").node
    assert node.cluster is None and node.leafnodes["remotes"][0]["urls"] == [f"nats-leaf://127.0.0.1:{port}"]
    up(d2, "phone-node")
    code, out, _ = dchat(d2.home, "allow-sub", "chat.x", capsys=capsys)
    assert code == 0 and "re-established" in out, out
    assert asyncio.run(
        gets(url(d2, "phone-node"), creds_of(d2, "phone"), url(op, "hub"), creds_of(op, "default"), "chat.x", 30)
    )


def test_users_of_two_enrolled_devices_chat_end_to_end_through_the_operators_jetstream_cluster(tmp_path, capsys):
    """The chat runtime on devices: each device's node user is its chat identity (its curve key made on the
    device); direct messages are sealed end to end and carried by the operator's JetStream cluster."""
    from dchat_ops.chat.client import ChatClient, ChatIdentity
    from dchat_ops.runtime.supervisor import chain, wait_jetstream_leader

    op = Store(tmp_path / "operator")
    admin.init(op)
    admin.edit_account(op, "chat", jetstream={"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
    sups = chain(op, ["a", "b", "c"], jetstream=True, start=False)
    d2, d3 = Store(tmp_path / "device2"), Store(tmp_path / "device3")
    try:
        for sup in sups:
            sup.up()
        assert wait_jetstream_leader(sups[0])
        enroll(tmp_path, op, d2, "dev2", "--seed-route", route_of(op, "a"), "--want-sub", "room.>")
        sups.append(Supervisor(d2, "dev2-node"))
        sups[-1].up()
        enroll(tmp_path, op, d3, "dev3", "--seed-route", route_of(d2, "dev2-node"), "--want-sub", "room.>")
        sups.append(Supervisor(d3, "dev3-node"))
        sups[-1].up()

        async def talk():
            two = await ChatClient.on_node(ChatIdentity.load(d2, "dev2-node"), d2, "dev2-node", replicas=3).start()
            three = await ChatClient.on_node(ChatIdentity.load(d3, "dev3-node"), d3, "dev3-node", replicas=3).start()
            try:
                await two.add_friend("dev3-node")
                await three.add_friend("dev2-node")
                await two.send_dm("dev3-node", "hello from device 2")
                got = await three.next_message(timeout=10)
                await three.send_dm("dev2-node", "and back")
                back = await two.next_message(timeout=10)
                return got, back
            finally:
                await two.close()
                await three.close()

        got, back = asyncio.run(talk())
        assert (got.kind, got.sender, got.body) == ("dm", "dev2-node", "hello from device 2")
        assert (back.sender, back.body) == ("dev3-node", "and back")
        # still nothing secret on a device but its own keys (now with its chat curve key)
        for dev in (d2, d3):
            own = set(pending(dev)["keys"].values())
            curve = ChatIdentity.load(dev, pending(dev)["names"]["node"]).curve_key.public_key
            assert set(seeds_in(dev.home)) == own | {curve}
    finally:
        for sup in sups:
            sup.down()


def test_a_signed_envelope_nested_too_deeply_is_refused_in_one_line():
    from dchat_ops.errors import EnrollError
    from dchat_ops.nsc.enroll import KINDS, _b64, _render, unseal

    signer = KeyPair.generate("user")
    payload = _b64(b'{"kind":"request","x":' + b"[" * 5000 + b"]" * 5000 + b"}")
    text = _render(KINDS["request"], payload, _b64(signer.sign(payload.encode("ascii"))))
    with pytest.raises(EnrollError, match="nested too deeply"):
        unseal(text, "request")


def test_a_request_naming_someone_elses_key_is_refused(tmp_path, store, requested, capsys):
    """The request is signed by the device's user key; its node and system keys are proven too, and a key
    already in the store is refused: else 'enroll revoke' of the device would cut off that other user."""
    from dchat_ops.nsc.enroll import key_proofs, seal, unseal

    dev, req = requested
    body = unseal(req.read_text(), "request")
    user = dev.load_key(body["keys"]["user"])
    victim = store.user("chat", "default").public_key
    # the node key swapped for another user's: the device cannot prove it holds it
    body["keys"]["node"] = victim
    forged = tmp_path / "forged.req"
    forged.write_text(seal("request", body, user))
    before = snapshot(store.home)
    code, _, err = dchat(store.home, "enroll", "sign", str(forged), "-o", str(tmp_path / "f.resp"), capsys=capsys)
    assert code == 1 and "does not hold the seed of its node key" in err, err
    # proven, but already someone's in this store (here: a key whose seed leaked to the device)
    body = unseal(req.read_text(), "request")
    node = store.load_key(victim)
    body["keys"]["node"] = victim
    body["proofs"] = key_proofs(body["id"], {"node": node, "system": dev.load_key(body["keys"]["system"])})
    forged.write_text(seal("request", body, user))
    code, _, err = dchat(store.home, "enroll", "sign", str(forged), "-o", str(tmp_path / "f.resp"), capsys=capsys)
    assert code == 1 and "already in use" in err, err
    assert snapshot(store.home) == before and not (tmp_path / "f.resp").exists()


def test_a_revoked_device_enrolls_again_with_new_keys(tmp_path, store, requested, capsys):
    _dev, req = requested
    assert dchat(store.home, "enroll", "sign", str(req), "-o", str(tmp_path / "1.resp"))[0] == 0
    old_key = store.user("chat", "phone").public_key
    code, _, err = dchat(store.home, "enroll", "sign", str(req), "-o", str(tmp_path / "x.resp"), capsys=capsys)
    assert code == 1
    assert dchat(store.home, "enroll", "revoke", "phone")[0] == 0
    # the device starts over in a new home: new keys, the same names
    dev2 = Store(tmp_path / "device-again")
    req2, resp2 = tmp_path / "phone2.req", tmp_path / "phone2.resp"
    key = store.operator().public_key
    assert dchat(dev2.home, "enroll", "request", "--device", "phone", "--operator", key, "-o", str(req2))[0] == 0
    code, _out, err = dchat(store.home, "enroll", "sign", str(req2), "-o", str(resp2), capsys=capsys)
    assert code == 0, err
    new_key = store.user("chat", "phone").public_key
    assert new_key != old_key
    revoked = store.account("chat").claims.revocations
    assert old_key in revoked and new_key not in revoked  # the old keys stay revoked, the new ones are not
    assert dchat(dev2.home, "enroll", "import", str(resp2))[0] == 0


def test_show_names_the_account_and_reads_grant_requests(tmp_path, store, capsys):
    dev = Store(tmp_path / "device")
    req, resp = tmp_path / "pc.req", tmp_path / "pc.resp"
    key = store.operator().public_key
    admin.add_account(store, "admin")
    args = ["enroll", "request", "--device", "pc", "--operator", key, "--account", "admin", "--want-sub", "chat.a"]
    assert dchat(dev.home, *args, "-o", str(req))[0] == 0
    code, out, _ = dchat(store.home, "enroll", "show", str(req), capsys=capsys)
    assert code == 0 and "account: admin" in out
    assert dchat(store.home, "enroll", "sign", str(req), "-o", str(resp))[0] == 0
    assert dchat(dev.home, "enroll", "import", str(resp))[0] == 0
    # beyond the grant: the device writes a grant request, and the hint it gives runs as written
    code, _, err = dchat(dev.home, "allow-sub", "chat.b", "--node", "pc-node", capsys=capsys)
    assert code == 1 and "beyond what this device's operator granted" in err
    grant_req = next((dev.home / "enroll").glob("grant-*.req"))
    code, out, _ = dchat(store.home, "enroll", "show", str(grant_req), capsys=capsys)
    assert code == 0 and "grant request of device pc" in out and "chat.b" in out
    hint = re.search(r"'(dchat-ops enroll sign [^']+)'", err).group(1).split()[1:]
    hint[2] = str(grant_req)
    hint[-1] = str(tmp_path / hint[-1])
    assert dchat(store.home, *hint)[0] == 0


def test_a_devices_users_read_replies_on_their_own_inbox_only(tmp_path, store, requested):
    """Not ``_INBOX.>``: in the system account that would show a device the answers to everyone's system
    requests (the operator's pull, say), in the application account every user's replies."""
    from dchat_ops.runtime.client import own_inbox
    from dchat_ops.subjects import inbox_prefix, inbox_prefix_of

    dev, req = requested
    resp = tmp_path / "phone.resp"
    assert dchat(store.home, "enroll", "sign", str(req), "-o", str(resp))[0] == 0
    assert dchat(dev.home, "enroll", "import", str(resp))[0] == 0
    own = inbox_prefix("phone-node")
    for acc, name in (("SYS", "phone-sys"), ("chat", "phone"), ("chat", "phone-node")):
        allow = store.user(acc, name).claims.permissions.sub.allow
        assert "_INBOX.>" not in allow and f"{own}.>" in allow, (name, allow)
        # and the one way to connect uses that prefix for these creds, without being told
        assert own_inbox(creds_of(dev, name, acc), None) == own
    # the chat client of the device's user (not its node's own) reads its replies there too
    from dchat_ops.chat.client import ChatIdentity

    assert ChatIdentity.load(dev, "phone").inbox_prefix == own
    assert inbox_prefix_of(["chat.>", "_INBOX.>", "_INBOX_x.>"]) == ""
    assert inbox_prefix_of(["_INBOX_a.>", "_INBOX_b.>"]) == ""


def test_a_request_that_cannot_be_written_leaves_nothing(tmp_path, store, capsys):
    dev = Store(tmp_path / "device")
    (tmp_path / "a-file").write_text("x")
    key = store.operator().public_key
    out = tmp_path / "a-file" / "pc.req"  # its folder is a file
    code, _, err = dchat(
        dev.home, "enroll", "request", "--device", "pc", "--operator", key, "-o", str(out), capsys=capsys
    )
    assert code == 1 and "cannot write" in err, err
    left = [p for p in dev.home.rglob("*") if p.is_file() and p.name not in (".lock", ".gitignore")]
    assert left == [] and seeds_in(dev.home) == {}
    # and the retry needs no --force
    assert (
        dchat(dev.home, "enroll", "request", "--device", "pc", "--operator", key, "-o", str(tmp_path / "pc.req"))[0]
        == 0
    )
