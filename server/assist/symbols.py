"""What hover shows about a symbol: its definition, found by name, as a :class:`HoverCard`.

The definition comes from the hovered document's chunks (its parse) or, failing that, from
the workspace index's lexical search; the card holds its signature, docstring and place at
once, and the model's one-line explanation (:meth:`server.assist.Assistant.hover`) when it
comes within the time cap. :func:`server.lsp.convert.lsp_hover` turns a card into Markdown.

Threads: pure functions, any thread. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, TypeVar

from .explain import docstring_and_signature


class Definition(Protocol):
    """A piece of code with a name: an index chunk (:class:`index.chunking.Chunk`) or a search
    result (:class:`index.retrieval.SearchResult`)."""

    symbol: str
    kind: str
    start_line: int
    text: str


D = TypeVar("D", bound=Definition)


@dataclass(frozen=True)
class HoverCard:
    """What hover shows about a symbol.

    Attributes:
        symbol: the hovered name.
        language: the definition's language (a tree-sitter grammar name, or ``text``).
        signature: the definition's first line(s), up to its body.
        docstring: its docstring or leading comment ("" when it has none).
        where: the file it is in: its name (the hovered document) or its workspace-relative path.
        line: its first line, 0-based.
        code: the definition's source (what the explanation is about).
        note: the model's one-line explanation, or None (none came within the time cap).
    """

    symbol: str
    language: str
    signature: str
    docstring: str
    where: str
    line: int
    code: str
    note: str | None = None


def is_symbol(word: str) -> bool:
    """May ``word`` name a definition (it starts with a letter or ``_``)? Hover ignores anything else."""
    return bool(word) and (word[0].isalpha() or word[0] == "_")


def definition_of(symbol: str, candidates: Iterable[D]) -> D | None:
    """The first of ``candidates`` that defines ``symbol`` (a line window defines nothing), or None."""
    return next((c for c in candidates if c.symbol == symbol and c.kind != "lines"), None)


def hover_card(symbol: str, language: str, where: str, definition: Definition) -> HoverCard:
    """The card for ``definition`` of ``symbol`` (in ``language``, found in the file ``where``), without a note."""
    signature, docstring = docstring_and_signature(language, definition.text)
    return HoverCard(symbol, language, signature, docstring, where, definition.start_line, definition.text)
