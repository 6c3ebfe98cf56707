"""One table of validation: every invalid user or role field is refused by `plan` (file, line, field)
and by the library (nsc.spec.FieldError), with the same message, before anything is written."""

import pytest
from conftest import snapshot
from ruamel.yaml import YAML

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.nsc import admin
from dchat_ops.nsc.spec import INT64_MAX, ROLE_FIELDS, FieldError, UserSpec
from dchat_ops.nsc.store import Store

# (id, field lines of one user in block YAML, the field as the error names it, a piece of the message)
USER_CASES = [
    ("double dot", 'allow_sub: ["a..b"]', "allow_sub[0]", "empty token in 'a..b'"),
    ("space in publish", 'allow_pub: ["foo bar"]', "allow_pub[0]", "contains a space"),
    ("> not last", 'allow_sub: ["ok", ">.x"]', "allow_sub[1]", "'>' must be the last token"),
    ("partial wildcard", 'deny_pub: ["ro*m"]', "deny_pub[0]", "wildcards must be whole tokens"),
    ("not a network", 'source_networks: ["notacidr"]', "source_networks[0]", "not an address or CIDR"),
    ("address, not CIDR", 'source_networks: ["10.0.0.0/8", "10.0.0.1"]', "source_networks[1]", "10.0.0.1/32"),
    ("connection type", 'connection_types: ["STANDARD", "PIGEON"]', "connection_types[1]", "unknown connection type"),
    ("time zone", 'times_location: "Mars/Phobos"', "times_location", "unknown time zone"),
    ("window without end", 'times: ["08:00:00"]', "times[0]", "use HH:MM:SS-HH:MM:SS"),
    ("window hours", 'times: ["8-18"]', "times[0]", "is not HH:MM:SS"),
    ("window past 24h", 'times: ["22:00:00-25:00:00"]', "times[0]", "is not HH:MM:SS"),
    ("negative limit", "subs: -5", "subs", "-1 (unlimited) or more"),
    ("limit past int64", f"payload: {INT64_MAX + 1}", "payload", "int64"),
    ("negative resp_max", "resp_max: -2", "resp_max", "-1 (unlimited) or more"),
    ("resp_ttl past int64", 'resp_ttl: "999999y"', "resp_ttl", "int64"),
    ("bad duration", 'resp_ttl: "soon"', "resp_ttl", "invalid duration"),
    ("expiry before start", 'start: "2028-01-01"\n        expiry: "2027-01-01"', "expiry", "not after the start"),
    ("expiry garbage", 'expiry: "someday"', "expiry", "invalid time"),
    ("expiry past 9999", 'expiry: "99999999d"', "expiry", "out of range"),
    ("empty tag", 'tags: ["ok", " "]', "tags[1]", "empty tag"),
]


def spec_with_user(lines: str) -> str:
    return f"""\
version: 1
operator: {{name: dchat}}
accounts:
  - name: chat
    signing_keys:
      - role: guest
        allow_sub: ["lobby.>"]
    users:
      - name: fine
        allow_sub: ["chat.>"]
      - name: x
        {lines}
"""


