"""How long the command line takes to start: whole processes, the way a person or a script runs it.

Each figure is the median wall time of 20 runs of a fresh process (``python -m dchat_ops ...`` on this
interpreter, started in a temporary folder), the runs of every kind interleaved so that a busy machine
slows them alike.  ``list`` reads a store made by ``init`` in a temporary home (``DCHAT_OPS_HOME``).
The processes keep their compiled bytecode, as an installed package has it, in a temporary folder
(``PYTHONPYCACHEPREFIX``); first runs, not counted, fill it.

Prints:
  python_bare_ms: N        python -c pass: the interpreter's own start, the floor
  python_click_ms: N       python -c "import click": the floor for any click command line
  cli_help_ms: N           dchat-ops --help
  cli_list_ms: N           dchat-ops list
  cli_group_help_ms: N     dchat-ops <group> --help, each run the next command group in turn
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

RUNS = 20
CLI = [sys.executable, "-m", "dchat_ops"]


def groups() -> list[str]:
    """The command groups, read from the command line itself (its modules are imported here only)."""
    import importlib

    import click

    from dchat_ops._cli.app import COMMAND_MODULES, cli

    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"dchat_ops._cli.{module}")
    return sorted(name for name, command in cli.commands.items() if isinstance(command, click.Group))


def wall_ms(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Start to exit of one process.  (A wait with a timeout polls, in steps of up to 50 ms, so the
    wait blocks and a timer kills a process that runs for a minute.)"""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        code = proc.wait()
    finally:
        timer.cancel()
    elapsed = (time.perf_counter() - start) * 1000
    if code != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {code}")
    return elapsed


def main() -> None:
    home = tempfile.mkdtemp(prefix="dchat-cli-start-")
    try:
        env = {**os.environ, "DCHAT_OPS_HOME": home, "PYTHONPYCACHEPREFIX": os.path.join(home, "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([*CLI, "init"], env=env, cwd=home, capture_output=True, timeout=60, check=True)
        group_names = groups()
        kinds = {
            "python_bare_ms": lambda i: [sys.executable, "-c", "pass"],
            "python_click_ms": lambda i: [sys.executable, "-c", "import click"],
            "cli_help_ms": lambda i: [*CLI, "--help"],
            "cli_list_ms": lambda i: [*CLI, "list"],
            "cli_group_help_ms": lambda i: [*CLI, group_names[i % len(group_names)], "--help"],
        }
        for argv in {tuple(argv(i)) for argv in kinds.values() for i in range(len(group_names))}:
            wall_ms(list(argv), env, home)  # not counted: fills the bytecode cache
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for i in range(RUNS):
            for kind, argv in kinds.items():
                times[kind].append(wall_ms(argv(i), env, home))
        for kind, t in times.items():
            print(f"{kind}: {statistics.median(t):.1f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
