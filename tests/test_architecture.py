"""The floor plan holds: rooms of a readable size (docs/ARCHITECTURE.md).

No module of server/ or index/ over MAX_MODULE_LINES lines and no class over
MAX_CLASS_LINES: a module or a class that grows past them has taken a second job, and is
two (docs/ARCHITECTURE.md says where each job lives).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250


def _sources():
    for package in ("server", "index"):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_module_over_500_lines():
    big = {str(p.relative_to(ROOT)): n for p in _sources()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert big == {}


def test_no_class_over_250_lines():
    big = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (n := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                big[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert big == {}
