"""Write tests: tests for a span, kept only when they pass and catch a broken copy of it.

Python: pytest in the sandbox, on the function as it is and on mutants of it
(:func:`.verify.mutation_score`); wrong expected values are taken from the code
(:mod:`.expected`), failing tests dropped when others pass, and what is still wrong goes
back to the model, up to REPAIR_ROUNDS times. The first round already lists the inputs worth a
test (:func:`inputs_worth_testing`: boundaries, constants, both sides of each condition, empty
and one-element inputs). Once a file can be kept, the rounds left (within
``tests.improveMaxTimeMs``) ask the model for more tests aimed at the mutants still alive, at the
boundaries of the function's comparisons and constants (:func:`inputs_worth_testing`); tests that pass
and catch more are added to the file (:func:`merged_tests`). Other languages: written, parsed,
not run.

Threads: a worker thread (it blocks for the generations and the runs). This module imports
nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

from index.syntax import parseable_prefix

from ..text import split_lines
from .expected import expected_from_code
from .generation import AssistantCore, OnProgress, code_block
from .packs import load_pack
from .records import CodeSpan, MutationScore, TestsResult
from .testrun import as_test_run
from .verify import mutation_score

REPAIR_ROUNDS = 2          # write-tests: how many times tests that fail or catch nothing go back to the model
TEST_MAX_TOKENS = 512      # write-tests: longest test module the model may write, in tokens
MAX_TEST_FUNCTIONS = 6     # write-tests: generation stops when the model starts a seventh test (or repeats one)
MORE_TESTS = 3             # write-tests: tests asked for in a round that improves a file already kept
TEST_NAME = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(test\w*)[ \t]*\(", re.M)


def python_tests(code: str, symbol: str, import_line: str) -> str:
    """Tests must test the real code: drop top-level copies of ``symbol`` and import it instead."""
    tree = ast.parse(code)
    lines = split_lines(code, keepends=True)
    for node in reversed(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == symbol:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            del lines[start:node.end_lineno]
    code = "".join(lines)
    if import_line not in code:
        code = import_line + "\n" + code
    return code


def enough_tests(text: str) -> bool:
    """The stop rule of test generation: the model has begun a test beyond MAX_TEST_FUNCTIONS, or one it wrote."""
    return len(without_extra_tests(text)) < len(text)


def without_extra_tests(text: str) -> str:
    """``text`` up to the line where a test beyond MAX_TEST_FUNCTIONS, or a repeated test name, begins."""
    seen: set[str] = set()
    for m in TEST_NAME.finditer(text):
        if m.group(1) in seen or len(seen) == MAX_TEST_FUNCTIONS:
            return text[:text.rfind("\n", 0, m.start()) + 1]
        seen.add(m.group(1))
    return text


def drop_tests(code: str, names: set[str]) -> str:
    """``code`` without its top-level test functions (and test-class methods) called ``names``."""
    tree = ast.parse(code)
    lines = split_lines(code, keepends=True)
    spans = []
    for node in tree.body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        for fn in members:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name in names:
                spans.append((min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1, fn.end_lineno))
    for start, end in sorted(spans, reverse=True):
        del lines[start:end]
    return "".join(lines)


def merged_tests(kept: str, more: str) -> str:
    """``kept`` with the imports and test functions of ``more`` it lacks appended.

    A test whose body repeats one of ``kept`` is left out; one whose name is taken gets a
    numbered name (``test_x_2``). Raises SyntaxError when either does not parse.
    """
    old, new = ast.parse(kept), ast.parse(more)
    names = {n.name for n in old.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    bodies = {ast.dump(ast.Module(n.body, [])) for n in old.body
              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    imports = {ast.unparse(n) for n in old.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    head, tail = [], []
    for node in new.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and ast.unparse(node) not in imports:
            head.append(ast.unparse(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if ast.dump(ast.Module(node.body, [])) in bodies:
                continue
            name, n = node.name, 2
            while name in names:
                name, n = f"{node.name}_{n}", n + 1
            names.add(name)
            segment = ast.get_source_segment(more, node)
            if name != node.name or segment is None or node.decorator_list:
                node.name = name
                segment = ast.unparse(node)  # (renamed: written anew, without its comments)
            tail.append(segment)
    if not tail:
        return kept
    text = kept if not head else "\n".join(head) + "\n" + kept
    return text.rstrip("\n") + "\n\n\n" + "\n\n\n".join(tail) + "\n"


def changed_line(original: str, mutant: str) -> str:
    """The line of ``mutant`` (both as ``ast.unparse`` prints them) that differs from ``original``."""
    a = split_lines(ast.unparse(ast.parse(original)))
    b = split_lines(mutant.rstrip("\n"))
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
        if tag != "equal" and j1 < j2:
            return b[j1].strip()
    return ""


def inputs_worth_testing(source: str) -> list[str]:
    """Inputs worth a test in the function ``source``: each ordering comparison's boundary, each
    number constant and the values beside it, both branches of each condition, empty and
    one-element sequences. Short phrases for the model; empty when ``source`` does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    ideas: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            left, right = ast.unparse(node.left), ast.unparse(node.comparators[0])
            ideas.append(f"`{ast.unparse(node)}`: {left} equal to {right}, and one less and one more")
        elif isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool) \
                and node.value not in (0, 1):
            ideas.append(f"the constant {node.value}: inputs where {node.value - 1}, {node.value} and "
                         f"{node.value + 1} give different results")
        elif isinstance(node, (ast.If, ast.IfExp, ast.While)):
            ideas.append(f"`{ast.unparse(node.test)}` both true and false")
    ideas.append("empty and one-element inputs")
    return list(dict.fromkeys(ideas))[:8]


