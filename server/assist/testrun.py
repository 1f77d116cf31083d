"""Running generated tests: pytest from the workspace's own environment, in the sandbox, with a time limit.

The interpreter is the workspace's (``.venv``, ``venv`` or ``env`` in its root) when it has
pytest, because that is where the user's dependencies are; else this server's own when it
has pytest; else the tests are written but not run, and the reply says how to get pytest.
Nothing of the workspace runs outside the sandbox: its interpreter is chosen by reading its
virtual environment's files (``pyvenv.cfg``, the ``pytest`` package folder), never by running it.
pytest is pinned to a private folder: its own empty config file, rootdir and conftest
boundary, so a ``pytest.ini`` or ``conftest.py`` planted in a parent folder (``/tmp``) is
never read. Run from a worker thread: it blocks for up to TEST_TIMEOUT_S seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sandbox
from .records import TestRun

TEST_TIMEOUT_S = 60        # a generated test run is stopped after this long (wall clock)
CALL_TIMEOUT_S = 5         # one test call or one check is stopped after this long (counts as failed)
DRIVER = Path(__file__).with_name("driver.py")  # runs the variants inside the sandbox
SANDBOX_MODES = ("bubblewrap", "none", "off")
RESULTS_MAX_BYTES = 8 * 2**20  # results.json larger than this is not read (the run counts as ended early)
COLLECT_MAX_BYTES = 2 * 2**20  # a collected file larger than this is left out
VENV_PYTHONS = (".venv/bin/python", "venv/bin/python", "env/bin/python", ".venv/Scripts/python.exe",
                "venv/Scripts/python.exe")


def _venv_has_pytest(venv: Path) -> bool:
    """Whether a virtual environment's site-packages hold pytest, read from its files (nothing is run)."""
    return any(venv.glob("lib/python3*/site-packages/pytest/__init__.py")) or \
        any(venv.glob("Lib/site-packages/pytest/__init__.py"))


def _has_pytest() -> bool:
    """Whether this server's own interpreter can import pytest (asked in this process)."""
    return importlib.util.find_spec("pytest") is not None


def find_python(root: Path) -> tuple[str | None, str]:
    """The interpreter to run the tests with, or (None, why not). Runs nothing.

    A workspace interpreter counts when its folder has ``pyvenv.cfg`` and pytest in its
    site-packages; it is then started only inside the sandbox.
    """
    tried = []
    for rel in VENV_PYTHONS:
        python = root / rel
        if os.path.lexists(python):
            venv = python.parent.parent
            if (venv / "pyvenv.cfg").is_file() and _venv_has_pytest(venv):
                return str(python), ""
            tried.append(str(python))
    if _has_pytest():
        return sys.executable, ""
    where = f"the workspace's environment ({tried[0]})" if tried else "no environment in the workspace"
    fix = f"{tried[0]} -m pip install pytest" if tried else "python3 -m venv .venv && .venv/bin/pip install pytest"
    return None, f"pytest is not installed: {where}, nor deepseek-lsp's own; fix: {fix}"


def not_run(reason: str) -> TestRun:
    return TestRun([], [], "", False, ran=False, reason=reason)


@dataclass(frozen=True)
class VariantRun:
    """One variant's run in the driver: each test's outcome by node id, each check's result text.

    ``error`` is set when the variant could not be run at all (the module does not import,
    the patch does not compile); ``output`` is pytest's terminal output (its end).
    """

    label: str
    tests: dict[str, str]
    checks: list[str]
    output: str
    error: str = ""

    @property
    def passed(self) -> list[str]:
        return [t for t, o in self.tests.items() if o == "passed"]

    @property
    def failed(self) -> list[str]:
        return [t for t, o in self.tests.items() if o == "failed"]


@dataclass(frozen=True)
class Variants:
    """What :func:`run_variants` did: the runs in plan order, or why nothing (or not all) ran.

    ``ran`` is False when nothing was started (``reason`` then says why, with the fix). Else
    ``reason`` is "" when every variant ran, ``timeout``/``cancelled`` when the run was stopped,
    or why the process ended early; ``runs`` then holds the variants that finished.
    """

    runs: list[VariantRun]
    reason: str = ""
    output: str = ""
    ran: bool = True
    collected: dict[str, str] = field(default_factory=dict)


