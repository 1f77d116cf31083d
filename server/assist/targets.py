"""Where a span's code lives at run time (its module and the class owning it), and where its tests go.

Verification runs a function by importing its module from the workspace root, so a
span is runnable only when it is a function (or a method of a top-level class) of an
importable module (:func:`target`, Python only). Write tests puts its tests in the
language's conventional test file inside the span's workspace folder (:func:`workspace_root`,
:func:`where_tests_go`).

Threads: pure functions, any thread. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .records import AssistError, CodeSpan


@dataclass(frozen=True)
class Target:
    """Where a Python definition lives at run time.

    Attributes:
        module: dotted module name relative to the workspace root (``pkg.mod``).
        owner: the top-level class the definition belongs to, or None for a module-level one.
        name: the function's name.
        source: the definition's source, dedented (decorators included).
        line: its first line in the file (0-based, decorators included).
    """

    module: str
    owner: str | None
    name: str
    source: str
    line: int


def module_name(root: Path, path: Path) -> str | None:
    """The dotted module of ``path`` under ``root`` (``pkg/mod.py`` → ``pkg.mod``), or None outside it."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


def target(root: Path, path: Path, text: str, start_line: int, end_line: int) -> Target | str:
    """The function defined at lines ``start_line..end_line`` (0-based) of a Python file, or why there is none.

    Returns:
        A :class:`Target`, or a sentence saying why the code cannot be run on its own (not a
        function, nested in another function, outside the workspace, the file does not parse).
    """
    module = module_name(root, path)
    if module is None:
        return f"{path.name} is not an importable module of the workspace"
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return f"{path.name} does not parse"
    for node in tree.body:
        owner, candidates = None, [node]
        if isinstance(node, ast.ClassDef):
            owner, candidates = node.name, node.body
        for fn in candidates:
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
            if first <= end_line and fn.end_lineno - 1 >= start_line:
                lines = text.splitlines(keepends=True)[first:fn.end_lineno]
                return Target(module, owner, fn.name, textwrap.dedent("".join(lines)), first)
    return "the selection is not a function (or a method of a top-level class)"


def workspace_root(roots: Iterable[Path], path: Path) -> Path:
    """The first of the workspace folders ``roots`` that holds ``path`` (symbolic links resolved),
    or the file's own folder when none does."""
    return next((r for r in roots if path.resolve().is_relative_to(r.resolve())), path.parent)


def conventional_test_path(root: Path, span: CodeSpan) -> Path:
    """The conventional test file: tests/test_<module>.py under the workspace ``root`` (Python), or
    next to the file in the language's convention (``x.test.ts``, ``x_test.go``, ``test_x.rb``)."""
    stem = span.path.stem
    if span.language == "python":
        return root / "tests" / f"test_{stem}.py"
    if span.language in ("javascript", "typescript", "tsx"):
        return span.path.with_name(f"{stem}.test{span.path.suffix}")
    if span.language == "go":
        return span.path.with_name(f"{stem}_test.go")
    return span.path.with_name(f"test_{span.path.name}")


def where_tests_go(root: Path, span: CodeSpan) -> Path:
    """Where Write tests writes the tests of ``span``: :func:`conventional_test_path`, checked.

    Raises:
        AssistError: the span's file is not saved on disk (the tests import it), or the test
            file leads outside ``root`` (a symbolic link out of the workspace).
    """
    if not span.path.is_file():
        raise AssistError(f"{span.path.name} is not saved on disk: save it first (the tests import it "
                          "from the file and run against it)")
    path = conventional_test_path(root, span)
    if not path.resolve().is_relative_to(root.resolve()):
        raise AssistError(f"{path.relative_to(root)} leads outside the workspace (a symbolic link "
                          f"to {path.resolve().parent}): Write tests writes only inside {root}")
    return path
