"""`list keys` (every key of the operator, its accounts and users, and whether the home holds its seed)
and `use account` (the default account of commands that take --account)."""

from __future__ import annotations

import contextlib
import io
import json

from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.errors import SEED_PATTERN
from dchat_ops.nsc import admin
from dchat_ops.nsc.keys import KeyPair


def run(store, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, ["--home", str(store.home), *args])
    return code, out.getvalue(), err.getvalue()


def test_list_keys_names_every_key_and_whether_its_seed_is_here(store):
    admin.edit_operator(store, add_signing_key=True)
    admin.edit_account(store, "chat", add_role="guest")
    # a user whose seed is elsewhere (an enrolled device's, say): only its public key is in the store
    from dchat_ops.nsc.enroll import issue_for_key

    device = KeyPair.generate("user")
    issue_for_key(store, "chat", "phone", device.public_key, admin.UserSpec())
    code, out, err = run(store, "list", "keys", "--json")
    assert code == 0, err
    rows = json.loads(out)["keys"]
    by_key = {r["public_key"]: r for r in rows}
    op = store.operator()
    assert by_key[op.public_key]["kind"] == "operator" and by_key[op.public_key]["seed"] is True
    assert all(by_key[k]["kind"] == "operator signing key" for k in op.claims.signing_keys)
    guest = store.account("chat").claims.scope_for_role("guest")
    assert by_key[guest.key]["role"] == "guest" and by_key[guest.key]["seed"] is True
    assert by_key[device.public_key] == {
        "kind": "user",
        "owner": "chat/phone",
        "role": "",
        "public_key": device.public_key,
        "seed": False,
    }
    assert by_key[store.user("chat", "default").public_key]["seed"] is True
    assert not SEED_PATTERN.search(out)
    code, out, _ = run(store, "list", "keys", "--no-users")
    assert code == 0 and "chat/default" not in out and "account signing key (guest)" in out
    assert not SEED_PATTERN.search(out)


def test_use_account_is_the_default_of_account_options(store):
    admin.add_account(store, "ops")
    assert run(store, "add", "user", "x")[0] == 0  # init made chat the current account
    assert run(store, "use", "account", "ops")[0] == 0
    assert run(store, "add", "user", "y")[0] == 0
    assert "x" in store.user_names("chat") and "y" in store.user_names("ops") and "y" not in store.user_names("chat")
    before = snapshot(store.home)
    code, _, err = run(store, "use", "account", "nope")
    assert code == 2 and "no account named 'nope'" in err and snapshot(store.home) == before
