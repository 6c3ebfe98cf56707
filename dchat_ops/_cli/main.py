"""The ``dchat-ops`` command line: parses, calls the library, formats.  No logic of its own.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 changes pending (``--detailed-exitcode``).
Each command group lives in its own module; importing it registers its commands on :data:`cli`.
"""

from __future__ import annotations

import sys

from dchat_ops._cli import chat, identity, nodes, perms, provision, transfer, verify  # noqa: F401 (registers)
from dchat_ops._cli.app import Ctx, cli
from dchat_ops._cli.output import run_cli
from dchat_ops._cli.tls import tls

cli.add_command(tls)

__all__ = ["Ctx", "cli", "main"]


def main() -> None:
    sys.exit(run_cli(cli))


if __name__ == "__main__":
    main()
