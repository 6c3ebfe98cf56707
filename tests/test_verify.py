"""`dchat-ops verify`, the README's main command, passes end to end and reports in JSON."""

import json
import os
import subprocess
import sys


def test_verify_passes_and_reports_every_check(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "dchat-ops")
    p = subprocess.run(
        [exe, "verify", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["passed"] is True
    names = [c["name"].split(":")[0] for c in report["checks"]]
    assert all(c["passed"] and c["ms"] >= 0 and c["detail"] for c in report["checks"])
    for required in (
        "cluster",
        "default deny",
        "allow-sub",
        "first contact",
        "dm",
        "group",
        "integrity",
        "offline",
        "revocation",
    ):
        assert required in names, names
    details = {c["name"].split(":")[0]: c["detail"] for c in report["checks"]}
    assert "contact request" in details["first contact"]
    assert "made with its members online" in next(c["name"] for c in report["checks"] if c["name"].startswith("group"))
    assert report["ms"] < 30000
    assert not any(tmp_path.iterdir())  # the temporary network is cleaned up without --keep
