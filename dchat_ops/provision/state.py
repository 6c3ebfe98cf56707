"""What apply remembers in ``<home>/provision-state.json``: a fingerprint of each user's spec and of
the JWT it wrote.  An unchanged re-apply compares fingerprints and reads no JWT twice; a JWT that no
longer matches what apply wrote is reported as drift."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dchat_ops._fs import atomic_write
from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store
from dchat_ops.provision.schema import Spec

__all__ = ["fingerprint", "load_state", "sha", "state_path", "write_state"]


def state_path(store: Store) -> Path:
    return store.home / "provision-state.json"


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:32]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_state(store: Store) -> dict:
    try:
        data = json.loads(state_path(store).read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def write_state(store: Store, spec: Spec) -> None:
    op_name = spec.operator.get("name", admin.DEFAULT_OPERATOR)
    users = {}
    for a in spec.accounts:
        for u in a.get("users", []):
            key = f"{a['name']}/{u['name']}"
            try:
                token = store.user_jwt_path(op_name, a["name"], u["name"]).read_text().strip()
            except FileNotFoundError:
                continue
            users[key] = {"spec": fingerprint(u), "jwt": sha(token)}
    state = {"spec": str(spec.path), "users": users}
    atomic_write(state_path(store), json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n")
