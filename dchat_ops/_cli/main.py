"""The ``dchat-ops`` command line: parses, calls the library, formats.  No logic of its own.

Exit codes: 0 ok, 1 failed, 2 usage error, 3 changes pending (``--detailed-exitcode``).
Each command group lives in its own module, imported when one of its commands runs
(:data:`dchat_ops._cli.app.COMMAND_MODULES`); importing a module registers its commands on :data:`cli`.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from dchat_ops._cli.app import Ctx, cli
from dchat_ops._cli.output import run_cli

__all__ = ["Ctx", "cli", "main"]


def main() -> None:
    code = run_cli(cli)
    _exit(code)


def _exit(code: int) -> None:
    """End the process with ``code``, skipping the interpreter's teardown when nothing needs it.

    Freeing every module and object at exit takes about 5 ms of each command (a fifth of what a
    short command does after the interpreter's start).  The exit functions still run (pools,
    finalizers, logging), and the output is flushed; with another thread still running, or an
    interpreter without ``atexit._run_exitfuncs``, the process exits the ordinary way.
    """
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None or threading.active_count() > 1:
        sys.exit(code)
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken pipe: what the ordinary exit would report
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()
