"""Account claims from the command line: subject mappings, role templates, and the options of ``edit account``
for default permissions, JetStream tiers and per-stream limits, and the info URL.

The commands here are attached to the ``add``, ``rm`` and ``edit`` groups when one of them is used (the
groups name them, :class:`dchat_ops._cli.app.SubGroup`); the options ``edit account`` takes for these claims
are in :mod:`dchat_ops._cli.account_options`. Like every command module, this one imports the library only
inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dchat_ops._cli.app import SIZE, Ctx, _split, pass_ctx
from dchat_ops._cli.output import emit, json_option
from dchat_ops.errors import DchatOpsError

if TYPE_CHECKING:
    from dchat_ops.nsc.store import Store


def push_account(store: Store, account: str, no_push: bool) -> tuple[list[str], dict | None]:
    """Send the account's new JWT to the running nodes of the store: (lines for a person, the push report)."""
    from dchat_ops.runtime.push import push, running_nodes

    if no_push:
        return ["not pushed: run 'dchat-ops push' to send it to running nodes"], None
    if not running_nodes(store):
        return ["no node is running: nodes take the account JWT from the store when they start"], None
    report = push(store, [account])
    lines = [f"  {r['server']}: {'ok' if r['ok'] else 'FAILED'} {r['message']}" for r in report.results]
    return lines, report.to_dict()


def _require_current(store: Store, account: str) -> None:
    from dchat_ops.runtime import push

    push.require_current_store(store, [account])  # an edit on an older JWT than a node holds would undo it


def _finish(as_json: bool, data: dict, first: str, lines: list[str], report: dict | None) -> None:
    emit(as_json, {**data, "push": report, "messages": [m.strip() for m in lines]}, [first, *lines])
    if report is not None and not report["ok"]:
        raise DchatOpsError("the change is in the store, but not every server took it: run 'dchat-ops push'")


# --- mappings ----------------------------------------------------------------------------------------------------


def _mapping_view(claims, source: str) -> dict:
    return {"account": claims.name, "from": source, "to": list(claims.mappings.get(source, []))}


@click.command("mapping")
@click.option("--account", "-a", help="The account (default: the current account).")
@click.option("--from", "source", required=True, help="The subject clients publish to (wildcards allowed).")
@click.option(
    "--to", "dests", multiple=True, required=True, help="A destination subject ($1 or {{wildcard(1)}}: the first '*')."
)
@click.option(
    "--weight",
    "weights",
    multiple=True,
    type=int,
    help="Percent of the messages for the --to of the same position (default 100; per cluster at most 100 in all).",
)
@click.option(
    "--cluster", "clusters", multiple=True, help="Only in this cluster: once for every --to, or once per --to."
)
@click.option("--no-push", is_flag=True, help="Change the store only; push later with 'dchat-ops push'.")
@json_option
@pass_ctx
def add_mapping(c: Ctx, account, source, dests, weights, clusters, no_push, as_json):
    """Map a subject to others: a message published to --from goes to the --to subjects, split by --weight.

    With weights summing to less than 100, the rest of the messages stay on the --from subject.  A --to that the
    mapping has already is replaced; the other destinations stay."""
    from dchat_ops.nsc.accounts import Destination, add_mapping

    if weights and len(weights) != len(dests):
        raise click.UsageError("give one --weight per --to, in the same order (or none: 100 each)")
    if clusters and len(clusters) not in (1, len(dests)):
        raise click.UsageError("give one --cluster for every --to, or one per --to in the same order")
    store = c.store()
    account = account or store.default_account()
    ws = list(weights) or [100] * len(dests)
    cs = list(clusters) * len(dests) if len(clusters) == 1 else (list(clusters) or [""] * len(dests))
    targets = [Destination(d, w, cl) for d, w, cl in zip(dests, ws, cs, strict=True)]
    _require_current(store, account)
    e, changed = add_mapping(store, account, source, targets)
    lines, report = push_account(store, account, no_push) if changed else ([], None)
    to = ", ".join(
        f"{t['subject']} {t.get('weight', 100)}%{' in ' + t['cluster'] if t.get('cluster') else ''}"
        for t in e.claims.mappings[source]
    )
    _finish(
        as_json,
        {**_mapping_view(e.claims, source), "changed": changed},
        f"account {account}: mapping {source} -> {to}" + ("" if changed else " (unchanged)"),
        lines,
        report,
    )


