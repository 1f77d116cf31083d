"""The completion pipeline's parts: what a request, a suggestion and a cached answer are.

Plain data and pure functions, shared by the service (event loop), the cache (event loop)
and the generators (the engine's thread or the remote pool). No pygls, no lsprotocol.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from ..engine import Generation, LoadedModel
from ..languages import BY_ID
from ..length import LengthPolicy, Mode, trim

SINGLE_LINE_MAX_TOKENS = 64  # a line of code is rarely longer; caps a model that will not stop
CACHE_ENTRIES = 256          # anchors remembered by the type-through cache (LRU)
TYPING_GAP_MS = 1500         # a pause longer than this is not "typing" for the debounce
EMA_WEIGHT = 0.3             # weight of the newest sample in the moving averages
MAX_HEALED_TOKENS = 4        # token healing takes back at most this many typed tokens
REJECTED_CANDIDATES = 2      # a manual request on an empty line tries this many more first tokens
IDLE_MS = 250                # no request for this long after a suggestion was shown: the user is not typing
READ_AHEAD_MS = 50           # the cursor came to a place: its prompt is read after this long without a request
COLD_MIN_PREFIX = 128        # the shorter window at a place the cache has not seen keeps at least this many
COLD_MIN_SUFFIX = 32         # ... tokens before and after the cursor (see LocalGenerator.fim_prompt)
COLD_GRID_LINES = 8          # its start line is a multiple of this (a 32-line grid would leave it half empty)


class Unsuitable(Exception):
    """The document or position gets no suggestion; ``str(e)`` says why (for logs)."""


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of one document at one cursor position.

    Attributes:
        uri: the document's URI.
        version: the document version the snapshot was taken from.
        text: the whole document.
        offset: the cursor as an index into ``text`` (code points).
        language_id: LSP language id (``python``, ``rust``, ...).
    """

    uri: str
    version: int | None
    text: str
    offset: int
    language_id: str


@dataclass(frozen=True)
class CompletionStats:
    """Figures for ``deepseek.status``.

    Attributes:
        model_answers: suggestions that needed the model; cache_answers: from the caches.
        avg_latency_ms: moving average latency of model answers (ms), None before the first.
        prompt_tokens / reused_tokens: over all generations, prompt tokens and those the KV cache held.
        shifted_tokens: of the reused tokens, those shifted from another position.
        restored_states: prompts that started from a saved KV state (another file or place).
        kv_states / kv_states_mb / kv_budget_mb: saved KV states kept now, their size and budget (MiB).
        prepared_ahead: suggestions prepared while the user was idle (after a shown one).
        read_ahead: prompts read into the KV cache at a place the cursor went to (code actions asked).
        short_windows: suggestions made from the shorter window of a place the cache had not
            seen (``completion.coldPromptMs``).
        prompt_rate: prompt tokens read per second on this machine (moving average), None before any.
        large_answers: explicit requests the assistant's larger model answered (``completion.manualModel``).
        large_rate: the larger model's prompt rate for fill-in-the-middle (tokens/s), None before any.
        large_model: the larger model's name while it is attached for explicit requests, else None.
        large_read_ahead: prompts read into the larger model's KV cache at a place the cursor went to.
        last_model: the model of the last suggestion the model made: ``small`` (the completion
            model) or ``large``; None before any.
        last_confidence: how sure the model was of that suggestion (:class:`Confidence`), None
            before any or without log-probabilities (a remote model).
        quiet_answers: automatic suggestions the model wrote but was not sure enough of to show
            (``completion.minConfidence``).
    """

    model_answers: int
    cache_answers: int
    avg_latency_ms: float | None
    prompt_tokens: int
    reused_tokens: int
    shifted_tokens: int = 0
    restored_states: int = 0
    kv_states: int = 0
    kv_states_mb: float = 0.0
    kv_budget_mb: int = 0
    prepared_ahead: int = 0
    read_ahead: int = 0
    short_windows: int = 0
    prompt_rate: float | None = None
    large_answers: int = 0
    large_rate: float | None = None
    large_read_ahead: int = 0
    large_model: str | None = None
    last_model: str | None = None
    last_confidence: Confidence | None = None
    quiet_answers: int = 0


