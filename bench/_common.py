"""Helpers shared by the benchmarks."""

import tempfile
from pathlib import Path

from dchat_ops.nsc.store import default_home


def work_dir() -> Path:
    """A fresh folder beside the default store home (``$XDG_DATA_HOME``, else ``~/.local/share``).

    Stores are measured where dchat-ops keeps them by default.  (On some machines ``/tmp`` is a
    much slower file system for creating many small files; set ``DCHAT_BENCH_DIR`` to measure there.)
    """
    import os

    base = Path(os.environ.get("DCHAT_BENCH_DIR") or default_home().parent)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="dchat-bench-", dir=base))
