"""The root ``dchat-ops`` group and what every command module shares: the context and option parsing.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 changes pending (``--detailed-exitcode``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional

import click

from dchat_ops import __version__
from dchat_ops.errors import DchatOpsError

if TYPE_CHECKING:
    from dchat_ops.nsc.store import Store

# Which module of this package defines each top-level command.  A command's module (and the library
# it needs) is imported only when that command runs, so starting the command line stays cheap.
# tests/test_cli.py checks this table against what the modules register.
COMMAND_MODULES = {
    "add": "identity",
    "allow-pub": "perms",
    "allow-sub": "perms",
    "apply": "provision",
    "chat": "chat",
    "deny-pub": "perms",
    "deny-sub": "perms",
    "describe": "identity",
    "edit": "identity",
    "enroll": "enroll",
    "expirations": "identity",
    "export": "transfer",
    "generate": "identity",
    "import": "transfer",
    "init": "identity",
    "list": "identity",
    "nkey": "nkey",
    "node": "nodes",
    "perms": "perms",
    "plan": "provision",
    "pull": "transfer",
    "push": "transfer",
    "recover": "identity",
    "revocations": "transfer",
    "revoke": "transfer",
    "rm": "identity",
    "rm-pub": "perms",
    "rm-sub": "perms",
    "rotate": "rotate",
    "spec": "provision",
    "tls": "tls",
    "unrevoke": "transfer",
    "use": "operators",
    "validate": "identity",
    "verify": "verify",
}


# The one-line help of each top-level command, so that ``dchat-ops --help`` lists them without importing
# a command module.  tests/test_cli.py checks it against the commands' own help.
COMMAND_HELP = {
    "add": "Add an account, a user, an export, an import or a subject mapping.",
    "allow-pub": "Allow publishing to SUBJECT.",
    "allow-sub": "Allow subscribing to SUBJECT (a node: live, with rollback on failure).",
    "apply": "Make the store and node configs what the spec says; a second apply changes nothing.",
    "chat": "A plain terminal chat client on a node: rooms, sealed direct and group messages, history.",
    "deny-pub": "Deny publishing to SUBJECT.",
    "deny-sub": "Deny subscribing to SUBJECT.",
    "describe": "Show an operator, account or user by name, or any JWT or creds file (the seed is never shown).",
    "edit": "Change an operator, account, role template or user (and re-sign it).",
    "enroll": "Equip a device with its own keys: a signed request, the operator's signed answer, no seed travels.",
    "expirations": "JWTs that expire within a window (default 30 days), have expired, or are not valid yet.",
    "export": "Export creds or keys to an encrypted bundle (or nsc's plain formats).",
    "generate": "Generate creds files, server configs and activation tokens.",
    "import": "Import a bundle, or plain .creds / .nk / .jwt files or folders: verified, then all or nothing.",
    "init": "Create an operator, the system account and user, an application account and its first user.",
    "list": "List the operator, its accounts and their users.",
    "nkey": "nkey tools: generate any kind of key (curve included), show a public key, sign, verify, seal, open.",
    "node": "Node configs and supervised nats-server processes.",
    "perms": "Show permissions.",
    "plan": "Show what applying the spec would create, change, re-issue or revoke (and drift).",
    "pull": "Compare the account JWTs the running servers hold with the store, per account and server.",
    "push": "Send account JWTs to the running nodes over the system account; report per server.",
    "recover": "Roll back a change a killed command left unfinished, and remove its temporary files.",
    "revocations": "Show revocations.",
    "revoke": "Revoke a user (revoke user NAME), every user (revoke --all-users), or an activation (revoke activation).",
    "rm": "Remove an account, a user (its JWTs and creds, revoked; seeds stay in the keystore), an export or an import.",
    "rm-pub": "Remove SUBJECT from the publish allow and deny lists.",
    "rm-sub": "Remove SUBJECT from the subscribe allow and deny lists.",
    "rotate": "Replace a key without downtime: re-sign what it signed, push, then retire the old one.",
    "spec": "Specs for provisioning.",
    "tls": "TLS for every link: the store's CA, node certificates, and which links of a node use them.",
    "unrevoke": "Lift a revocation (NAME, a public key, or '*' for --all-users).",
    "use": "Choose what later commands work on: the current operator or account of the home.",
    "validate": "Check every signature, chain, expiry, key and creds file in the store.",
    "verify": "Build a throw-away network on loopback and prove it works against real nats-servers.",
}


class SubGroup(click.Group):
    """A command group some of whose subcommands live in other command modules, imported when one of
    them is used or the group's help lists them.  ``lazy`` maps a name to ``"module"`` (a module that
    registers its commands on this group) or ``"module:attribute"`` (a command the group adds)."""

    def __init__(self, *args, lazy: Optional[dict[str, str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            loaded = importlib.import_module(f"dchat_ops._cli.{module}")
            if attribute:
                self.add_command(getattr(loaded, attribute), cmd_name)
        return self.commands.get(cmd_name)


class LazyGroup(SubGroup):
    """The top-level group: every command lives in a module of :data:`COMMAND_MODULES`, imported on first
    use.  Its help lists the commands from :data:`COMMAND_HELP`, so ``--help`` imports none of them.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, lazy=COMMAND_MODULES, **kwargs)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click.Group's listing, with a stand-in carrying the table's help for each command in the table
        # (it shortens the text to the width exactly as the command itself would)
        commands: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = click.Command(name, help=COMMAND_HELP[name]) if name in COMMAND_HELP else self.commands[name]
            if not command.hidden:
                commands.append((name, command))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in commands])


