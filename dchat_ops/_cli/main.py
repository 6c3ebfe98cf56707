"""The ``dchat-ops`` command line: parses, calls the library, formats.  No logic of its own.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 changes pending (``--detailed-exitcode``).
Each command group lives in its own module, imported when one of its commands runs
(:data:`dchat_ops._cli.app.COMMAND_MODULES`); importing a module registers its commands on :data:`cli`.
"""

from __future__ import annotations

import sys

from dchat_ops._cli.app import Ctx, cli
from dchat_ops._cli.output import run_cli

__all__ = ["Ctx", "cli", "main"]


def main() -> None:
    sys.exit(run_cli(cli))


if __name__ == "__main__":
    main()
