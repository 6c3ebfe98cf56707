"""The options of ``edit account`` for default permissions, JetStream tiers and per-stream limits, and the
info URL (the decorator and what its values become); the commands of account claims are in
:mod:`dchat_ops._cli.claims`, imported only when one of them runs."""

from __future__ import annotations

from typing import Any

import click

from dchat_ops._cli.app import SIZE, _split


def account_claim_options(f):
    """The options of ``edit account`` for default permissions, JetStream tiers and per-stream limits, info URL."""
    opts = [
        click.option(
            "--js-tier",
            metavar="R1..R5",
            help="Apply the --js-* options to this JetStream tier (made when missing) instead of account-wide.",
        ),
        click.option("--rm-js-tier", multiple=True, metavar="TIER", help="Remove a JetStream tier (repeatable)."),
        click.option("--js-max-ack-pending", type=int, help="Maximum unacknowledged messages of a consumer."),
        click.option("--js-mem-max-stream", type=SIZE, help="Maximum bytes of one memory stream, e.g. 64M."),
        click.option("--js-disk-max-stream", type=SIZE, help="Maximum bytes of one disk stream, e.g. 1G."),
        click.option(
            "--js-max-bytes-required/--no-js-max-bytes-required",
            default=None,
            help="Every stream must set its maximum bytes.",
        ),
        click.option("--default-allow-pub", multiple=True, help="Default permission for users with none of their own."),
        click.option("--default-allow-sub", multiple=True, help="Default subscribe permission (repeatable)."),
        click.option("--default-deny-pub", multiple=True, help="Default publish deny (repeatable)."),
        click.option("--default-deny-sub", multiple=True, help="Default subscribe deny (repeatable)."),
        click.option(
            "--rm-default",
            multiple=True,
            metavar="SUBJECT",
            help="Remove a subject from every default permission list.",
        ),
        click.option("--info-url", help="A web page about the account ('' removes it)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def account_claim_kwargs(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """From the options above: (JetStream limits to add to ``jetstream``, the other keywords of
    ``admin.edit_account``)."""
    from dchat_ops.nsc.spec import UserChanges

    js = {
        k: v
        for k, v in (
            ("max_ack_pending", kw.get("js_max_ack_pending")),
            ("mem_max_stream_bytes", kw.get("js_mem_max_stream")),
            ("disk_max_stream_bytes", kw.get("js_disk_max_stream")),
            ("max_bytes_required", kw.get("js_max_bytes_required")),
        )
        if v is not None
    }
    out: dict[str, Any] = {}
    if kw.get("js_tier") is not None:
        out["js_tier"] = kw["js_tier"]
    if kw.get("rm_js_tier"):
        out["remove_js_tiers"] = _split(kw["rm_js_tier"])
    changes = UserChanges(
        allow_pub=_split(kw.get("default_allow_pub")),
        allow_sub=_split(kw.get("default_allow_sub")),
        deny_pub=_split(kw.get("default_deny_pub")),
        deny_sub=_split(kw.get("default_deny_sub")),
        remove=_split(kw.get("rm_default")),
    )
    if changes.allow_pub or changes.allow_sub or changes.deny_pub or changes.deny_sub or changes.remove:
        out["default_permissions"] = changes
    if kw.get("info_url") is not None:
        out["info_url"] = kw["info_url"]
    return js, out


# --- pushing an account change -----------------------------------------------------------------------------------


def account_describe_lines(n: dict) -> list[str]:
    """Lines of ``describe account`` for the claims of this module: default permissions, tiers, info URL."""
    lines = []
    dp = n.get("default_permissions") or {}
    for part in ("pub", "sub"):
        for kind in ("allow", "deny"):
            if dp.get(part, {}).get(kind):
                lines.append(f"  default {part} {kind:<5} {', '.join(dp[part][kind])}")
    for tier, lim in sorted((n.get("limits", {}).get("tiered_limits") or {}).items()):
        lines.append(f"  js tier {tier:<4} " + (", ".join(f"{k}={v}" for k, v in lim.items()) or "(off)"))
    if n.get("info_url"):
        lines.append(f"  info url     {n['info_url']}")
    return lines
