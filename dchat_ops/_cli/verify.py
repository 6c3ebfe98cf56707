"""The self-check on a throw-away network."""

from __future__ import annotations

import click

from dchat_ops._cli.app import cli
from dchat_ops._cli.output import emit, json_option

# --- verify ------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary folder for inspection.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Prove this spec's topology instead: applied in a throw-away home on loopback (free ports), its nodes"
    " started, clusters, gateways and leaf nodes checked, a message sent end to end, a leaf failed over.",
)
@json_option
def verify(keep, spec_file, as_json):
    """Build a throw-away network on loopback and prove it works against real nats-servers."""
    from pathlib import Path

    from dchat_ops.verify import run_spec_verify, run_verify

    progress = None if as_json else (lambda line: click.echo(line))
    if spec_file:
        report = run_spec_verify(Path(spec_file), keep=keep, progress=progress)
    else:
        report = run_verify(keep=keep, progress=progress)
    if as_json:
        emit(True, report.to_dict())
    else:
        click.echo(
            ("PASSED" if report.passed else "FAILED") + f": {sum(c.passed for c in report.checks)}"
            f"/{len(report.checks)} checks in {report.total_ms:.0f} ms"
            + (f"; files kept in {report.folder}" if keep else "")
        )
    return 0 if report.passed else 1
