"""Refused at the door: generated names, durations, networks, limits and tags that the server would refuse (or
that the tool would not write) are refused by the library and by the CLI with a one-line message and exit 2,
and the home is left as it was (contents and modes of every file); generated valid values are taken.

The rules are the one table of :mod:`dchat_ops.nsc.limits`; the CLI runs in this process (a few cases also as
a real subprocess), so the whole file stays fast.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.errors import SEED_PATTERN, FieldError, StoreError
from dchat_ops.nsc import admin
from dchat_ops.nsc.claims import ScopedSigningKey
from dchat_ops.nsc.describe import validate_store
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.limits import INT64_MAX, check_cidr, check_limit, check_tag, parse_size
from dchat_ops.nsc.spec import UserSpec
from dchat_ops.nsc.store import Store, check_name
from dchat_ops.nsc.transfer import import_path

FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
SEED = KeyPair.generate("user").seed  # made here: no seed is kept in the repository


# --- a store made once for the module: every refused input must leave it as it is ----------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    h = tmp_path_factory.mktemp("fields") / "home"
    store = Store(h)
    admin.init(store, "dchat", "chat", "default")
    admin.edit_account(store, "chat", add_role="guest")
    assert run_cli(cli, ["--home", str(h), "validate"]) == 0  # the lock and any first-run files exist now
    return h


def state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and its mode."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def run(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, ["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


def refused(home: Path, *args: str, message: str = "") -> str:
    """Run the CLI; it must refuse with exit 2, one short line, no traceback, and change nothing."""
    before = state(home)
    code, out, err = run(home, *args)
    assert code == 2, (args, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    assert len(lines[0]) < 400, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert message in err, (args, err)
    assert SEED not in err and SEED not in out
    assert state(home) == before, args
    return err


# --- names --------------------------------------------------------------------------------------------------

NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
good_names = st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: not SEED_PATTERN.search(n))
# a character no name may hold: controls (a newline at the end too), spaces, separators, non-ASCII
bad_chars = st.one_of(
    st.characters(max_codepoint=0x1F),
    st.sampled_from([" ", "\x7f", "/", "\\", "$", "*", ">", ":", "\u2028", "ü", "\u00a0"]),
)


@st.composite
def bad_names(draw) -> str:
    name = draw(st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True))
    how = draw(st.sampled_from(["end", "inside", "start", "long", "lead"]))
    ch = draw(bad_chars)
    if how == "end":
        return name + ch
    if how == "inside":
        return name[:1] + ch + name[1:]
    if how == "start":
        return ch + name
    if how == "long":
        return name + "x" * (65 - len(name))
    return draw(st.sampled_from([".", "-", "_", "@"])) + name


@FAST
@given(name=bad_names())
def test_a_bad_name_is_refused_everywhere(home, name):
    with pytest.raises(FieldError):
        check_name(name, "user name")
    # "--": a name starting with '-' is a name here, not an option
    refused(home, "add", "user", "--", name, message="invalid user name")
    refused(home, "add", "account", "--", name, message="invalid account name")
    refused(home, "edit", "account", "chat", f"--role={name}", message="invalid role name")
    refused(home, "node", "add", "--", name, message="invalid node id")


@FAST
@given(name=good_names)
def test_a_good_name_is_taken(name):
    assert check_name(name, "user name") == name


def test_a_name_ending_in_a_newline_is_refused_by_a_real_command(home):
    before = state(home)
    env = {**os.environ, "DCHAT_OPS_HOME": str(home)}
    for args in (["add", "user", "bob\n"], ["init", "--operator", "op\n"], ["node", "add", "n1\n"]):
        p = subprocess.run([sys.executable, "-m", "dchat_ops", *args], capture_output=True, text=True, env=env)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("error: invalid ") and "\\n'" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert state(home) == before


# --- numbers: -1 and 0 to int64, nothing else ---------------------------------------------------------------

bad_limits = st.one_of(
    st.integers(min_value=INT64_MAX + 1, max_value=2**80), st.integers(max_value=-2, min_value=-(2**70))
)
good_limits = st.integers(min_value=-1, max_value=INT64_MAX)
ACCOUNT_OPTIONS = ["--conn", "--leaf", "--subs", "--data", "--payload", "--imports", "--exports"]
ACCOUNT_OPTIONS += ["--js-mem", "--js-disk", "--js-streams", "--js-consumers"]


@FAST
@given(value=bad_limits, option=st.sampled_from(ACCOUNT_OPTIONS))
def test_an_account_limit_out_of_range_is_refused(home, value, option):
    refused(home, "edit", "account", "chat", option, str(value), message="int64" if value > 0 else "-1 (unlimited)")


@FAST
@given(value=bad_limits, option=st.sampled_from(["--subs", "--data", "--payload", "--resp-max"]))
def test_a_user_limit_out_of_range_is_refused(home, value, option):
    refused(home, "add", "user", "newuser", option, str(value))
    refused(home, "edit", "user", "default", option, str(value))


@FAST
@given(value=good_limits, field=st.sampled_from(["subs", "data", "payload", "resp_max"]))
def test_a_limit_in_range_is_taken(value, field):
    assert check_limit(field, value) == value
    UserSpec.from_fields({field: value}, now=0)
    admin.check_account_changes({"conn": value}, {"mem_storage": value})


def test_limits_at_the_edges_are_written_and_validate(home, tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    top = str(INT64_MAX)
    assert run(store.home, "edit", "account", "chat", "--conn", top, "--js-disk", "-1")[0] == 0
    assert run(store.home, "add", "user", "edge", "--subs", top, "--resp-max", top, "--resp-ttl", "292y")[0] == 0
    assert [f for f in validate_store(store) if f.level == "error"] == []


# --- durations: whole nanoseconds within int64 --------------------------------------------------------------

UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "y": 365 * 86400 * 10**9}


@FAST
@given(unit=st.sampled_from(sorted(UNIT_NS)), data=st.data())
def test_a_duration_past_int64_nanoseconds_is_refused(home, unit, data):
    n = data.draw(st.integers(min_value=INT64_MAX // UNIT_NS[unit] + 2, max_value=10**25))
    with pytest.raises(FieldError, match="int64 nanoseconds"):
        UserSpec.from_fields({"resp_ttl": f"{n}{unit}"}, now=0)
    refused(home, "edit", "user", "default", "--resp-max", "1", "--resp-ttl", f"{n}{unit}", message="int64")


@FAST
@given(unit=st.sampled_from(sorted(UNIT_NS)), data=st.data())
def test_a_duration_within_int64_nanoseconds_is_taken(unit, data):
    n = data.draw(st.integers(min_value=0, max_value=INT64_MAX // UNIT_NS[unit] - 1))
    spec = UserSpec.from_fields({"resp_ttl": f"{n}{unit}", "resp_max": 1}, now=0)
    assert spec.resp_ttl_s is not None and spec.resp_ttl_s * 1e9 <= INT64_MAX


@FAST
@given(text=st.text(min_size=1, max_size=12).filter(lambda t: not t.strip().isdigit()))
def test_a_duration_that_is_not_one_is_refused(home, text):
    try:
        UserSpec.from_fields({"resp_ttl": text}, now=0)
    except FieldError:
        refused(home, "edit", "user", "default", "--resp-max", "1", "--resp-ttl", text, message="resp_ttl")
        return
    # what parses is a real duration: the CLI takes it too (not tried here: it would write)


# --- source networks: CIDR, as Go's net.ParseCIDR reads it, with no bits past the prefix ---------------------


@st.composite
def networks(draw) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    v6 = draw(st.booleans())
    addr = draw(st.ip_addresses(v=6 if v6 else 4))
    prefix = draw(st.integers(min_value=0, max_value=128 if v6 else 32))
    return ipaddress.ip_network(f"{addr}/{prefix}", strict=False)


@FAST
@given(net=networks())
def test_a_network_in_canonical_cidr_form_is_taken(net):
    assert check_cidr("source_networks", str(net)) == str(net)
    UserSpec.from_fields({"source_networks": [str(net)]}, now=0)


@FAST
@given(net=networks(), data=st.data())
def test_a_network_the_server_refuses_or_misreads_is_refused(home, net, data):
    bits = net.max_prefixlen
    addr = data.draw(st.ip_addresses(v=net.version))
    kind = data.draw(st.sampled_from(["bare", "netmask", "zone", "host bits", "prefix"]))
    if kind == "bare":
        text, hint = str(addr), f"write {addr}/{bits}"
    elif kind == "netmask" and net.version == 4:
        text, hint = f"{net.network_address}/{net.netmask}", f"write {net}"
    elif kind == "zone" and net.version == 6:
        text, hint = f"{addr}%eth0/{net.prefixlen}", "IPv6 zone"
    elif kind == "prefix":
        text, hint = f"{net.network_address}/{data.draw(st.integers(min_value=bits + 1, max_value=999))}", "prefix"
    else:
        host = net.network_address + data.draw(st.integers(min_value=1, max_value=max(1, net.num_addresses - 1)))
        if net.num_addresses == 1 or host not in net:
            return
        text, hint = f"{host}/{net.prefixlen}", f"write {net} for the network, or {host}/{bits}"
    with pytest.raises(FieldError) as e:
        check_cidr("source_networks", text)
    assert hint in str(e.value), (text, str(e.value))
    refused(home, "add", "user", "newuser", "--source-network", text, message="source_networks[0]")


def test_the_networks_of_the_issue():
    for text, hint in [
        ("127.0.0.1", "write 127.0.0.1/32"),
        ("10.0.0.0/255.0.0.0", "write 10.0.0.0/8"),
        ("fe80::1%eth0/64", "IPv6 zone"),
        ("10.0.0.1/8", "write 10.0.0.0/8"),
    ]:
        with pytest.raises(FieldError, match=hint.replace(".", r"\.")):
            check_cidr("source_networks", text)


# --- tags and free text: no control characters, no seeds ---------------------------------------------------


@FAST
@given(
    tag=st.one_of(
        st.builds(
            lambda a, c, b: a + c + b,
            st.text("abc", max_size=3),
            st.characters(max_codepoint=0x1F),
            st.text("xyz", max_size=3),
        ),
        st.just(SEED),
        st.just("x" * 256),
    ),
    where=st.sampled_from(["user", "account", "operator"]),
)
def test_a_bad_tag_is_refused(home, tag, where):
    if tag.strip() != tag or not tag.strip():
        tag = "a" + tag + "b"  # the CLI trims the ends of a list item; keep the bad part inside
    with pytest.raises(FieldError):
        check_tag("tags", tag)
    args = {
        "user": ["edit", "user", "default"],
        "account": ["edit", "account", "chat"],
        "operator": ["edit", "operator"],
    }
    refused(home, *args[where], "--tag", tag, message="tags")


def test_account_and_operator_tags_are_added_and_removed_like_a_users(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    for what in (["edit", "account", "chat"], ["edit", "operator"], ["edit", "user", "default"]):
        assert run(store.home, *what, "--tag", "one")[0] == 0
        assert run(store.home, *what, "--tag", "two", "--tag", "three")[0] == 0
        assert run(store.home, *what, "--rm-tag", "two")[0] == 0
    for e in (store.account("chat"), store.operator(), store.user("chat", "default")):
        assert e.claims.tags == ["one", "three"], (e.kind, e.claims.tags)


# --- hosts and URLs -------------------------------------------------------------------------------------------


@FAST
@given(
    option=st.sampled_from(["--seed-route", "--leaf-of", "--gateway", "--host"]),
    value=st.one_of(
        st.sampled_from(
            ["garbage", "garbage://", "http://x", "nats://a b:1", "nats://x", "nats://x:0", "nats://x:70000"]
        ),
        st.text(max_size=8).map(lambda t: "nats://" + t + "\n:4222"),
    ),
)
def test_a_bad_host_or_url_on_node_add_is_exit_2(home, option, value):
    if option == "--gateway":
        value = "other=" + value if "=" not in value else value
    if option == "--host":  # a host name that does not resolve is a failure at run time, not a bad value
        value = "h " + value
    refused(home, "node", "add", "nx", option, value, message=option)


def test_node_add_with_bad_urls_is_exit_2_as_a_real_command(home):
    env = {**os.environ, "DCHAT_OPS_HOME": str(home)}
    before = state(home)
    for args in (["--seed-route", "garbage"], ["--gateway", "nonsense"], ["--leaf-of", "http://x"]):
        p = subprocess.run(
            [sys.executable, "-m", "dchat_ops", "node", "add", "nx", *args], capture_output=True, text=True, env=env
        )
        assert p.returncode == 2 and p.stderr.startswith(f"error: {args[0]}"), (args, p.stderr)
    assert state(home) == before


def test_a_spec_with_a_garbage_route_is_refused_by_plan(tmp_path):
    spec = tmp_path / "network.yaml"
    spec.write_text(
        "version: 1\noperator: {name: dchat}\naccounts:\n  - name: chat\nnodes:\n  - id: n1\n    routes: ['garbage://']\n"
    )
    code, _, err = run(tmp_path / "h", "plan", "-f", str(spec))
    assert code != 0 and "nodes[0].routes[0]" in err and "garbage" in err, err
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").rglob("*.jwt"))


# --- JWTs made elsewhere: import refuses, validate names the repair -----------------------------------------


def test_import_refuses_a_user_jwt_the_server_refuses(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    admin.add_user(store, "chat", "wide", UserSpec(subs=5))
    with store.edit_user("chat", "wide") as claims:  # as another tool could have written it
        claims.limits.subs = 2**64
    files = tmp_path / "files"
    files.mkdir()
    jwt_file = files / "wide.jwt"
    jwt_file.write_text(store.user("chat", "wide").token)
    other = Store(tmp_path / "other")
    admin.init(other, "dchat2", "chat", "default")
    op = files / "op.jwt"
    op.write_text(store.operator().token)
    acc = files / "chat.jwt"
    acc.write_text(store.account("chat").token)
    before = state(other.home)
    with pytest.raises(StoreError, match=r"user chat/wide: subs: .*int64.*nats-server refuses this JWT"):
        import_path(other, files, trust_operator=True)
    assert state(other.home) == before


def test_validate_names_each_broken_value_and_its_repair(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    admin.edit_account(store, "chat", add_role="guest")
    with store.edit_user("chat", "default") as c:  # as an older version or a hand edit left them
        c.limits.src = ["127.0.0.1", "10.0.0.1/8"]
        c.limits.subs = 2**64
    with store.edit_account("chat") as a:
        a.limits.leaf = -2
        for sk in a.signing_keys:
            if isinstance(sk, ScopedSigningKey):
                sk.template.payload = 2**63
    with store.edit_operator() as o:
        o.operator_service_urls = ["garbage"]
    found = {(f.level, f.entity, f.message.split(":")[0]): f.message for f in validate_store(store)}
    expect = {
        ("error", "operator dchat", "service_urls[0]"): "dchat-ops edit operator --service-url",
        ("error", "account chat", "leaf"): "dchat-ops edit account chat --leaf N",
        ("error", "account chat", "role guest"): "dchat-ops edit role chat guest --payload N",
        ("error", "user chat/default", "subs"): "dchat-ops edit user default -a chat --subs N",
        ("error", "user chat/default", "source_networks[0]"): "write 127.0.0.1/32",
        ("warning", "user chat/default", "source_networks[1]"): "write 10.0.0.0/8",
    }
    for key, piece in expect.items():
        assert key in found and piece in found[key], (key, found)
    code, out, _ = run(store.home, "validate")
    assert code == 1 and "store is valid" not in out


@pytest.mark.parametrize(
    "args",
    [["--host", "a b"], ["--host", "h\n"], ["--server-name", "x\ny"], ["--server-name", "two words"]],
    ids=["host with a space", "host with a newline", "server name with a newline", "server name with a space"],
)
def test_generate_config_refuses_a_bad_host_or_server_name(home, tmp_path, args):
    refused(home, "generate", "config", *args, "--no-check", "-o", str(tmp_path / "server.conf"))
    assert not (tmp_path / "server.conf").exists()


# --- sizes and what the server would refuse in an account -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("1024", 1024), ("-1", -1), ("0", 0), ("512K", 512 << 10), ("64MiB", 64 << 20), ("1gb", 1 << 30), ("2T", 2 << 40)],
)
def test_a_size_with_a_unit_is_read_as_nats_server_reads_it(text, value):
    assert parse_size("js_mem", text) == value


@pytest.mark.parametrize("text", ["1X", "G", "1.5G", "-1G", "-2", "9000000T", "1 0M", "1iB"])
def test_a_bad_size_is_refused(home, text):
    with pytest.raises(FieldError):
        parse_size("js_mem", text)
    refused(home, "edit", "account", "chat", "--js-mem", text, message="--js-mem")


def test_sizes_are_written_in_bytes(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    assert run(store.home, "edit", "account", "chat", "--js-mem", "512M", "--js-disk", "10G", "--payload", "1M")[0] == 0
    limits = store.account("chat").claims.limits
    assert (limits.jetstream.mem_storage, limits.jetstream.disk_storage) == (512 << 20, 10 << 30)
    assert limits.payload == 1 << 20
    assert run(store.home, "edit", "user", "default", "--data", "10M")[0] == 0
    assert store.user("chat", "default").claims.limits.data == 10 << 20


def test_bearer_users_and_a_no_bearer_account_are_refused_in_either_order(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    assert run(store.home, "add", "user", "kiosk", "--bearer")[0] == 0
    # the account cannot disallow bearer tokens while a bearer user is in it
    err = refused(store.home, "edit", "account", "chat", "--disallow-bearer", message="user kiosk")
    assert "--no-bearer" in err
    assert run(store.home, "edit", "user", "kiosk", "--no-bearer")[0] == 0
    assert run(store.home, "edit", "account", "chat", "--disallow-bearer")[0] == 0
    # and then no user (one, several, or by edit) and no role may be a bearer
    refused(store.home, "add", "user", "kiosk2", "--bearer", message="disallows bearer")
    refused(store.home, "edit", "user", "kiosk", "--bearer", message="disallows bearer")
    with pytest.raises(FieldError, match="role bearers"):
        admin.edit_account(store, "chat", add_role="bearers", role_spec=UserSpec.from_fields({"bearer": True}, now=0))
    with pytest.raises(FieldError):
        admin.add_users(store, "chat", ["a1", "a2"], UserSpec.from_fields({"bearer": True}, now=0))
    assert sorted(store.user_names("chat")) == ["default", "kiosk"]


def test_jetstream_on_the_system_account_is_refused(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    refused(store.home, "edit", "account", "SYS", "--js-mem", "1G", message="system account")
    assert run(store.home, "edit", "account", "chat", "--js-mem", "1G")[0] == 0


def test_an_account_with_jetstream_cannot_become_the_system_account(tmp_path):
    store = Store(tmp_path / "h")
    admin.init(store, "dchat", "chat", "default")
    assert run(store.home, "edit", "account", "chat", "--js-mem", "1G")[0] == 0
    refused(store.home, "edit", "operator", "--system-account", "chat", message="JetStream")
    assert run(store.home, "edit", "account", "chat", "--js-mem", "0", "--js-disk", "0")[0] == 0
    assert run(store.home, "edit", "operator", "--system-account", "chat")[0] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["add", "user", "x", "--expiry", "9" * 5000],
        ["add", "user", "x", "--expiry", "9" * 56 + "d"],
        ["add", "user", "x", "--payload", "9" * 5000],
        ["edit", "account", "chat", "--js-mem", "9" * 5000],
        ["expirations", "--within", "9" * 400 + "d"],
        ["revoke", "user", "default", "--at", "9" * 5000],
        ["edit", "operator", "--service-url", f"nats://{SEED}:4222"],
        ["node", "add", "n9", "--advertise", f"{SEED}:4222"],
        ["edit", "account", "chat", "--js-disk", SEED],
    ],
)
def test_huge_numbers_and_seeds_in_the_wrong_place_are_one_line_exit_2(home, args):
    err = refused(home, *args)
    assert "S…(a seed, not shown)" in err or SEED[:20] not in err
