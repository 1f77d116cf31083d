"""Mutants: deliberately broken copies of a Python function, one change each.

A comparison's boundary (`<` -> `<=`) or sense (`==` -> `!=`), an arithmetic or boolean operator,
a constant, a return value or a condition is changed, with ``ast``, at up to MAX_MUTANTS places
spread over the function.
Generated tests are kept only when they catch one (:func:`server.assist.verify.mutation_score`).

Threads: pure functions, any thread (Write tests runs them on a worker thread).
Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import copy

from .records import Mutant

MAX_MUTANTS = 8            # mutants tried per function (spread over its lines)

# An ordering comparison moves its boundary by one (`<` -> `<=`: the off-by-one bug tests at the
# boundary catch); the others are negated (a negated `if` is the "condition" mutant anyway).
FLIP_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
FLIP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
              ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
              ast.LShift: ast.RShift, ast.RShift: ast.LShift}
SYMBOL = {ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
          ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
          ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|",
          ast.LShift: "<<", ast.RShift: ">>", ast.And: "and", ast.Or: "or"}


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
