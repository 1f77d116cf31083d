"""Fill-in-the-middle (FIM) prompts: model families, their special tokens, and context budgets.

A FIM prompt shows the model the code before the cursor (the *prefix*) and after it
(the *suffix*) and asks for the *middle*. Each model family marks the three parts
with its own special tokens:

- Qwen2.5-Coder: ``<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>``
- DeepSeek-Coder: ``<｜begin▁of▁sentence｜><｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>``

deepseek-lsp puts the text typed on the cursor's line *after* the middle marker, as the
forced start of the middle (see :class:`FimPrompt`): the rest of the prompt then stays
the same from keystroke to keystroke, and llama.cpp reuses its KV cache.

The family is read from the model's own vocabulary (which markers exist as single
special tokens), never from the file name. Prompts are built as token ids: the
user's code is tokenized with special-token parsing *off*, so source text that
happens to contain a FIM marker (a control token) cannot inject it.

This module imports nothing from pygls, lsprotocol or llama_cpp: it talks to the
model through the small :class:`Vocabulary` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, Sequence

from .text import split_lines


class Vocabulary(Protocol):
    """The tokenizer side of a model (see ``server.engine.LoadedModel``)."""

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_special`` adds BOS when the model wants it."""

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` (special tokens rendered as their text)."""

    def is_special(self, token: int) -> bool:
        """True for control and user-defined (added) tokens, False for ordinary text pieces."""


@dataclass(frozen=True)
class PromptFamily:
    """How one model family spells a FIM prompt and where its output ends.

    Attributes:
        name: family name shown in ``deepseek.status`` (``qwen2.5-coder``, ``deepseek-coder``).
        fim_prefix, fim_suffix, fim_middle: the three markers, prompt order prefix-suffix-middle.
        stop_tokens: special tokens that end a FIM completion besides the model's end-of-generation
            tokens (a new file or another FIM marker means the middle is over).
    """

    name: str
    fim_prefix: str
    fim_suffix: str
    fim_middle: str
    stop_tokens: tuple[str, ...]


QWEN_CODER = PromptFamily(
    name="qwen2.5-coder",
    fim_prefix="<|fim_prefix|>", fim_suffix="<|fim_suffix|>", fim_middle="<|fim_middle|>",
    stop_tokens=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>",
                 "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
)
DEEPSEEK_CODER = PromptFamily(
    name="deepseek-coder",
    fim_prefix="<｜fim▁begin｜>", fim_suffix="<｜fim▁hole｜>", fim_middle="<｜fim▁end｜>",
    stop_tokens=("<|EOT|>", "<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
)
FAMILIES: tuple[PromptFamily, ...] = (QWEN_CODER, DEEPSEEK_CODER)


def special_token_id(vocab: Vocabulary, text: str) -> int | None:
    """The id of ``text`` when the vocabulary has it as one *special* token, else None.

    Special means a control or user-defined (added) token, so an ordinary word that
    happens to be one token does not count.
    """
    ids = vocab.tokenize(text, parse_special=True)
    return ids[0] if len(ids) == 1 and vocab.is_special(ids[0]) else None


@dataclass(frozen=True)
class FimFormat:
    """A family bound to one vocabulary: the marker ids and stop ids, ready to use."""

    family: PromptFamily
    prefix_id: int
    suffix_id: int
    middle_id: int
    stop_ids: frozenset[int]
    bos: tuple[int, ...]  # what the model puts first (its BOS when it adds one), else ()
    file_sep_id: int | None = None  # Qwen's <|file_sep|>: marks files of cross-file context


def detect_fim_format(vocab: Vocabulary) -> FimFormat | None:
    """Find the family whose three FIM markers are special tokens of ``vocab``.

    Returns:
        The bound format, or None when the model has no FIM tokens (a chat-only model).
    """
    for family in FAMILIES:
        ids = [special_token_id(vocab, m) for m in (family.fim_prefix, family.fim_suffix, family.fim_middle)]
        if None in ids:
            continue
        stops = {special_token_id(vocab, t) for t in family.stop_tokens} - {None}
        # What add_special puts around a piece of text: keep only what comes before it (BOS).
        probe = vocab.tokenize("a", add_special=False)
        with_special = vocab.tokenize("a", add_special=True)
        bos = tuple(with_special[: len(with_special) - len(probe)]) if with_special[-len(probe):] == probe else ()
        return FimFormat(family, ids[0], ids[1], ids[2], frozenset(stops), bos,
                         special_token_id(vocab, "<|file_sep|>"))
    return None


@dataclass(frozen=True)
class Budget:
    """Token quotas for one FIM prompt."""

    prefix_tokens: int
    suffix_tokens: int


@dataclass(frozen=True)
class CursorText:
    """A document split at the cursor, the way the prompt layout needs it.

    Attributes:
        above: the text before the cursor's line ("" or ending with a newline).
        typed: the cursor line's text left of the cursor.
        below: the text from the cursor to the end of the document.
    """

    above: str
    typed: str
    below: str

    @classmethod
    def at(cls, text: str, offset: int) -> "CursorText":
        line_start = text.rfind("\n", 0, offset) + 1
        return cls(text[:line_start], text[line_start:offset], text[offset:])


@dataclass(frozen=True)
class FimPrompt:
    """A FIM prompt ready for the model, laid out for KV-cache reuse.

    ``anchor`` is ``bos + [prefix marker] + lines above the cursor's line + [suffix marker]
    + suffix + [middle marker]``: it stays the same while the user types on one line.
    ``typed`` is the cursor line's text left of the cursor, tokenized after the middle
    marker as the forced start of the middle. Each keystroke therefore changes only the
    last few tokens of the prompt, and llama.cpp re-evaluates only those.

    Attributes:
        anchor: token ids of the stable part.
        typed: token ids of the typed part.
        prefix, suffix: the text that made it in (``prefix`` ends with the typed text).
        prefix_dropped_tokens, suffix_dropped_tokens: tokens of the document the budget
            left out, before the prefix and after the suffix (0 when nothing was cut).
        start_line: the document line (0-based) the prefix starts on.
    """

    anchor: list[int]
    typed: list[int]
    prefix: str
    suffix: str
    prefix_dropped_tokens: int
    suffix_dropped_tokens: int
    start_line: int = 0

    @property
    def tokens(self) -> list[int]:
        return self.anchor + self.typed


class TokenCounter:
    """Counts tokens per line of text with the model's real tokenizer, cached.

    Lines are counted one by one (each with its newline); the sum is within a few
    tokens of counting the whole text, and the cache makes re-counting the same lines
    on the next keystroke nearly free.
    """

    def __init__(self, vocab: Vocabulary, cache_size: int = 65536):
        self._vocab = vocab
        self.count = lru_cache(maxsize=cache_size)(self._count)

    def _count(self, line: str) -> int:
        return len(self._vocab.tokenize(line))


# The prefix window starts on a line number that is a multiple of this, so moving down
# a few lines keeps the prompt's start (and its KV cache) the same.
WINDOW_GRID_LINES = 32


def _lines(text: str) -> list[str]:
    """Split keeping newlines; the last piece has no newline (and may be "")."""
    return split_lines(text, keepends=True)


def window(cursor: CursorText, budget: Budget, counter: TokenCounter,
           grid: int = WINDOW_GRID_LINES, keep_start: int | None = None) -> tuple[str, str, str, int, int, int]:
    """Cut the document around the cursor to the token budget, on whole lines.

    The lines above the cursor's line are kept from a grid-aligned start line: the
    smallest multiple of ``grid`` from which they fit the prefix budget (minus the typed
    text), so the start moves in steps of ``grid`` lines, not on every new line. With
    ``keep_start`` (the start the last prompt for this document used), that start is kept
    while the lines from it to the cursor fit the budget and fill at least half of it:
    after a move within that span the prompt then begins exactly as before, and the KV
    cache holds it (see server/engine/kv_cache.py). The suffix keeps the rest of the cursor's line
    and whole lines below while they fit.

    Returns:
        (above kept, typed kept, below kept, prefix tokens dropped, suffix tokens dropped,
        the first line kept, 0-based)
    """
    typed = cursor.typed
    typed_tokens = counter.count(typed)
    if typed_tokens > budget.prefix_tokens:  # a giant line (minified code): keep its end
        typed = typed[-budget.prefix_tokens * 3:]
        typed_tokens = counter.count(typed)
    above = _lines(cursor.above)
    counts = [counter.count(line) for line in above]
    room = max(0, budget.prefix_tokens - typed_tokens)
    start, used = len(above), 0
    while start > 0 and used + counts[start - 1] <= room:
        used += counts[start - 1]
        start -= 1
    if start % grid:
        aligned = (start // grid + 1) * grid
        start = aligned if aligned <= len(above) else start
    if keep_start is not None and start <= keep_start < len(above) and 2 * sum(counts[keep_start:]) >= room:
        start = keep_start
    prefix_dropped = sum(counts[:start])

    right, newline, rest = cursor.below.partition("\n")
    first = right + newline
    below_lines = _lines(rest)
    suffix_room = max(0, budget.suffix_tokens - counter.count(first))
    n, used = 0, 0
    for line in below_lines:
        c = counter.count(line)
        if used + c > suffix_room:
            break
        used += c
        n += 1
    suffix_dropped = sum(counter.count(line) for line in below_lines[n:])
    return "".join(above[start:]), typed, first + "".join(below_lines[:n]), prefix_dropped, suffix_dropped, start


def context_tokens(vocab: Vocabulary, fim: FimFormat, context: list[tuple[str, str]], path: str,
                   budget: int, counter: TokenCounter) -> list[int]:
    """Cross-file context: code from other files, best first, whole chunks within ``budget``.

    Qwen2.5-Coder's repository format marks each file with ``<|file_sep|>path``, and the
    current file last; other families get the path on a line of its own before the code.
    """
    out: list[int] = []
    used = 0
    for other, text in context:
        block = f"{other}\n{text.rstrip()}\n" if fim.file_sep_id is not None else f"# {other}\n{text.rstrip()}\n\n"
        n = counter.count(block) + 1
        if used + n > budget:
            continue
        used += n
        out += ([fim.file_sep_id] if fim.file_sep_id is not None else []) + vocab.tokenize(block)
    if out and fim.file_sep_id is not None:
        out += [fim.file_sep_id, *vocab.tokenize(f"{path}\n")]
    return out


def build_fim_prompt(vocab: Vocabulary, fim: FimFormat, cursor: CursorText,
                     budget: Budget, counter: TokenCounter | None = None,
                     context: list[tuple[str, str]] = (), context_budget: int = 0, path: str = "",
                     keep_start: int | None = None, grid: int = WINDOW_GRID_LINES) -> FimPrompt:
    """Build the token ids of a FIM prompt for ``cursor``.

    Args:
        vocab: the model's tokenizer.
        fim: the model's FIM format (:func:`detect_fim_format`).
        cursor: the document split at the cursor.
        budget: token quotas; whole lines beyond them are left out.
        counter: a shared :class:`TokenCounter` (its cache saves work across keystrokes).
        context: (path, code) of other files' chunks, best first, to put before everything.
        context_budget: tokens the context may use.
        path: the current file's workspace-relative path (named after the context).
        keep_start: the window start line of the last prompt for this document (see :func:`window`).
        grid: the window start is a multiple of this many lines (see :func:`window`).

    Returns:
        The prompt (see :class:`FimPrompt` for the layout).
    """
    counter = counter or TokenCounter(vocab)
    above, typed, suffix, p_drop, s_drop, start = window(cursor, budget, counter, grid, keep_start)
    extra = context_tokens(vocab, fim, list(context), path, context_budget, counter) if context else []
    if fim.file_sep_id is not None:  # repository format: files first, then the FIM prompt
        anchor = [*fim.bos, *extra, fim.prefix_id, *vocab.tokenize(above)]
    else:
        anchor = [*fim.bos, fim.prefix_id, *extra, *vocab.tokenize(above)]
    anchor += [fim.suffix_id, *vocab.tokenize(suffix), fim.middle_id]
    return FimPrompt(anchor, vocab.tokenize(typed), above + typed, suffix, p_drop, s_drop, start)
