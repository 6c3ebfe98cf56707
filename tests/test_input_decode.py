"""Every input path decodes or refuses in one line: node files, specs, bundles, JWT and creds files, and
subjects, which must reach the server intact wherever we accept them (user JWTs, specs, node configs).

Refused means: exit 1 (2 for a bad value on the command line), one line, no "internal error" and no
traceback, and the home exactly as it was (the bytes and mode of every file and folder).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops._decode import MAX_DEPTH
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.config.nodes import server_config
from dchat_ops.config.server import _q, render, write_and_check
from dchat_ops.errors import MAX_SHOWN, BundleError, ConfigError, SpecError, clean_message
from dchat_ops.nsc import admin, transfer
from dchat_ops.nsc.bundle import open_bundle, seal_bundle
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.spec import UserSpec
from dchat_ops.nsc.store import Store
from dchat_ops.permissions.apply import apply_node_edit
from dchat_ops.provision import dump_spec, parse_spec
from dchat_ops.runtime.client import connect
from dchat_ops.subjects import check_subject

FAST = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PW = "correct horse battery"


def state(home: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and folder under ``home``: its bytes (None for a folder) and its mode."""
    if not home.exists():
        return {}
    out: dict[str, tuple[bytes | None, int]] = {}
    for p in sorted(home.rglob("*")):
        st_ = p.lstat()
        out[str(p.relative_to(home))] = (p.read_bytes() if p.is_file() else None, st_.st_mode)
    return out


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The command line in this process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    old = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = run_cli(cli, ["--home", str(home), *args])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, err.getvalue()


def assert_refused(code: int, err: str, home: Path, before: dict) -> str:
    assert code in (1, 2), (code, err)
    assert "internal error" not in err and "Traceback" not in err, err
    lines = err.strip().splitlines()
    line = lines[-1] if code == 2 else lines[0]  # a usage error: click's usage lines, then the error
    assert code == 2 or len(lines) == 1, err
    assert line.lower().startswith("error: ") and len(line) < 400, err
    assert state(home) == before, "the home changed"
    return line


# --- node files -------------------------------------------------------------------------------------


@pytest.fixture
def node_store(store):
    nodes.add_node(store, "n1")
    return store


@pytest.mark.parametrize(
    "text",
    [
        b"id: n1\n# \xff\xfe\n",
        bytes(range(256)),
        b"a: " + b"[" * 100_000,  # ruamel's C loader used to crash the process on this
        b"a: " + b"[" * 5000 + b"]" * 5000,
        b"".join(b"  " * i + b"k:\n" for i in range(2000)),
        b"- " * 5000 + b"x\n",
        b"id: n1\x00\n",
        b"id: n1\nmax_payload: +_\n",  # ruamel takes it for a number, then fails to make one
    ],
    ids=["not utf-8", "binary", "deep flow unclosed", "deep flow", "deep block", "deep compact", "nul", "bad number"],
)
def test_a_broken_node_file_is_one_line_for_every_command(node_store, text):
    home = node_store.home
    path = home / "nodes" / "n1.yaml"
    path.write_bytes(text)
    before = state(home)
    for args in (["node", "show", "n1"], ["allow-sub", "x.y", "--node", "n1"], ["node", "up", "n1"]):
        code, err = run(home, *args)
        line = assert_refused(code, err, home, before)
        assert "n1.yaml" in line, line
    with pytest.raises(ConfigError, match=r"n1\.yaml"):
        NodeFile.load(node_store, "n1")
    assert "n1" not in nodes.read_nodes(node_store)  # listed as broken, never read as a node


def test_a_node_file_not_utf8_names_the_line(node_store):
    path = node_store.home / "nodes" / "n1.yaml"
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        NodeFile.load(node_store, "n1")
    line = path.read_bytes().count(b"\n")
    assert f"n1.yaml:{line}: not UTF-8 text" in str(e.value)


# --- specs ------------------------------------------------------------------------------------------


