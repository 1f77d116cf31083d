"""Derived checks: input/output expressions for a function with no tests of its own.

Its doctests, its calls with literal arguments in its file and folder, and generated
calls with arguments drawn from its own constants and sample values. A check says
nothing about correctness: it is run against the original and the rewrite
(:func:`server.assist.verify.verify_rewrite`), and only their agreement counts.

Threads: pure functions (they read the function's folder), any thread. Nothing here
imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import doctest
import itertools
import math
import random
from pathlib import Path

from .sandbox import read_left_file
from .targets import Target

MAX_CHECKS = 12            # derived input/output checks from the code (docstring examples, call sites) per function
MAX_GENERATED = 160        # generated calls per function (only those the original answers are compared)
# Values generated calls draw their arguments from (as Python source), besides the function's own constants.
SAMPLE_ARGS = ("0", "1", "2", "-3", "''", "'abc'", "[]", "[1]", "[1, 2, 3]", "[3, 1, 2, 1]", "(1, 2)",
               "{'a': 1, 'b': 2}", "None", "True", "2.5", "str", "len", "(lambda x: x)", "(lambda x: x % 2 == 0)",
               "[(1, 2), (3, 4)]",
               "{1, 2}", "b'ab'", "object()", "iter([1, 2])",
               # iterable by the old protocol only (__getitem__, no __iter__)
               "type('Seq', (), {'__getitem__': lambda self, i: [1, 2][i]})()")
# A parameter the function calls, reads as a mapping or iterates gets its values from these instead.
KIND_ARGS = {
    "callable": ("len", "str", "bool", "(lambda x: x)", "(lambda x: x % 2 == 0)", "dict", "list",
                 "__import__('collections').OrderedDict"),
    "mapping": ("{}", "{'a': 1, 'b': 2}", "{1: 2, 2: 3, 3: 4, 4: 5}"),
    "iterable": ("[]", "[1]", "[1, 2, 3]", "[3, 1, 2, 1]", "(1, 2)", "'abc'", "[(1, 2), (3, 4)]", "{'a': 1, 'b': 2}"),
}
MAPPING_METHODS = {"items", "keys", "values", "get", "copy", "update", "pop", "setdefault"}
ITERATING_CALLS = {"iter", "len", "list", "tuple", "set", "sorted", "sum", "enumerate", "zip", "map", "filter",
                   "reversed", "min", "max", "any", "all", "frozenset", "dict"}
# ... and, for a parameter that has a default, values of other types too: a factory (``factory=dict``), a
# container type whose result shows in its repr.
OPTIONAL_ARGS = ("dict", "list", "__import__('collections').OrderedDict", "False", "3")


def derived_checks(path: Path, text: str, t: Target, seed: int = 0) -> tuple[list[str], list[str]]:
    """Input/output checks for a module-level function: expressions such as ``f(1, [2, 3])``.

    Returns:
        ``(from the code, generated)``. From the code, up to MAX_CHECKS: the examples of its
        docstring (doctest ``>>>`` lines that call it), then its calls with literal arguments
        in the file and in the other Python files of its folder. Generated, up to
        MAX_GENERATED: calls with the required arguments drawn from its own constants and
        SAMPLE_ARGS (every combination for up to two, else a seeded sample), half of them
        also giving one parameter that has a default (by name, from the same values and
        OPTIONAL_ARGS), so a rewrite that ignores ``factory=`` is seen; only those the
        original answers without an exception are worth comparing.
        Checks say nothing about correctness: they are run against the original and the
        rewrite, and only their agreement counts. Methods get none.
    """
    if t.owner is not None:
        return [], []
    checks: list[str] = []

    def add(expr: str) -> None:
        if expr not in checks and len(checks) < MAX_CHECKS:
            checks.append(expr)
    try:
        fn = ast.parse(t.source).body[0]
    except (SyntaxError, IndexError):
        return [], []
    doc = ast.get_docstring(fn) or ""
    for example in doctest.DocTestParser().get_examples(doc):
        src = example.source.strip()
        if t.name in src and "\n" not in src and not src.startswith(("import", "from")):
            try:
                ast.parse(src, mode="eval")
                add(src)
            except SyntaxError:
                pass
    siblings = (read_left_file(p, 500_000) for p in sorted(path.parent.glob("*.py")) if p != path)
    sources = [text] + [source for source in siblings if source is not None][:50]
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == t.name and \
                    all(is_literal(a) for a in node.args) and all(is_literal(k.value) for k in node.keywords):
                add(ast.unparse(node))
    required = _required_args(fn)
    if required is None:
        return checks, []
    own = sorted({repr(n.value) for n in ast.walk(fn) if isinstance(n, ast.Constant) and
                  isinstance(n.value, (int, str, float)) and not isinstance(n.value, bool) and n is not
                  (fn.body[0].value if doc else None) and len(repr(n.value)) < 40})
    pool = list(dict.fromkeys(own[:8] + list(SAMPLE_ARGS)))
    a = fn.args
    positional = a.posonlyargs + a.args
    kinds = _param_kinds(fn)
    pools = [list(KIND_ARGS[kinds[p.arg]]) if p.arg in kinds else pool for p in positional[:required]]
    rng = random.Random(seed)
    combos = list(itertools.product(*pools)) if math.prod(map(len, pools)) <= 2000 else \
        [tuple(rng.choice(p) for p in pools) for _ in range(400)]
    rng.shuffle(combos)
    optional = [p.arg for p in positional[required:] if p not in a.posonlyargs] + [p.arg for p in a.kwonlyargs]
    generated = [f"{t.name}({', '.join(args)})" for args in combos[:MAX_GENERATED // (2 if optional else 1)]]
    extra = list(dict.fromkeys(pool + list(OPTIONAL_ARGS)))
    more = [(args, name, value) for args in combos[:40] for name in optional
            for value in (KIND_ARGS[kinds[name]] if name in kinds else extra)]
    for args, name, value in rng.sample(more, min(len(more), MAX_GENERATED - len(generated))):
        generated.append(f"{t.name}({', '.join(args + (f'{name}={value}',))})")
    return checks, [g for g in dict.fromkeys(generated) if g not in checks]


def _param_kinds(fn: ast.FunctionDef) -> dict[str, str]:
    """Parameters the body calls (``callable``), reads as a mapping (``.items()``...) or iterates (``iterable``)."""
    names = {p.arg for p in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
    kinds: dict[str, str] = {}
    for n in ast.walk(fn):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names:
            kinds.setdefault(n.func.id, "callable")
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in names \
                and n.attr in MAPPING_METHODS:
            kinds.setdefault(n.value.id, "mapping")
        elif isinstance(n, (ast.For, ast.comprehension)) and isinstance(n.iter, ast.Name) and n.iter.id in names:
            kinds.setdefault(n.iter.id, "iterable")
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ITERATING_CALLS:
            for arg in n.args[:1]:
                if isinstance(arg, ast.Name) and arg.id in names:
                    kinds.setdefault(arg.id, "iterable")
    return kinds


def is_literal(node: ast.AST) -> bool:
    """``node`` is a Python literal (``ast.literal_eval`` reads it)."""
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _required_args(fn: ast.AST) -> int | None:
    """How many positional arguments a call must give (None: it takes ``*args`` only or keyword-only ones)."""
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or isinstance(fn, ast.AsyncFunctionDef):
        return None
    a = fn.args
    if any(k for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is None):
        return None
    positional = a.posonlyargs + a.args
    required = len(positional) - len(a.defaults)
    return required if 0 < required <= 4 else None
