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
    "export": "transfer",
    "generate": "identity",
    "import": "transfer",
    "init": "identity",
    "list": "identity",
    "node": "nodes",
    "perms": "perms",
    "plan": "provision",
    "pull": "transfer",
    "push": "transfer",
    "revocations": "transfer",
    "revoke": "transfer",
    "rm": "identity",
    "rm-pub": "perms",
    "rm-sub": "perms",
    "spec": "provision",
    "tls": "tls",
    "unrevoke": "transfer",
    "validate": "identity",
    "verify": "verify",
}


class LazyGroup(click.Group):
    """A group whose commands are registered by their modules, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"dchat_ops._cli.{COMMAND_MODULES[cmd_name]}")
        return self.commands.get(cmd_name)


class Ctx:
    def __init__(self, home: Optional[str]):
        self.home = home

    def store(self, must_exist: bool = True) -> Store:
        from dchat_ops.nsc.store import Store

        store = Store(self.home)
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
    out = []
    for v in values or ():
        start, sep, end = v.partition("-")
        if not sep:
            raise DchatOpsError(f"invalid time window {v!r}: use HH:MM:SS-HH:MM:SS")
        out.append((start.strip(), end.strip()))
    return out


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="DCHAT_OPS_HOME",
    type=click.Path(file_okay=False),
    help="Store folder (default: $DCHAT_OPS_HOME, else $XDG_DATA_HOME/dchat-ops).",
)
@click.version_option(__version__, prog_name="dchat-ops")
@click.pass_context
def cli(ctx: click.Context, home: Optional[str]):
    """Credentials and configuration for decentralized NATS chat networks."""
    ctx.obj = Ctx(home)
