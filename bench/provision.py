"""Provisioning speed: apply a generated spec of 10,000 users in one account, then re-apply it unchanged.

Prints:
  apply_10k_s: N      first apply (operator, account, 10,000 users: keys, JWTs, creds) in seconds
  reapply_10k_s: N    the same spec again: nothing to change, nothing written
  apply_supercluster_10k_s: N  first apply of docs/examples/supercluster.yaml (two regions of three
                      gateway nodes, two leaf devices) with the same 10,000 users: identities and node files
  users_per_s: N      users created per second in the first apply
  floor_create_file_us: N  beside them, what creating one small file costs there (the apply makes 30,000)
"""

import re
import shutil
import time
from pathlib import Path

from _common import create_floor_us, work_dir

from dchat_ops import provision
from dchat_ops.natsbin import free_port
from dchat_ops.nsc.store import Store

SUPERCLUSTER = Path(__file__).resolve().parent.parent / "docs" / "examples" / "supercluster.yaml"

N = 10_000


def spec_text() -> str:
    lines = ["version: 1", "operator: {name: bench}", "accounts:", "  - name: chat", "    users:", *user_lines()]
    return "\n".join(lines) + "\n"


def user_lines() -> list[str]:
    return [f'      - {{name: u{i}, allow_sub: [room.{i % 100}, "_INBOX.>"], allow_pub: ["room.>"]}}' for i in range(N)]


def supercluster_text() -> str:
    """The example super-cluster spec with its leafnode ports free here, and the 10,000 users in its account."""
    text = re.sub(r"port: \d+", lambda _m: f"port: {free_port()}", SUPERCLUSTER.read_text())
    head, sep, tail = text.partition("    users:\n")
    return head + sep + "\n".join(user_lines()) + "\n" + tail


def main() -> None:
    root = work_dir()
    try:
        spec_path = root / "spec.yaml"
        spec_path.write_text(spec_text())
        floor = create_floor_us(root / "floor")
        store = Store(root / "home")
        t0 = time.perf_counter()
        # the same path as `dchat-ops apply -f spec.yaml`: validated specs are cached in the store
        r = provision.apply(store, provision.load_spec(spec_path, cache_dir=provision.spec_cache_dir(store)))
        first = time.perf_counter() - t0
        assert r.written_users == N
        t0 = time.perf_counter()
        r2 = provision.apply(store, provision.load_spec(spec_path, cache_dir=provision.spec_cache_dir(store)))
        again = time.perf_counter() - t0
        assert not r2.plan.has_changes
        sc_path = root / "supercluster.yaml"
        sc_path.write_text(supercluster_text())
        sc_store = Store(root / "sc-home")
        t0 = time.perf_counter()
        r3 = provision.apply(sc_store, provision.load_spec(sc_path, cache_dir=provision.spec_cache_dir(sc_store)))
        sc_first = time.perf_counter() - t0
        assert not r3.error and r3.written_users == N + 2 and len(r3.nodes) == 8
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"apply_10k_s: {first:.2f}")
    print(f"reapply_10k_s: {again:.2f}")
    print(f"apply_supercluster_10k_s: {sc_first:.2f}")
    print(f"users_per_s: {N / first:.0f}")
    print(f"floor_create_file_us: {floor:.0f}")


if __name__ == "__main__":
    main()