class TypingPace:
    """When each document's requests came, how fast the user types there, and the debounce it asks for.

    Attributes:
        last: each document's last request (``time.monotonic()`` seconds).
        gap_ms: each document's moving average gap between requests while typing (ms).
    """

    def __init__(self):
        self.last: dict[str, float] = {}
        self.gap_ms: dict[str, float] = {}

    def keystroke(self, uri: str, now: float) -> None:
        """A request came for ``uri`` at ``now`` (seconds)."""
        last, self.last[uri] = self.last.get(uri), now
        if last is not None and (gap := (now - last) * 1000) < TYPING_GAP_MS:
            self.gap_ms[uri] = ema(self.gap_ms.get(uri), gap)

    def forget(self, uri: str) -> None:
        self.last.pop(uri, None)
        self.gap_ms.pop(uri, None)

    def debounce_ms(self, uri: str, settings: Any, generation_ms: float | None) -> float:
        """How long an automatic request waits before generating (ms), ``generation_ms`` the
        model's moving average time to write an answer.

        While the user types faster than the model generates, a generation started now
        would likely be overtaken by the next keystroke: wait about one typing interval
        (clamped to ``completion.debounceMinMs`` and ``completion.debounceMaxMs``). When the
        model is faster than the typing, waiting gains nothing: use the floor.
        """
        floor, ceiling = settings.completion_debounce_min_ms, settings.completion_debounce_max_ms
        interval = self.gap_ms.get(uri)
        if interval is None or generation_ms is None or 1.1 * interval >= generation_ms:
            return float(floor)
        return float(min(max(1.1 * interval, floor), ceiling))


@dataclass(frozen=True)
class Confidence:
    """How sure the model was of a suggestion's text: the probabilities (0-1) it gave the tokens
    it wrote for the part shown, among the tokens the constraints allowed (``Generation.logprobs``).

    Attributes:
        mean: their geometric mean (exp of the mean log-probability).
        least: the smallest of them (the model's least sure token).
        first: the first one (where the suggestion begins).
        tokens: how many tokens were counted.
    """

    mean: float
    least: float
    first: float
    tokens: int

    @staticmethod
    def of(logprobs: tuple[float, ...], ends: tuple[int, ...], start: int, end: int) -> Confidence | None:
        """The confidence of the tokens that write characters ``start`` to ``end`` of a text (those
        that write at least one of them), given each token's log-probability and the text's length
        once it was added (``Generation.logprobs``, ``Generation.ends``); None without any there."""
        picked = [lp for lp, a, b in zip(logprobs, (0,) + ends, ends) if b > start and a < end]
        if not picked:
            return None
        return Confidence(round(math.exp(sum(picked) / len(picked)), 4), round(math.exp(min(picked)), 4),
                          round(math.exp(picked[0]), 4), len(picked))


@dataclass
class Suggestion:
    """The completion and how it was made.

    Attributes:
        text: what to insert at the cursor ("" for no suggestion).
        policy: the length policy that shaped it.
        source: ``model`` (generated for this request), ``continued`` (a time-capped
            answer continued), ``joined`` (a running generation this request agreed
            with), or ``cache`` (type-through or exact hit, no model call).
        generation: figures of the generation that produced it (None for cache hits).
        prefix_dropped_tokens, suffix_dropped_tokens: context left out by the budget.
        latency_ms: from the request's arrival to the answer.
        through: the rest of a suggestion offered with alternatives (an explicit request) that
            the user typed or accepted part of; an explicit request then wants this rest alone.
        request: the request it answers (cursor text, policy, cache key, budget), worked out
            once: the alternatives and the type-through cache take it from here.
        large: the assistant's larger model wrote it (``completion.manualModel``), not the completion model.
        confidence: how sure the model was of ``text`` (the tokens written for it, over all
            continuations); None without log-probabilities.
        asked: it comes from a suggestion written for a request the user made: shown whatever
            the confidence, and so is its rest as they type it.
    """

    text: str
    policy: LengthPolicy
    source: str
    generation: Generation | None
    prefix_dropped_tokens: int
    suffix_dropped_tokens: int
    latency_ms: float
    through: bool = False
    request: Any = None  # CompletionRequest (server.completion.request imports this module)
    large: bool = False
    confidence: Confidence | None = None
    asked: bool = False


@dataclass
class Entry:
    """What the model wrote after ``typed`` for one anchor."""

    typed: str
    text: str              # raw generated text after ``typed`` (not trimmed)
    tokens: list[int]      # prompt + generated tokens: exactly what the KV cache holds after it
    complete: bool         # ended by itself (stop token, policy, max tokens), not by a cap
    mode: Mode
    prefix_dropped: int
    suffix_dropped: int
    generated: int = 0     # tokens generated so far, over all continuations
    generation: Generation | None = None
    insisted: bool = False  # made for a manual request: a line was required, rejected candidates skipped
    unindented: bool = False  # the model wrote the line's indentation too; ``text`` has it removed
    policy: LengthPolicy | None = None  # the policy it was shown under (set when cached)
    large: bool = False  # written by the larger model (its KV cache holds ``tokens``)
    asked: bool = False  # written for a request the user made (shown whatever its confidence)
    # Each generated token's log-probability and where it ends in ``text`` (over all continuations;
    # the indentation an unindented entry lost ends at or before 0): Suggestion.confidence.
    logprobs: tuple[float, ...] = ()
    ends: tuple[int, ...] = ()

    def confidence(self, typed: str, shown: str) -> Confidence | None:
        """How sure the model was of ``shown``, what it suggests once ``typed`` is typed."""
        start = len(typed) - len(self.typed)
        return Confidence.of(self.logprobs, self.ends, start, start + len(shown))

    def rest_after(self, typed: str) -> str | None:
        """The part of the suggestion still to come once ``typed`` is typed, or None."""
        full = self.typed + self.text
        if typed.startswith(self.typed) and full.startswith(typed):
            return full[len(typed):]
        return None

    def shown(self) -> str | None:
        """The suggestion as it was shown at ``typed`` (trimmed), or None before it was cached."""
        if self.policy is None:
            return None
        return trim(self.text, self.policy, final=self.complete)[0]