class WriteTestsTask(AssistantCore):
    """Write tests, on top of the core's generation."""

    improve_ms = 0  # tests.improveMaxTimeMs: how long rounds may go on improving a file that can be kept

    def write_tests(self, span: CodeSpan, root: Path, test_path: Path, cancel: threading.Event | None = None,
                    on_progress: OnProgress | None = None) -> TestsResult:
        """Tests for the span (``code`` None when refused, with the reason).

        Python: pytest in the sandbox, on the function as it is and on mutants of it
        (:func:`mutation_score`). The tests are kept when they all pass and catch at least one
        mutant (or no mutant can be made); tests that fail on the code as it is are dropped
        when others pass; otherwise the failures, or a mutant no test caught, go back to the
        model, up to REPAIR_ROUNDS times. While mutants survive a file that can be kept, the
        rounds left that start within ``improve_ms`` of it ask for more tests aimed at them;
        the ones that pass are added when the file then catches more. Other languages:
        written, parsed, not run.
        """
        say = on_progress or (lambda message: None)
        pack = load_pack("tests")
        framework = {"python": "pytest", "javascript": "Jest", "typescript": "Jest", "go": "Go's testing package",
                     "rust": "Rust's #[test]", "java": "JUnit 5"}.get(span.language, "the usual framework")
        rel = span.path.resolve().relative_to(root.resolve()) if span.path.resolve().is_relative_to(root.resolve()) \
            else Path(span.path.name)
        module = ".".join(rel.with_suffix("").parts)
        import_line = f"from {module} import {span.symbol}" if span.language == "python" and span.symbol \
            else f"import {module}"
        # Inputs at the function's boundaries, asked for from the first round (tests@v3): the mutants
        # that survive a first file are mostly a moved boundary or a flipped condition.
        ideas = inputs_worth_testing(textwrap.dedent(span.code)) if span.language == "python" else []
        ideas_text = "Inputs worth testing:\n" + "".join(f"- {i}\n" for i in ideas) if ideas else ""
        feedback, run, code, score, refusal = "", None, None, None, ""
        kept: TestsResult | None = None  # the best file so far that can be kept
        kept_at, used = 0.0, 0
        rounds = REPAIR_ROUNDS + 1
        for round_no in range(rounds):
            if kept is not None and (time.monotonic() - kept_at) * 1000 >= self.improve_ms:
                break
            used = round_no + 1
            step = f"round {used} of {rounds}: "
            messages = pack.render(framework=framework, symbol=span.symbol or "this code", path=str(rel),
                                   import_line=import_line, language=span.language, code=span.code, feedback=feedback,
                                   ideas="" if kept else ideas_text,
                                   max_tests=str(MORE_TESTS if kept else MAX_TEST_FUNCTIONS - 1))
            if cancel is not None and cancel.is_set():
                return TestsResult(None, run, round_no, "cancelled", score)
            say(step + ("writing more tests" if kept else "writing tests"))
            reply = self._generate("tests", messages, pack, None, None, use_cache=round_no == 0, cancel=cancel,
                                   max_tokens=TEST_MAX_TOKENS, stop=enough_tests)
            candidate, problem = written_tests(reply.text, span, import_line)
            if kept is not None:
                try:
                    merged = merged_tests(kept.code, candidate) if candidate else kept.code
                except SyntaxError:
                    merged = kept.code
                candidate, problem = (merged, "") if merged != kept.code else ("", feedback)  # nothing new: ask again
            if problem:
                feedback = problem
                continue
            if span.language != "python":
                return TestsResult(candidate, None, round_no + 1, "")
            say(step + "running the tests")
            result, score = mutation_score(root, span, test_path.name, candidate, cancel, self.sandbox)
            run, corrected = as_test_run(result), []
            if run.ran and run.failed and run.reason != "cancelled" and span.symbol:
                # A wrong expected value is the usual failure: take it from the code as it is (see expected.py).
                say(step + "taking the expected values from the code")
                fixed, found = expected_from_code(root, test_path.name, candidate, span.symbol, cancel, self.sandbox)
                if found:
                    say(step + "running the tests again")
                    result, score = mutation_score(root, span, test_path.name, fixed, cancel, self.sandbox)
                    candidate, run, corrected = fixed, as_test_run(result), found
            if run.ran and run.passed and run.failed and run.reason != "cancelled":
                # Keep what is right: drop the tests that fail on the code as it is, run the rest again.
                pruned = drop_tests(candidate, {name.rsplit("::", 1)[-1] for name in run.failed})
                say(step + "running the tests that passed")
                result, score = mutation_score(root, span, test_path.name, pruned, cancel, self.sandbox)
                candidate, run = pruned, as_test_run(result)
            code = candidate
            if not run.ran or run.reason == "cancelled":  # nothing to judge them by
                return TestsResult(code, run, round_no + 1, "", score if run.ran else None)
            if run.ok and (score.caught or score.reason or not score.tried):
                if kept is None or score.caught > kept.score.caught:
                    kept = TestsResult(code, run, round_no + 1, "", score,
                                       (kept.corrected if kept else []) + [str(c) for c in corrected])
                    kept_at = kept_at or time.monotonic()
                if score.reason or not kept.score.survivors:
                    break
                feedback = more_tests_feedback(span, kept.score, kept.code)
            elif kept is not None:  # the added tests failed or caught nothing more: ask again
                feedback = more_tests_feedback(span, kept.score, kept.code)
            elif run.ok:
                survivor = score.survivors[0]
                refusal = (f"the tests pass but catch none of the {score.tried} deliberately broken copies of "
                           f"`{span.symbol}` (e.g. {survivor.description}); not written")
                feedback = (f"\nThese tests pass, but they also pass when `{span.symbol}` is broken like this "
                            f"({survivor.description}):\n```python\n{survivor.source}```\nAdd a test that fails on "
                            f"this broken version and passes on the real code. The tests so far:\n```python\n{code}```")
            else:
                refusal = "the tests fail on the code as it is; not written"
                feedback = (f"\nThese tests failed:\n```\n{run.output[-2000:]}\n```\nFix the tests (the code under "
                            f"test is right unless a test shows a real bug):\n```python\n{code}\n```")
        if kept is not None:
            return replace(kept, rounds=used)
        if code is None:
            return TestsResult(None, None, rounds, "the model did not produce tests that parse")
        return TestsResult(None, run, rounds, refusal, score)


