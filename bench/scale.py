"""Scale: one store of 100,000 users, made once and reused for every measurement.

Each step runs as its own process, as a person or a CI job runs it:

  apply_100k_s                first `apply -f spec.yaml` of a 100,000-user spec on a new store: the spec
                              parsed and checked, operator, account, and each user's key, JWT and creds
  apply_100k_peak_mib         the most memory the applying process held (its max RSS)
  apply_100k_worker_peak_mib  the largest max RSS among the issuing processes it started
  reapply_100k_s              the same spec again: nothing to change, nothing written
  plan_100k_s                 `plan` of that spec with one user changed
  validate_100k_s             `dchat-ops validate`: every signature, chain link, expiry, key and creds file
  list_100k_s                 `dchat-ops list --json` (the tree of 100,000 users, printed)
  describe_100k_s             `dchat-ops describe user` of one user and `describe account` of the account
                              that holds all of them, together
  floor_create_file_us        beside them, what creating one small file costs where the store is (the mean
                              over 2,000 files): the apply makes 300,000 (a seed, a JWT and creds per user)

On ext4 without a journal, the files freed in the last few minutes make creating new ones slower (the
allocator steps over recently freed inodes): a run right after another one, or after a large store was
deleted nearby, pays for it; floor_create_file_us shows it.

DCHAT_BENCH_USERS sets another number of users (the names then say so, e.g. apply_20k_s).
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import create_floor_us, work_dir

N = int(os.environ.get("DCHAT_BENCH_USERS", "100000"))
TAG = f"{N // 1000}k" if N % 1000 == 0 else str(N)


def spec_text(changed: int = -1) -> str:
    lines = ["version: 1", "operator: {name: bench}", "accounts:", "  - name: chat", "    users:"]
    for i in range(N):
        room = "lobby" if i == changed else f"room.{i % 100}"
        lines.append(f'      - {{name: u{i}, allow_sub: [{room}, "_INBOX.>"], allow_pub: ["room.>"]}}')
    return "\n".join(lines) + "\n"


def _apply(home: str, spec: str) -> None:
    """Child: one apply, as `dchat-ops apply` does it; prints its figures as JSON."""
    from dchat_ops import provision
    from dchat_ops.nsc.store import Store

    store = Store(home)
    t0 = time.perf_counter()
    r = provision.apply(store, provision.load_spec(Path(spec), cache_dir=provision.spec_cache_dir(store)))
    took = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "s": took,
                "written": r.written_users,
                "changed": r.plan.has_changes,
                "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "worker_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            }
        )
    )


def _run(args: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if p.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(args[:4])}... failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return took, p.stdout


def main() -> None:
    root = work_dir()
    home = root / "home"
    spec = root / "spec.yaml"
    spec.write_text(spec_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    me = [sys.executable, __file__]
    cli = [sys.executable, "-m", "dchat_ops", "--home", str(home)]
    out = {}
    try:
        floor = create_floor_us(root / "floor")
        _, text = _run([*me, "--apply", str(home), str(spec)], env)
        first = json.loads(text)
        assert first["written"] == N, first
        out[f"apply_{TAG}_s"] = f"{first['s']:.2f}"
        out[f"apply_{TAG}_peak_mib"] = f"{first['peak_kib'] / 1024:.0f}"
        out[f"apply_{TAG}_worker_peak_mib"] = f"{first['worker_peak_kib'] / 1024:.0f}"
        _, text = _run([*me, "--apply", str(home), str(spec)], env)
        again = json.loads(text)
        assert not again["changed"], again
        out[f"reapply_{TAG}_s"] = f"{again['s']:.2f}"
        changed = root / "changed.yaml"
        changed.write_text(spec_text(changed=N // 2))
        took, text = _run([*cli, "plan", "-f", str(changed), "--json"], env)
        assert json.loads(text)["summary"] == {"reissue": 1}, text[:500]
        out[f"plan_{TAG}_s"] = f"{took:.2f}"
        took, text = _run([*cli, "validate", "--json"], env)
        assert json.loads(text)["valid"], text[:500]
        out[f"validate_{TAG}_s"] = f"{took:.2f}"
        took, text = _run([*cli, "list", "--json"], env)
        assert len(json.loads(text)["accounts"][-1]["users"]) in (N, N + 1), "list"
        out[f"list_{TAG}_s"] = f"{took:.2f}"
        t1, _ = _run([*cli, "describe", "user", f"u{N - 1}", "--account", "chat"], env)
        t2, _ = _run([*cli, "describe", "account", "chat"], env)
        out[f"describe_{TAG}_s"] = f"{t1 + t2:.2f}"
        out["floor_create_file_us"] = f"{floor:.0f}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--apply":
        _apply(sys.argv[2], sys.argv[3])
    else:
        main()
