"""Checking the assistant's work by running code: a rewrite against the original, tests against mutants.

- :func:`verify_rewrite`: the workspace's own tests of a function (:func:`workspace_tests`)
  and checks derived from it (:mod:`.checks`), run on the original and on the rewrite
  (applied as :func:`rewrite_patches`); any difference refuses the rewrite.
- :func:`mutation_score`: generated tests run on the function as it is and on its mutants
  (:mod:`.mutants`).

The runs themselves happen in the sandbox, through :func:`server.assist.testrun.run_variants`;
where the function lives is :func:`server.assist.targets.target`. Python only.

Threads: a worker thread (each call blocks for the runs, up to testrun's time limits).
Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path

from .checks import derived_checks
from .mutants import mutants
from .records import CodeSpan, MutationScore, Verification
from .sandbox import read_left_file
from .targets import Target, target
from .testrun import Variants, run_variants

MAX_TEST_FILES = 2000      # workspace files looked at when searching for its tests
MAX_TESTS = 60             # workspace tests run to verify a rewrite
SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", "node_modules", "site-packages", "build", "dist", "__pycache__",
             ".tox", ".nox", ".mypy_cache", ".pytest_cache"}


# -- a rewrite as patches ----------------------------------------------------------------------
def rewrite_patches(before: str, after: str) -> list[dict] | str:
    """The definitions a rewrite changed, as driver patches, or why it cannot be run that way.

    ``before`` and ``after`` are the whole file before and after the edit. Every top-level
    function, import or assignment of ``after`` that is not in ``before`` (compared as
    ``ast.dump``) becomes part of a module patch; changed methods of a top-level class become
    patches of that class. A changed class statement other than a method, or a top-level
    statement that is neither a definition, an import nor an assignment, cannot be patched
    in safely: the reason is returned.
    """
    try:
        old_tree, new_tree = ast.parse(before), ast.parse(after)
    except SyntaxError as e:
        return f"the file does not parse ({e.msg}, line {e.lineno})"
    old = {ast.dump(n) for n in old_tree.body}
    old_classes = {n.name: {ast.dump(m) for m in n.body} for n in old_tree.body if isinstance(n, ast.ClassDef)}
    module_part: list[str] = []
    patches: list[dict] = []
    for node in new_tree.body:
        if ast.dump(node) in old:
            continue
        if isinstance(node, ast.ClassDef) and node.name in old_classes:
            changed = [m for m in node.body if ast.dump(m) not in old_classes[node.name]]
            if any(not isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) for m in changed):
                return f"the rewrite changes the body of class {node.name} beyond its methods"
            patches.append({"owner": node.name, "source": "\n\n".join(ast.unparse(m) for m in changed) + "\n"})
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Import, ast.ImportFrom, ast.Assign,
                               ast.AnnAssign)):
            module_part.append(ast.unparse(node))
        else:
            return f"the rewrite changes a top-level statement at line {node.lineno} that cannot be run on its own"
    if module_part:
        patches.insert(0, {"owner": None, "source": "\n\n".join(module_part) + "\n"})
    return patches


# -- the workspace's tests -----------------------------------------------------------------------
def test_files(root: Path):
    """The workspace's test modules (``test_*.py``, ``*_test.py``), skipping virtual environments and other
    folders no test of the project lives in; at most MAX_TEST_FILES."""
    seen = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")):
                seen += 1
                if seen > MAX_TEST_FILES:
                    return
                yield Path(folder) / name


def workspace_tests(root: Path, module: str, name: str, limit: int = MAX_TESTS) -> list[str]:
    """Node ids (``path::test`` or ``path::Class::test``) of the workspace's tests that exercise ``name``.

    A test counts when its file imports ``module``'s top-level package (or the module) and
    the test function's own body uses the name ``name``.
    """
    top = module.split(".")[0]
    found: list[str] = []
    for path in test_files(root):
        text = read_left_file(path, 1_000_000)  # a FIFO or a link planted as a test file is skipped
        if text is None or name not in text or top not in text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        imported = any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == top for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").split(".")[0] == top)
            for n in ast.walk(tree))
        if not imported:
            continue
        for node in tree.body:
            funcs = [(None, node)] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else \
                [(node.name, m) for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))] \
                if isinstance(node, ast.ClassDef) and node.name.startswith("Test") else []
            for cls, fn in funcs:
                if fn.name.startswith("test") and _uses(fn, name):
                    found.append(f"{path}::{cls}::{fn.name}" if cls else f"{path}::{fn.name}")
                    if len(found) >= limit:
                        return found
    return found


def _uses(fn: ast.AST, name: str) -> bool:
    return any((isinstance(n, ast.Name) and n.id == name) or (isinstance(n, ast.Attribute) and n.attr == name)
               for n in ast.walk(fn))


# -- verdicts ------------------------------------------------------------------------------------
def _shown(result: str) -> str:
    return f"`{result[2:][:100]}`" if result.startswith("= ") else result[:100]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def verify_rewrite(root: Path, span: CodeSpan, after: str, cancel: threading.Event | None = None,
                   mode: str = "bubblewrap", timeout_s: float | None = None) -> Verification:
    """Run the workspace's tests of the span's function and derived checks against the original and ``after``.

    Args:
        root: the workspace folder.
        span: the code that was rewritten (its ``text`` is the file before).
        after: the whole file after the rewrite.
        cancel: set to stop the run (the verdict is then ``unverified``).
        mode: the sandbox mode (``tests.sandbox``).
        timeout_s: wall-clock limit of the run (testrun's TEST_TIMEOUT_S when None).

    Returns:
        The :class:`Verification`; never raises for what the code does.
    """
    if span.language != "python":
        return Verification("unverified", f"not verified: only Python is run to check a rewrite ({span.language} "
                                          "is not)")
    t = target(root, span.path, span.text, span.start_line, span.end_line)
    if isinstance(t, str):
        return Verification("unverified", f"not verified: {t}")
    patches = rewrite_patches(span.text, after)
    if isinstance(patches, str):
        return Verification("unverified", f"not verified: {patches}")
    tests = workspace_tests(root, t.module, t.name)
    explicit, generated = derived_checks(span.path, span.text, t)
    variants = [{"label": "original", "patches": []}, {"label": "original again", "patches": []},
                {"label": "rewrite", "patches": patches}]
    result = run_variants(root, variants, module=t.module, test_files=tests, checks=explicit + generated,
                          cancel=cancel, mode=mode, timeout_s=timeout_s)
    return _compare(result, t.name, explicit + generated, len(explicit))


def _compare(result: Variants, name: str, checks: list[str], n_explicit: int) -> Verification:
    if len(result.runs) < 3:
        why = result.reason if result.reason not in ("timeout", "cancelled") else \
            "the run was cancelled" if result.reason == "cancelled" else "the run took too long"
        return Verification("unverified", f"not verified: {why}")
    original, again, rewrite = result.runs
    if original.error:
        return Verification("unverified", f"not verified: {original.error}")
    if rewrite.error:
        return Verification("changed", f"the rewrite does not run: {rewrite.error}", differences=[rewrite.error])
    baseline = [t for t in original.passed if again.tests.get(t) == "passed"]
    differences = [f"test {t.rsplit('::', 1)[-1]} passed before the rewrite and {rewrite.tests.get(t, 'did not run')} "
                   "after" for t in baseline if rewrite.tests.get(t) != "passed"]
    compared = 0
    for i, (before, twice, now) in enumerate(zip(original.checks, again.checks, rewrite.checks)):
        if before != twice or (i >= n_explicit and not before.startswith("= ")) or before == "timeout":
            continue  # not deterministic, or a generated call the original does not answer
        compared += 1
        if now != before:
            differences.append(f"`{checks[i][:80]}` gave {_shown(before)} before and {_shown(now)} after")
    if differences:
        return Verification("changed", f"the rewrite changes behaviour: {differences[0]}", len(baseline), compared,
                            differences)
    if not baseline and not compared:
        return Verification("unverified", f"not verified: no test in the workspace exercises `{name}` and no check "
                                          "could be derived from it")
    parts = ([f"{_plural(len(baseline), 'test')} still pass" if len(baseline) != 1 else "1 test still passes"]
             if baseline else []) + ([f"{_plural(compared, 'check')} agree" if compared != 1 else "1 check agrees"]
                                     if compared else [])
    return Verification("kept", ", ".join(parts), len(baseline), compared)


def mutation_score(root: Path, span: CodeSpan, test_name: str, test_code: str,
                   cancel: threading.Event | None = None, mode: str = "bubblewrap") -> tuple[Variants, MutationScore]:
    """Run a generated test module on the span's function as it is and on up to MAX_MUTANTS mutants of it.

    Returns:
        The raw runs (first: the code as it is) and the score. Mutants are only tried when the
        span is a function of an importable module and every test passed on the code as it is
        (else ``reason`` says why).
    """
    t = target(root, span.path, span.text, span.start_line, span.end_line) if span.language == "python" else \
        "not Python"
    broken = mutants(t.source, first_line=t.line) if isinstance(t, Target) else []
    variants = [{"label": "original", "patches": []}] + [
        {"label": m.description, "patches": [{"owner": t.owner, "source": m.source}], "pytest_extra": ["-x"]}
        for m in broken]
    result = run_variants(root, variants, module=t.module if isinstance(t, Target) else None,
                          generated=(test_name, test_code), cancel=cancel, mode=mode, only_if_first_passes=True)
    if not result.runs:
        return result, MutationScore([], [], 0, 0, [], result.output, result.reason)
    first = result.runs[0]
    reason = t if isinstance(t, str) else "no operator, constant or return to change" if not broken else \
        "" if len(result.runs) > 1 or result.reason else "the tests do not all pass on the code as it is"
    caught, survivors = 0, []
    for m, run in zip(broken, result.runs[1:]):
        if run.failed:
            caught += 1
        else:
            survivors.append(m)
    return result, MutationScore(first.passed, first.failed, len(result.runs) - 1, caught, survivors,
                                 first.output or result.output, reason)
