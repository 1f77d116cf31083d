"""Tree-sitter helpers shared by the index (chunks) and the assistant (definitions, syntax checks).

Grammars come from tree-sitter-language-pack (bundled in its wheel; nothing is
downloaded). The languages, their grammars and their definition node types are the
table in :mod:`server.languages`. Tree-sitter parsers are not thread-safe: each thread
keeps its own parser per grammar. Trees are read-only once made and may be read from any
thread. The walks here are iterative: nesting depth (3,000 brackets) never meets Python's
recursion limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from server.languages import DEFINITIONS, for_path
from server.text import split_lines

# A text longer than this is handed to tree-sitter in pieces this long (bytes; see parse).
READ_CHUNK_BYTES = 16 * 1024

_local = threading.local()  # this thread's parsers: grammar -> tree_sitter.Parser


@dataclass(frozen=True)
class Definition:
    """A function, method, class... in a file: lines ``start_line..end_line`` (0-based, inclusive)."""

    start_line: int
    end_line: int
    name: str
    kind: str


def grammar_for(path: str) -> str | None:
    """The tree-sitter grammar of a file name or path (``python``, ``tsx``...), or None."""
    lang = for_path(path)
    return lang.grammar if lang else None


def _parser(grammar: str):
    """This thread's parser for ``grammar``."""
    parsers = _local.__dict__.setdefault("parsers", {})
    if grammar not in parsers:
        from tree_sitter_language_pack import get_parser
        parsers[grammar] = get_parser(grammar)
    return parsers[grammar]


def parse(grammar: str, text: str):
    """The tree-sitter tree of ``text`` (any thread; a ``tree_sitter.Tree``).

    tree-sitter holds the GIL while it parses, so a long parse on a worker thread would
    stop every other thread, the event loop too, for all of it (1.8 s for a 4 MiB Python
    file). A text longer than READ_CHUNK_BYTES is therefore handed over in pieces through a
    read callback: between two pieces the interpreter can switch threads. The pieces are
    ``bytes`` (py-tree-sitter 0.26 reads a callback tree's ``Node.text`` through the callback
    and crashes on a ``memoryview``).
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= READ_CHUNK_BYTES:
        return _parser(grammar).parse(data)
    return _parser(grammar).parse(lambda byte, _point: data[byte:byte + READ_CHUNK_BYTES])


def node_name(node) -> str:
    """The name a definition node declares ("" when it has none)."""
    name = node.child_by_field_name("name")
    if name is None:
        for child in node.children:  # Go type_declaration, C function declarator, Rust impl type ...
            if child.type in ("type_spec", "function_declarator", "declarator", "type_identifier", "identifier"):
                inner = child.child_by_field_name("name") or child.child_by_field_name("declarator") or child
                return inner.text.decode("utf-8", "replace").split("(")[0]
        return ""
    return name.text.decode("utf-8", "replace")


def enclosing_definition(path: str, text: str, line: int) -> Definition | None:
    """The innermost definition (function, method, class...) around ``line`` (0-based) of
    ``text``, or None (none there, or ``path`` is not a language with a grammar)."""
    grammar = grammar_for(path)
    if grammar is None:
        return None
    return definition_at(grammar, parse(grammar, text), line)


def definition_at(grammar: str, tree, line: int) -> Definition | None:
    """The innermost definition around ``line`` (0-based) in a tree :func:`parse` made, or None.

    Only the nodes on ``line`` are looked at (a tree cursor finds the first child there),
    so the cost grows with the depth at ``line``, not with the file's length.
    """
    kinds = DEFINITIONS[grammar]
    best = None
    stack = _on_line(tree.root_node, line)[::-1]
    while stack:  # depth first, in document order: the last definition met is the innermost
        node = stack.pop()
        if node.type in kinds:
            best = Definition(node.start_point[0], node.end_point[0], node_name(node), kinds[node.type])
        stack.extend(_on_line(node, line)[::-1])
    return best


def _on_line(node, line: int) -> list:
    """The children of ``node`` that have a part on ``line``, in order."""
    cursor = node.walk()
    if cursor.goto_first_child_for_point((line, 0)) is None:  # the first child ending after the line's start
        return []
    found = []
    while cursor.node.start_point[0] <= line:
        found.append(cursor.node)
        if not cursor.goto_next_sibling():
            break
    return found


def syntax_errors(grammar: str, source: str) -> int:
    """ERROR and MISSING nodes tree-sitter finds in ``source`` (0 for ``text``, an unknown language)."""
    if grammar == "text":
        return 0
    count, stack = 0, [parse(grammar, source).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            count += 1
        stack.extend(node.children)
    return count


def parseable_prefix(grammar: str, code: str) -> str:
    """The longest run of whole lines from the start of ``code`` that parses (for cut-off answers)."""
    lines = split_lines(code, keepends=True)
    for end in range(len(lines), 0, -1):
        candidate = "".join(lines[:end])
        if candidate.strip() and not syntax_errors(grammar, candidate):
            return candidate
    return ""
