"""Several operators in one home: which one is current (``use operator``), and the list of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dchat_ops._cli.app import Ctx, cli, pass_ctx
from dchat_ops._cli.output import emit, json_option

if TYPE_CHECKING:
    from dchat_ops.nsc.store import Store


def show_operators(store: Store, as_json: bool) -> None:
    """``list operators``: the current one marked with ``*``."""
    from dchat_ops.nsc.describe import list_operators

    d = list_operators(store)

    def human():
        for row in d["operators"]:
            mark = "*" if row["current"] else " "
            key = row["public_key"] or row.get("error")
            yield f"{mark} {row['name']}  {key}  ({row['accounts']} accounts)"
        if d["current"] is None:
            yield "no current operator: choose one with 'dchat-ops use operator NAME' (or --operator NAME)"

    emit(as_json, d, human)


@cli.group()
def use():
    """Choose what later commands work on: the current operator or account of the home."""


@use.command("operator")
@click.argument("name")
@json_option
@pass_ctx
def use_operator(c: Ctx, name, as_json):
    """Make NAME the home's current operator (remembered in the home's context.json)."""
    from dchat_ops.nsc.store import Store

    store = Store(c.home)  # the choice is NAME, whatever --operator says
    store.require()
    store.use_operator(name)
    emit(as_json, {"current": name}, f"current operator: {name}")


@use.command("account")
@click.argument("name")
@json_option
@pass_ctx
def use_account(c: Ctx, name, as_json):
    """Make NAME the account commands use when --account is not given (remembered in context.json)."""
    store = c.store()
    store.use_account(name)
    emit(as_json, {"operator": store.current_operator(), "account": name}, f"current account: {name}")
