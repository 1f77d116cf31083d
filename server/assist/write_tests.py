"""Write tests: tests for a span, kept only when they pass and catch a broken copy of it.

Python: pytest in the sandbox, on the function as it is and on mutants of it
(:func:`.verify.mutation_score`); wrong expected values are taken from the code
(:mod:`.expected`), failing tests dropped when others pass, and what is still wrong goes
back to the model, up to REPAIR_ROUNDS times. Other languages: written, parsed, not run.

Threads: a worker thread (it blocks for the generations and the runs). This module imports
nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

from index.syntax import parseable_prefix

from ..text import split_lines
from .expected import expected_from_code
from .generation import AssistantCore, OnProgress, code_block
from .packs import load_pack
from .records import CodeSpan, TestsResult
from .testrun import as_test_run
from .verify import mutation_score

REPAIR_ROUNDS = 2          # write-tests: how many times tests that fail or catch nothing go back to the model
TEST_MAX_TOKENS = 512      # write-tests: longest test module the model may write, in tokens
MAX_TEST_FUNCTIONS = 6     # write-tests: generation stops when the model starts a seventh test (or repeats one)
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


class WriteTestsTask(AssistantCore):
    """Write tests, on top of the core's generation."""

    def write_tests(self, span: CodeSpan, root: Path, test_path: Path, cancel: threading.Event | None = None,
                    on_progress: OnProgress | None = None) -> TestsResult:
        """Tests for the span (``code`` None when refused, with the reason).

        Python: pytest in the sandbox, on the function as it is and on mutants of it
        (:func:`mutation_score`). The tests are kept when they all pass and catch at least one
        mutant (or no mutant can be made); tests that fail on the code as it is are dropped
        when others pass; otherwise the failures, or a mutant no test caught, go back to the
        model, up to REPAIR_ROUNDS times. Other languages: written, parsed, not run.
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
        feedback, run, code, score, refusal = "", None, None, None, ""
        corrected: list = []  # the expected values of the kept candidate that came from the code
        rounds = REPAIR_ROUNDS + 1
        for round_no in range(rounds):
            messages = pack.render(framework=framework, symbol=span.symbol or "this code", path=str(rel),
                                   import_line=import_line, language=span.language, code=span.code, feedback=feedback,
                                   max_tests=str(MAX_TEST_FUNCTIONS - 1))
            if cancel is not None and cancel.is_set():
                return TestsResult(None, run, round_no, "cancelled", score)
            say(f"round {round_no + 1} of {rounds}: writing tests")
            reply = self._generate("tests", messages, pack, None, None, use_cache=round_no == 0, cancel=cancel,
                                   max_tokens=TEST_MAX_TOKENS, stop=enough_tests)
            candidate, corrected = code_block(reply.text), []
            if candidate is None:
                feedback = "\nYour answer had no fenced code block. Answer with the test module in one code block."
                continue
            candidate = parseable_prefix(span.language, without_extra_tests(candidate))
            if span.language == "python" and candidate:
                try:
                    candidate = python_tests(candidate, span.symbol, import_line)
                except SyntaxError:
                    candidate = ""
            if not candidate or (span.language == "python" and "def test" not in candidate):
                feedback = ("\nYour answer had no complete test function. Write short test functions named "
                            f"test_..., that import `{span.symbol}` (do not copy it).")
                continue
            if span.language != "python":
                return TestsResult(candidate, None, round_no + 1, "")
            say(f"round {round_no + 1} of {rounds}: running the tests")
            result, score = mutation_score(root, span, test_path.name, candidate, cancel, self.sandbox)
            run = as_test_run(result)
            if run.ran and run.failed and run.reason != "cancelled" and span.symbol:
                # A wrong expected value is the usual failure: take it from the code as it is (see expected.py).
                say(f"round {round_no + 1} of {rounds}: taking the expected values from the code")
                fixed, found = expected_from_code(root, test_path.name, candidate, span.symbol, cancel, self.sandbox)
                if found:
                    say(f"round {round_no + 1} of {rounds}: running the tests again")
                    result, score = mutation_score(root, span, test_path.name, fixed, cancel, self.sandbox)
                    candidate, run, corrected = fixed, as_test_run(result), found
            if run.ran and run.passed and run.failed and run.reason != "cancelled":
                # Keep what is right: drop the tests that fail on the code as it is, run the rest again.
                pruned = drop_tests(candidate, {name.rsplit("::", 1)[-1] for name in run.failed})
                say(f"round {round_no + 1} of {rounds}: running the tests that passed")
                result, score = mutation_score(root, span, test_path.name, pruned, cancel, self.sandbox)
                candidate, run = pruned, as_test_run(result)
            code = candidate
            if not run.ran or run.reason == "cancelled":  # nothing to judge them by
                return TestsResult(code, run, round_no + 1, "", score if run.ran else None)
            if run.ok and (score.caught or score.reason or not score.tried):
                return TestsResult(code, run, round_no + 1, "", score, [str(c) for c in corrected])
            if run.ok:
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
        if code is None:
            return TestsResult(None, None, rounds, "the model did not produce tests that parse")
        return TestsResult(None, run, rounds, refusal, score)