def test_deep_specs_are_refused_at_the_level_too_many(tmp_path):
    deep_flow = "accounts: " + "[" * 100_000
    deep_block = "accounts:\n" + "".join("  " * i + "- \n" for i in range(1, 400))
    tag_then_deep = "version: !!int 1\naccounts: " + "[" * 3000 + "]" * 3000  # ruamel's own loader path
    for text in (deep_flow, deep_block, tag_then_deep):
        with pytest.raises(SpecError, match=f"nested deeper than {MAX_DEPTH} levels"):
            parse_spec(text, tmp_path / "s.yaml", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    # nesting up to the limit is fine (as a value nothing reads)
    ok = "version: 1\noperator: {name: dchat}\naccounts: []\n"
    assert parse_spec(ok, tmp_path / "s.yaml").data["accounts"] == []


@pytest.mark.parametrize("value", ["+_", "0x_", "-_", "._", "2020-13-45"])
def test_a_value_that_looks_like_a_number_but_is_not_is_a_spec_error(tmp_path, value):
    with pytest.raises(SpecError, match=r"s\.yaml:3: not valid YAML: a value cannot be made into what it looks like"):
        parse_spec(f"version: 1\naccounts:\n  - name: {value}\n", tmp_path / "s.yaml")
    with pytest.raises(SpecError, match="what it looks like"):  # through ruamel's own loader (a tag first)
        parse_spec(f"version: !!int 1\naccounts:\n  - name: {value}\n", tmp_path / "s.yaml")


@pytest.mark.parametrize("text", ["version: 1\nx: !!omap +`? :\n", 'version: 1\n!!bool 1e9.b!!!str " 0x1f<<: ?a\n'])
def test_a_tag_ruamel_cannot_make_is_a_yaml_error_in_a_spec_and_a_node_file(node_store, tmp_path, text):
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec(text, tmp_path / "s.yaml")
    (node_store.home / "nodes" / "n1.yaml").write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        NodeFile.load(node_store, "n1")


def test_a_reused_anchor_does_not_add_a_warning_to_the_one_line(node_store, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("version: !!int 1\nx: &a 1\ny: &a 2\n")  # a tag: ruamel's own loader reads it
    path = node_store.home / "nodes" / "n1.yaml"
    path.write_text(path.read_text() + "x: &a 1\ny: &a 2\n")
    before = state(node_store.home)
    for args, says in ((["plan", "-f", str(spec)], "x: unknown field"), (["node", "show", "n1"], "unknown field 'x'")):
        # a process of its own: pytest would catch the warning before it reached stderr
        p = subprocess.run(
            [sys.executable, "-m", "dchat_ops", "--home", str(node_store.home), *args], capture_output=True, text=True
        )
        assert says in assert_refused(p.returncode, p.stderr, node_store.home, before)


def test_a_reader_error_is_one_line_with_its_line(tmp_path):
    with pytest.raises(SpecError) as e:
        parse_spec("version: 1\naccounts:\n  - name: a\x00b\n", tmp_path / "s.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{tmp_path / 's.yaml'}:3: not valid YAML")


def test_a_spec_refused_by_the_plan_leaves_no_cache_file(store, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\noperator: {name: another}\n")
    before = state(store.home)
    code, err = run(store.home, "plan", "-f", str(spec))
    assert "the spec's operator is 'another'" in assert_refused(code, err, store.home, before)
    code, err = run(store.home, "apply", "-f", str(spec))
    assert_refused(code, err, store.home, before)
    assert not (store.home / "cache").exists()
    spec.write_text("version: 1\noperator: {name: dchat}\n")
    assert run(store.home, "plan", "-f", str(spec))[0] == 0
    assert len(list((store.home / "cache" / "specs").iterdir())) == 1  # an accepted spec is kept


GOOD_SPEC = """\
version: 1
operator: {name: dchat}
accounts:
  - name: chat
    users:
      - name: alice
        allow_sub: ["chat.>"]
        subs: 10
nodes:
  - id: n1
    account: chat
"""

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_YAML_CHARS = st.sampled_from([*"ab01.+-_:[]{}!&*?|>'\"#%@`, \n\t\\x", "!!int ", "!!str ", "<<: ", "---\n", "..."])
_KNOWN = ["version", "operator", "accounts", "nodes", "production"]


@st.composite
def broken_specs(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "yaml", "shape", "field", "deep", "not utf-8", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "yaml":  # text made of what YAML gives a meaning to
        return ("version: 1\n" + "".join(draw(st.lists(_YAML_CHARS, max_size=60)))).encode()
    if kind == "shape":  # a document that is no mapping, or one with a field no spec has
        top = draw(st.lists(_json, max_size=3) | st.text(max_size=20) | st.integers() | st.none())
        if draw(st.booleans()):
            top = {draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in _KNOWN)): draw(_json)}
        return json.dumps(top).encode()
    if kind == "field":  # a known field holding something of the wrong shape
        doc = {"version": 1, "operator": {"name": "dchat"}, draw(st.sampled_from(_KNOWN[1:])): draw(_json)}
        return json.dumps(doc).encode()
    if kind == "deep":
        n = draw(st.integers(MAX_DEPTH + 1, 5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return ("accounts: " + opener * n + closer * draw(st.integers(0, n))).encode()
    text = GOOD_SPEC.encode()
    at = draw(st.integers(0, len(text)))
    if kind == "not utf-8":
        return text[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"])) + text[at:]
    cut = draw(st.integers(0, 10))
    return text[:at] + draw(st.binary(max_size=6)) + text[at + cut :]


@FAST
@given(text=broken_specs())
def test_generated_broken_specs_are_refused_in_one_line(store, tmp_path, text):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(text)
    before = state(store.home)
    code, err = run(store.home, "plan", "-f", str(spec))
    assume(code != 0)  # a mutation that happens to be a valid spec
    line = assert_refused(code, err, store.home, before)
    assert str(spec) in line, line
    code, err = run(store.home, "apply", "-f", str(spec))
    assert_refused(code, err, store.home, before)


# --- bundles ----------------------------------------------------------------------------------------


@pytest.fixture
def bundle(store, tmp_path) -> bytes:
    return transfer.export_bundle(store, "all", passphrase=PW)


@pytest.mark.parametrize(
    "kdf, message",
    [
        ({"n": 0}, "n must be a power of two"),
        ({"n": -1}, "n must be a power of two"),
        ({"n": 3}, "n must be a power of two"),
        ({"n": 2**40}, "n must be a power of two"),
        ({"r": 0}, "r from 1 to 32"),
        ({"p": -1}, "p from 1 to 16"),
        ({"n": 2**20, "r": 32}, "ask too much"),  # 4 GiB
        ({"n": 2**17, "r": 8, "p": 16}, "ask too much"),  # 16 s or so
        ({"n": "32768"}, "whole numbers"),
        ({"n": True}, "whole numbers"),
        ({"salt": ""}, "salt is damaged"),
        ({"salt": 5}, "salt is damaged"),
    ],
)
def test_key_derivation_parameters_are_bounded(bundle, kdf, message):
    doc = json.loads(bundle)
    doc["kdf"].update(kdf)
    with pytest.raises(BundleError, match=message):
        open_bundle((json.dumps(doc, indent=1) + "\n").encode(), passphrase=PW)


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2], "the content is not a mapping"),
        ("x", "the content is not a mapping"),
        ({}, "operator is missing or not a mapping"),
        ({"operator": {"jwt": 5}}, "operator.jwt is missing or not text"),
        ({"operator": {"jwt": "a.b.c"}, "accounts": "abc"}, "accounts is not a list"),
        ({"operator": {"jwt": "a.b.c"}, "users": [5]}, r"users\[0\] is not a mapping"),
        ({"operator": {"jwt": "a.b.c"}, "users": [{"name": "x"}]}, r"users\[0\].jwt is missing"),
        ({"operator": {"jwt": "a.b.c"}, "accounts": [{"jwt": "a", "name": 5}]}, r"accounts\[0\].name is not text"),
        ({"operator": {"jwt": "a.b.c"}, "seeds": [None]}, r"seeds\[0\] is not text"),
        ({"operator": {"jwt": "a.b.c", "name": []}}, "operator.name is not text"),
    ],
)
def test_a_bundle_of_the_wrong_shape_says_which_field(payload, message):
    with pytest.raises(BundleError, match=message):
        open_bundle(sealed(payload), passphrase=PW)


def sealed(payload) -> bytes:
    """A bundle sealed like ours whose content is any JSON (seal_bundle takes a mapping only)."""
    return sealed_text(json.dumps(payload))


def sealed_text(text: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dchat_ops.nsc import bundle as b

    header = json.loads(seal_bundle({}, passphrase=PW))
    del header["ciphertext"]
    key = b._scrypt(PW, base64.b64decode(header["kdf"]["salt"]), header["kdf"]["n"], 8, 1)
    nonce = os.urandom(12)
    header["nonce"] = base64.b64encode(nonce).decode()
    ct = AESGCM(key).encrypt(nonce, text.encode(), b._aad(header))
    return (json.dumps({**header, "ciphertext": base64.b64encode(ct).decode()}, indent=1) + "\n").encode()


def test_deep_json_in_a_bundle_and_in_its_content():
    for data in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(BundleError, match="nested too deeply"):
            open_bundle(data, passphrase=PW)
    with pytest.raises(BundleError, match="content is nested too deeply"):
        open_bundle(sealed_text("[" * 5000 + "]" * 5000), passphrase=PW)


_FIELDS = [
    "format",
    "version",
    "cipher",
    "nonce",
    "ciphertext",
    "kdf",
    "kdf.name",
    "kdf.n",
    "kdf.r",
    "kdf.p",
    "kdf.salt",
]


@st.composite
def broken_bundles(draw, good: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "field", "drop", "base64", "content", "garbage"]))
    if kind == "flip":
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "content":  # sealed right, holding anything
        return sealed(draw(_json))
    doc = json.loads(good)
    field = draw(st.sampled_from(_FIELDS))
    parent, key = (doc["kdf"], field[4:]) if field.startswith("kdf.") else (doc, field)
    if kind == "drop":
        parent.pop(key)
    elif kind == "base64":
        value = str(parent.get(key, ""))
        parent[key] = value[: draw(st.integers(0, max(len(value) - 1, 0)))] + draw(st.sampled_from(["", "=", "!", "A"]))
    else:
        parent[key] = draw(_json)
    return (json.dumps(doc, indent=1) + "\n").encode()  # laid out as written: the field itself is checked


