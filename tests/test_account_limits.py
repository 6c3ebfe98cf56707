"""Account edits are checked with the validators specs use; what the server would refuse is never written, and
``validate`` names an account whose limits the server would refuse."""

from __future__ import annotations

import json

import pytest
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.errors import FieldError
from dchat_ops.nsc import admin
from dchat_ops.nsc.describe import validate_store

BIG = str(2**63)  # one past int64
HUGE = "99999999999999999999"
TOO_LARGE = "larger than the server's limit"
TOO_SMALL = "-1 (unlimited) or more"

BAD_ACCOUNT_EDITS = [
    (["--conn", HUGE], "conn: " + HUGE + " is " + TOO_LARGE),
    (["--leaf", "-2"], "leaf: must be " + TOO_SMALL),
    (["--subs", BIG], "subs: " + BIG + " is " + TOO_LARGE),
    (["--data", "-7"], "data: must be " + TOO_SMALL),
    (["--payload", "-3"], "payload: must be " + TOO_SMALL),
    (["--imports", HUGE], TOO_LARGE),
    (["--exports", "-100"], TOO_SMALL),
    (["--js-mem", "-5"], "--js-mem: must be " + TOO_SMALL),
    (["--js-disk", HUGE], "--js-disk: " + HUGE + " is " + TOO_LARGE),
    (["--js-streams", "-2"], "jetstream.streams: must be " + TOO_SMALL),
    (["--js-consumers", BIG], "jetstream.consumers: " + BIG + " is " + TOO_LARGE),
    (["--role", "bad role"], "role: invalid role name 'bad role'"),
    (["--role", "../x"], "invalid role name"),
    (["--role", ""], "invalid role name"),
    (["--conn", "50", "--js-mem", "-5"], "--js-mem"),  # a good change does not go in with a bad one
    (["--role", "ok", "--role-allow-sub", "a..b"], "empty token"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ACCOUNT_EDITS, ids=[" ".join(a) for a, _ in BAD_ACCOUNT_EDITS])
def test_a_bad_account_edit_is_one_line_exit_2_and_writes_nothing(store, capsys, args, message):
    before = snapshot(store.home)
    code = run_cli(cli, ["--home", str(store.home), "edit", "account", "chat", *args])
    out, err = capsys.readouterr()
    assert code == 2, (args, err)
    assert err.startswith("error: ") and message in err, (args, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert out == ""
    assert snapshot(store.home) == before, args


def test_good_limits_at_the_edges_are_taken(store, capsys):
    top = str(2**63 - 1)
    args = ["edit", "account", "chat", "--conn", top, "--js-mem", "-1", "--js-disk", "0", "--leaf", "-1", "--json"]
    assert run_cli(cli, ["--home", str(store.home), *args]) == 0
    limits = json.loads(capsys.readouterr().out)["claims"]["nats"]["limits"]
    assert limits["conn"] == 2**63 - 1 and limits["mem_storage"] == -1
    assert [f for f in validate_store(store) if f.level == "error"] == []


@pytest.mark.parametrize(
    "kw",
    [
        {"limits": {"conn": 2**63}},
        {"limits": {"subs": -2}},
        {"limits": {"conn": "10"}},
        {"limits": {"conn": True}},
        {"limits": {"wildcards": "yes"}},
        {"limits": {"bogus": 1}},
        {"limits": {"jetstream": 1}},
        {"jetstream": {"mem_storage": -5}},
        {"jetstream": {"max_ack_pending": 2**64}},
        {"jetstream": {"bogus": 1}},
        {"add_role": "bad role"},
        {"expires": -1},
        {"tags": [" "]},
    ],
)
def test_the_library_refuses_with_a_field_error_before_writing(store, kw):
    before = snapshot(store.home)
    with pytest.raises(FieldError):
        admin.edit_account(store, "chat", **kw)
    assert snapshot(store.home) == before


def test_validate_names_an_account_whose_limits_the_server_refuses(store, capsys):
    with store.edit_account("chat") as claims:  # as a store written by an older version or by hand
        claims.limits.conn = 2**64
        claims.limits.jetstream.mem_storage = -5
    errors = [f for f in validate_store(store) if f.level == "error"]
    assert [f.entity for f in errors] == ["account chat", "account chat"]
    assert "conn" in errors[0].message and "int64" in errors[0].message
    assert "jetstream.mem:" in errors[1].message and TOO_SMALL in errors[1].message
    assert run_cli(cli, ["--home", str(store.home), "validate"]) == 1
    out = capsys.readouterr().out
    assert "store is valid" not in out and "2 error(s)" in out