def run_variants(root: Path, variants: list[dict[str, Any]], *, module: str | None = None,
                 test_files: list[str] = (), generated: tuple[str, str] | None = None, checks: list[str] = (),
                 cancel: threading.Event | None = None, mode: str = "bubblewrap",
                 timeout_s: float | None = None, collect: tuple[str, ...] = (),
                 only_if_first_passes: bool = False) -> Variants:
    """Run tests and checks against several variants of a module's code, in one sandboxed process.

    Args:
        root: the workspace folder (read-only inside the sandbox, on the import path).
        variants: ``[{"label", "patches": [{"owner": class name or None, "source": code}]}]``;
            see ``driver.py`` for how a patch replaces code. An empty ``patches`` is the code as it is.
        module: the dotted module the patches and checks apply to.
        test_files: pytest node ids or files in the workspace (their conftest.py files are read).
        generated: ``(file name, source)`` of a test module written into the private folder.
        checks: Python expressions evaluated in the module's namespace.
        cancel: set to stop at once (the process tree is killed).
        mode: ``bubblewrap``, ``none`` or ``off`` (see :func:`run_pytest`).
        timeout_s: the whole run's wall-clock limit (TEST_TIMEOUT_S when None).
        collect: names of files the run writes in its private folder (beside the generated
            test module), returned as text in ``collected`` (a missing file is left out).
        only_if_first_passes: run the other variants only when every test passed on the first
            (the runs then hold just the first, and that is not an early end).

    Returns:
        The runs; never raises for what the code under test does.
    """
    if mode == "off":
        return Variants([], "tests are not run: tests.sandbox is off", ran=False)
    if mode == "bubblewrap" and not (ok := sandbox.available())[0]:
        return Variants([], f"{ok[1]}; {sandbox.INSTALL_HINT}", ran=False)
    python, why = find_python(root)
    if python is None:
        return Variants([], why, ran=False)
    timeout_s = timeout_s or TEST_TIMEOUT_S
    scratch = Path(tempfile.mkdtemp(prefix="deepseek-tests-"))
    try:
        ini = scratch / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        pytest_args = list(test_files)
        confcut = root if test_files else scratch
        if generated is not None:
            (scratch / generated[0]).write_text(generated[1], encoding="utf-8")
            pytest_args.append(str(scratch / generated[0]))
        if pytest_args:
            pytest_args += ["-q", "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(scratch),
                            "--confcutdir", str(confcut)]
        plan = {"module": module, "pytest_args": pytest_args, "checks": list(checks), "variants": variants,
                "call_timeout_s": CALL_TIMEOUT_S, "only_if_first_passes": only_if_first_passes}
        (scratch / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        shutil.copy(DRIVER, scratch / "deepseek_driver.py")
        results = scratch / "results.json"
        cmd = [python, str(scratch / "deepseek_driver.py"), str(scratch / "plan.json"), str(results)]
        env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(root),
               "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}
        if mode == "none":
            result = sandbox.run_unsandboxed(cmd, scratch=scratch, env=env, timeout_s=timeout_s, cancel=cancel)
        else:
            result = sandbox.run(cmd, workspace=root.resolve(), scratch=scratch,
                                 python_paths=sandbox.interpreter_paths(python), env=env, timeout_s=timeout_s,
                                 cancel=cancel)
        if not result.started:
            return Variants([], f"the sandbox did not start: {result.output[-500:] or 'no reason given'}",
                            result.output, ran=False)
        raw = _parse_results(sandbox.read_left_file(results, RESULTS_MAX_BYTES))
        collected = {name: text for name in collect
                     if (text := sandbox.read_left_file(scratch / name, COLLECT_MAX_BYTES)) is not None}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    runs = [r for r in map(_variant_run, raw) if r is not None]
    if result.stopped:
        return Variants(runs, result.stopped, result.output, collected=collected)
    stopped_on_purpose = only_if_first_passes and len(runs) == 1 and (runs[0].failed or not runs[0].passed)
    if len(runs) < len(variants) and not stopped_on_purpose:
        return Variants(runs, f"the test process ended early (exit code {result.returncode})", result.output,
                        collected=collected)
    return Variants(runs, "", result.output, collected=collected)


def _parse_results(text: str | None) -> list[Any]:
    """The driver's results.json (written where the code under test could write too): a list, or []."""
    try:
        raw = json.loads(text) if text else []
    except ValueError:
        return []
    return raw if isinstance(raw, list) else []


def _variant_run(entry: Any) -> VariantRun | None:
    """One results.json entry, or None when it does not have the driver's shape."""
    try:
        tests = {str(k): str(v) for k, v in entry["tests"].items()}
        return VariantRun(str(entry["label"]), tests, [str(c) for c in entry["checks"]], str(entry["output"]),
                          str(entry["error"]))
    except (KeyError, TypeError, AttributeError):
        return None


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
    result = run_variants(root, [{"label": "original", "patches": []}], generated=(name, code), cancel=cancel,
                          mode=mode)
    return as_test_run(result)


def as_test_run(result: Variants, index: int = 0) -> TestRun:
    """The :class:`TestRun` of one variant of a :func:`run_variants` result (the first: the code as it is)."""
    if not result.ran:
        reason = result.reason if result.reason.startswith("tests are not run") else \
            f"tests were written but not run: {result.reason}"
        return not_run(reason)
    if result.reason in ("timeout", "cancelled") and len(result.runs) <= index:
        what = f"stopped after {TEST_TIMEOUT_S} s" if result.reason == "timeout" else "cancelled"
        return TestRun([], [], f"({what})\n{result.output}", False, reason=result.reason)
    if len(result.runs) <= index:
        return TestRun([], [], f"({result.reason})\n{result.output}", False, reason=result.reason)
    run = result.runs[index]
    output = run.output or result.output
    if run.error:
        return TestRun([], [], f"{run.error}\n{output}", False)
    return TestRun(run.passed, run.failed, output, bool(run.passed) and not run.failed)
