"""Mutants, and rewrites verified by running code: real modules in a temporary workspace, the real sandbox, real pytest.

No model: the "rewrites" and "generated tests" are written here, as a model could write them.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from server.assist import CodeSpan
from server.assist.checks import derived_checks
from server.assist.mutants import mutants
from server.assist.records import MutationScore
from server.assist.sandbox import available
from server.assist.targets import target
from server.assist.verify import mutation_score, rewrite_patches, verify_rewrite, workspace_tests
from server.assist.write_tests import (
    drop_tests,
    enough_tests,
    inputs_worth_testing,
    merged_tests,
    more_tests_feedback,
    without_extra_tests,
)

from .prereqs import APT_INSTALL

needs_sandbox = pytest.mark.skipif(not available()[0], reason=f"needs bubblewrap: {available()[1]}; {APT_INSTALL}")

GEO = '''\
def clamp(x, lo=0, hi=10):
    """Clamp x into [lo, hi].

    >>> clamp(12)
    10
    """
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def label(n):
    return "many" if n > 1 else "one"


class Box:
    def __init__(self, w, h):
        self.w, self.h = w, h

    def area(self):
        return self.w * self.h


def use():
    return clamp(5, 1, 3) + clamp(-2)
'''
CLAMP_BODY = "    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n"


@pytest.fixture
def ws(tmp_path):
    """A workspace with a package that re-exports clamp, and tests that import it through the package."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from .geo import Box, clamp\n")
    (tmp_path / "pkg" / "geo.py").write_text(GEO)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_geo.py").write_text(textwrap.dedent("""\
        from pkg import Box, clamp


        def test_clamp_inside():
            assert clamp(5) == 5


        def test_clamp_edges():
            assert clamp(-1) == 0 and clamp(11) == 10


        def test_area():
            assert Box(2, 3).area() == 6


        def test_unrelated():
            assert 1 + 1 == 2
        """))
    return tmp_path


def span_of(ws, name: str) -> CodeSpan:
    lines = GEO.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"def {name}("))
    body = " " * (len(lines[start]) - len(lines[start].lstrip()) + 1)
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(body)):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    return CodeSpan(ws / "pkg" / "geo.py", GEO, start, end - 1, "python", name)


# -- mutants -------------------------------------------------------------------------------------
def test_each_mutant_changes_one_thing_and_parses():
    t = target(Path("/"), Path("/pkg/geo.py"), GEO, 0, 10)
    assert t.name == "clamp" and t.module == "pkg.geo" and t.owner is None
    found = mutants(t.source, first_line=t.line)
    descriptions = [m.description for m in found]
    assert "line 7: `<` → `<=`" in descriptions and "line 9: `>` → `>=`" in descriptions
    assert "line 8: `return …` → `return None`" in descriptions
    original = ast.unparse(ast.parse(t.source))
    for m in found:
        tree = ast.parse(m.source)
        assert ast.unparse(tree) != original
        assert ast.get_docstring(tree.body[0]) == ast.get_docstring(ast.parse(t.source).body[0])  # docstring kept
        assert [ast.unparse(d) for d in tree.body[0].args.defaults] == ["0", "10"]  # defaults kept


def test_mutants_cover_arithmetic_constants_and_boolean_operators_within_the_limit():
    source = "def f(a, b):\n    if a > 0 and b:\n        a += 2\n    return a * b - 1\n"
    found = mutants(source, limit=50)
    kinds = " ".join(m.description for m in found)
    for change in ("`>` → `>=`", "`and` → `or`", "`+` → `-`", "`*` → `//`", "`-` → `+`", "`2` → `1`", "`0` → `1`",
                   "return None", "condition negated"):
        assert change in kinds, (change, kinds)
    assert len(mutants(source, limit=3)) == 3
    assert mutants("def f(:\n") == [] and mutants("def f():\n    pass\n") == []


def test_a_string_format_is_not_taken_for_arithmetic():
    assert not any("%" in m.description for m in mutants("def f(x):\n    return '%s!' % x\n"))


# -- the stop rule and pruning of generated tests ------------------------------------------------
def test_generation_stops_at_a_repeated_or_one_test_too_many():
    tests = "".join(f"def test_{i}():\n    assert f({i}) == {i}\n\n" for i in range(6))
    assert not enough_tests(tests)
    assert enough_tests(tests + "def test_6(")
    assert enough_tests("def test_a():\n    pass\n\ndef test_b():\n    pass\n\ndef test_a(")
    # A token may bring a whole `():` line: what is kept ends before the extra test's line.
    assert without_extra_tests(tests + "def test_x():\n") == tests
    assert without_extra_tests("def test_a():\n    pass\n\n    def test_a():\n") == "def test_a():\n    pass\n\n"


def test_tests_that_fail_on_the_code_are_dropped_by_name():
    code = ("import pytest\n\ndef test_ok():\n    assert 1\n\n@pytest.mark.slow\ndef test_bad():\n    assert 0\n\n"
            "class TestX:\n    def test_bad(self):\n        assert 0\n\n    def test_good(self):\n        assert 1\n")
    kept = drop_tests(code, {"test_bad"})
    assert "test_bad" not in kept and "mark.slow" not in kept and "test_ok" in kept and "test_good" in kept
    ast.parse(kept)


# -- improving a file that can be kept ----------------------------------------------------------
def test_more_tests_are_added_to_a_kept_file_without_repeats_or_name_clashes():
    kept = "from pkg.geo import clamp\n\n\ndef test_inside():\n    assert clamp(5) == 5\n"
    more = ("import pytest\nfrom pkg.geo import clamp\n\ndef test_inside():\n    assert clamp(5) == 5\n\n"
            "def test_inside():  # the same name, another check\n    assert clamp(0) == 0\n\n"
            "@pytest.mark.parametrize('x', [10, 11])\ndef test_high(x):\n    assert clamp(x) == 10\n\n"
            "def helper():\n    return 1\n")
    merged = merged_tests(kept, more)
    tree = ast.parse(merged)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert names == ["test_inside", "test_inside_2", "test_high"], merged  # the repeat left out, no helper
    assert merged.startswith("import pytest\nfrom pkg.geo import clamp\n") and "@pytest.mark.parametrize" in merged
    assert merged_tests(kept, "def test_inside():\n    assert clamp(5) == 5\n") == kept  # nothing new
    with pytest.raises(SyntaxError):
        merged_tests(kept, "def test_(:\n")


def test_a_round_that_improves_tests_names_the_survivors_and_the_boundaries():
    source = "def take(xs, n=3):\n    if len(xs) > n:\n        return xs[:n]\n    return xs\n"
    ideas = inputs_worth_testing(source)
    assert "`len(xs) > n`: len(xs) equal to n, and one less and one more" in ideas
    assert "`len(xs) > n` both true and false" in ideas and "empty and one-element inputs" in ideas
    assert inputs_worth_testing("def f(:\n") == []
    survivor = next(m for m in mutants(source) if "`>` → `>=`" in m.description)
    span = CodeSpan(Path("/w/take.py"), source, 0, 3, "python", "take")
    text = more_tests_feedback(span, MutationScore(["t"], [], 4, 3, [survivor], ""), "def test_t():\n    pass\n")
    assert "catch 3 of 4 deliberately broken copies of `take`" in text
    assert "- line 2: `>` → `>=`: `if len(xs) >= n:`" in text and "len(xs) equal to n" in text
    assert text.endswith("```python\ndef test_t():\n    pass\n```")


# -- finding what to run -------------------------------------------------------------------------
def test_workspace_tests_are_found_by_name_and_import(ws):
    found = workspace_tests(ws, "pkg.geo", "clamp")
    assert [f.rsplit("::", 1)[1] for f in found] == ["test_clamp_inside", "test_clamp_edges"]
    assert workspace_tests(ws, "other.geo", "clamp") == []  # the file does not import `other`
    assert [f.rsplit("::", 1)[1] for f in workspace_tests(ws, "pkg.geo", "area")] == ["test_area"]


def test_checks_come_from_doctests_call_sites_and_generated_calls(ws):
    t = target(ws, ws / "pkg" / "geo.py", GEO, 0, 10)
    explicit, generated = derived_checks(ws / "pkg" / "geo.py", GEO, t)
    assert explicit == ["clamp(12)", "clamp(5, 1, 3)", "clamp(-2)"]
    assert len(generated) >= 10 and all(g.startswith("clamp(") for g in generated)
    method = target(ws, ws / "pkg" / "geo.py", GEO, 21, 22)
    assert (method.owner, method.name) == ("Box", "area") and derived_checks(ws / "pkg" / "geo.py", GEO, method) == \
        ([], [])


def test_rewrites_that_cannot_be_patched_in_say_why():
    assert rewrite_patches(GEO, GEO.replace("def use():", "print('hi')\n\n\ndef use():")).startswith(
        "the rewrite changes a top-level statement")
    patches = rewrite_patches(GEO, GEO.replace("return self.w * self.h", "return self.h * self.w"))
    assert patches == [{"owner": "Box", "source": "def area(self):\n    return self.h * self.w\n"}]


# -- running them --------------------------------------------------------------------------------
@needs_sandbox
def test_a_rewrite_that_keeps_behaviour_is_verified_by_the_workspace_tests(ws):
    after = GEO.replace(CLAMP_BODY, "    if x < lo:\n        return lo\n    return hi if x > hi else x\n")
    v = verify_rewrite(ws, span_of(ws, "clamp"), after)
    assert v.verdict == "kept" and v.tests == 2 and v.checks >= 3, v
    assert v.summary.startswith("2 tests still pass, ") and v.summary.endswith("checks agree")


@needs_sandbox
def test_a_rewrite_that_changes_behaviour_is_caught_through_a_re_export(ws):
    # The tests import clamp from the package: the rewrite must reach that reference too.
    after = GEO.replace(CLAMP_BODY, "    return min(lo, max(x, hi))\n")
    v = verify_rewrite(ws, span_of(ws, "clamp"), after)
    assert v.verdict == "changed", v
    assert any("test_clamp_inside passed before the rewrite and failed after" in d for d in v.differences)
    assert any(d.startswith("`clamp(12)` gave `10` before and `0` after") for d in v.differences), v.differences


@needs_sandbox
def test_without_tests_derived_checks_decide(ws):
    (ws / "tests" / "test_geo.py").unlink()
    ok = verify_rewrite(ws, span_of(ws, "label"), GEO.replace('return "many" if n > 1 else "one"',
                                                              'return "one" if n <= 1 else "many"'))
    assert ok.verdict == "kept" and ok.tests == 0 and ok.checks >= 5, ok
    changed = verify_rewrite(ws, span_of(ws, "label"), GEO.replace('return "many" if n > 1 else "one"',
                                                                   'return "many" if n >= 1 else "one"'))
    assert changed.verdict == "changed" and "before" in changed.summary, changed


PICK = """\
def pick(predicate, d, factory=dict):
    out = factory()
    for item in d.items():
        if predicate(item):
            k, v = item
            out[k] = v
    return out
