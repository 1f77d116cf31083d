"""The assistant's records: what a task takes and what it returns (plain dataclasses, snake_case)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..text import split_lines


class AssistError(Exception):
    """A request that cannot be served; ``str(e)`` is the message for the user."""


@dataclass(frozen=True)
class Reference:
    """Code an answer is about: whole lines ``start_line..end_line`` of ``path`` (0-based, inclusive)."""

    path: Path
    start_line: int
    end_line: int


@dataclass(frozen=True)
class CodeSpan:
    """A piece of a document: whole lines ``start_line..end_line`` (0-based, inclusive).

    Attributes:
        path: the file.
        text: the whole document (as the editor has it, or as on disk).
        language: the tree-sitter grammar (``python``, ``tsx``...; ``text`` when unknown).
        symbol: the definition's name when the span is one definition, else "".
        version: the editor's document version the text is from (None: read from disk).
    """

    path: Path
    text: str
    start_line: int
    end_line: int
    language: str
    symbol: str
    version: int | None = None

    @property
    def code(self) -> str:
        return "".join(split_lines(self.text, keepends=True)[self.start_line:self.end_line + 1])


@dataclass(frozen=True)
class ContextItem:
    """A piece of context sent with a chat message: a label, the text, and where it is from."""

    label: str
    text: str
    reference: Reference | None = None


@dataclass
class Reply:
    """A model answer and the code it used.

    ``prompt_tokens`` and ``output_tokens`` count the model's tokens (0 for a cache hit or a
    remote server that did not say); ``finish`` is the generation's reason to stop
    (``stop``, ``max_tokens``, ``cancelled``, ``timeout``; ``cache`` for a cache hit).
    """

    text: str
    session_id: str | None
    cache_hit: bool
    prompt_version: str
    references: list[Reference] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish: str = "stop"


@dataclass(frozen=True)
class TestRun:
    """One pytest run of generated tests: names that passed and failed, pytest's output, exit OK.

    ``ran`` is False when the tests were not run at all; ``reason`` then says why and how to
    fix it (no sandbox, no pytest). A run stopped early has ``reason`` ``timeout``/``cancelled``.
    """

    __test__ = False  # not a pytest test class

    passed: list[str]
    failed: list[str]
    output: str
    ok: bool
    ran: bool = True
    reason: str = ""


@dataclass(frozen=True)
class RefactorResult:
    """A rewrite of a span: ``code`` (None when refused, with ``reason``) and the model's reply."""

    code: str | None
    reason: str
    reply: Reply


@dataclass(frozen=True)
class TestsResult:
    """Generated tests: ``code`` (None when refused, with ``reason``), the last run, model rounds used."""

    __test__ = False

    code: str | None
    run: TestRun | None
    rounds: int
    reason: str
