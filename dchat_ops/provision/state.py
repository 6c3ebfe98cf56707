"""What apply remembers in ``<home>/provision-state.json``: a fingerprint of each user's spec and of
the JWT it wrote, and the key of the spec it applied.

An unchanged re-apply reads each user's JWT once to compare it with the fingerprint (a JWT that no
longer matches what apply wrote is reported as drift); it compares the users' spec fingerprints only
when the spec is not the one applied last.  Apply writes the state from what it knows (the entries
plan confirmed, the JWTs it has just made): it reads no JWT again to write it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dchat_ops.nsc.store import Store
from dchat_ops.provision.schema import Spec

__all__ = ["UserState", "fingerprint", "load_state", "sha", "state_path", "write_state"]

# "<account>/<user>" -> {"spec": fingerprint of the spec's user item, "jwt": sha of the JWT apply wrote}
UserState = dict[str, dict[str, str]]


def state_path(store: Store) -> Path:
    return store.home / "provision-state.json"


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:32]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_state(store: Store) -> dict:
    try:
        data = json.loads(state_path(store).read_bytes())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError, RecursionError):  # missing or damaged: every user is compared
        return {}


def write_state(
    store: Store, spec: Spec, users: UserState, kept_accounts: Iterable[str] = (), kept_nodes: Iterable[str] = ()
) -> None:
    """Record ``users`` (an entry for each user of the spec) as applied from ``spec``."""
    # the accounts and nodes the spec names (and those kept with --keep-removed): one a later spec no
    # longer names is removed by its apply
    accounts = sorted({a["name"] for a in spec.accounts} | set(kept_accounts))
    nodes = sorted({n["id"] for n in spec.nodes} | set(kept_nodes))
    state = {"spec": str(spec.path), "spec_key": spec.key, "users": users, "accounts": accounts, "nodes": nodes}
    store.write_file(state_path(store), json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n")
