"""Position conversion: UTF-16 positions from the client to code-point offsets."""

from lsprotocol import types
from pygls.workspace import TextDocument

from server.lsp_convert import snapshot


def test_snapshot_offsets_agree_with_pygls_for_utf16_positions():
    doc = TextDocument("file:///t.py", "x = '😋'\nname = 'é'\n", language_id="python")
    for line, character in [(0, 0), (0, 5), (0, 7), (0, 8), (1, 0), (1, 8), (1, 10), (2, 0)]:
        pos = types.Position(line=line, character=character)
        assert snapshot(doc, pos).offset == doc.offset_at_position(pos), (line, character)
    assert doc.source[snapshot(doc, types.Position(line=0, character=7)).offset] == "'"
