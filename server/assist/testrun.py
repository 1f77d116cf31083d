"""Running generated tests: pytest in a subprocess, in a temporary folder, with a time limit.

Run from a worker thread (it blocks for up to TEST_TIMEOUT_S seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .records import TestRun

TEST_TIMEOUT_S = 60        # a generated test run is stopped after this long


def run_pytest(root: Path, name: str, code: str) -> TestRun:
    """Run a test module with pytest in a subprocess: workspace on the import path, no network,
    a time limit. The module is written to a temporary folder, never into the workspace."""
    with tempfile.TemporaryDirectory(prefix="deepseek-tests-") as folder:
        test_file = Path(folder) / name
        test_file.write_text(code, encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", folder, str(test_file)]
        if _can_unshare():
            cmd = ["unshare", "-rn", *cmd]  # a network namespace of its own: no network at all
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
                   PYTHONDONTWRITEBYTECODE="1")
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
            output = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            output = f"(stopped after {TEST_TIMEOUT_S} s)\n{e.stdout or ''}"
            return TestRun([], [], output, False)
    passed = re.findall(r"^(\S+::\S+) PASSED", output, re.M)
    failed = re.findall(r"^FAILED (\S+::\S+)", output, re.M)
    # -q prints no per-test lines for passes: count them from the summary.
    summary = re.search(r"(\d+) passed", output)
    if not passed and summary:
        passed = [f"{name}: {summary.group(1)} passed"]
    ok = proc.returncode == 0 and bool(summary)
    return TestRun(passed, failed, output, ok)


_UNSHARE: bool | None = None


def _can_unshare() -> bool:
    global _UNSHARE
    if _UNSHARE is None:
        try:
            _UNSHARE = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _UNSHARE = False
    return _UNSHARE