@FAST
@given(data=st.data())
def test_generated_broken_bundles_are_refused_in_one_line(store, bundle, tmp_path, data):
    target = tmp_path / "target"
    if not target.exists():
        admin.init(Store(target), operator="other")
    mutated = data.draw(broken_bundles(bundle))
    assume(mutated != bundle)
    path = tmp_path / "in.bundle"
    path.write_bytes(mutated)
    before = state(target)
    code, err = run(target, "import", "keys", str(path), "--passphrase-env", "PW", "--trust-operator", env={"PW": PW})
    assert_refused(code, err, target, before)  # every changed byte: a key order or a blank too


def test_plain_files_that_are_not_text_are_refused(store, tmp_path):
    for name, data in [("x.creds", b"\xff\xfe"), ("x.jwt", b"\x80" * 10), ("x.nk", b"SU\xc3")]:
        path = tmp_path / name
        path.write_bytes(data)
        before = state(store.home)
        for args in (["describe", "file", str(path)], ["import", "keys", str(path)]):
            line = assert_refused(*run(store.home, *args), store.home, before)
            assert "not UTF-8 text" in line, line
    pw = tmp_path / "pw"
    pw.write_bytes(b"\xffpassphrase")
    before = state(store.home)
    args = ["export", "creds", "-u", "default", "--passphrase-file", str(pw), "-o", str(tmp_path / "b")]
    assert "not UTF-8 text" in assert_refused(*run(store.home, *args), store.home, before)
    # a JWT whose payload nests deeper than json reads
    seg = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")
    head = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"ed25519-nkey"}').decode().rstrip("=")
    (tmp_path / "deep.jwt").write_text(f"{head}.{seg}.AAAA")
    before = state(store.home)
    for args in (["describe", "file", str(tmp_path / "deep.jwt")], ["import", "keys", str(tmp_path / "deep.jwt")]):
        assert "nested too deeply" in assert_refused(*run(store.home, *args), store.home, before)
    # a JWT whose times are past any calendar is shown with the number, not a crash
    bogus = KeyPair.generate("account")
    from dchat_ops.nsc.jwt import _sign, go_json

    token = _sign(go_json({"iss": bogus.public_key, "sub": "U" + "A" * 55, "iat": 10**15}).encode(), bogus)
    (tmp_path / "far.jwt").write_text(token)
    code, err = run(store.home, "describe", "file", str(tmp_path / "far.jwt"))
    assert "internal error" not in err and (code == 1 or "1000000000000000" in err), err


