"""The import graph of server/ and index/, read from the source with ``ast`` (nothing is imported).

    python -m tests.module_graph [ROOT]

prints each module's imports of other project modules, the cycles, every ``_private``
name imported across packages, and the longest modules and classes. tests/test_imports.py
asserts there are no cycles and no private cross-package imports.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("server", "index")


@dataclass
class Module:
    name: str                      # dotted, e.g. server.engine
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)           # project modules imported (any scope)
    private: list[str] = field(default_factory=list)         # "_name from pkg.mod" across packages
    classes: dict[str, int] = field(default_factory=dict)    # class name -> lines
    unresolved: list[str] = field(default_factory=list)      # project imports naming no module


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def load(root: Path) -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__") if rel.name == "__init__" else ".".join(rel.parts)
            text = path.read_text(encoding="utf-8")
            mods[name] = Module(name, path, text.count("\n"))
    for name, mod in mods.items():
        tree = ast.parse(mod.path.read_text(encoding="utf-8"))
        is_pkg = mod.path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                mod.classes[node.name] = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        mod.imports.add(_target(mods, alias.name))
                        if alias.name not in mods:
                            mod.unresolved.append(alias.name)
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(name + (".__init__" if is_pkg else ""), node)
                if src.split(".")[0] not in PACKAGES:
                    continue
                if src not in mods:
                    mod.unresolved.append(src)
                for alias in node.names:
                    full = f"{src}.{alias.name}"
                    target = full if full in mods else _target(mods, src)
                    mod.imports.add(target)
                    if alias.name.startswith("_") and target.split(".")[0] != name.split(".")[0]:
                        mod.private.append(f"{alias.name} from {src}")
        mod.imports.discard(name)
    return mods


def _target(mods: dict[str, Module], dotted: str) -> str:
    while dotted and dotted not in mods:
        dotted = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    return dotted


def cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in mods[v].imports:
            if w not in mods:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    mods = load(root)
    for name in sorted(mods):
        deps = sorted(d for d in mods[name].imports if d)
        print(f"{name} ({mods[name].lines} lines) -> {', '.join(deps) or '-'}")
    found = cycles(mods)
    print(f"\ncycles: {found or 'none'}")
    private = [f"{m.name}: {p}" for m in mods.values() for p in m.private]
    print(f"private names imported across packages: {private or 'none'}")
    unresolved = [f"{m.name}: {u}" for m in mods.values() for u in m.unresolved]
    print(f"imports of modules that do not exist: {unresolved or 'none'}")
    biggest = sorted(mods.values(), key=lambda m: -m.lines)[:5]
    print("longest modules: " + ", ".join(f"{m.name} {m.lines}" for m in biggest))
    classes = sorted(((n, c, m.name) for m in mods.values() for c, n in m.classes.items()), reverse=True)[:5]
    print("longest classes: " + ", ".join(f"{m}.{c} {n}" for n, c, m in classes))


if __name__ == "__main__":
    main()
