"""Conversion to and from LSP: UTF-16 positions to code-point offsets, the completion fallback's item."""

import pytest
from lsprotocol import types
from pygls.workspace import TextDocument

from server.completion import Suggestion
from server.length import decide
from server.lsp.convert import lsp_completion, snapshot, word_before


def test_snapshot_offsets_agree_with_pygls_for_utf16_positions():
    doc = TextDocument("file:///t.py", "x = '😋'\nname = 'é'\n", language_id="python")
    for line, character in [(0, 0), (0, 5), (0, 7), (0, 8), (1, 0), (1, 8), (1, 10), (2, 0)]:
        pos = types.Position(line=line, character=character)
        assert snapshot(doc, pos).offset == doc.offset_at_position(pos), (line, character)
    assert doc.source[snapshot(doc, types.Position(line=0, character=7)).offset] == "'"


# The textDocument/completion fallback's item (docs/PROTOCOL.md): clients without inline completion
# (eglot, Helix, Zed) keep only items whose label or filterText begins with the word before the cursor.

def _suggestion(doc: TextDocument, pos: types.Position, text: str) -> Suggestion:
    offset = snapshot(doc, pos).offset
    policy = decide(doc.source[:offset], doc.source[offset:], "python", max_lines=8)
    return Suggestion(text=text, policy=policy, source="model", generation=None, prefix_dropped_tokens=0,
                      suffix_dropped_tokens=0, latency_ms=1.0)


def _item(doc: TextDocument, pos: types.Position, text: str) -> types.CompletionItem:
    word, start = word_before(doc, pos)
    result = lsp_completion(_suggestion(doc, pos, text), pos, word, start)
    assert result.is_incomplete and len(result.items) == 1
    return result.items[0]


def _applied(doc: TextDocument, edit: types.TextEdit) -> str:
    """The document after a client applies ``edit`` (pygls converts the client's units)."""
    start, end = doc.offset_at_position(edit.range.start), doc.offset_at_position(edit.range.end)
    return doc.source[:start] + edit.new_text + doc.source[end:]


def test_the_item_replaces_the_word_being_typed_and_begins_with_it():
    doc = TextDocument("file:///t.py", "def f(result):\n    return r\n", language_id="python")
    pos = types.Position(line=1, character=12)
    item = _item(doc, pos, "esult + 1")
    assert item.text_edit.range == types.Range(start=types.Position(line=1, character=11), end=pos)
    assert item.text_edit.new_text == "result + 1"
    assert item.label == item.filter_text == "result + 1"
    assert _applied(doc, item.text_edit) == "def f(result):\n    return result + 1\n"
    assert item.kind == types.CompletionItemKind.Text and item.insert_text_format == types.InsertTextFormat.PlainText


def test_a_multi_line_suggestion_is_one_item_labelled_with_its_first_line():
    doc = TextDocument("file:///t.py", "def total(xs):\n    s = 0\n    for x in xs:\n        s\n", language_id="python")
    pos = types.Position(line=3, character=9)
    item = _item(doc, pos, " += x\n    return s")
    assert item.label == item.filter_text == "s += x"
    assert item.text_edit.range.start == types.Position(line=3, character=8)
    assert item.kind == types.CompletionItemKind.Snippet
    assert _applied(doc, item.text_edit).endswith("        s += x\n    return s\n")


def test_without_a_word_the_edit_is_at_the_cursor_and_the_label_is_the_first_code_line():
    doc = TextDocument("file:///t.py", "class A:\n    def f(self):\n        return self.\n", language_id="python")
    after_dot = types.Position(line=2, character=20)
    item = _item(doc, after_dot, "g()")
    assert item.text_edit.range == types.Range(start=after_dot, end=after_dot)
    assert item.label == item.filter_text == "g()"
    end_of_def = types.Position(line=1, character=16)  # after "def f(self):": the suggestion starts a new line
    item = _item(doc, end_of_def, "\n        x = 1\n        return x")
    assert item.label == item.filter_text == "x = 1"
    assert item.text_edit.new_text == "\n        x = 1\n        return x"


def test_no_item_for_no_suggestion_or_a_blank_one():
    doc = TextDocument("file:///t.py", "x = \n", language_id="python")
    pos = types.Position(line=0, character=4)
    assert lsp_completion(None, pos).items == []
    assert lsp_completion(_suggestion(doc, pos, "  \n"), pos).items == []
    with pytest.raises(ValueError, match="start of the word"):
        lsp_completion(_suggestion(doc, pos, "1"), pos, "x")


def test_word_before_counts_the_clients_utf16_units():
    doc = TextDocument("file:///t.py", "s = '😋' + 𝑥𝑦\nname_2 = 1\n", language_id="python")
    # 𝑥 and 𝑦 (mathematical italic letters) are word characters outside the BMP: two UTF-16 units each.
    assert word_before(doc, types.Position(line=0, character=15)) == ("𝑥𝑦", types.Position(line=0, character=11))
    assert word_before(doc, types.Position(line=0, character=13)) == ("𝑥", types.Position(line=0, character=11))
    assert word_before(doc, types.Position(line=0, character=11)) == ("", types.Position(line=0, character=11))
    assert word_before(doc, types.Position(line=1, character=6)) == ("name_2", types.Position(line=1, character=0))
    assert word_before(doc, types.Position(line=1, character=7)) == ("", types.Position(line=1, character=7))
    for outside in [types.Position(line=5, character=0), types.Position(line=1, character=40)]:
        assert word_before(doc, outside) == ("", outside)