# --- what errors show ---------------------------------------------------------------------------------


def test_long_quoted_values_are_cut_and_seeds_hidden_on_every_path(store):
    long = "x" * 5000
    seed = KeyPair.generate("user").seed
    before = state(store.home)
    for args in (
        ["add", "user", long],
        ["describe", "file", long],
        ["node", "show", long],
        ["add", "user", "bob", "--locale", long],
        ["allow-sub", f"a.{long}", "--node", "n1"],
        ["add", "user", seed + long],
        ["describe", "user", seed],
        ["no-such-command-" + seed],
        ["add", "user", "bob", "--subs", seed],
    ):
        code, err = run(store.home, *args)
        assert_refused(code, err, store.home, before)
        assert len(err) < 600 and seed not in err, (args, err[:300])
    assert clean_message(f"name {long!r}") == f"name '{'x' * MAX_SHOWN}…(5000 characters)'"
    assert clean_message("the bundle's content is 'short'") == "the bundle's content is 'short'"


# --- subjects -----------------------------------------------------------------------------------------

# a token: any text but the separator, wildcards, whitespace nats-server refuses, NUL and lone surrogates
_TOKEN_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters=". *>\t\n\r\f\x00")
_token = st.text(_TOKEN_CHARS, min_size=1, max_size=6)


