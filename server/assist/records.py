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
    """A piece of context sent with a chat message: a label, the text, and where it is from.

    Attributes:
        retrieved: found for the question (a search result), so not known before it is asked;
            False for what the editor shows (the selection, the current file), which a chat
            prompt puts before the conversation so that it can be read ahead.
        selected: the code the user selected: what a question about "this function" means.
    """

    label: str
    text: str
    reference: Reference | None = None
    retrieved: bool = False
    selected: bool = False


@dataclass
class Reply:
    """A model answer and the code it used.

    ``prompt_tokens`` and ``output_tokens`` count the model's tokens (0 for a cache hit or a
    remote server that did not say); ``read_tokens`` are the prompt tokens read after the
    request came (the rest were in the KV cache: read ahead, or shared with an earlier
    prompt); ``first_token_ms`` is the time from the request to the model's first token;
    ``finish`` is the generation's reason to stop (``stop``, ``max_tokens``, ``cancelled``,
    ``timeout``; ``cache`` for a cache hit).
    """

    text: str
    session_id: str | None
    cache_hit: bool
    prompt_version: str
    references: list[Reference] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish: str = "stop"
    read_tokens: int = 0
    first_token_ms: float = 0.0


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
class Mutant:
    """A deliberately broken copy of a function: what was changed (``line`` 1-based in the file) and its source."""

    description: str
    line: int
    source: str


@dataclass(frozen=True)
class Verification:
    """What running the code said about a rewrite.

    Attributes:
        verdict: ``"kept"`` (every test that passed still passes and every check agrees, at
            least one of them ran), ``"changed"`` (some test or check differs: the rewrite
            changes behaviour), ``"unverified"`` (nothing could be run; ``summary`` says why).
        summary: one sentence for the user ("12 tests still pass, 5 checks agree").
        tests: workspace tests that passed on the original (and were compared).
        checks: derived checks compared.
        differences: what differs, one line each (empty unless ``changed``).
    """

    verdict: str
    summary: str
    tests: int = 0
    checks: int = 0
    differences: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RefactorResult:
    """A rewrite of a span: ``code`` (None when refused, with ``reason``), the model's reply, and
    what running the code said about it (None when the rewrite was refused before it was run)."""

    code: str | None
    reason: str
    reply: Reply
    verification: Verification | None = None


WEAK_SCORE = 0.5  # write-tests: a test file catching fewer than this share of the mutants is called weak


@dataclass(frozen=True)
class MutationScore:
    """Generated tests against the code as it is and against mutants of it.

    Attributes:
        passed, failed: test names on the code as it is.
        tried: mutants run; ``caught``: how many made at least one test fail.
        survivors: the mutants no test noticed (description and source).
        output: pytest's output on the code as it is (for repairs).
        reason: why mutants were not tried ("" when they were).
    """

    passed: list[str]
    failed: list[str]
    tried: int
    caught: int
    survivors: list[Mutant]
    output: str
    reason: str = ""

    @property
    def share(self) -> float | None:
        """caught / tried, 0-1; None when no mutant was tried."""
        return self.caught / self.tried if self.tried else None

    @property
    def weak(self) -> bool:
        """Fewer than WEAK_SCORE of the mutants tried were caught."""
        return self.share is not None and self.share < WEAK_SCORE


@dataclass(frozen=True)
class TestsResult:
    """Generated tests: ``code`` (None when refused, with ``reason``), the last run, model rounds used,
    the last run's mutation score (None when the tests were not run), and the expected values
    that were taken from running the code as it is (``"test_x: 3 -> 4"``; see ``expected.py``)."""

    __test__ = False

    code: str | None
    run: TestRun | None
    rounds: int
    reason: str
    score: MutationScore | None = None
    corrected: list[str] = field(default_factory=list)
