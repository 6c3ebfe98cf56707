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


def create_floor_us(folder: Path, n: int = 2000) -> float:
    """Microseconds to create one small file in ``folder`` (made new): the floor of writing a store.

    The files stay until the caller removes the folder: on ext4 without a journal, inodes freed in the
    last few minutes make new files slower to create, so freeing these at once would slow what follows.
    """
    import os
    import time

    folder.mkdir()
    data = b"x" * 600
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
    return (time.perf_counter() - t0) / n * 1e6
