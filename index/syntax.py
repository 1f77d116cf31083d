"""Tree-sitter helpers shared by the index (chunks) and the assistant (definitions, syntax checks).

Grammars come from tree-sitter-language-pack (bundled in its wheel; nothing is
downloaded). The languages, their grammars and their definition node types are the
table in :mod:`server.languages`. Parsers are cached per grammar; tree-sitter parsers
are not thread-safe, so each call parses with the cached parser under a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

from server.languages import DEFINITIONS, for_path
from server.text import split_lines

_PARSE_LOCK = threading.Lock()


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


@lru_cache(maxsize=None)
def _parser(grammar: str):
    from tree_sitter_language_pack import get_parser
    return get_parser(grammar)


def parse(grammar: str, text: str):
    """The tree-sitter tree of ``text`` (any thread)."""
    with _PARSE_LOCK:
        return _parser(grammar).parse(text.encode("utf-8", "replace"))


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
    """The innermost definition (function, method, class...) around ``line``, or None."""
    grammar = grammar_for(path)
    if grammar is None:
        return None
    kinds = DEFINITIONS[grammar]
    best = None

    def visit(node) -> None:
        nonlocal best
        for child in node.children:
            if child.start_point[0] <= line <= child.end_point[0]:
                if child.type in kinds:
                    best = Definition(child.start_point[0], child.end_point[0], node_name(child), kinds[child.type])
                visit(child)

    visit(parse(grammar, text).root_node)
    return best


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