@click.command("mapping")
@click.option("--account", "-a", help="The account (default: the current account).")
@click.option("--from", "source", required=True, help="The mapped subject.")
@click.option("--to", "dest", help="Remove only this destination (default: the whole mapping).")
@click.option("--no-push", is_flag=True, help="Change the store only; push later with 'dchat-ops push'.")
@json_option
@pass_ctx
def rm_mapping(c: Ctx, account, source, dest, no_push, as_json):
    """Remove a subject mapping of an account, or one destination of it."""
    from dchat_ops.nsc.accounts import remove_mapping

    store = c.store()
    account = account or store.default_account()
    _require_current(store, account)
    e, _ = remove_mapping(store, account, source, dest)
    lines, report = push_account(store, account, no_push)
    what = f"destination {dest} of mapping {source}" if dest else f"mapping {source}"
    _finish(as_json, _mapping_view(e.claims, source), f"account {account}: removed {what}", lines, report)


# --- role templates ---------------------------------------------------------------------------------------------


@click.command("role")
@click.argument("account")
@click.argument("role")
@click.option("--allow-pub", multiple=True, help="Add a subject the role's users may publish to.")
@click.option("--allow-sub", multiple=True, help="Add a subject they may subscribe to ('subject queue' too).")
@click.option("--deny-pub", multiple=True, help="Add a subject they may not publish to.")
@click.option("--deny-sub", multiple=True, help="Add a subject they may not subscribe to.")
@click.option("--rm", "--rm-subject", "remove", multiple=True, help="Remove a subject from every permission list.")
@click.option("--resp-max", type=int, help="Allow this many responses to request reply subjects (0 removes).")
@click.option("--resp-ttl", help="Time window for those responses, e.g. 1s.")
@click.option("--subs", type=int, help="Maximum subscriptions (-1 unlimited).")
@click.option("--data", type=SIZE, help="Maximum bytes, e.g. 10M (-1 unlimited).")
@click.option("--payload", type=SIZE, help="Maximum message payload, e.g. 64K (-1 unlimited).")
@click.option("--bearer/--no-bearer", default=None, help="Bearer token: no nonce signature needed.")
@click.option("--conn-type", multiple=True, help="Add an allowed connection type (STANDARD, WEBSOCKET, ...).")
@click.option("--rm-conn-type", multiple=True, help="Remove an allowed connection type.")
@click.option("--source-network", multiple=True, help="Add a CIDR the users may connect from.")
@click.option("--rm-source-network", multiple=True, help="Remove a source network.")
@click.option("--time", "times", multiple=True, help="Add a daily window HH:MM:SS-HH:MM:SS.")
@click.option("--rm-times", is_flag=True, help="Remove every time window.")
@click.option("--locale", help="Time zone of the windows (IANA name).")
@click.option("--no-push", is_flag=True, help="Change the store only; push later with 'dchat-ops push'.")
@json_option
@pass_ctx
def edit_role(c: Ctx, account, role, as_json, no_push, **kw):
    """Change the template of a role (a scoped signing key): the permissions and limits of every user it issued.

    The users are not re-issued: servers apply the template of the account JWT, which is pushed to the running
    nodes; they close the connections of the role's users, which come back under the new template."""
    from dchat_ops._cli.app import _times
    from dchat_ops._cli.identity import user_limit_fields
    from dchat_ops.nsc.accounts import edit_role
    from dchat_ops.nsc.spec import UserChanges, UserSpec

    store = c.store()
    spec = UserSpec(**user_limit_fields(kw))
    changes = UserChanges(
        allow_pub=_split(kw["allow_pub"]),
        allow_sub=_split(kw["allow_sub"]),
        deny_pub=_split(kw["deny_pub"]),
        deny_sub=_split(kw["deny_sub"]),
        remove=_split(kw["remove"]),
        add_connection_types=_split(kw["conn_type"]),
        remove_connection_types=_split(kw["rm_conn_type"]),
        add_source_networks=_split(kw["source_network"]),
        remove_source_networks=_split(kw["rm_source_network"]),
        add_times=_times(kw["times"]),
        clear_times=kw["rm_times"],
    )
    _require_current(store, account)
    r = edit_role(store, account, role, spec, changes)
    lines, report = push_account(store, account, no_push) if r.changed else ([], None)
    if r.taken_away:
        lines.insert(0, f"  taken away from its {len(r.users)} user(s): {'; '.join(r.taken_away)}")
    first = f"role {role} of account {account}: template " + ("changed" if r.changed else "unchanged")
    _finish(as_json, r.to_dict(), first, lines, report)