@st.composite
def subjects(draw, wildcards: bool = True) -> str:
    tokens = draw(st.lists(_token | st.just("*") if wildcards else _token, min_size=1, max_size=4))
    if wildcards and draw(st.booleans()):
        tokens.append(">")
    return ".".join(tokens)


@FAST
@given(
    subs=st.lists(subjects(), min_size=1, max_size=8, unique=True),
    pubs=st.lists(subjects(False), max_size=4, unique=True),
)
def test_generated_subjects_are_accepted_in_user_jwts_and_specs(store, tmp_path, subs, pubs):
    for s in subs + pubs:
        assert check_subject(s) == s
    spec = UserSpec.from_fields({"allow_sub": subs, "allow_pub": pubs}, now=admin.now(store))
    name = f"u{len(store.user_names('chat'))}"
    admin.add_user(store, "chat", name, spec)
    perms = store.user("chat", name).claims.permissions
    assert list(perms.sub.allow) == subs and list(perms.pub.allow) == pubs
    # a spec as spec export writes it (ruamel's round-trip writer turned a NEL into a space)
    doc = {"version": 1, "operator": {"name": "dchat"}, "accounts": [{"name": "chat", "users": []}]}
    doc["accounts"][0]["users"].append({"name": "x", "allow_sub": subs, "allow_pub": pubs})
    data = parse_spec(dump_spec(doc), tmp_path / "s.yaml").data
    user = data["accounts"][0]["users"][0]
    assert user["allow_sub"] == subs and user["allow_pub"] == pubs


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subs=st.lists(subjects(), min_size=10, max_size=40, unique=True))
def test_generated_subjects_in_a_node_policy_are_read_by_nats_server(node_store, tmp_path, subs):
    nf = NodeFile.load(node_store, "n1")
    nf.set(("policy", "subscribe", "allow"), subs)
    nf.save()
    node = NodeFile.load(node_store, "n1").node
    assert list(node.policy.subscribe.allow) == subs  # the node file reads back what was written
    text = write_and_check(server_config(node_store, node), tmp_path / "n1.conf")  # nats-server -t: one run
    for s in subs:
        quoted = _q(s)
        assert quoted in text and lexer_unquote(quoted) == s, (s, quoted)
    # the same subjects given to the node by a spec: apply writes the node file, renders and checks it
    half = subs[: len(subs) // 2]
    doc = {"version": 1, "operator": {"name": "dchat"}, "accounts": [{"name": "chat"}]}
    doc["nodes"] = [{"id": "n1", "account": "chat"}]
    doc["nodes"][0]["policy"] = {"subscribe": {"allow": half}}
    result = provision.apply(node_store, parse_spec(dump_spec(doc), tmp_path / "s.yaml"))
    assert not result.rolled_back
    assert list(NodeFile.load(node_store, "n1").node.policy.subscribe.allow) == half


_LEXER_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", '"': '"', "\\": "\\"}


def lexer_unquote(quoted: str) -> str:
    """A double-quoted string as nats-server's config lexer reads it (conf/lex.go): the escapes \\xXX,
    \\t, \\n, \\r, \\" and \\\\, nothing else (\\u is an error there)."""
    assert quoted[0] == quoted[-1] == '"'
    out, i, body = [], 0, quoted[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            assert nxt in _LEXER_ESCAPES, f"nats-server refuses the escape \\{nxt}"
            out.append(_LEXER_ESCAPES[nxt])
            i += 2
            continue
        assert c != '"'
        out.append(c)
        i += 1
    return "".join(out)


def test_a_node_config_quotes_what_the_lexer_reads(node_store, tmp_path):
    odd = ["chat.ü", "chat.😀", 'chat."q"', "chat.back\\slash", "chat.\x01bell", "chat.\x7f", "日本.語"]
    nf = NodeFile.load(node_store, "n1")
    nf.set(("policy", "subscribe", "allow"), odd)
    nf.save()
    text = render(server_config(node_store, NodeFile.load(node_store, "n1").node))
    assert '"chat.ü"' in text and '"chat.\\"q\\""' in text and '"chat.back\\\\slash"' in text
    assert '"chat.\\x01bell"' in text and '"chat.\\x7f"' in text and '"日本.語"' in text
    write_and_check(server_config(node_store, NodeFile.load(node_store, "n1").node), tmp_path / "n1.conf")


async def test_allow_sub_of_a_non_ascii_subject_on_a_running_node(store, supervised):
    nodes.add_node(store, "n1")
    supervised("n1")
    url = f"nats://127.0.0.1:{NodeFile.load(store, 'n1').node.client_port}"
    for subject in ("chat.ü", "пример.>", "chat.😀"):
        r = apply_node_edit(store, "n1", "allow-sub", subject)
        assert r.outcome == "live", r
    sub = await connect(url, store.creds_path("dchat", "chat", "n1"))
    pub = await connect(url, store.creds_path("dchat", "chat", "default"))
    got: list[tuple[str, bytes]] = []

    async def on_msg(msg):
        got.append((msg.subject, msg.data))

    for subject in ("chat.ü", "пример.>", "chat.😀"):
        await sub.subscribe(subject, cb=on_msg)
    await sub.flush()
    for subject in ("chat.ü", "пример.тест", "chat.😀"):
        await pub.publish(subject, subject.encode())
    await pub.flush()
    want = {("chat.ü", "chat.ü".encode()), ("пример.тест", "пример.тест".encode()), ("chat.😀", "chat.😀".encode())}
    for _ in range(100):
        if set(got) >= want:
            break
        await asyncio.sleep(0.05)
    assert set(got) == want
    await sub.close()
    await pub.close()


@pytest.mark.parametrize("which", ["operator jwt", "account jwt", "user jwt", "creds", "key", "context"])
@pytest.mark.parametrize("data", [b"\xff\xfe", b"[" * 100_000], ids=["not utf-8", "deep"])
def test_a_damaged_store_file_is_one_line_for_every_command(store, which, data):
    op = store.operator()
    path = {
        "operator jwt": op.path,
        "account jwt": store.account("chat").path,
        "user jwt": store.user("chat", "default").path,
        "creds": store.creds_path("dchat", "chat", "default"),
        "key": store.key_path(store.account("chat").public_key),
        "context": store.context_path,
    }[which]
    path.write_bytes(data)
    before = state(store.home)
    for args in (
        ["list"],
        ["validate"],
        ["describe", "user", "default"],
        ["generate", "creds", "-u", "default", "-o", "-"],
        ["export", "keys", "--passphrase-env", "PW", "-o", str(store.home.parent / "out.bundle")],
    ):
        code, err = run(store.home, *args, env={"PW": PW})
        assert "internal error" not in err and "Traceback" not in err, (args, err)
        if code and args != ["validate"]:  # validate lists what it finds on stdout
            assert_refused(code, err, store.home, before)
        assert state(store.home) == before


def test_a_subject_holding_a_seed_is_refused_without_showing_it(node_store, tmp_path):
    seed = KeyPair.generate("user").seed
    before = state(node_store.home)
    for args in (
        ["allow-sub", f"chat.{seed}", "--node", "n1"],
        ["add", "user", "zz", "--allow-sub", seed],
        ["allow-pub", seed, "-u", "default"],
    ):
        code, err = run(node_store.home, *args)
        assert "holds an nkey seed; subjects are public" in assert_refused(code, err, node_store.home, before)
        assert seed not in err
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\naccounts:\n  - name: chat\n    users:\n      - {{name: u, allow_sub: [a.{seed}]}}\n")
    code, err = run(node_store.home, "plan", "-f", str(spec))
    assert "holds an nkey seed" in assert_refused(code, err, node_store.home, before) and seed not in err


def test_a_command_to_run_in_a_message_is_shown_whole_and_a_long_value_is_cut():
    from dchat_ops.errors import clean_message

    hint = "dchat-ops enroll sign grant-0123456789abcdef0123456789abcdef.req -o grant-0123456789abcdef.resp"
    assert f"'{hint}'" in clean_message(f"beyond the grant: run '{hint}' " + "x" * 80)
    assert "…(" in clean_message("bad name '" + "y" * 100 + "'")
