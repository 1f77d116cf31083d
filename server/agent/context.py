"""What the agent is shown before its first turn: the failing tests' code and the workspace code they call.

A person fixing a failing test reads the test, then the functions it calls. A small model
given only the test's name spends its few steps finding them (or edits the test), so the
server does that reading first, as chat adds the selection: for each test node id the task
names (``path::test`` or ``path::Class::test``), the test function's source, then the
top-level definitions of the workspace that it calls by name, found in the modules of the
packages the test file imports (at most :data:`MAX_DEFINITIONS`, each cut to
:data:`MAX_LINES` lines), each with its path and line numbers as ``read_file`` shows them.
Files the index's rule keeps out of prompts are left out. Runs nothing; reads files only.

Threads: any (a worker thread). Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..assist.verify import SKIP_DIRS
from .edits import first_line

MAX_DEFINITIONS = 3      # workspace definitions shown per task
MAX_LINES = 60           # lines shown per definition or test
MAX_FILES = 2000         # workspace files looked at for definitions
FILE_BYTES = 400_000     # a larger file is not read


def _read(path: Path, readable: Callable[[Path, str], bool] | None) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > FILE_BYTES:
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text if readable is None or readable(path, text) else None


def _numbered(rel: str, text: str, start: int, end: int, shown: list | None = None, numbered: bool = True) -> str:
    lines = text.splitlines()[start - 1:min(end, start + MAX_LINES - 1)]
    if shown is not None:
        shown.append((rel, start, start + len(lines) - 1))
    cut = "" if end - start + 1 <= MAX_LINES else f"\n      ... ({end - start + 1 - MAX_LINES} more lines)"
    if not numbered:  # as code (the agent's drafts: a model copies line numbers into the code it writes)
        return f"{rel}, lines {start}-{start + len(lines) - 1}:\n```python\n" + "\n".join(lines) + f"\n```{cut}"
    body = "\n".join(f"{n:>5} {line}" for n, line in enumerate(lines, start))
    return f"{rel}, lines {start}-{start + len(lines) - 1}:\n{body}{cut}"


def is_test_file(path: Path) -> bool:
    """A test module or pytest's conftest.py, by name, or anything under a ``tests``/``test`` folder."""
    return path.name.startswith("test_") or path.name.endswith("_test.py") or path.name == "conftest.py" or \
        "tests" in path.parts or "test" in path.parts


@dataclass
class TaskCode:
    """The code a task is about, read once, shown as often as needed (:meth:`render`).

    Attributes:
        tests: ``(node id, path relative to the root, file text, first line, last line)`` of each test.
        definitions: ``(path relative to the root, file text, first line, last line)`` of each workspace
            definition the tests call, in the order they call them (at most :data:`MAX_DEFINITIONS`).
    """

    tests: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    definitions: list[tuple[str, str, int, int]] = field(default_factory=list)

    def render(self, shown: list[tuple[str, int, int]] | None = None, numbered: bool = True,
               with_tests: bool = True) -> str:
        """The tests' code and the definitions, as text for a prompt; "" when there is none.

        Args:
            shown: when given, each (path relative to the root, first line, last line) shown is appended.
            numbered: each line with its number (as ``read_file`` shows it), else as fenced code.
            with_tests: the tests' own code too (else only the definitions they call).
        """
        parts = [f"The test {node_id.split('/')[-1]}, {_numbered(rel, text, first, last, shown, numbered)}"
                 for node_id, rel, text, first, last in (self.tests if with_tests else [])]
        if self.definitions:
            parts.append("Code of the workspace that the test calls:\n\n" + "\n\n".join(
                _numbered(*d, shown, numbered) for d in self.definitions))
        return "\n\n".join(parts)


def read_task_code(root: Path, node_ids: list[str], readable: Callable[[Path, str], bool] | None = None) -> TaskCode:
    """The tests ``node_ids`` name and the workspace definitions they call (one walk of the workspace).

    Args:
        root: the workspace folder.
        node_ids: pytest node ids (absolute or relative to ``root``).
        readable: the index's rule for a file (None: every file inside ``root``).
    """
    root = root.resolve()
    code = TaskCode()
    called: list[str] = []
    packages: set[str] = set()
    for node_id in node_ids:
        file, _, rest = node_id.partition("::")
        path = Path(file) if Path(file).is_absolute() else root / file
        text = _read(path, readable)
        if text is None or not rest:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        body = tree.body
        fn = None
        for name in rest.split("::"):
            node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                         and n.name == name.split("[")[0]), None)
            if node is None:
                fn = None
                break
            fn, body = node, getattr(node, "body", [])
        if fn is None:
            continue
        rel = str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else path.name
        code.tests.append((node_id, rel, text, fn.lineno, fn.end_lineno))
        for n in ast.walk(fn):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id not in called:
                called.append(n.func.id)  # a name the test file imported (a method call is not followed)
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                packages.add(n.module.split(".")[0])
            elif isinstance(n, ast.Import):
                packages.update(a.name.split(".")[0] for a in n.names)
    if called and packages:
        code.definitions = _definitions(root, called, packages, readable)
    return code


def _definitions(root: Path, names: list[str], packages: set[str],
                 readable: Callable[[Path, str], bool] | None) -> list[tuple[str, str, int, int]]:
    """Top-level definitions of ``names`` (in the order the test calls them) in the packages' non-test modules."""
    wanted = {n: i for i, n in enumerate(names)}
    hits: list[tuple[int, str]] = []
    seen = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        rel_folder = Path(folder).relative_to(root)
        if not rel_folder.parts or rel_folder.parts[0] not in packages:
            if rel_folder.parts:
                dirs[:] = []
            files = [f for f in files if f[:-3] in packages] if not rel_folder.parts else []
        for name in sorted(files):
            path = Path(folder) / name
            if not name.endswith(".py") or is_test_file(path.relative_to(root)):
                continue
            seen += 1
            if seen > MAX_FILES:
                break
            text = _read(path, readable)
            if text is None or not any(f"def {n}" in text or f"class {n}" in text for n in wanted):
                continue
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in wanted:
                    first = first_line(node)
                    hits.append((wanted[node.name], (str(path.relative_to(root)), text, first, node.end_lineno)))
    hits.sort(key=lambda h: h[0])
    return [h for _, h in hits[:MAX_DEFINITIONS]]