@dataclass
class Flight:
    """A generation running for one document."""

    key: tuple
    typed: str
    mode: Mode
    cancel: threading.Event = field(default_factory=threading.Event)
    future: asyncio.Future | None = None
    partial: str = ""      # generated so far (written by the engine thread)
    waiters: int = 0
    idle: bool = False     # work ahead (see CompletionService.prefetch_after): any request stops it
    large: bool = False    # the larger model generates it (CompletionService.generator_for)

    def agrees(self, typed: str) -> bool:
        """True when ``typed`` is consistent with this generation's typed text and output so far."""
        full = self.typed + self.partial
        return typed.startswith(self.typed) and (full.startswith(typed) or typed.startswith(full))


def check_document(text: str, max_file_size_kb: int) -> None:
    """Refuse documents no suggestion should be made for.

    Raises:
        Unsuitable: the text is larger than ``completion.maxFileSizeKb`` or looks binary (NUL bytes).
    """
    if len(text) > max_file_size_kb * 256:  # cheap pre-check: a code point is at most 4 bytes
        size_kb = len(text.encode("utf-8", "replace")) / 1024
        if size_kb > max_file_size_kb:
            raise Unsuitable(f"document is {size_kb:,.0f} KiB, over completion.maxFileSizeKb ({max_file_size_kb})")
    if "\x00" in text:
        raise Unsuitable("document looks binary (it contains NUL characters)")


def healing_tokens(pieces: list[bytes]) -> int:
    """How many of the typed text's last tokens to take back for token healing.

    All tokens of the partial word at the end, at least the last token, at most all given.
    Going back, a token belongs to the word when it ends in a word character (letter, digit,
    ``_``); a token with anything else in it (a leading space, ``.``, ``(``: ``.st`` of
    ``self.stre``) starts the word and ends the run. Healing only ``re`` of ``.st`` + ``re``
    left the model to go on from ``.st``, a split it never writes: it wrote ``.strea)``.

    Args:
        pieces: the bytes of the typed text's last few tokens, in order.
    """
    n = 0
    for piece in reversed(pieces):
        if n and not _word_byte(piece[-1:]):
            break
        n += 1
        if not all(_word_byte(piece[i:i + 1]) for i in range(len(piece))):
            break  # a space or punctuation starts the word (or is a word of its own)
    return n


def _word_byte(b: bytes) -> bool:
    return bool(b) and (b.isalnum() or b == b"_")


def least_sure(model: LoadedModel, gen: Generation, n_forced: int) -> tuple[bytes, int]:
    """Where to branch from a rejected candidate: the token of its first line, from its first
    text on and past the ``n_forced`` bytes it had to begin with, where the model's two best
    choices were closest (``gen.margins``).

    Returns:
        ``(bytes before that token, counted from the output's start and beyond the healed
        text, the token)``: the next candidate is forced to begin with those bytes and may not
        take that token there. Without margins, the first text token.
    """
    seen, best = b"", None
    for i, t in enumerate(gen.tokens):
        before, seen = seen, seen + model.piece(t)
        if len(before) < n_forced or not seen[n_forced:].strip():
            continue  # forced, or indentation before the first text
        if b"\n" in seen[n_forced:].lstrip():
            break  # the first line is over: a branch changes what the line says, not where it ends
        try:
            before.decode("utf-8")
        except UnicodeDecodeError:
            continue  # inside a character: not a place to branch
        margin = gen.margins[i] if i < len(gen.margins) else float("inf")
        if best is None or margin < best[0]:
            best = (margin, before, t)
    if best is None:
        return b"", gen.tokens[0]
    return best[1], best[2]


def language_grammar(language_id: str) -> str | None:
    """The tree-sitter grammar of an LSP language id, or None."""
    lang = BY_ID.get(language_id)
    return lang.grammar if lang else None


def ema(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - EMA_WEIGHT) * old + EMA_WEIGHT * sample
