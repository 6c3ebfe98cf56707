"""The root ``dchat-ops`` group and what every command module shares: the context and option parsing.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 changes pending (``--detailed-exitcode``).
"""

from __future__ import annotations

from typing import Optional

import click

from dchat_ops import __version__
from dchat_ops.errors import DchatOpsError
from dchat_ops.nsc.store import Store


class Ctx:
    def __init__(self, home: Optional[str]):
        self.home = home

    def store(self, must_exist: bool = True) -> Store:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
