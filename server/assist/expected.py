"""Expected values from the code as it is: the repair of a generated test's wrong ``assert ... == literal``.

A small model often writes the right call and the wrong answer (``assert frequencies('aab')
== {'a': 1, 'b': 1}``). Sending the failure back costs a whole model round and rarely helps a
0.5B model. Instead, the assertions are *observed*: every ``assert <call of the function, or a
name assigned from one> == <literal>`` in a test function (the literal may also be a name the
test assigns once from a literal) is rewritten to record the left side's value, the module runs once in the sandbox on
the code as it is, and each literal the code disagrees with is replaced by the observed value,
with a comment that keeps what the model wrote (``# value from running the code as it is; the
model wrote {'a': 1, 'b': 1}``). Only values whose ``repr`` reads back as an equal Python
literal (numbers, strings, bytes, None, booleans, tuples, lists, dicts, sets) are written.

Such a test pins down what the code does now: it cannot tell whether that is right, and the
reply says how many values came from the code. Whether the tests are worth keeping is then
decided as before, by running them on mutants of the function.
"""

from __future__ import annotations

import ast
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from .checks import is_literal
from .testrun import run_variants

OBSERVED_FILE = "deepseek_observed.jsonl"   # written by the instrumented module next to itself, in the scratch folder
MAX_REPR = 300                                # longer observed values are not written into a test
RECORDER = f'''
def __deepseek_observe__(site, thunk):
    import ast as _ast, json as _json, os as _os
    try:
        value = thunk()
    except Exception as e:
        if type(e).__name__ == "CallTimeout":  # the driver's per-call alarm: the test must stop here
            raise
        seen = "raises " + type(e).__name__
    else:
        try:
            text = repr(value)
            same = len(text) <= {MAX_REPR} and type(_ast.literal_eval(text)) is type(value) \\
                and _ast.literal_eval(text) == value
        except Exception:
            same = False
        seen = "= " + text if same else None
    with open(_os.path.join(_os.path.dirname(__file__), "{OBSERVED_FILE}"), "a", encoding="utf-8") as _f:
        _f.write(_json.dumps([site, seen]) + "\\n")
'''


@dataclass(frozen=True)
class Site:
    """An assertion: ``assert <actual> == <literal>`` (the literal's node), or any other (``literal`` None:
    ``actual`` is its whole test, observed only for whether it raises)."""

    test: str
    actual: ast.expr
    assert_node: ast.Assert
    literal: ast.expr | None


@dataclass(frozen=True)
class Correction:
    """What changed in ``test``: the literal ``wrote`` became ``observed``, or (``observed`` None) the
    assertion ``wrote`` was removed because its call raises ``raises`` on the code as it is."""

    test: str
    wrote: str
    observed: str | None
    raises: str = ""

    def __str__(self) -> str:
        if self.observed is None:
            return f"{self.test}: removed `{self.wrote}` ({self.raises} on the code as it is)"
        return f"{self.test}: {self.wrote} -> {self.observed}"


def _calls(node: ast.AST, symbol: str) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if (isinstance(f, ast.Name) and f.id == symbol) or (isinstance(f, ast.Attribute) and f.attr == symbol):
                return True
    return False


def _derived(node: ast.AST, symbol: str, results: set[str]) -> bool:
    """``node`` calls ``symbol`` or reads a name assigned from such a call."""
    return _calls(node, symbol) or any(isinstance(n, ast.Name) and n.id in results for n in ast.walk(node))


def sites(code: str, symbol: str) -> list[Site]:
    """The assertions of ``code``'s test functions, those that compare a call of ``symbol`` with a
    literal first-class (``literal`` set), the others observed whole (``literal`` None).

    ``assert f(x) == 3``, ``assert 3 == f(x)``, ``result = f(x)`` ... ``assert result == 3``;
    ``expected = [1, 2]`` ... ``assert f(x) == expected`` when ``expected`` is assigned once in the
    test, from a literal (the assignment's literal is the one corrected). Raises SyntaxError for
    code that does not parse.
    """
    tree = ast.parse(code)
    found: list[Site] = []
    tests = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.name.startswith("test")]
    for fn in tests:
        assigned: dict[str, list[ast.expr]] = {}
        for n in ast.walk(fn):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(
                n, (ast.AnnAssign, ast.AugAssign, ast.For, ast.NamedExpr)) else []
            for t in targets:
                if isinstance(t, ast.Name):
                    assigned.setdefault(t.id, []).append(n.value if isinstance(n, ast.Assign) else None)
        # Names that hold what the function returned (``result = f(x)``; ``out = list(f(x))``).
        results = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) and _calls(n.value, symbol)
                   for t in n.targets if isinstance(t, ast.Name)}
        expecting_errors = {id(a) for w in ast.walk(fn) if isinstance(w, (ast.With, ast.AsyncWith))
                            and any("raises" in ast.unparse(i.context_expr) for i in w.items)
                            for a in ast.walk(w)}  # `with pytest.raises(...)`: left as written
        for n in ast.walk(fn):
            if id(n) in expecting_errors or not isinstance(n, ast.Assert):
                continue
            site = None
            if isinstance(n.test, ast.Compare) and len(n.test.ops) == 1 and isinstance(n.test.ops[0], ast.Eq):
                left, right = n.test.left, n.test.comparators[0]
                for actual, expected in ((left, right), (right, left)):
                    if not _derived(actual, symbol, results) or _derived(expected, symbol, results):
                        continue
                    if isinstance(expected, ast.Name):
                        values = assigned.get(expected.id, [])
                        expected = values[0] if len(values) == 1 and values[0] is not None else None
                    if expected is not None and is_literal(expected):
                        site = Site(fn.name, actual, n, expected)
                    break
            # Any other assertion is observed whole: only whether it raises counts (a helper the model
            # never defined, a wrong call).
            found.append(site or Site(fn.name, n.test, n, None))
    return found


