"""Hover, refactor and write tests outside their handlers: the domain (server/assist/symbols.py,
server/assist/targets.py) and the replies (server/lsp/convert.py), without a model or a server."""

from pathlib import Path

import pytest

from index.chunking import Chunk
from index.retrieval import SearchResult
from server.assist import AssistError, CodeSpan, RefactorResult, Reply, TestRun, TestsResult, Verification
from server.assist.symbols import definition_of, hover_card, is_symbol
from server.assist.targets import conventional_test_path, where_tests_go, workspace_root
from server.lsp.convert import lsp_hover, lsp_refactor, lsp_replace_lines, lsp_write_tests

CODE = 'def area(w, h):\n    """Width times height."""\n    return w * h\n'


def _span(path: Path, language: str = "python") -> CodeSpan:
    return CodeSpan(path, CODE, 0, 2, language, "area", 1)


def test_is_symbol_takes_names_only():
    assert is_symbol("area") and is_symbol("_x")
    assert not is_symbol("") and not is_symbol("2x") and not is_symbol("+")


def test_definition_of_skips_line_windows_and_other_names():
    chunks = [Chunk("a.py", 0, 9, "", "lines", "area = 1"), Chunk("a.py", 3, 5, "other", "function", "def other"),
              Chunk("a.py", 10, 12, "area", "function", CODE)]
    assert definition_of("area", chunks) is chunks[2]
    assert definition_of("missing", chunks) is None
    hit = SearchResult(Path("/w"), "pkg/geo.py", 4, 6, 1.0, "area", "function", CODE)
    assert definition_of("area", [hit]) is hit


def test_the_hover_card_and_its_markdown():
    card = hover_card("area", "python", "pkg/geo.py", Chunk("pkg/geo.py", 4, 6, "area", "function", CODE))
    assert (card.signature, card.docstring, card.where, card.line, card.code) == (
        "def area(w, h):", "Width times height.", "pkg/geo.py", 4, CODE)
    value = lsp_hover(card).contents.value
    assert value == "```python\ndef area(w, h):\n```\n\n*pkg/geo.py, line 5*\n\nWidth times height."
    noted = lsp_hover(card.__class__(**{**card.__dict__, "note": "Multiplies."})).contents.value
    assert noted == value + "\n\n---\nMultiplies."


def test_conventional_test_paths(tmp_path):
    src = tmp_path / "pkg" / "geo.py"
    assert conventional_test_path(tmp_path, _span(src)) == tmp_path / "tests" / "test_geo.py"
    assert conventional_test_path(tmp_path, _span(tmp_path / "a.ts", "typescript")) == tmp_path / "a.test.ts"
    assert conventional_test_path(tmp_path, _span(tmp_path / "a.go", "go")) == tmp_path / "a_test.go"
    assert conventional_test_path(tmp_path, _span(tmp_path / "a.rb", "ruby")) == tmp_path / "test_a.rb"


def test_workspace_root_is_the_folder_holding_the_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (b / "src").mkdir(parents=True)
    a.mkdir()
    assert workspace_root([a, b], b / "src" / "x.py") == b
    assert workspace_root([a], b / "src" / "x.py") == b / "src"  # in no folder: its own


def test_where_tests_go_refuses_unsaved_files_and_links_out_of_the_workspace(tmp_path):
    root, outside = tmp_path / "ws", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    src = root / "geo.py"
    with pytest.raises(AssistError, match="not saved on disk"):
        where_tests_go(root, _span(src))
    src.write_text(CODE)
    assert where_tests_go(root, _span(src)) == root / "tests" / "test_geo.py"
    (root / "tests").symlink_to(outside)
    with pytest.raises(AssistError, match="leads outside the workspace"):
        where_tests_go(root, _span(src))


def test_refactor_replies():
    reply = Reply("```python\nx\n```", None, True, "refactor@v1")
    verification = Verification("same", "2 tests agree", tests=2)
    written = RefactorResult("x = 1\n", "", reply, verification)
    edit = lsp_replace_lines("file:///w/geo.py", 3, 0, 2, "x = 1\n")
    applied = lsp_refactor(written, edit, True, "")
    assert applied["applied"] is True and applied["cacheHit"] is True and applied["reason"] == ""
    assert applied["edit"]["documentChanges"][0]["textDocument"] == {"uri": "file:///w/geo.py", "version": 3}
    assert applied["verification"] == {"verdict": "same", "summary": "2 tests agree", "tests": 2, "checks": 0,
                                       "differences": []}
    refused = lsp_refactor(RefactorResult(None, "no code in the reply", reply))
    assert refused == {"applied": False, "reason": "no code in the reply", "edit": None, "verification": None}
    moved = lsp_refactor(written, reason="the document changed")
    assert moved["reason"] == "the document changed" and moved["edit"] is None and "cacheHit" not in moved


def test_write_tests_replies():
    run = TestRun(["test_a"], [], "1 passed", True)
    written = lsp_write_tests(TestsResult("def test_a(): pass\n", run, 1, "", corrected=["area(2, 3)"]),
                              "file:///w/tests/test_geo.py", False, "the user declined")
    assert written["uri"] == "file:///w/tests/test_geo.py" and written["applied"] is False
    assert (written["passed"], written["ok"], written["rounds"], written["reason"], written["expectedFromCode"]) == (
        ["test_a"], True, 1, "the user declined", ["area(2, 3)"])
    none = lsp_write_tests(TestsResult(None, None, 0, "no function here"))
    assert none == {"applied": False, "reason": "no function here", "rounds": 0, "mutants": None}
