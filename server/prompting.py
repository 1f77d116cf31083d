"""Fill-in-the-middle (FIM) prompts: model families, their special tokens, and context budgets.

A FIM prompt shows the model the code before the cursor (the *prefix*) and after it
(the *suffix*) and asks for the *middle*. Each model family marks the three parts
with its own special tokens:

- Qwen2.5-Coder: ``<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>``
- DeepSeek-Coder: ``<｜begin▁of▁sentence｜><｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>``

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
        return FimFormat(family, ids[0], ids[1], ids[2], frozenset(stops), bos)
    return None


@dataclass(frozen=True)
class Budget:
    """Token quotas for one FIM prompt."""

    prefix_tokens: int
    suffix_tokens: int


@dataclass(frozen=True)
class FimPrompt:
    """A FIM prompt ready for the model.

    Attributes:
        tokens: the full prompt as token ids.
        prefix, suffix: the text that made it in (after budget cuts).
        prefix_dropped_tokens, suffix_dropped_tokens: tokens of the document the budget
            left out, before the prefix and after the suffix (0 when nothing was cut).
    """

    tokens: list[int]
    prefix: str
    suffix: str
    prefix_dropped_tokens: int
    suffix_dropped_tokens: int


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


def _take_lines(lines: list[str], budget: int, counter: TokenCounter) -> tuple[int, int]:
    """How many of ``lines`` fit in ``budget`` tokens, taken in order; and the tokens left out."""
    used, taken = 0, 0
    for line in lines:
        n = counter.count(line)
        if used + n > budget:
            break
        used += n
        taken += 1
    dropped = sum(counter.count(line) for line in lines[taken:])
    return taken, dropped


def window(prefix: str, suffix: str, budget: Budget, counter: TokenCounter) -> tuple[str, str, int, int]:
    """Cut the document around the cursor to the token budget, on whole lines.

    The cursor's own line is always kept whole (left part in the prefix, right part in
    the suffix); further lines are added outward while they fit.

    Returns:
        (prefix, suffix, prefix tokens dropped, suffix tokens dropped)
    """
    head, sep, cursor_left = prefix.rpartition("\n")
    before = [line + "\n" for line in head.split("\n")] if sep else []
    cursor_right, sep2, tail = suffix.partition("\n")
    after = [line + "\n" for line in tail.split("\n")] if sep2 else []
    if after:
        after[-1] = after[-1][:-1]  # the document's last line has no newline of its own

    left_budget = max(0, budget.prefix_tokens - counter.count(cursor_left))
    right_budget = max(0, budget.suffix_tokens - counter.count(cursor_right + sep2))
    n_before, dropped_before = _take_lines(before[::-1], left_budget, counter)
    n_after, dropped_after = _take_lines(after, right_budget, counter)
    kept_before = before[len(before) - n_before:] if n_before else []
    new_prefix = "".join(kept_before) + cursor_left
    new_suffix = cursor_right + sep2 + "".join(after[:n_after])
    return new_prefix, new_suffix, dropped_before, dropped_after


def build_fim_prompt(vocab: Vocabulary, fim: FimFormat, prefix: str, suffix: str,
                     budget: Budget, counter: TokenCounter | None = None) -> FimPrompt:
    """Build the token ids of a FIM prompt for the cursor between ``prefix`` and ``suffix``.

    Args:
        vocab: the model's tokenizer.
        fim: the model's FIM format (:func:`detect_fim_format`).
        prefix: the document text before the cursor.
        suffix: the document text after the cursor.
        budget: token quotas; whole lines beyond them are left out.
        counter: a shared :class:`TokenCounter` (its cache saves work across keystrokes).

    Returns:
        The prompt; its ``tokens`` are ``bos + [prefix marker] + prefix + [suffix marker]
        + suffix + [middle marker]``.
    """
    counter = counter or TokenCounter(vocab)
    prefix, suffix, p_drop, s_drop = window(prefix, suffix, budget, counter)
    tokens = [*fim.bos, fim.prefix_id, *vocab.tokenize(prefix), fim.suffix_id,
              *vocab.tokenize(suffix), fim.middle_id]
    return FimPrompt(tokens, prefix, suffix, p_drop, s_drop)