def instrument(code: str, found: list[Site]) -> str:
    """``code`` with each site's assertion replaced by a call recording its actual side's value, or the
    exception computing it raises (no assertion: every site is seen, not only up to the first failure)."""
    edits = [(_span(s.assert_node), f"__deepseek_observe__({i}, lambda: ({ast.get_source_segment(code, s.actual)}))")
             for i, s in enumerate(found)]
    return _replace(code, edits) + RECORDER


Span = tuple[int, int, int, int]  # start line (1-based), start byte column, end line, end byte column


def _span(node: ast.AST) -> Span:
    return node.lineno, node.col_offset, node.end_lineno, node.end_col_offset


def _replace(code: str, edits: list[tuple[Span, str]]) -> str:
    """``code`` with each span replaced by its text (spans do not overlap; an empty span inserts)."""
    data = code.encode("utf-8")
    starts, total = [0, 0], 0
    for line in data.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    for (l1, c1, l2, c2), text in sorted(edits, key=lambda e: e[0], reverse=True):
        data = data[:starts[l1] + c1] + text.encode("utf-8") + data[starts[l2] + c2:]
    return data.decode("utf-8")


def expected_from_code(root: Path, test_name: str, code: str, symbol: str, cancel: threading.Event | None = None,
                       mode: str = "bubblewrap") -> tuple[str, list[Correction]]:
    """``code`` with the expected values of its assertions that the code disagrees with replaced.

    Runs the instrumented test module once (pytest, in the sandbox ``mode`` names) on the code as
    it is. A site observed with different values (a loop), or with a value that is not a
    literal, is left alone. Returns the code unchanged and no corrections when nothing could be
    observed (the tests did not run, or none of their assertions has the form above).
    """
    try:
        found = sites(code, symbol)
    except SyntaxError:
        return code, []
    if not found:
        return code, []
    result = run_variants(root, [{"label": "observe", "patches": []}], generated=(test_name, instrument(code, found)),
                          collect=(OBSERVED_FILE,), cancel=cancel, mode=mode)
    seen: dict[int, set] = {}
    for line in result.collected.get(OBSERVED_FILE, "").splitlines():
        try:
            site, text = json.loads(line)
        except ValueError:
            continue
        seen.setdefault(site, set()).add(text)
    edits, corrections, removed = [], [], []
    lines = code.encode("utf-8").split(b"\n")
    for i, s in enumerate(found):
        values = seen.get(i, set())
        if len(values) != 1 or None in values:
            continue
        observed = next(iter(values))
        if observed.startswith("raises "):
            if s.assert_node not in removed:
                removed.append(s.assert_node)
                wrote = " ".join((ast.get_source_segment(code, s.assert_node) or "").split())
                corrections.append((s.assert_node, Correction(s.test, wrote, None, observed)))
            continue
        observed = observed[2:]
        if s.literal is None or any(s.literal is e for e, _ in corrections) or \
                ast.literal_eval(observed) == ast.literal_eval(s.literal):
            continue
        wrote = " ".join((ast.get_source_segment(code, s.literal) or "").split())
        corrections.append((s.literal, Correction(s.test, wrote, observed)))
        edits.append((_span(s.literal), observed))
        line = lines[s.literal.end_lineno - 1].rstrip()
        if not line.endswith(b"\\"):  # the comment goes at the end of the line where the literal ends
            note = f"  # value from running the code as it is; the model wrote {wrote}"
            if len(note) > 120:
                note = "  # value from running the code as it is (the model wrote another)"
            end = len(lines[s.literal.end_lineno - 1].rstrip(b"\r"))
            edits.append(((s.literal.end_lineno, end, s.literal.end_lineno, end), note))
    if not edits and not removed:
        return code, []
    values = [e for e in edits if e[0][:2] != e[0][2:]]
    # An assertion that raises goes with its lines; as `pass` where that would leave a block empty.
    gone = [((n.lineno, 0, n.end_lineno + 1, 0) if not lines[n.lineno - 1][:n.col_offset].strip()
             and n.end_lineno < len(lines) else _span(n), "") for n in removed]
    passes = [(_span(n), "pass") for n in removed]
    for attempt in (edits + gone, edits + passes, values + passes):  # the last: no comments (inside a string?)
        fixed = _replace(code, attempt)
        try:
            ast.parse(fixed)
        except SyntaxError:
            continue
        return fixed, [c for _, c in corrections]
    return code, []
