"""Parses of documents for code actions and hover: one per document version, made off the event loop.

VS Code asks for code actions at every cursor move, and a hover needs the definitions of
the file; both need the tree-sitter tree of the document as it is. :class:`ParseCache`
keeps the parse of the last version of a few documents, keyed by URI and version and
checked against the text (a document closed and opened again starts at version 1 again).
The parse runs on asyncio's default executor; the event loop only looks the entry up and
awaits it. Requests for a version that is being parsed wait for that same parse; a request
cancelled meanwhile leaves the parse running for the next one.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass

from index.chunking import Chunk, chunk_file
from index.syntax import Definition, definition_at, grammar_for, parse

PARSED_DOCUMENTS = 4  # documents whose last parse is kept (least recently used out; a tree is ~32x its text)


class ParsedDocument:
    """One version of a document, parsed with tree-sitter. Any thread may read it.

    Attributes:
        name: the file name (its extension chose the grammar).
        text: the text that was parsed.
        grammar: the tree-sitter grammar (``python``, ``tsx``...).
        tree: the ``tree_sitter.Tree`` of ``text``.
    """

    def __init__(self, name: str, text: str, grammar: str, tree) -> None:
        self.name, self.text, self.grammar, self.tree = name, text, grammar, tree
        self._chunks: list[Chunk] | None = None
        self._lock = threading.Lock()

    def definition_at(self, line: int) -> Definition | None:
        """The innermost definition around ``line`` (0-based), or None. Cheap (the nodes on
        that line only): the event loop may call it."""
        return definition_at(self.grammar, self.tree, line)

    def chunks(self) -> list[Chunk]:
        """The file's chunks (:func:`index.chunking.chunk_file`), made from the tree on the first
        call and kept. The first call walks the whole tree: call it on a worker thread."""
        with self._lock:
            if self._chunks is None:
                self._chunks = chunk_file(self.name, self.text, self.tree)
            return self._chunks


def parse_document(name: str, text: str) -> ParsedDocument | None:
    """Parse ``text`` as the file ``name`` (any thread; ~0.4 s per MiB of Python).

    Returns:
        The parse, or None when ``name`` is not in a language with a grammar.
    """
    grammar = grammar_for(name)
    if grammar is None:
        return None
    return ParsedDocument(name, text, grammar, parse(grammar, text))


@dataclass
class _Entry:
    version: int | None
    text: str
    parse: asyncio.Future  # of ParsedDocument | None


class ParseCache:
    """The last parse of each of the ``documents`` most recently asked for. Use it on the event loop only."""

    def __init__(self, documents: int = PARSED_DOCUMENTS) -> None:
        self.documents = documents
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    async def get(self, uri: str, version: int | None, name: str, text: str) -> ParsedDocument | None:
        """The parse of ``text``, version ``version`` of ``uri``: kept, under way, or started now
        on the default executor (an older version of ``uri`` is dropped).

        Args:
            uri: the document.
            version: its LSP version; None for a file read from disk (then the text alone decides).
            name: its file name (the extension picks the grammar).
            text: its text at that version.

        Returns:
            The parse; None when ``name`` is not in a language with a grammar.

        Raises:
            Whatever the parse raised (the entry is dropped, so the next request tries again).
        """
        entry = self._entries.get(uri)
        if entry is None or entry.version != version or (entry.text is not text and entry.text != text):
            future = asyncio.get_running_loop().run_in_executor(None, parse_document, name, text)
            entry = self._entries[uri] = _Entry(version, text, future)
            while len(self._entries) > self.documents:
                self._entries.popitem(last=False)
        self._entries.move_to_end(uri)
        try:
            return await asyncio.shield(entry.parse)  # a cancelled request leaves the parse to the next one
        except Exception:
            if self._entries.get(uri) is entry:
                del self._entries[uri]
            raise