def written_tests(reply: str, span: CodeSpan, import_line: str) -> tuple[str, str]:
    """The test module in a model's reply, cut to MAX_TEST_FUNCTIONS tests and importing the
    code under test; or ``""`` and the feedback that asks for what was missing."""
    candidate = code_block(reply)
    if candidate is None:
        return "", "\nYour answer had no fenced code block. Answer with the test module in one code block."
    candidate = parseable_prefix(span.language, without_extra_tests(candidate))
    if span.language == "python" and candidate:
        try:
            candidate = python_tests(candidate, span.symbol, import_line)
        except SyntaxError:
            candidate = ""
    if not candidate or (span.language == "python" and "def test" not in candidate):
        return "", ("\nYour answer had no complete test function. Write short test functions named "
                    f"test_..., that import `{span.symbol}` (do not copy it).")
    return candidate, ""


def more_tests_feedback(span: CodeSpan, score: MutationScore, code: str) -> str:
    """What a round that improves a kept file tells the model: the mutants still alive (their
    changed line), inputs worth testing (:func:`inputs_worth_testing`), and the tests so far."""
    source = textwrap.dedent(span.code)
    alive = []
    for m in score.survivors[:3]:
        try:
            line = changed_line(source, m.source)
        except SyntaxError:
            line = ""
        alive.append(f"- {m.description}" + (f": `{line}`" if line else ""))
    ideas = "\n".join(f"- {idea}" for idea in inputs_worth_testing(source))
    return (f"\nThese tests pass and catch {score.caught} of {score.tried} deliberately broken copies of "
            f"`{span.symbol}`. They still pass when it is broken like this:\n" + "\n".join(alive) +
            f"\nWrite {MORE_TESTS} new tests, with new names, that fail on such a broken version and pass on the "
            f"real code. Inputs worth testing:\n{ideas}\nThe tests so far (do not repeat them):\n```python\n{code}```")
