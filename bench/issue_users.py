"""Bulk user issuance speed: in memory, and persisted to a store.

Prints:
  users_per_s_memory: N       key pair + signed JWT + creds text per second, nothing written (all cores)
  users_per_s_memory_1core: N the same in one process
  persist_1000_users_s: N     seconds to create and persist 1,000 users (seed, JWT, creds) in a store
"""

import shutil
import time

from _common import work_dir

from dchat_ops.nsc import admin
from dchat_ops.nsc.store import Store


def best(f, runs=3):
    return min(f() for _ in range(runs))


def main() -> None:
    root = work_dir()
    try:
        store = Store(root / "home")
        admin.init(store)
        acc = store.account("chat")
        signer = store.load_key(acc.public_key)
        spec = admin.UserSpec(sub_allow=["chat.>", "_INBOX.>"])
        n = 10000
        names = [f"u{i}" for i in range(n)]

        def memory(workers):
            t0 = time.perf_counter()
            rows = admin.issue_users(names, acc.public_key, signer, spec, workers=workers)
            assert len(rows) == n and rows[-1][3].count(".") == 2
            return time.perf_counter() - t0

        mem = n / best(lambda: memory(None))
        mem1 = n / best(lambda: memory(1))

        run = [0]

        def persist():
            run[0] += 1
            t0 = time.perf_counter()
            admin.add_users(store, "chat", [f"r{run[0]}-{i}" for i in range(1000)], spec)
            return time.perf_counter() - t0

        persist_s = best(persist)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"users_per_s_memory: {mem:.0f}")
    print(f"users_per_s_memory_1core: {mem1:.0f}")
    print(f"persist_1000_users_s: {persist_s:.2f}")


if __name__ == "__main__":
    main()
