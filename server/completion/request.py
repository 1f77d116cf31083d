"""One completion request, worked out once: the cursor's text, the length policy, the cache key, the budget."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..length import LengthPolicy, Mode, decide
from ..prompting import CursorText
from .parts import SINGLE_LINE_MAX_TOKENS, Snapshot, check_document, language_grammar


@dataclass(frozen=True)
class CompletionRequest:
    """Everything a suggestion for ``snap`` depends on, computed once per request.

    Attributes:
        snap: the document at the cursor.
        cursor: its text split around the cursor (above, typed, below).
        policy: the length policy (single line, multi-line, where it ends).
        key: the type-through cache's key: the anchor (text above the cursor's line and
            from the cursor on), the language and the prompt budgets.
        max_tokens: most tokens to generate: ``completion.maxTokens``, at most
            SINGLE_LINE_MAX_TOKENS for a single line.
        grammar: the tree-sitter grammar of the language, or None.
        manual: the user asked (Invoked); automatic requests come as they type.
    """

    snap: Snapshot
    cursor: CursorText
    policy: LengthPolicy
    key: tuple
    max_tokens: int
    grammar: str | None
    manual: bool = False

    @staticmethod
    def of(snap: Snapshot, settings: Settings, manual: bool = False, *, check: bool = True) -> CompletionRequest:
        """The request for ``snap``.

        Raises:
            Unsuitable: the document gets no suggestion (:func:`check_document`), when ``check``.
        """
        if check:
            check_document(snap.text, settings.completion_max_file_size_kb)
        cursor = CursorText.at(snap.text, snap.offset)
        policy = decide(snap.text[: snap.offset], cursor.below, snap.language_id, settings.completion_max_lines)
        max_tokens = settings.completion_max_tokens if policy.mode is Mode.MULTI_LINE \
            else min(settings.completion_max_tokens, SINGLE_LINE_MAX_TOKENS)
        return CompletionRequest(snap, cursor, policy, cache_key(cursor, snap.language_id, settings), max_tokens,
                                 language_grammar(snap.language_id), manual)

    @property
    def uri(self) -> str:
        return self.snap.uri

    def busy_right(self, settings: Settings) -> bool:
        """More than ``completion.maxRightChars`` non-blank characters right of the cursor."""
        return sum(not ch.isspace() for ch in self.policy.line_right) > settings.completion_max_right_chars


def cache_key(cursor: CursorText, language_id: str, settings: Settings) -> tuple:
    """The anchor key: what a cached suggestion is valid for."""
    return (hash(cursor.above), hash(cursor.below), language_id,
            settings.completion_prefix_tokens, settings.completion_suffix_tokens)
