"""Checking the assistant's work by running code: mutants of a function, a rewrite against the original.

- :func:`mutants`: deliberately broken copies of a Python function (a comparison, an
  arithmetic or boolean operator, a constant or a return value changed), one change each,
  made with ``ast``. Generated tests are kept only when they catch one.
- :func:`target`: where a span's code lives at run time (the module, the class owning it).
- :func:`rewrite_patches`: what a refactor changes, as patches the sandbox driver applies.
- :func:`workspace_tests`: the workspace's own tests that exercise a function, found by
  name and import.
- :func:`derived_checks`: input/output checks for a function with no tests: its doctests,
  calls with literal arguments from the code's call sites, and generated calls.

The runs themselves happen in :func:`server.assist.testrun.run_variants`. Python only.
Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import copy
import doctest
import itertools
import math
import os
import random
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

from .records import CodeSpan, Mutant, MutationScore, Verification
from .sandbox import read_left_file
from .testrun import Variants, run_variants

MAX_MUTANTS = 8            # mutants tried per function (spread over its lines)
MAX_TEST_FILES = 2000      # workspace files looked at when searching for its tests
MAX_TESTS = 60             # workspace tests run to verify a rewrite
MAX_CHECKS = 12            # derived input/output checks from the code (docstring examples, call sites) per function
MAX_GENERATED = 160        # generated calls per function (only those the original answers are compared)
SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", "node_modules", "site-packages", "build", "dist", "__pycache__",
             ".tox", ".nox", ".mypy_cache", ".pytest_cache"}
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

FLIP_COMPARE = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
FLIP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
              ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
              ast.LShift: ast.RShift, ast.RShift: ast.LShift}
SYMBOL = {ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
          ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
          ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|",
          ast.LShift: "<<", ast.RShift: ">>", ast.And: "and", ast.Or: "or"}


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


# -- mutants ---------------------------------------------------------------------------------
class _Sites(ast.NodeVisitor):
    """Every place a mutation can be made, in visiting order: (node, field or index, replacement factory)."""

    def __init__(self):
        self.sites: list[tuple[ast.AST, str]] = []
        self._depth = 0

    def visit_FunctionDef(self, node):  # the function's own body; its decorators and defaults stay
        self._depth += 1
        if self._depth == 1:
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and \
                        isinstance(stmt.value.value, str):
                    continue  # the docstring
                self.visit(stmt)
        else:
            self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Compare(self, node):
        self.sites.append((node, "compare"))
        self.generic_visit(node)

    def visit_BinOp(self, node):
        if type(node.op) in FLIP_BINOP and not (isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant)
                                                and isinstance(node.left.value, str)):  # "%s" % x formats
            self.sites.append((node, "binop"))
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        if type(node.op) in FLIP_BINOP:
            self.sites.append((node, "binop"))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        self.sites.append((node, "boolop"))
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, bool) or (isinstance(node.value, (int, float)) and not isinstance(node.value, bool)):
            self.sites.append((node, "constant"))

    def visit_Return(self, node):
        if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            self.sites.append((node, "return"))
        self.generic_visit(node)

    def visit_If(self, node):
        self.sites.append((node, "condition"))
        self.generic_visit(node)

    visit_While = visit_If


def _mutate(node: ast.AST, kind: str) -> str:
    """Change ``node`` in place; the description of the change."""
    if kind == "compare":
        old = type(node.ops[0])
        node.ops[0] = FLIP_COMPARE[old]()
        return f"`{SYMBOL[old]}` → `{SYMBOL[FLIP_COMPARE[old]]}`"
    if kind == "binop":
        old = type(node.op)
        node.op = FLIP_BINOP[old]()
        return f"`{SYMBOL[old]}` → `{SYMBOL[FLIP_BINOP[old]]}`"
    if kind == "boolop":
        old = type(node.op)
        node.op = ast.Or() if old is ast.And else ast.And()
        return f"`{SYMBOL[old]}` → `{'or' if old is ast.And else 'and'}`"
    if kind == "constant":
        old = node.value
        node.value = (not old) if isinstance(old, bool) else old + 1 if old == 0 else old - 1 if old > 0 else 0
        return f"`{old!r}` → `{node.value!r}`"
    if kind == "return":
        node.value = ast.Constant(None)
        return "`return …` → `return None`"
    node.test = ast.UnaryOp(ast.Not(), node.test)  # condition
    return "condition negated"


def mutants(source: str, limit: int = MAX_MUTANTS, first_line: int = 0) -> list[Mutant]:
    """Broken copies of the function in ``source`` (one definition, dedented), one change each.

    Sites are spread over the function: comparisons, arithmetic and boolean operators, number
    and boolean constants, return values, and conditions of ``if``/``while``, in source order,
    up to ``limit`` taken evenly across them.

    Args:
        source: the function's source (``def`` at column 0).
        limit: most mutants returned.
        first_line: 0-based line of ``source`` in its file, for the descriptions.

    Returns:
        Mutants whose source parses and differs from the original's (as ``ast.unparse`` prints
        both); empty for source that does not parse.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    finder = _Sites()
    finder.visit(tree)
    n = len(finder.sites)
    order = sorted(range(n), key=lambda i: (i * limit) % max(1, n)) if n > limit else range(n)
    picked = sorted(order[:limit]) if n > limit else list(order)
    original = ast.unparse(tree)
    out: list[Mutant] = []
    for index in picked:
        copy_tree = copy.deepcopy(tree)
        sites = _Sites()
        sites.visit(copy_tree)
        node, kind = sites.sites[index]
        what = _mutate(node, kind)
        ast.fix_missing_locations(copy_tree)
        text = ast.unparse(copy_tree)
        if text != original:
            line = first_line + getattr(node, "lineno", 1)
            out.append(Mutant(f"line {line}: {what}", line, text + "\n"))
    return out


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
def _test_files(root: Path):
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
    for path in _test_files(root):
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


# -- derived checks ------------------------------------------------------------------------------
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
