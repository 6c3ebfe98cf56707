"""Output helpers shared by the commands: JSON or human text, and one place that turns errors into exits."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from dchat_ops.errors import DchatOpsError, clean_message

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHANGES = 3

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit(as_json: bool, data: Any, human: Callable[[], Iterable[str]] | Iterable[str] | str | None = None) -> None:
    """Print ``data`` as JSON, or the human lines."""
    if as_json:
        import json

        click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
        return
    if human is None:
        return
    if callable(human):
        human = human()
    if isinstance(human, str):
        click.echo(human)
        return
    for line in human:
        click.echo(line)


def note(message: str) -> None:
    """A remark for a person, on stderr so JSON on stdout stays clean."""
    click.echo(message, err=True)


def fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"error: {clean_message(message)}", err=True)
    sys.exit(code)


def run_cli(cli: click.Command, args=None) -> int:
    """Run ``cli`` so that expected failures are one line and a non-zero exit, never a traceback."""
    try:
        rv = cli.main(args=args, prog_name="dchat-ops", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except DchatOpsError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_FAILED
    except click.ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        # a seed typed as a value is not echoed, a long value is cut; click's usage lines stay lines
        click.echo("".join(clean_message(line) + "\n" for line in shown.getvalue().splitlines()), err=True, nl=False)
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("DCHAT_OPS_DEBUG"):
            raise
        text = clean_message(f"{type(exc).__name__}: {exc}")
        click.echo(f"error: internal error: {text} (set DCHAT_OPS_DEBUG=1 for details)", err=True)
        return EXIT_FAILED
