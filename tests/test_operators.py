"""Several operators in one home, as nsc keeps them: the global --operator, the remembered current
operator, init of another operator, import of an nsc home with several operators, and nodes of each
operator on real nats-servers accepting only their own operator's users."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.nsc.store import Store


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DCHAT_OPS_OPERATOR", raising=False)
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_cli(cli, ["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


def ok(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    code, out, err = run(home, *args, env=env)
    assert code == 0, err
    return out


def two_operators(home: Path) -> None:
    ok(home, "init")  # dchat
    out = ok(home, "init", "--operator", "acme")
    assert "created operator acme" in out and "now the current operator" in out


def test_two_operators_in_one_home(tmp_path):
    home = tmp_path / "home"
    two_operators(home)
    listed = json.loads(ok(home, "list", "operators", "--json"))
    assert [(o["name"], o["current"]) for o in listed["operators"]] == [("acme", True), ("dchat", False)]
    assert listed["current"] == "acme"
    keys = {o["name"]: o["public_key"] for o in listed["operators"]}
    assert keys["acme"] != keys["dchat"]

    # a user under each operator, chosen with the global option or its environment variable
    ok(home, "--operator", "dchat", "add", "user", "bob")
    ok(home, "add", "user", "bob", env={"DCHAT_OPS_OPERATOR": "acme"})
    store = Store(home)
    bob_dchat = store.user("chat", "bob", "dchat")
    bob_acme = store.user("chat", "bob", "acme")
    assert bob_dchat.public_key != bob_acme.public_key
    assert store.creds_path("dchat", "chat", "bob").is_file() and store.creds_path("acme", "chat", "bob").is_file()

    # describe, list and validate work on the chosen operator
    d = json.loads(ok(home, "--operator", "dchat", "describe", "operator", "--json"))
    assert d["name"] == "dchat" and d["public_key"] == keys["dchat"]
    d = json.loads(ok(home, "--operator", "dchat", "describe", "user", "bob", "--json"))
    assert d["public_key"] == bob_dchat.public_key
    tree = json.loads(ok(home, "--operator", "dchat", "list", "--json"))
    assert tree["operator"]["name"] == "dchat"
    assert json.loads(ok(home, "describe", "operator", "--json"))["name"] == "acme"  # the current one
    for op in ("dchat", "acme"):
        assert "store is valid" in ok(home, "--operator", op, "validate")

    # the current operator is remembered in the home
    assert "current operator: dchat" in ok(home, "use", "operator", "dchat")
    assert json.loads(ok(home, "list", "operators", "--json"))["current"] == "dchat"
    assert json.loads(ok(home, "describe", "user", "bob", "--json"))["public_key"] == bob_dchat.public_key
    assert ok(home, "list", "operators").splitlines()[1].startswith("* dchat")
    # --operator wins over the remembered one, for that command only
    assert json.loads(ok(home, "--operator", "acme", "describe", "operator", "--json"))["name"] == "acme"
    assert json.loads(ok(home, "describe", "operator", "--json"))["name"] == "dchat"


def test_bad_operator_choices_are_bad_values_and_change_nothing(tmp_path):
    home = tmp_path / "home"
    two_operators(home)
    before = snapshot(home)
    for args in (
        ["--operator", "nope", "list"],
        ["--operator", "nope", "add", "user", "carol"],
        ["--operator", "a/b", "list"],
        ["use", "operator", "nope"],
        ["--operator", "dchat", "init", "--operator", "acme"],
    ):
        code, _, err = run(home, *args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run(home, "--operator", "nope", "list")
    assert "no operator named 'nope'" in err and "acme, dchat" in err
    assert snapshot(home) == before

    # several operators and none remembered: the error says how to choose
    (home / "context.json").unlink()
    code, _, err = run(home, "add", "user", "carol")
    assert code == 1 and "--operator NAME" in err and "use operator" in err
    listed = json.loads(ok(home, "list", "operators", "--json"))
    assert listed["current"] is None and not any(o["current"] for o in listed["operators"])
    assert "no current operator" in ok(home, "list", "operators")


def test_init_of_an_operator_the_home_holds_changes_nothing(tmp_path):
    home = tmp_path / "home"
    two_operators(home)
    before = snapshot(home / "stores")
    out = ok(home, "init", "--operator", "dchat")
    assert "already holds operator dchat" in out
    out = ok(home, "--operator", "dchat", "init")
    assert "already holds operator dchat" in out
    assert snapshot(home / "stores") == before
    # an init that names no operator completes the current one, as it always did
    assert "already holds operator acme" in ok(home, "init")


def nsc_home(tmp_path: Path, *homes: Path) -> Path:
    """The folders nsc keeps, holding the operators of ``homes``: stores/<operator>/... and the keystore
    nkeys/keys/<K>/<XY>/<pubkey>.nk (with its creds under nkeys/creds)."""
    nsc = tmp_path / "nsc"
    for h in homes:
        for op in Store(h).operator_names():
            shutil.copytree(h / "stores" / op, nsc / "stores" / op)
        shutil.copytree(h / "keys", nsc / "nkeys", dirs_exist_ok=True)
    return nsc


def test_import_of_an_nsc_home_with_two_operators(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ok(a, "init", "--operator", "alpha")
    ok(a, "add", "user", "alice")
    ok(b, "init", "--operator", "beta")
    ok(b, "add", "user", "bob")
    nsc = nsc_home(tmp_path, a, b)
    assert sorted(p.name for p in (nsc / "stores").iterdir()) == ["alpha", "beta"]
    assert list((nsc / "nkeys" / "keys" / "O").rglob("*.nk"))

    target = tmp_path / "target"
    code, _, err = run(target, "import", "keys", str(nsc), "--dry-run", "--trust-operator")
    assert code == 0, err
    assert not target.exists() or not (target / "stores").exists()

    d = json.loads(ok(target, "import", "keys", str(nsc), "--trust-operator", "--json"))
    assert d["operators"] == ["alpha", "beta"]
    assert "operator alpha" in d["added"] and "operator beta" in d["added"]
    assert "user chat/alice of operator alpha" in d["added"] and "user chat/bob of operator beta" in d["added"]
    assert len(d["added"]) == len(set(d["added"]))  # a user's JWT and creds file make one user

    store = Store(target)
    assert store.operator_names() == ["alpha", "beta"]
    for op, user, src in (("alpha", "alice", a), ("beta", "bob", b)):
        assert store.operator(op).token == Store(src).operator(op).token
        assert store.user("chat", user, op).token == Store(src).user("chat", user, op).token
        assert store.creds_path(op, "chat", user).read_text() == Store(src).creds_path(op, "chat", user).read_text()
        assert "store is valid" in ok(target, "--operator", op, "validate")
    # the seeds came along: each operator signs here
    ok(target, "--operator", "beta", "add", "user", "carol")
    assert store.user("chat", "carol", "beta").claims.issuer == store.account("chat", "beta").public_key

    # importing again: nothing to do
    assert "nothing to do" in ok(target, "import", "keys", str(nsc), "--trust-operator")


def test_import_of_one_operator_of_an_nsc_home(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ok(a, "init", "--operator", "alpha")
    ok(b, "init", "--operator", "beta")
    nsc = nsc_home(tmp_path, a, b)
    target = tmp_path / "target"
    d = json.loads(ok(target, "--operator", "beta", "import", "keys", str(nsc), "--trust-operator", "--json"))
    assert d["operators"] == ["beta"]
    assert Store(target).operator_names() == ["beta"]
    assert not any("alpha" in x for x in d["added"])
    assert not Store(target).has_key(Store(a).operator("alpha").public_key)

    # an operator the import does not hold: a bad value, nothing written
    before = snapshot(target)
    code, _, err = run(target, "--operator", "gamma", "import", "keys", str(nsc), "--trust-operator")
    assert code == 2 and "alpha, beta" in err and "gamma" in err
    assert snapshot(target) == before


def test_import_of_two_operators_never_blames_a_signature(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ok(a, "init", "--operator", "alpha")
    ok(b, "init", "--operator", "beta")
    nsc = nsc_home(tmp_path, a, b)
    # a home with its own operator: the new ones need --trust-operator, and nothing is written without it
    target = tmp_path / "target"
    ok(target, "init", "--operator", "mine")
    before = snapshot(target)
    code, _, err = run(target, "import", "keys", str(nsc))
    assert code == 1 and "--trust-operator" in err and "signed" not in err
    assert snapshot(target) == before
    # an empty home: the same
    code, _, err = run(tmp_path / "empty", "import", "keys", str(nsc))
    assert code == 1 and "--trust-operator" in err and "signed" not in err
    # with it, both come in next to the home's own, which stays the current one
    ok(target, "import", "keys", str(nsc), "--trust-operator")
    listed = json.loads(ok(target, "list", "operators", "--json"))
    assert [o["name"] for o in listed["operators"]] == ["alpha", "beta", "mine"] and listed["current"] == "mine"

    # an account of a third operator in the folder: named as such, and nothing is written
    c = tmp_path / "c"
    ok(c, "init", "--operator", "gamma")
    stray = nsc / "stores" / "alpha" / "accounts" / "stray"
    stray.mkdir()
    shutil.copy(c / "stores" / "gamma" / "accounts" / "chat" / "chat.jwt", stray / "stray.jwt")
    fresh = tmp_path / "fresh"
    code, _, err = run(fresh, "import", "keys", str(nsc), "--trust-operator")
    assert code == 1 and "none of the import's operators (alpha, beta)" in err
    assert not (fresh / "stores").exists()


async def test_a_node_of_each_operator_accepts_only_its_own_users(tmp_path):
    from dchat_ops.config.node import NodeFile
    from dchat_ops.config.nodes import client_url
    from dchat_ops.runtime.client import connect, refused

    home = tmp_path / "home"
    two_operators(home)
    ok(home, "--operator", "dchat", "add", "user", "bob")
    ok(home, "--operator", "acme", "add", "user", "bob")
    ok(home, "--operator", "dchat", "node", "add", "na", "--no-cluster")
    ok(home, "--operator", "acme", "node", "add", "nb", "--no-cluster")
    rows = {r["id"]: r for r in json.loads(ok(home, "node", "list", "--json"))}
    assert rows["na"]["operator"] == "dchat" and rows["nb"]["operator"] == "acme"

    # a node started as another operator's: a clear error, nothing started
    code, _, err = run(home, "--operator", "dchat", "node", "up", "nb")
    assert code == 1 and "node nb belongs to operator acme, not to the current operator dchat" in err
    assert not (home / "run" / "nb" / "nats-server.pid").exists()
    # nor is it removed by another operator (whose account would lose a user of that name)
    code, _, err = run(home, "--operator", "dchat", "node", "rm", "nb")
    assert code == 1 and "belongs to operator acme" in err and (home / "nodes" / "nb.yaml").is_file()

    started = []
    try:
        ok(home, "--operator", "dchat", "node", "up", "na")
        started.append(("dchat", "na"))
        ok(home, "--operator", "acme", "node", "up", "nb")
        started.append(("acme", "nb"))
        store = Store(home)
        url = {n: client_url(NodeFile.load(store, n).node) for n in ("na", "nb")}
        creds = {op: store.creds_path(op, "chat", "bob") for op in ("dchat", "acme")}
        for node, own, other in (("na", "dchat", "acme"), ("nb", "acme", "dchat")):
            nc = await connect(url[node], creds[own])
            sub = await nc.subscribe("_INBOX.x")
            await nc.publish("_INBOX.x", b"hi")
            await nc.flush()
            await nc.close()
            del sub
            reason = await refused(url[node], creds[other])
            assert reason is not None and "authorization" in reason
        # push reaches the current operator's node only
        d = json.loads(ok(home, "--operator", "acme", "push", "--json"))
        assert {r["server"] for r in d["results"]} <= {"nb"} and d["results"]
        assert "na" not in d.get("stopped", [])
    finally:
        for op, node in started:
            run(home, "--operator", op, "node", "down", node)
