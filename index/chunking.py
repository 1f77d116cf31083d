"""Split source files into chunks: functions, methods and classes, found with tree-sitter.

A chunk is a piece of one file with its line range, symbol name and kind. Definitions
(functions, methods, classes, ...) become chunks; a definition longer than MAX_LINES is
split into overlapping windows that keep the symbol's name; code between definitions
(imports, module-level statements) and files in languages without a grammar become
line windows. Grammars come from tree-sitter-language-pack (bundled in its wheel).

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from server.languages import DEFINITIONS
from server.text import split_lines

from .syntax import grammar_for, node_name, parse

MAX_LINES = 60        # a longer definition is split into windows of this many lines ...
OVERLAP_LINES = 10    # ... overlapping by this many
MIN_GAP_LINES = 3     # module-level code shorter than this between definitions is not a chunk

# Definitions inside these kinds are chunked on their own too (methods of a class).
CONTAINERS = {"class", "impl", "interface", "trait", "module"}


@dataclass(frozen=True)
class Chunk:
    """A searchable piece of a file.

    Attributes:
        path: the file, relative to its workspace folder (POSIX separators).
        start_line, end_line: 0-based, inclusive.
        symbol: the definition's name ("" for line windows).
        kind: function, method, class, ... or ``lines``.
        text: the chunk's source text.
        secret: it holds (a line of) a credential (set by the index, see
            :func:`server.credentials.credential_lines`): never put into a prompt.
    """

    path: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    text: str
    secret: bool = False

    @property
    def hash(self) -> str:
        """Content hash: an unchanged chunk is never embedded twice."""
        return hashlib.sha1(self.text.encode("utf-8", "replace")).hexdigest()


def _windows(path: str, lines: list[str], start: int, end: int, symbol: str, kind: str) -> list[Chunk]:
    """Lines ``start..end`` as chunks of at most MAX_LINES, overlapping by OVERLAP_LINES."""
    out = []
    step = MAX_LINES - OVERLAP_LINES
    first = start
    while first <= end:
        last = min(end, first + MAX_LINES - 1)
        text = "".join(lines[first:last + 1])
        if text.strip():
            out.append(Chunk(path, first, last, symbol, kind, text))
        if last == end:
            break
        first += step
    return out


def chunk_file(path: str, text: str, tree=None) -> list[Chunk]:
    """Chunks of one file, in line order.

    Args:
        path: the file's workspace-relative path (its extension picks the grammar).
        text: its content.
        tree: the tree :func:`index.syntax.parse` made of ``text``, when the caller has it
            (not parsed again).
    """
    lines = split_lines(text, keepends=True)
    if not lines:
        return []
    grammar = grammar_for(path)
    if grammar is None:
        return _windows(path, lines, 0, len(lines) - 1, "", "lines")
    kinds = DEFINITIONS[grammar]
    tree = tree if tree is not None else parse(grammar, text)
    definitions: list[tuple[int, int, str, str]] = []

    def visit(node, depth: int) -> None:
        for child in node.children:
            kind = kinds.get(child.type)
            if kind is not None:
                definitions.append((child.start_point[0], child.end_point[0], node_name(child), kind))
                if kind in CONTAINERS:
                    visit(child, depth + 1)
            elif child.child_count and depth < 6:
                visit(child, depth + 1)  # decorated definitions, export statements, namespaces ...

    visit(tree.root_node, 0)
    chunks: list[Chunk] = []
    covered = [False] * len(lines)
    for start, end, symbol, kind in definitions:
        end = min(end, len(lines) - 1)
        if kind in CONTAINERS and end - start + 1 > MAX_LINES:
            # A big class: its methods are chunks of their own; keep its head (signature, fields).
            head_end = min(end, start + OVERLAP_LINES)
            chunks.append(Chunk(path, start, head_end, symbol, kind, "".join(lines[start:head_end + 1])))
        else:
            chunks.extend(_windows(path, lines, start, end, symbol, kind))
        for i in range(start, end + 1):
            covered[i] = True
    # Module-level code between definitions, as line windows.
    i = 0
    while i < len(lines):
        if covered[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(lines) and not covered[j + 1]:
            j += 1
        if sum(1 for line in lines[i:j + 1] if line.strip()) >= MIN_GAP_LINES:
            chunks.extend(_windows(path, lines, i, j, "", "lines"))
        i = j + 1
    chunks.sort(key=lambda c: (c.start_line, c.end_line))
    return chunks