"""


def test_generated_calls_give_parameters_values_of_the_kind_the_body_uses(ws):
    from server.assist.checks import _param_kinds
    fn = ast.parse(PICK).body[0]
    assert _param_kinds(fn) == {"predicate": "callable", "d": "mapping", "factory": "callable"}
    (ws / "pick.py").write_text(PICK)
    _, generated = derived_checks(ws / "pick.py", PICK, target(ws, ws / "pick.py", PICK, 0, 6))
    assert "pick(len, {'a': 1, 'b': 2})" in generated and len(generated) <= 160
    assert any("factory=__import__('collections').OrderedDict" in g for g in generated), generated


@needs_sandbox
def test_a_rewrite_that_ignores_a_parameter_with_a_default_is_caught(ws):
    # Found in the assistant benchmark: toolz's itemfilter rewritten as a dict comprehension, `factory` dropped.
    (ws / "pick.py").write_text(PICK)
    span = CodeSpan(ws / "pick.py", PICK, 0, 6, "python", "pick")
    v = verify_rewrite(ws, span, "def pick(predicate, d, factory=dict):\n"
                                 "    return {k: v for k, v in d.items() if predicate((k, v))}\n")
    assert v.verdict == "changed" and "factory=" in v.summary, v
    same = verify_rewrite(ws, span, "def pick(predicate, d, factory=dict):\n    out = factory()\n"
                                    "    for k, v in d.items():\n        if predicate((k, v)):\n"
                                    "            out[k] = v\n    return out\n")
    assert same.verdict == "kept" and same.checks >= 20, same


@needs_sandbox
def test_a_method_is_verified_by_its_tests_and_a_broken_rewrite_reported(ws):
    good = verify_rewrite(ws, span_of(ws, "area"), GEO.replace("return self.w * self.h", "return self.h * self.w"))
    assert good.verdict == "kept" and good.summary == "1 test still passes", good
    bad = verify_rewrite(ws, span_of(ws, "area"), GEO.replace("return self.w * self.h", "return self.w + self.h"))
    assert bad.verdict == "changed", bad
    broken = verify_rewrite(ws, span_of(ws, "area"), GEO.replace("return self.w * self.h", "return self.w * undefined"))
    assert broken.verdict == "changed" and "test area passed" not in broken.summary and "test_area" in broken.summary


def test_what_cannot_be_run_is_said_not_verified(ws):
    span = span_of(ws, "clamp")
    js = CodeSpan(ws / "a.js", "function f() {}\n", 0, 0, "javascript", "f")
    assert verify_rewrite(ws, js, "function f() { }\n").summary.startswith("not verified: only Python")
    outside = CodeSpan(ws.parent / "elsewhere.py", GEO, span.start_line, span.end_line, "python", "clamp")
    assert "not an importable module" in verify_rewrite(ws, outside, GEO).summary
    assert verify_rewrite(ws, span, GEO, mode="off").summary == "not verified: tests are not run: tests.sandbox is off"


@needs_sandbox
def test_generated_tests_are_scored_on_mutants(ws):
    span = span_of(ws, "clamp")
    strong = "from pkg.geo import clamp\n\ndef test_inside():\n    assert clamp(5) == 5\n\n" \
             "def test_edges():\n    assert clamp(-1) == 0\n    assert clamp(11) == 10\n"
    _, score = mutation_score(ws, span, "test_gen.py", strong)
    # Moving clamp's boundaries (`x <= lo: return lo`) changes nothing it returns: those two survive
    # any test (equivalent mutants); every other change is caught.
    assert score.passed and not score.failed and score.tried >= 5, score
    assert sorted(m.description for m in score.survivors) == ["line 7: `<` → `<=`", "line 9: `>` → `>=`"], score
    weak = "from pkg.geo import clamp\n\ndef test_runs():\n    clamp(5)\n"
    _, score = mutation_score(ws, span, "test_gen.py", weak)
    assert score.passed and score.caught == 0 and len(score.survivors) == score.tried >= 5
    wrong = "from pkg.geo import clamp\n\ndef test_wrong():\n    assert clamp(5) == 6\n"
    _, score = mutation_score(ws, span, "test_gen.py", wrong)
    assert score.failed and not score.passed
    # Tests that fail on the code as it is say nothing about mutants: none is run.
    assert score.tried == 0 and score.reason == "the tests do not all pass on the code as it is", score


@needs_sandbox
def test_a_mutant_that_loops_forever_is_caught_in_time(ws, monkeypatch):
    import time

    from server.assist import testrun
    source = "def count(n):\n    i = 0\n    while i < n:\n        i += 1\n    return i\n"
    (ws / "loop.py").write_text(source)
    monkeypatch.setattr(testrun, "CALL_TIMEOUT_S", 1)
    span = CodeSpan(ws / "loop.py", source, 0, 4, "python", "count")
    t0 = time.monotonic()
    _, score = mutation_score(ws, span, "test_loop.py", "from loop import count\n\ndef test_count():\n"
                                                        "    assert count(3) == 3\n")
    # `i += 1` → `i -= 1` never ends: stopped, counted as caught; `i = 0` → `i = 1` gives the same answer.
    assert score.passed and score.tried >= 4 and [m.description for m in score.survivors] == ["line 2: `0` → `1`"]
    assert time.monotonic() - t0 < 45


@needs_sandbox
def test_tests_that_kill_the_test_process_fail_rather_than_go_unrun(ws):
    from server.assist import run_pytest
    r = run_pytest(ws, "test_exit.py", "import os\n\ndef test_exit():\n    os._exit(3)\n")
    assert r.ran and not r.ok and "the test process ended early (exit code 3)" in r.output, r


def test_expected_value_sites_are_calls_compared_with_literals():
    from server.assist.expected import sites
    code = textwrap.dedent("""\
        from pkg.geo import clamp

        def test_a():
            assert clamp(12) == 12
            assert 0 == clamp(-5, hi=3)
            expected = [1, 2]
            assert [clamp(1), clamp(2)] == expected
            other = compute()
            assert clamp(3) == other
            assert clamp(3) < 4
            assert clamp(3) == clamp(3)

        def helper():
            assert clamp(1) == 2
        """)
    found = sites(code, "clamp")
    assert [(s.test, ast.unparse(s.literal)) for s in found if s.literal] == [("test_a", "12"), ("test_a", "0"),
                                                                             ("test_a", "[1, 2]")]
    # The others are observed whole, for whether they raise; the helper's is not a test's.
    assert [ast.unparse(s.actual) for s in found if s.literal is None] == [
        "clamp(3) == other", "clamp(3) < 4", "clamp(3) == clamp(3)"]


@needs_sandbox
def test_wrong_expected_values_are_taken_from_the_code_and_said(ws):
    from server.assist import run_pytest
    from server.assist.expected import expected_from_code
    code = textwrap.dedent("""\
        import pytest
        from pkg.geo import Box, clamp

        def test_edges():
            assert clamp(12) == 12
            assert clamp(-3) == 0
            expected = (5,
                        7)
            assert (clamp(5), clamp(70, hi=7)) == expected

        def test_in_a_loop():
            for x, want in [(1, 1), (2, 3)]:
                assert clamp(x) == 9

        def test_not_a_literal():
            assert clamp(Box(1, 2).area()) == 3

        def test_raising():
            result = clamp(3)
            assert result == 4
            assert clamp("a") == 5, "a message"
            assert clamp(1) == 1

        def test_undefined_helper():
            assert clamp(2) == 2
            assert clamp_all([1]) == [1]

        def test_expecting_an_error():
            with pytest.raises(TypeError):
                assert clamp("a") == 0
        """)
    assert not run_pytest(ws, "test_gen.py", code).ok
    fixed, corrections = expected_from_code(ws, "test_gen.py", code, "clamp")
    # The wrong 12 is corrected and said; the right 0 and the tuple stay; a loop seeing 1 then 2 is left alone;
    # clamp(Box(1, 2).area()) is 2, not 3: corrected too (the literal is what counts, not the argument).
    # `result = clamp(3)` is read at the assertion; an assertion whose call raises on the code as it is
    # goes; one inside `pytest.raises` stays.
    assert [str(c) for c in corrections] == [
        "test_edges: 12 -> 10", "test_not_a_literal: 3 -> 2", "test_raising: 4 -> 3",
        "test_raising: removed `assert clamp(\"a\") == 5, \"a message\"` (raises TypeError on the code as it is)",
        "test_undefined_helper: removed `assert clamp_all([1]) == [1]` (raises NameError on the code as it is)"], \
        corrections
    assert "assert clamp(12) == 10  # value from running the code as it is; the model wrote 12\n" in fixed
    assert "expected = (5,\n                7)\n" in fixed
    assert "    assert result == 3  # value from running the code as it is; the model wrote 4\n" \
           "    assert clamp(1) == 1\n" in fixed
    run = run_pytest(ws, "test_gen.py", fixed)
    assert run.failed == ["test_gen.py::test_in_a_loop"] and len(run.passed) == 5, run


@needs_sandbox
def test_an_assertion_that_never_ends_is_stopped_not_observed(ws, monkeypatch):
    import time

    from server.assist import testrun
    from server.assist.expected import expected_from_code
    (ws / "loop.py").write_text("def count(n):\n    i = 0\n    while i < n:\n        i += 1\n    return i\n")
    monkeypatch.setattr(testrun, "CALL_TIMEOUT_S", 1)
    code = "from loop import count\n\ndef test_count():\n    assert count(float('inf')) == 1\n" \
           "    assert count(2) == 3\n\ndef test_more():\n    assert count(4) == 5\n"
    t0 = time.monotonic()
    fixed, corrections = expected_from_code(ws, "test_loop.py", code, "count")
    # The per-call alarm stops the first test (not taken for an exception of the call: nothing is removed).
    assert [str(c) for c in corrections] == ["test_more: 5 -> 4"]
    assert time.monotonic() - t0 < 20


@needs_sandbox
def test_a_returned_function_is_compared_by_what_it_returns(ws):
    # Found in the assistant benchmark: toolz's getter returns functions, whose reprs are all alike.
    source = "def getter(index):\n    if isinstance(index, list):\n" \
             "        return lambda x: tuple(x[i] for i in index)\n    return lambda x: x[index]\n"
    (ws / "get.py").write_text(source)
    span = CodeSpan(ws / "get.py", source, 0, 3, "python", "getter")
    broken = source.replace("tuple(x[i] for i in index)", "[x[i] for i in index]")
    v = verify_rewrite(ws, span, broken)
    assert v.verdict == "changed" and "a function giving" in v.summary, v
    same = source.replace("tuple(x[i] for i in index)", "tuple([x[i] for i in index])")
    assert verify_rewrite(ws, span, same).verdict == "kept"
