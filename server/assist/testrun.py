"""Running generated tests: pytest from the workspace's own environment, in the sandbox, with a time limit.

The interpreter is the workspace's (``.venv``, ``venv`` or ``env`` in its root) when it has
pytest, because that is where the user's dependencies are; else this server's own when it
has pytest; else the tests are written but not run, and the reply says how to get pytest.
pytest is pinned to a private folder: its own empty config file, rootdir and conftest
boundary, so a ``pytest.ini`` or ``conftest.py`` planted in a parent folder (``/tmp``) is
never read. Run from a worker thread: it blocks for up to TEST_TIMEOUT_S seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import sandbox
from .records import TestRun

TEST_TIMEOUT_S = 60        # a generated test run is stopped after this long (wall clock)
SANDBOX_MODES = ("bubblewrap", "none", "off")
VENV_PYTHONS = (".venv/bin/python", "venv/bin/python", "env/bin/python", ".venv/Scripts/python.exe",
                "venv/Scripts/python.exe")


def _has_pytest(python: str) -> bool:
    try:
        return subprocess.run([python, "-I", "-c", "import pytest"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_python(root: Path) -> tuple[str | None, str]:
    """The interpreter to run the tests with, or (None, why not)."""
    tried = []
    for rel in VENV_PYTHONS:
        python = root / rel
        if python.exists():
            if _has_pytest(str(python)):
                return str(python), ""
            tried.append(str(python))
    if _has_pytest(sys.executable):
        return sys.executable, ""
    where = f"the workspace's environment ({tried[0]})" if tried else "no environment in the workspace"
    fix = f"{tried[0]} -m pip install pytest" if tried else "python3 -m venv .venv && .venv/bin/pip install pytest"
    return None, f"pytest is not installed: {where}, nor deepseek-lsp's own; fix: {fix}"


def not_run(reason: str) -> TestRun:
    return TestRun([], [], "", False, ran=False, reason=reason)


def run_pytest(root: Path, name: str, code: str, cancel: threading.Event | None = None,
               mode: str = "bubblewrap") -> TestRun:
    """Run a test module with pytest, the workspace on its import path, in the sandbox ``mode`` names.

    Args:
        root: the workspace folder (read-only inside the sandbox).
        name: the test module's file name.
        code: its source.
        cancel: set to stop the run at once (the whole process tree is killed).
        mode: ``bubblewrap`` (the sandbox; not run when unavailable), ``none`` (no file or network
            isolation, limits only), ``off`` (never run).
    """
    if mode == "off":
        return not_run("tests are not run: tests.sandbox is off")
    if mode == "bubblewrap" and not (ok := sandbox.available())[0]:
        return not_run(f"tests were written but not run: {ok[1]}; {sandbox.INSTALL_HINT}")
    python, why = find_python(root)
    if python is None:
        return not_run(f"tests were written but not run: {why}")
    scratch = Path(tempfile.mkdtemp(prefix="deepseek-tests-"))
    try:
        test_file = scratch / name
        test_file.write_text(code, encoding="utf-8")
        ini = scratch / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(scratch),
               "--confcutdir", str(scratch), str(test_file)]
        env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(root),
               "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}
        if mode == "none":
            result = sandbox.run_unsandboxed(cmd, scratch=scratch, env=env, timeout_s=TEST_TIMEOUT_S, cancel=cancel)
        else:
            result = sandbox.run(cmd, workspace=root.resolve(), scratch=scratch,
                                 python_paths=sandbox.interpreter_paths(python), env=env, timeout_s=TEST_TIMEOUT_S,
                                 cancel=cancel)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = result.output
    if result.stopped:
        what = f"stopped after {TEST_TIMEOUT_S} s" if result.stopped == "timeout" else "cancelled"
        return TestRun([], [], f"({what})\n{output}", False, reason=result.stopped)
    passed = re.findall(r"^(\S+::\S+) PASSED", output, re.M)
    failed = re.findall(r"^FAILED (\S+::\S+)", output, re.M)
    # -q prints no per-test lines for passes: count them from the summary.
    summary = re.search(r"(\d+) passed", output)
    if not passed and summary:
        passed = [f"{name}: {summary.group(1)} passed"]
    return TestRun(passed, failed, output, result.returncode == 0 and bool(summary))
