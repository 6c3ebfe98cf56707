"""The command line: thin, JSON where it shows data, one clear line and a non-zero exit on bad input."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from conftest import snapshot

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.nsc.creds import parse_creds
from dchat_ops.nsc.keys import KeyPair


def run(home, *args):
    r = CliRunner().invoke(cli, ["--home", str(home), *args])
    return r


def test_init_then_init_again(home):
    r = run(home, "init", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["created"] and set(data["creds"]) == {"sys", "default"}
    before = snapshot(home)
    r = run(home, "init")
    assert r.exit_code == 0 and "nothing changed" in r.output
    assert snapshot(home) == before


def test_home_from_environment_variable(tmp_path):
    r = CliRunner().invoke(cli, ["init", "--json"], env={"DCHAT_OPS_HOME": str(tmp_path / "via-env")})
    assert r.exit_code == 0, r.output
    assert (tmp_path / "via-env" / "stores" / "dchat" / "dchat.jwt").is_file()


def test_add_describe_list_validate(store):
    home = store.home
    r = run(
        home,
        "add",
        "user",
        "carol",
        "--allow-sub",
        "chat.>,_INBOX.>",
        "--deny-pub",
        "admin.>",
        "--expiry",
        "30d",
        "--tag",
        "Team",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "carol"
    d = json.loads(run(home, "describe", "user", "carol", "--json").stdout)
    n = d["claims"]["nats"]
    assert n["sub"]["allow"] == ["chat.>", "_INBOX.>"] and n["pub"]["deny"] == ["admin.>"]
    assert n["tags"] == ["team"] and d["claims"]["exp"] > d["claims"]["iat"]
    human = run(home, "describe", "user", "carol").output
    assert "chat.>" in human and "public key" in human
    tree = json.loads(run(home, "list", "--json").stdout)
    users = {a["name"]: [u["name"] for u in a["users"]] for a in tree["accounts"]}
    assert users == {"SYS": ["sys"], "chat": ["carol", "default"]}
    r = run(home, "validate", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["valid"] is True


def test_describe_files_never_show_the_seed(store):
    creds = store.creds_path("dchat", "chat", "default")
    seed = parse_creds(creds.read_text()).seed
    for path in (creds, store.user_jwt_path("dchat", "chat", "default")):
        r = run(store.home, "describe", "file", str(path), "--json")
        assert r.exit_code == 0, r.output
        assert seed not in r.output
        assert json.loads(r.stdout)["kind"] == "user"


def test_generate_creds_to_file_and_stdout(store, tmp_path):
    out = tmp_path / "out" / "default.creds"
    r = run(store.home, "generate", "creds", "-u", "default", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert parse_creds(out.read_text()).jwt == store.user("chat", "default").token
    r = run(store.home, "generate", "creds", "-u", "default", "-o", "-")
    assert r.output == out.read_text()


def test_generate_config_prints_a_checked_config(store):
    r = run(store.home, "generate", "config", "--mem-resolver")
    assert r.exit_code == 0
    assert "resolver: MEMORY" in r.output and store.operator().token in r.output
    assert store.account("SYS").public_key in r.output


def test_edit_user_and_account(store):
    r = run(store.home, "edit", "user", "default", "--allow-sub", "room.x", "--json")
    assert json.loads(r.stdout)["changed"] is True
    r = run(store.home, "edit", "user", "default", "--allow-sub", "room.x", "--json")
    assert json.loads(r.stdout)["changed"] is False
    r = run(store.home, "edit", "account", "chat", "--conn", "50", "--js-mem", "-1", "--js-disk", "-1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["claims"]["nats"]["limits"]["conn"] == 50
    r = run(store.home, "edit", "account", "chat", "--role", "guest", "--role-allow-sub", "lobby.>", "--json")
    assert {"key": json.loads(r.stdout)["signing_keys"][0]["key"], "role": "guest"} in json.loads(r.stdout)[
        "signing_keys"
    ]
    r = run(store.home, "add", "user", "g1", "--role", "guest")
    assert r.exit_code == 0, r.output


def _bad_inputs(store, tmp_path):
    jwt_file = tmp_path / "bad.jwt"
    jwt_file.write_text("not.a.jwt")
    creds_file = tmp_path / "bad.creds"
    creds_file.write_text("-----BEGIN NATS USER JWT-----\nabc\n------END NATS USER JWT------\n")
    no_seed = tmp_path / "noseed.creds"
    no_seed.write_text(store.creds_path("dchat", "chat", "default").read_text().split("\n\n")[0] + "\n")
    user_key = KeyPair.generate("user").public_key
    return [
        (["describe", "file", str(jwt_file)], "malformed JWT"),
        (["describe", "file", str(creds_file)], "no JWT block"),
        (["describe", "file", str(no_seed)], "no nkey seed"),
        (["describe", "file", str(tmp_path / "missing.jwt")], "no such file"),
        (["add", "user", "bad/name"], "invalid user name"),
        (["add", "account", "../up"], "invalid account name"),
        (["add", "user", "x", "--signing-key", user_key], "expected a public account key"),
        (["add", "user", "x", "--signing-key", "AXXX"], "not a public nkey"),
        (["add", "user", "x", "--expiry", "soon"], "invalid time"),
        (["add", "user", "default"], "already exists"),
        (["describe", "user", "nobody"], "no user named 'nobody'"),
        (["edit", "account", "chat", "--rm-sk", "nope"], "no signing key"),
        (["add", "user", "x", "--time", "8-18"], "time window"),
    ]


def test_bad_input_is_one_clear_line_and_changes_nothing(store, tmp_path, capsys):
    for args, message in _bad_inputs(store, tmp_path):
        before = snapshot(store.home)
        code = run_cli(cli, ["--home", str(store.home), *args])
        err = capsys.readouterr().err
        assert code != 0, args
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert snapshot(store.home) == before, args


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    code = run_cli(cli, ["--home", str(tmp_path / "none"), "list"])
    err = capsys.readouterr().err
    assert code == 1 and "dchat-ops init" in err
    assert not (tmp_path / "none").exists()


def test_usage_error_exits_2(tmp_path, capsys):
    assert run_cli(cli, ["--home", str(tmp_path), "describe", "bogus"]) == 2


def test_a_malformed_subject_is_a_usage_error(store, capsys):
    run_cli(cli, ["--home", str(store.home), "node", "add", "k1"])
    capsys.readouterr()
    for args in (
        ["allow-sub", "room..x", "--node", "k1"],
        ["deny-sub", "a.>.b", "--node", "k1"],
        ["rm-sub", "ro*m", "--node", "k1"],
        ["allow-sub", "room.x q.1", "--node", "k1"],
        ["allow-pub", "room.x q", "--node", "k1"],
        ["allow-sub", "", "--user", "default"],
    ):
        before = snapshot(store.home)
        assert run_cli(cli, ["--home", str(store.home), *args]) == 2, args
        err = capsys.readouterr().err
        assert "invalid subject" in err and "Traceback" not in err
        assert snapshot(store.home) == before


def test_port_out_of_range_is_a_usage_error(store, capsys):
    for opt in (
        "--client-port",
        "--monitor-port",
        "--cluster-port",
        "--gateway-port",
        "--leaf-port",
        "--websocket-port",
    ):
        for value in ("-1", "0", "65536"):
            before = snapshot(store.home)
            assert run_cli(cli, ["--home", str(store.home), "node", "add", "k2", opt, value]) == 2, (opt, value)
            assert "Traceback" not in capsys.readouterr().err
            assert snapshot(store.home) == before


def test_console_script_runs_without_traceback(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "dchat-ops")
    p = subprocess.run([exe, "--home", str(tmp_path / "h"), "describe", "user", "x"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr


def _more_bad_inputs(store, tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    existing = tmp_path / "server.conf"
    existing.write_text("mine")
    return [
        (["add", "user", "x", "--allow-sub", "a..b"], "empty token"),
        (["add", "user", "x", "--allow-pub", "foo bar"], "contains a space"),
        (["add", "user", "x", "--source-network", "notacidr"], "not an address or CIDR"),
        (["add", "user", "x", "--conn-type", "FOO"], "unknown connection type"),
        (["add", "user", "x", "--locale", "Mars/Phobos"], "unknown time zone"),
        (["add", "user", "x", "--subs", "-5"], "-1 (unlimited) or more"),
        (["add", "user", "x", "--expiry", "99999999d"], "out of range"),
        (["add", "account", "chat", "--force"], "has users"),
        (["node", "add", "n", "--host", "bad host"], "is not an IP address or a host name"),
        (["node", "add", "n", "--advertise", "x y"], "is not an IP address or a host name"),
        (["node", "add", "n", "--advertise", "a.example:99999"], "out of range"),
        (["node", "add", "n", "--advertise", "fd00::1:7422"], "in brackets"),
        (["node", "add", "n", "--client-port", "14222", "--monitor-port", "14222"], "same port"),
        (["import", "creds", str(junk)], "nothing to import"),
        (["generate", "config", "-o", str(existing)], "already exists"),
        (["node", "logs", "nope"], "no node named 'nope'"),
        (["edit", "account", "chat", "--role-allow-sub", "x.>"], "need --role"),
    ]


def test_more_bad_input_is_refused_cleanly(store, tmp_path, capsys):
    for args, message in _more_bad_inputs(store, tmp_path):
        before = snapshot(store.home)
        code = run_cli(cli, ["--home", str(store.home), *args])
        err = capsys.readouterr().err
        assert code != 0, args
        assert message in err, (args, err)
        assert "Traceback" not in err and "internal error" not in err, err
        assert snapshot(store.home) == before, args
    assert (tmp_path / "server.conf").read_text() == "mine"


def test_writing_a_secret_elsewhere_keeps_that_folders_mode(store, tmp_path):
    out_dir = tmp_path / "shared"
    out_dir.mkdir(mode=0o755)
    os.chmod(out_dir, 0o755)
    r = run(store.home, "generate", "creds", "-u", "default", "-o", str(out_dir / "d.creds"))
    assert r.exit_code == 0, r.output
    assert oct(out_dir.stat().st_mode & 0o777) == "0o755"
    assert oct((out_dir / "d.creds").stat().st_mode & 0o777) == "0o600"


def test_lazy_command_table_matches_the_modules():
    """Every command is in the lazy table under the module that defines it, and nothing else is."""
    import importlib

    from dchat_ops._cli.app import COMMAND_MODULES

    for mod in set(COMMAND_MODULES.values()):
        importlib.import_module(f"dchat_ops._cli.{mod}")
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, command in cli.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == f"dchat_ops._cli.{COMMAND_MODULES[name]}", name


def test_starting_the_cli_imports_no_command_module():
    import subprocess
    import sys

    code = (
        "import sys; from dchat_ops._cli.main import cli; "
        "print(sorted(m for m in sys.modules if m.startswith('dchat_ops._cli.') or m in ('ruamel.yaml', 'nats')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "['dchat_ops._cli.app', 'dchat_ops._cli.main', 'dchat_ops._cli.output']"


def test_command_help_table_matches_the_commands():
    """The one-line help ``--help`` lists without importing the commands is theirs, word for word."""
    import importlib

    import click

    from dchat_ops._cli.app import COMMAND_HELP, COMMAND_MODULES

    for mod in set(COMMAND_MODULES.values()):
        importlib.import_module(f"dchat_ops._cli.{mod}")
    assert set(COMMAND_HELP) == set(COMMAND_MODULES)
    for name, command in cli.commands.items():
        assert COMMAND_HELP[name] == command.get_short_help_str(limit=10_000), name
    for width in (50, 80, 200):  # click shortens the help to the width: the table's listing does it alike
        ctx = click.Context(cli, info_name="dchat-ops")
        ours, clicks = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
        cli.format_commands(ctx, ours)
        click.Group.format_commands(cli, ctx, clicks)
        assert ours.getvalue() == clicks.getvalue()
        assert ours.getvalue().count("\n") > len(COMMAND_HELP)


def test_copies_of_library_values_in_the_cli_match_the_library():
    """The few library values the command modules repeat, so that their help imports no library."""
    from dchat_ops._cli import identity, tls
    from dchat_ops.config import pki
    from dchat_ops.nsc import admin

    assert (identity.DEFAULT_OPERATOR, identity.DEFAULT_ACCOUNT, identity.DEFAULT_USER) == (
        admin.DEFAULT_OPERATOR,
        admin.DEFAULT_ACCOUNT,
        admin.DEFAULT_USER,
    )
    assert tls.CERT_KINDS == pki.KINDS


# What neither a command's --help nor list needs: the library beyond the store, and the heavy dependencies.
_HEAVY = ("dchat_ops.config", "dchat_ops.runtime", "dchat_ops.permissions", "dchat_ops.provision", "dchat_ops.chat")
_HEAVY += ("dchat_ops.verify", "dchat_ops.nsc.admin", "nats", "ruamel", "multiprocessing", "concurrent")


def _imported_after(args: list[str], env: dict | None = None) -> tuple[list[str], str]:
    """Run the command line on ``args`` in a fresh interpreter; the modules it imported, and its output."""
    code = (
        "import sys, json; from dchat_ops._cli.main import cli; from dchat_ops._cli.output import run_cli\n"
        f"args = {args!r}\n"
        "runs = args if args and isinstance(args[0], list) else [args]\n"
        "codes = [run_cli(cli, a) for a in runs]\n"
        "print(json.dumps({'codes': codes, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    report = json.loads(p.stderr.strip().splitlines()[-1])
    assert set(report["codes"]) == {0}, p.stderr
    return report["modules"], p.stdout


def _heavy(modules: list[str], heavy: tuple[str, ...] = _HEAVY) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)]


def test_top_level_help_imports_no_command_module():
    modules, out = _imported_after(["--help"])
    assert "list" in out and "allow-sub" in out
    ours = {m for m in modules if m.startswith("dchat_ops.")}
    assert ours <= {
        "dchat_ops._cli",
        "dchat_ops._cli.app",
        "dchat_ops._cli.main",
        "dchat_ops._cli.output",
        "dchat_ops.errors",
    }


def test_every_command_help_imports_no_library():
    """--help of every group, command and subcommand: their modules import click and the CLI's own helpers only."""
    import importlib

    import click

    from dchat_ops._cli.app import COMMAND_MODULES

    for mod in set(COMMAND_MODULES.values()):
        importlib.import_module(f"dchat_ops._cli.{mod}")
    paths: list[list[str]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        paths.append([*path, "--help"])
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    for name, command in cli.commands.items():
        walk(command, [name])
    modules, out = _imported_after(paths)
    assert out.count("Usage: ") == len(paths) > len(cli.commands)
    assert _heavy(modules, (*_HEAVY, "dchat_ops.nsc", "jwt", "cryptography", "nacl", "nkeys")) == []


def test_list_imports_only_what_reading_the_store_needs(store):
    modules, out = _imported_after(["list"], env={"DCHAT_OPS_HOME": str(store.home)})
    assert "account chat" in out
    assert _heavy(modules, (*_HEAVY, "jwt", "cryptography.x509")) == []
