"""``python -m dchat_ops``: the command line as a module, run the way a user runs it."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "dchat_ops", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: ")
    for command in ("init", "node", "verify"):
        assert command in out.stdout
    assert out.stderr == ""


def test_python_dash_m_unknown_command_fails():
    out = subprocess.run(
        [sys.executable, "-m", "dchat_ops", "no-such-command"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode != 0
    assert "No such command" in out.stderr