def _plan_error(tmp_path, capsys, text: str) -> tuple[str, str]:
    path = tmp_path / "network.yaml"
    path.write_text(text)
    home = tmp_path / "home"
    code = run_cli(cli, ["--home", str(home), "plan", "-f", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "internal error" not in err, err
    assert not home.exists()
    return str(path), err


@pytest.mark.parametrize("case, lines, where, message", USER_CASES, ids=[c[0] for c in USER_CASES])
def test_invalid_user_field_refused_by_plan_and_library(tmp_path, capsys, case, lines, where, message):
    text = spec_with_user(lines)
    path, err = _plan_error(tmp_path, capsys, text)
    field = where.split("[")[0]
    rows = text.splitlines()
    first = rows.index("      - name: x")
    line = next(i for i, t in enumerate(rows, 1) if i > first and t.strip().startswith(f"{field}:"))
    assert err.startswith(f"error: {path}:{line}: accounts[0].users[1].{where}: "), err
    assert message in err, err

    # the library path: the same fields, the same validator, the same message; nothing written
    store = Store(tmp_path / "lib")
    admin.init(store)
    before = snapshot(store.home)
    fields = YAML(typ="safe").load("\n".join(t.strip() for t in lines.splitlines()))
    with pytest.raises(FieldError) as e:
        admin.add_user(store, "chat", "x", UserSpec.from_fields(fields, now=admin.now(store)))
    assert e.value.where == where and f"{where}: {e.value.reason}" in err, (str(e.value), err)
    assert snapshot(store.home) == before


def test_invalid_role_field_and_account_limit(tmp_path, capsys):
    text = spec_with_user("allow_sub: [ok]").replace('allow_sub: ["lobby.>"]', 'allow_sub: ["lobby.>", "x..y"]')
    path, err = _plan_error(tmp_path, capsys, text)
    assert f"{path}:7: accounts[0].signing_keys[0].allow_sub[1]: empty token" in err, err
    with pytest.raises(FieldError, match=r"allow_sub\[1\]: empty token"):
        UserSpec.from_fields({"allow_sub": ["lobby.>", "x..y"]}, now=0, known=ROLE_FIELDS)
    with pytest.raises(FieldError, match="unknown field"):
        UserSpec.from_fields({"expiry": "2030-01-01"}, now=0, known=ROLE_FIELDS)  # a role has no expiry
    # a role's user may not carry permissions of its own (resp_ttl, times_location included)
    text = spec_with_user('role: guest\n        times_location: "UTC"')
    path, err = _plan_error(tmp_path, capsys, text)
    assert "accounts[0].users[1].times_location: a user of a signing key role takes its permissions" in err
    text = spec_with_user("allow_sub: [ok]").replace(
        "  - name: chat\n", f"  - name: chat\n    limits: {{conn: {INT64_MAX + 1}}}\n"
    )
    path, err = _plan_error(tmp_path, capsys, text)
    assert f"{path}:5: accounts[0].limits.conn: " in err and "int64" in err, err


def test_invalid_name_refused_by_plan_and_library(tmp_path, capsys):
    path, err = _plan_error(tmp_path, capsys, spec_with_user("allow_sub: [ok]").replace("name: x", "name: bad/x"))
    assert f"{path}:11: accounts[0].users[1].name: invalid name 'bad/x'" in err, err
    store = Store(tmp_path / "lib")
    admin.init(store)
    with pytest.raises(Exception, match="invalid user name 'bad/x'"):
        admin.add_user(store, "chat", "bad/x")


@pytest.mark.parametrize(
    "spec, where",
    [
        (UserSpec(subs=INT64_MAX + 1), "subs"),
        (UserSpec(data=-7), "data"),
        (UserSpec(resp_max=1, resp_ttl_s=1e12), "resp_ttl"),
        (UserSpec(source_networks=["10.0.0.1"]), "source_networks[0]"),
        (UserSpec(connection_types=["standard", "nope"]), "connection_types[1]"),
        (UserSpec(times=[("08:00:00", "18:00")]), "times[0]"),
        (UserSpec(times_location="Nowhere/Land"), "times_location"),
        (UserSpec(expires=1_800_000_000, not_before=1_900_000_000), "expiry"),
        (UserSpec(expires=10**13), "expiry"),
        (UserSpec(sub_deny=["a.>.b"]), "deny_sub[0]"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_library_add_and_edit_refuse_typed_specs(store, spec, where):
    before = snapshot(store.home)
    with pytest.raises(FieldError) as e:
        admin.add_user(store, "chat", "y", spec)
    assert e.value.where == where
    with pytest.raises(FieldError):
        admin.edit_user(store, "chat", "default", spec)
    assert snapshot(store.home) == before


def test_valid_fields_pass_both_paths(tmp_path):
    fields = {
        "allow_sub": ["orders.* workers", "_INBOX.>"],
        "source_networks": ["10.0.0.0/8", "::1/128"],
        "connection_types": ["standard", "WEBSOCKET"],
        "times": ["22:00:00-06:00:00"],  # past midnight
        "times_location": "Europe/Berlin",
        "resp_max": 1,
        "resp_ttl": "5s",
        "payload": INT64_MAX,
        "start": "2026-01-01",
        "expiry": "2030-01-01",
        "tags": ["Team"],
    }
    store = Store(tmp_path / "lib")
    admin.init(store)
    u = admin.add_user(store, "chat", "ok", UserSpec.from_fields(fields, now=admin.now(store))).entity.claims
    assert u.limits.times[0].start == "22:00:00" and u.limits.payload == INT64_MAX and u.tags == ["team"]


def test_account_sizes_take_units_in_a_spec_as_on_the_command_line(tmp_path, capsys):
    from dchat_ops import provision

    text = """\
version: 1
operator: {name: dchat}
accounts:
  - name: chat
    limits: {payload: 1M, data: 10G}
    jetstream: {mem: 512M, disk: 1G, streams: 10, mem_max_stream_bytes: 64MiB}
    users:
      - name: fine
"""
    path = tmp_path / "network.yaml"
    path.write_text(text)
    store = Store(tmp_path / "home")
    r = provision.apply(store, provision.load_spec(path))
    assert not r.error
    limits = store.account("chat").claims.limits
    assert (limits.payload, limits.data) == (1 << 20, 10 << 30)
    js = limits.jetstream
    assert (js.mem_storage, js.disk_storage, js.streams, js.mem_max_stream_bytes) == (512 << 20, 1 << 30, 10, 64 << 20)
    (tmp_path / "bad").mkdir()
    _, err = _plan_error(tmp_path / "bad", capsys, text.replace("512M", "512Q"))
    assert "not a size" in err and ":6" in err, err
