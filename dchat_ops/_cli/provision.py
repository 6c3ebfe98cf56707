"""Provisioning from a spec: plan, apply, spec export."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dchat_ops._cli.app import Ctx, cli, pass_ctx
from dchat_ops._cli.output import emit, json_option, note
from dchat_ops._fs import atomic_write

# --- provisioning --------------------------------------------------------------------------------------


def _plan_lines(d: dict) -> list[str]:
    lines = [
        f"{c['action']:<8} {c['kind']:<8} {c['name']}" + (f"  ({c['detail']})" if c["detail"] else "")
        for c in d["changes"]
    ]
    if not d["changes"]:
        lines.append(f"no changes: the store matches the spec ({d['unchanged']} users unchanged)")
    else:
        summary = ", ".join(f"{n} {a}" for a, n in sorted(d["summary"].items()))
        lines.append(f"{len(d['changes'])} change(s): {summary}; {d['unchanged']} users unchanged")
    return lines


@cli.command("plan")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(dir_okay=False), help="The spec file.")
@click.option(
    "--keep-removed",
    is_flag=True,
    help="Keep users, accounts and nodes removed from the spec (default: revoke and remove them).",
)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 3 when there are changes, 0 when none.")
@json_option
@pass_ctx
def plan_cmd(c: Ctx, spec_file, keep_removed, detailed_exitcode, as_json):
    """Show what applying the spec would create, change, re-issue or revoke (and drift)."""
    from dchat_ops import provision

    store = c.store(must_exist=False)
    spec = provision.load_spec(Path(spec_file), cache_dir=provision.spec_cache_dir(store) if store.exists() else None)
    p = provision.plan(store, spec, keep_removed=keep_removed)
    d = p.to_dict()
    emit(as_json, d, lambda: _plan_lines(d))
    return 3 if detailed_exitcode and p.has_changes else 0


@cli.command("apply")
@click.option("-f", "--file", "spec_file", required=True, type=click.Path(dir_okay=False), help="The spec file.")
@click.option(
    "--keep-removed",
    is_flag=True,
    help="Keep users, accounts and nodes removed from the spec (default: revoke and remove them).",
)
@json_option
@pass_ctx
def apply_cmd(c: Ctx, spec_file, keep_removed, as_json):
    """Make the store and node configs what the spec says; a second apply changes nothing."""
    from dchat_ops import provision

    store = c.store(must_exist=False)
    # the validated spec is kept for the next apply also when this one makes the store
    spec = provision.load_spec(Path(spec_file), cache_dir=provision.spec_cache_dir(store))
    progress = None
    if sys.stderr.isatty() and not as_json:

        def progress(done, total, _state=None):
            if _state is None:
                _state = {}
            if "bar" not in _state:
                _state["bar"] = click.progressbar(length=total, label="issuing users", file=sys.stderr)
                _state["bar"].__enter__()
            _state["bar"].update(done - _state.get("done", 0))
            _state["done"] = done
            if done >= total:
                _state["bar"].__exit__(None, None, None)

    r = provision.apply(store, spec, keep_removed=keep_removed, progress=progress)
    d = r.to_dict()
    emit(
        as_json,
        d,
        lambda: (
            _plan_lines(d) + _node_lines(d) + ([f"error: {d['error']}"] if d.get("error") else [])
            if d["changes"]
            else [f"no changes: the store matches the spec ({d['unchanged']} users unchanged); nothing written"]
        ),
    )
    return 1 if r.failed or r.rolled_back else 0


_NODE_OUTCOMES = {
    "live": "applied live (reloaded; the server confirmed the new config)",
    "saved": "written for its next start (not running)",
    "unchanged": "unchanged",
    "rolled-back": "rolled back",
    "removed": "removed (stopped if it ran; its files gone)",
}


def _node_lines(d: dict) -> list[str]:
    return [
        f"node {n['node']}: {_NODE_OUTCOMES.get(n['outcome'], n['outcome'])}"
        + (f": {n['detail']}" if n["outcome"] == "rolled-back" and n["detail"] else "")
        for n in d["nodes"]
    ]


@cli.group("spec")
def spec_group():
    """Specs for provisioning."""


@spec_group.command("export")
@click.option("-o", "--output", help="Write the spec here (default: print).")
@click.option("--force", is_flag=True)
@pass_ctx
def spec_export(c: Ctx, output, force):
    """Write a spec that describes the current store, to move a hand-built network to CI."""
    from dchat_ops import provision

    text = provision.dump_spec(provision.export_spec(c.store()))
    if output:
        atomic_write(Path(output), text, force=force)
        note(f"wrote {output}")
    else:
        click.echo(text, nl=False)