class Ctx:
    def __init__(self, home: Optional[str], operator: Optional[str] = None):
        self.home = home
        self.operator = operator  # the global --operator (None: the home's current operator)

    def store(self, must_exist: bool = True) -> Store:
        from dchat_ops.nsc.store import Store

        store = Store(self.home, operator=self.operator)
        if must_exist:
            store.require()
        return store


pass_ctx = click.make_pass_decorator(Ctx)


def _split(values) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _times(values) -> list[tuple[str, str]]:
    from dchat_ops.errors import FieldError

    out = []
    for v in values or ():
        start, sep, end = v.partition("-")
        if not sep:
            raise FieldError("--time", f"invalid time window {v!r}: use HH:MM:SS-HH:MM:SS")
        out.append((start.strip(), end.strip()))
    return out


class Size(click.ParamType):
    """A size limit on the command line: ``1G``, ``512M``, ``64KiB``, ``1024`` or ``-1`` (a bad one is exit 2)."""

    name = "size"

    def convert(self, value, param, ctx):
        from dchat_ops.nsc.limits import parse_size

        return parse_size(param.opts[0] if param is not None else "size", value)


SIZE = Size()


def parsed(option: str, parse, *args, **kwargs):
    """``parse(*args, **kwargs)``, with its error made a bad value of ``option`` (a FieldError: exit 2, one
    line naming the option)."""
    from dchat_ops.errors import FieldError

    try:
        return parse(*args, **kwargs)
    except DchatOpsError as exc:  # a FieldError too: it names its field, which may not be the option
        text = str(exc)
        raise FieldError(option, text, message=text if text.startswith(option) else f"{option}: {text}") from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="DCHAT_OPS_HOME",
    type=click.Path(file_okay=False),
    help="Store folder (default: $DCHAT_OPS_HOME, else $XDG_DATA_HOME/dchat-ops).",
)
@click.option(
    "--operator",
    "operator",
    envvar="DCHAT_OPS_OPERATOR",
    metavar="NAME",
    help="Operator to work on, in a home that holds several (default: $DCHAT_OPS_OPERATOR, else the current one).",
)
@click.version_option(__version__, prog_name="dchat-ops")
@click.pass_context
def cli(ctx: click.Context, home: Optional[str], operator: Optional[str] = None):
    """Credentials and configuration for decentralized NATS chat networks."""
    if operator:  # a bad name is a bad value (exit 2), before any command runs
        from dchat_ops.nsc.store import check_name

        check_name(operator, "operator name")
    ctx.obj = Ctx(home, operator or None)
