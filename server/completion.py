"""The completion pipeline: a document snapshot in, a suggestion out, fast while typing.

For each request (one keystroke):

1. **Gate.** Refuse binary and huge documents; an automatic request with more than
   ``completion.maxRightChars`` non-blank characters right of the cursor gets nothing.
2. **Length policy** from the text around the cursor (:mod:`server.length`).
3. **Type-through cache.** Keyed by the *anchor* (the text above the cursor's line and
   from the cursor on). An entry remembers what the model wrote after some typed text;
   when the user has since typed the start of that suggestion, the rest is served with
   no model call. An exact repeat is the case where nothing more was typed.
4. **In-flight join.** When a generation for the same anchor is running and what the
   user typed agrees with what it has produced so far, the request waits for it instead
   of cancelling it. Otherwise the running generation is cancelled (within one token).
5. **Prefill, debounce, generate** on the engine thread: the prompt (laid out so that
   only the typed text changes between keystrokes, :class:`server.prompting.FimPrompt`,
   with the typed text's last token healed) is evaluated into the KV cache at once,
   because that work is never wasted; then an automatic request waits out the adaptive
   debounce, then generates under its time cap.
   A time-capped answer is cached as incomplete and the next agreeing request continues
   it from its exact cached tokens.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .config import Settings
from .engine import Engine, Generation, LoadedModel
from .languages import BY_ID
from .length import LengthPolicy, Mode, body_missing, cut_to_parse, decide, trim
from .prompting import WINDOW_GRID_LINES, Budget, CursorText, FimFormat, FimPrompt, TokenCounter, build_fim_prompt
from .text import split_lines

if TYPE_CHECKING:
    from .remote import OpenAIBackend

# Other files' best chunks for the code around the cursor: (document URI, query text,
# budget in characters) -> [(workspace-relative path, code)]. Called on the engine's owner
# thread (``engine-completion``) once per 32-line cell of a document, cached by the service;
# it must not block on the event loop.
ContextProvider = Callable[[str, str, int], list[tuple[str, str]]]

log = logging.getLogger(__name__)

SINGLE_LINE_MAX_TOKENS = 64  # a line of code is rarely longer; caps a model that will not stop
CACHE_ENTRIES = 256          # anchors remembered by the type-through cache (LRU)
TYPING_GAP_MS = 1500         # a pause longer than this is not "typing" for the debounce
EMA_WEIGHT = 0.3             # weight of the newest sample in the moving averages
MAX_HEALED_TOKENS = 4        # token healing takes back at most this many typed tokens
REJECTED_CANDIDATES = 2      # a manual request on an empty line tries this many more first tokens
IDLE_MS = 250                # no request for this long after a suggestion was shown: the user is not typing
READ_AHEAD_MS = 50           # the cursor came to a place: its prompt is read after this long without a request
COLD_MIN_PREFIX = 128        # the shorter window at a place the cache has not seen keeps at least this many
COLD_MIN_SUFFIX = 32         # ... tokens before and after the cursor (see CompletionService.fim_prompt)
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
    """

    text: str
    policy: LengthPolicy
    source: str
    generation: Generation | None
    prefix_dropped_tokens: int
    suffix_dropped_tokens: int
    latency_ms: float
    through: bool = False


@dataclass
class _Entry:
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
class _Flight:
    """A generation running for one document."""

    key: tuple
    typed: str
    mode: Mode
    cancel: threading.Event = field(default_factory=threading.Event)
    future: asyncio.Future | None = None
    partial: str = ""      # generated so far (written by the engine thread)
    waiters: int = 0
    idle: bool = False     # work ahead (see CompletionService.prefetch_after): any request stops it

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

    All tokens of the partial word at the end (a token that starts the word, possibly
    with its leading space, ends the run), at least the last token, at most all given.

    Args:
        pieces: the bytes of the typed text's last few tokens, in order.
    """
    n = 0
    for piece in reversed(pieces):
        word = piece.lstrip(b" ")
        if n and not (word and (word.replace(b"_", b"").isalnum())):
            break
        n += 1
        if piece != word or not word.replace(b"_", b"").isalnum():
            break  # a leading space starts the word; punctuation is a word of its own
    return n


def _least_sure(model: LoadedModel, gen: Generation, n_forced: int) -> tuple[bytes, int]:
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


def _ema(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - EMA_WEIGHT) * old + EMA_WEIGHT * sample


class CompletionService:
    """Suggestions for one loaded FIM model: caches, coalescing, debounce, time caps.

    Use from one asyncio event loop; the model work runs on ``engine``'s thread.

    Attributes:
        latency_ms: moving average of the latency of answers that needed the model (ms).
        generation_ms: moving average of generation time (first token to last, ms).
    """

    def __init__(self, engine: Engine | None, fim: FimFormat | None, counter: TokenCounter,
                 context: ContextProvider | None = None):
        """Args:
            engine: the model's owner thread (None for a subclass that generates elsewhere).
            fim: the model's FIM format.
            counter: token counter bound to the model's tokenizer.
            context: other files' best chunks for the code around the cursor (see
                :data:`ContextProvider`), or None for no cross-file context.
        """
        self.engine, self.fim, self.counter = engine, fim, counter
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._others: OrderedDict[tuple, list[_Entry]] = OrderedDict()  # alternatives shown, by anchor
        self._partial_others: set[tuple] = set()  # ... of those, lists the time cap cut short
        self._flights: dict[str, _Flight] = {}
        self._last_request: dict[str, float] = {}
        self._typing_ms: dict[str, float] = {}
        self.latency_ms: float | None = None
        self.generation_ms: float | None = None
        self.model_answers = 0
        self.cache_answers = 0
        self._context = context
        self._context_cache: OrderedDict[tuple, list[tuple[str, str]]] = OrderedDict()
        self.prompt_tokens = 0   # over all generations: prompt tokens ...
        self.reused_tokens = 0   # ... and how many of them the KV cache already held,
        self.shifted_tokens = 0  # ... of which moved from another position
        self.restored_states = 0
        self.prefetched = 0      # suggestions prepared ahead, while the user was idle
        self.read_ahead = 0      # prompts read ahead at a place the cursor went to (engine thread)
        self._idle_tasks: dict[str, asyncio.Task] = {}
        self._closed = False  # shut down: no work ahead is started
        self._starts: dict[str, int] = {}  # document URI -> its last prompt's window start line (engine thread)
        self._short_starts: dict[str, int] = {}  # ... of its last shorter window (see fim_prompt)
        self._cut: set[str] = set()        # documents whose last prompt was the shorter window (engine thread)
        self.short_windows = 0   # suggestions made from the shorter window (engine thread)
        self._rate: float | None = None  # the model's prompt_rate, as last seen (engine thread)
        self._kv = (0, 0, 0)     # saved KV states: count, bytes, budget MiB (written on the engine thread)

    def stats(self) -> CompletionStats:
        """Figures for ``deepseek.status``: answers, latency, KV-cache reuse."""
        n, nbytes, budget = self._kv
        return CompletionStats(self.model_answers, self.cache_answers,
                               round(self.latency_ms, 1) if self.latency_ms is not None else None,
                               self.prompt_tokens, self.reused_tokens, self.shifted_tokens, self.restored_states,
                               n, round(nbytes / 2**20, 1), budget, self.prefetched, self.read_ahead,
                               self.short_windows, round(self._rate, 1) if self._rate else None)

    def _submit(self, job: Callable[[LoadedModel | None], "_Entry | None"]) -> Future:
        """Run a generation job where this service generates: the engine's owner thread."""
        assert self.engine is not None
        return self.engine.submit(job)

    def forget(self, uri: str) -> None:
        """The document closed: stop its generation and drop its typing history."""
        if (flight := self._flights.pop(uri, None)) is not None:
            flight.cancel.set()
        if (task := self._idle_tasks.pop(uri, None)) is not None:
            task.cancel()
        self._last_request.pop(uri, None)
        self._typing_ms.pop(uri, None)

    def cancel_all(self) -> None:
        """Shutdown: stop the generations in flight and the pending work ahead; start no more."""
        self._closed = True
        for flight in self._flights.values():
            flight.cancel.set()
        for task in list(self._idle_tasks.values()):
            task.cancel()
        self._idle_tasks.clear()

    # -- debounce ------------------------------------------------------------------------
    def _note_keystroke(self, uri: str, now: float) -> None:
        last = self._last_request.get(uri)
        self._last_request[uri] = now
        if last is not None and (gap := (now - last) * 1000) < TYPING_GAP_MS:
            self._typing_ms[uri] = _ema(self._typing_ms.get(uri), gap)

    def debounce_ms(self, uri: str, settings: Settings) -> float:
        """How long an automatic request waits before generating.

        While the user types faster than the model generates, a generation started now
        would likely be overtaken by the next keystroke: wait about one typing interval
        (clamped to the floor and ceiling settings). When the model is faster than the
        typing, waiting gains nothing: use the floor.
        """
        floor, ceiling = settings.completion_debounce_min_ms, settings.completion_debounce_max_ms
        interval = self._typing_ms.get(uri)
        if interval is None or self.generation_ms is None or 1.1 * interval >= self.generation_ms:
            return float(floor)
        return float(min(max(1.1 * interval, floor), ceiling))

    # -- the request ---------------------------------------------------------------------
    def prefetch_after(self, snap: Snapshot, text: str, settings: Settings) -> None:
        """Work ahead: once the user has been idle IDLE_MS (and two typing intervals), prepare
        the suggestion that follows accepting ``text`` at ``snap`` and pressing Enter (its prompt
        read, then generated while there is time), so Tab, Enter and the next suggestion cost
        nothing. (Right after Tab the type-through cache already knows the rest: nothing.) The
        new line gets the indentation editors give it: the accepted line's, one level deeper
        after a line that opens a block.

        Any request stops it within one token or one prefill chunk; its answer is cached
        like any other (it is not counted as a model answer).
        """
        if self.engine is None or not text or not settings.completion_work_ahead or self._closed:
            return
        if (older := self._idle_tasks.pop(snap.uri, None)) is not None:
            older.cancel()
        shown_at = self._last_request.get(snap.uri)
        line = snap.text[snap.text.rfind("\n", 0, snap.offset) + 1:snap.offset] + text
        line = line[line.rfind("\n") + 1:]
        indent = line[:len(line) - len(line.lstrip(" \t"))]
        if line.rstrip().endswith((":", "{", "(", "[")) or re.search(r"\b(then|do|function\b.*\))\s*$", line):
            indent += "\t" if indent.startswith("\t") else "    "
        enter = text + "\n" + indent
        after = Snapshot(snap.uri, None, snap.text[:snap.offset] + enter + snap.text[snap.offset:],
                         snap.offset + len(enter), snap.language_id)

        async def work() -> None:
            await asyncio.sleep(max(IDLE_MS, 2 * self._typing_ms.get(snap.uri, 0)) / 1000)
            if self._last_request.get(snap.uri) != shown_at or any(not f.idle for f in self._flights.values()):
                return  # the user went on: typing is not idle time
            try:
                s = await self.suggest(after, settings, manual=False, idle=True)
            except (Unsuitable, asyncio.CancelledError):
                return
            if s is not None:
                self.prefetched += 1
                log.info("prepared ahead: the suggestion after accepting %d chars: %d chars in %.0f ms",
                         len(text), len(s.text), s.latency_ms)
            if snap.uri in self._cut and self._last_request.get(snap.uri) == shown_at:
                await self._read_idle(snap, settings, dict(self._last_request), whole=True)
        task = self._idle_tasks[snap.uri] = asyncio.get_running_loop().create_task(work())
        task.add_done_callback(lambda t: self._idle_tasks.get(snap.uri) is t and self._idle_tasks.pop(snap.uri))

    def prefill_at(self, snap: Snapshot, settings: Settings) -> None:
        """Work ahead at a place the cursor went to (the editor asked for code actions there):
        once no request has come for READ_AHEAD_MS, read the FIM prompt for it into the KV cache, so
        the first suggestion there pays only for what is typed; then, if that prompt was the
        shorter window of a place the cache had not seen (:meth:`fim_prompt`), the whole one.
        Any request stops it within one 64-token chunk; nothing is generated.
        """
        if self.engine is None or not settings.completion_work_ahead or self._closed:
            return
        if (older := self._idle_tasks.pop(snap.uri, None)) is not None:
            older.cancel()
        since = dict(self._last_request)

        async def work() -> None:
            # Short: while typing, the place is the one read already (a few tokens to read,
            # which the keystroke's request stops); after a move, every 50 ms counts.
            await asyncio.sleep(READ_AHEAD_MS / 1000)
            if await self._read_idle(snap, settings, since, whole=False) and snap.uri in self._cut:
                await self._read_idle(snap, settings, since, whole=True)
        task = self._idle_tasks[snap.uri] = asyncio.get_running_loop().create_task(work())
        task.add_done_callback(lambda t: self._idle_tasks.get(snap.uri) is t and self._idle_tasks.pop(snap.uri))

    async def _read_idle(self, snap: Snapshot, settings: Settings, since: dict[str, float], whole: bool) -> bool:
        """Read the FIM prompt at ``snap`` into the KV cache if no request came since ``since``
        (once a suggestion still being made is done). ``whole``: the whole prompt, read exactly
        (no run shifted from elsewhere), even where a request would get the shorter window.

        Returns:
            True when the prompt is in the cache; False when a request came (before or during).
        """
        while self._flights and self._last_request == since:
            await asyncio.sleep(0.05)  # a suggestion asked before is still being made
        if self._last_request != since or self._flights:
            return False  # a request came since: not idle
        cursor = CursorText.at(snap.text, snap.offset)
        flight = self._flights[snap.uri] = _Flight(("prefill",), cursor.typed, Mode.SINGLE_LINE, idle=True)

        def job(model: LoadedModel) -> bool:
            self.configure_kv(model, settings)
            prompt = self.fim_prompt(model, snap.uri, cursor, settings, settings.completion_max_tokens, whole=whole)
            prep = model.prefill(prompt.anchor if not cursor.typed.strip() else prompt.tokens, flight.cancel,
                                 exact=whole)
            self.read_ahead += prep.evaluated > 0
            log.info("prepared ahead: the %s prompt at line %d of %s: %d tokens read, %d reused%s in %.0f ms",
                     "whole" if whole else "first", cursor.above.count("\n") + 1, snap.uri, prep.evaluated,
                     prep.reused, "" if prep.done else " (stopped by a request)", prep.ms)
            return prep.done
        try:
            flight.future = asyncio.wrap_future(self._submit(job))
            return bool(await self._wait(snap.uri, flight))
        except Exception as e:  # idle work must never surface
            if not self._closed:  # at shutdown the engine refuses new work: nothing to say
                log.warning("preparing the prompt at a new place failed: %s", e)
            return False

    async def suggest(self, snap: Snapshot, settings: Settings, manual: bool, idle: bool = False) -> Suggestion | None:
        """The suggestion for ``snap``; None when there is none (gated, cancelled, superseded).

        Args:
            snap: the document at the cursor.
            settings: ``completion.*`` budgets, caps and debounce bounds.
            manual: the user asked (no debounce, no right-of-cursor gate, longer time cap).
            idle: work ahead (:meth:`prefetch_after`): not a keystroke, no debounce, the manual
                time cap, stopped by any request.

        Raises:
            Unsuitable: see :func:`check_document`.
            asyncio.CancelledError: the request was cancelled; its generation stops unless
                another request is waiting for it.
        """
        t0 = time.monotonic()
        if not idle:
            self._note_keystroke(snap.uri, t0)
            for uri, flight in self._flights.items():  # a request: work ahead elsewhere gives way
                if flight.idle and uri != snap.uri:
                    flight.cancel.set()
        check_document(snap.text, settings.completion_max_file_size_kb)
        cursor = CursorText.at(snap.text, snap.offset)
        policy = decide(snap.text[: snap.offset], cursor.below, snap.language_id, settings.completion_max_lines)
        if not manual and sum(not ch.isspace() for ch in policy.line_right) > settings.completion_max_right_chars:
            return None
        grammar = language_grammar(snap.language_id)
        key = self._key(cursor, snap.language_id, settings)
        ahead = self._flights.get(snap.uri)
        if ahead is not None and ahead.idle and not idle and not (
                ahead.key == key and ahead.mode is policy.mode and ahead.agrees(cursor.typed)):
            ahead.cancel.set()  # work ahead for something else than what the user did

        def answer(entry: _Entry, source: str) -> Suggestion | None:
            rest = entry.rest_after(cursor.typed)
            if rest is None:
                return None
            text = trim(rest, policy, final=entry.complete)[0]
            if "\n" in text and entry.complete:
                text = cut_to_parse(grammar, snap.text[: snap.offset], snap.text[snap.offset:], text)
            return Suggestion(text, policy, source, entry.generation if source != "cache" else None,
                              entry.prefix_dropped, entry.suffix_dropped, (time.monotonic() - t0) * 1000,
                              through=cursor.typed != entry.typed and self._offered(key, entry))

        entry = self._cache.get(key)
        resume = None
        if entry is not None and entry.mode is policy.mode and entry.rest_after(cursor.typed) is not None \
                and not (manual and not entry.insisted and not trim(entry.rest_after(cursor.typed), policy,
                                                                     final=entry.complete)[0]):
            self._cache.move_to_end(key)
            if entry.complete:
                self.cache_answers += 1
                return answer(entry, "cache")
            resume = entry  # time-capped earlier: continue it from its cached tokens
        elif (through := self._typed_through(key, cursor)) is not None:
            k, entry, rest = through
            self.cache_answers += 1
            return Suggestion(rest, entry.policy or policy, "cache", None, entry.prefix_dropped,
                              entry.suffix_dropped, (time.monotonic() - t0) * 1000, through=self._offered(k, entry))

        flight = self._flights.get(snap.uri)
        if flight is not None and flight.key == key and flight.mode is policy.mode \
                and not flight.cancel.is_set() and flight.agrees(cursor.typed):
            joined = await self._wait(snap.uri, flight)
            if joined is not None and (s := answer(joined, "joined")) is not None:
                return self._record(s)
        elif flight is not None:
            flight.cancel.set()  # superseded: stops within one token or one prefill chunk

        flight = self._flights[snap.uri] = _Flight(key, resume.typed if resume else cursor.typed, policy.mode,
                                                   partial=resume.text if resume else "", idle=idle)
        not_before = t0 + (0 if manual or idle else self.debounce_ms(snap.uri, settings) / 1000)
        cap_ms = settings.completion_manual_max_time_ms if manual or idle \
            else settings.completion_auto_max_time_ms
        job = self._submit(lambda model: self._generate(
            model, snap.uri, cursor, policy, settings, flight, not_before, cap_ms, resume, manual))
        flight.future = asyncio.wrap_future(job)
        entry = await self._wait(snap.uri, flight)
        if entry is None:
            return None
        entry.policy = policy
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        s = answer(entry, "continued" if resume else "model")
        return self._record(s) if s is not None and not idle else s

    @staticmethod
    def _key(cursor: CursorText, language_id: str, settings: Settings) -> tuple:
        return (hash(cursor.above), hash(cursor.below), language_id,
                settings.completion_prefix_tokens, settings.completion_suffix_tokens)

    def remember(self, snap: Snapshot, settings: Settings, texts: list[str], complete: bool = True) -> None:
        """Keep other suggestions shown at ``snap`` (alternatives) for the type-through cache.

        ``texts`` are final (trimmed) suggestions; accepting part of one is then answered
        with its rest, like the pipeline's own suggestion. ``complete``: the search for them
        ran to its end; only then does :meth:`remembered` give them again for this place.
        """
        cursor = CursorText.at(snap.text, snap.offset)
        policy = decide(snap.text[: snap.offset], cursor.below, snap.language_id, settings.completion_max_lines)
        key = self._key(cursor, snap.language_id, settings)
        self._others[key] = [_Entry(cursor.typed, t, [], True, policy.mode, 0, 0, policy=policy) for t in texts]
        self._others.move_to_end(key)
        if complete:
            self._partial_others.discard(key)
        else:
            self._partial_others.add(key)
        while len(self._others) > CACHE_ENTRIES:
            self._partial_others.discard(self._others.popitem(last=False)[0])

    def _offered(self, key: tuple, entry: _Entry) -> bool:
        """True when ``entry`` was offered with alternatives (at the same place, by :meth:`remember`)."""
        others = self._others.get(key)
        return bool(others) and others[0].typed == entry.typed

    def remembered(self, snap: Snapshot, settings: Settings) -> list[str] | None:
        """The complete suggestions :meth:`remember` kept for exactly this cursor position, or None."""
        cursor = CursorText.at(snap.text, snap.offset)
        key = self._key(cursor, snap.language_id, settings)
        others = self._others.get(key)
        if not others or others[0].typed != cursor.typed or key in self._partial_others:
            return None  # a list the time cap cut short is searched for again
        return [e.text for e in others]

    def _typed_through(self, key: tuple, cursor: CursorText) -> tuple[tuple, _Entry, str] | None:
        """A complete cached suggestion the user has typed or accepted part of: its key, it, and what is left.

        Covers what the anchor lookup cannot: a part that ends on another line (a
        line or a word accepted across a newline, so the anchor moved down) and a part
        after which the length policy changed (a multi-line block whose first word was
        accepted). The rest is what was shown, minus what is now in the document.
        """
        above, typed = cursor.above, cursor.typed
        entries = [(k, e) for k, e in reversed(self._cache.items())]
        entries += [(k, e) for k, others in reversed(self._others.items()) for e in others]
        for k, entry in entries:
            if k[1:] != key[1:] or not entry.complete or (shown := entry.shown()) is None:
                continue
            full = entry.typed + shown
            if k == key:  # same line: the policy changed, the suggestion did not
                if typed != entry.typed and typed.startswith(entry.typed) and full.startswith(typed):
                    return k, entry, full[len(typed):]
                continue
            # Accepted up to a newline m of the suggestion: ``above`` ends with full[:m + 1].
            m = full.find("\n")
            while m >= 0:
                head = full[:m + 1]
                if above.endswith(head) and hash(above[:len(above) - len(head)]) == k[0] \
                        and full.startswith(typed, m + 1):
                    return k, entry, full[m + 1 + len(typed):]
                m = full.find("\n", m + 1)
        return None

    def _record(self, s: Suggestion) -> Suggestion:
        self.model_answers += 1
        self.latency_ms = _ema(self.latency_ms, s.latency_ms)
        if s.generation is not None and s.generation.generated_tokens:
            self.generation_ms = _ema(self.generation_ms, s.generation.total_ms - s.generation.prompt_ms)
        return s

    async def _wait(self, uri: str, flight: _Flight) -> _Entry | None:
        """Await ``flight``'s result; cancelling the last waiter cancels the generation.

        A finished flight is unregistered: its result lives on in the cache.
        """
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.future)
        except asyncio.CancelledError:
            if flight.waiters == 1:
                flight.cancel.set()
            raise
        finally:
            flight.waiters -= 1
            if flight.future.done() and self._flights.get(uri) is flight:
                del self._flights[uri]

    # -- on the engine thread ------------------------------------------------------------
    def configure_kv(self, model: LoadedModel, settings: Settings) -> None:
        """Apply ``completion.kvShiftMinTokens`` and ``completion.kvSnapshotsMb`` to ``model``."""
        model.min_reuse = settings.completion_kv_shift_min_tokens
        if self.fim is not None:
            model.reuse_markers = frozenset({self.fim.prefix_id, self.fim.suffix_id, self.fim.middle_id})
        model.snapshots.resize(settings.completion_kv_snapshots_mb * 2**20)

    def _cross_file(self, uri: str, cursor: CursorText, settings: Settings) -> list[tuple[str, str]]:
        """Other files' chunks for the code around the cursor, cached per 32-line cell so the
        prompt's start (and its KV cache) stays the same while the user works there."""
        if self._context is None or settings.completion_context_tokens <= 0:
            return []
        line = cursor.above.count("\n")
        key = (uri, line // WINDOW_GRID_LINES, settings.completion_context_tokens)
        if key not in self._context_cache:
            nearby = "".join(split_lines(cursor.above, keepends=True)[-20:]) + cursor.typed
            try:
                found = self._context(uri, nearby, settings.completion_context_tokens * 4)
            except Exception as e:  # the index must never break a completion
                log.warning("cross-file context failed: %s", e)
                found = []
            self._context_cache[key] = found
            while len(self._context_cache) > CACHE_ENTRIES:
                self._context_cache.popitem(last=False)
        return self._context_cache[key]

    def fim_prompt(self, model: LoadedModel, uri: str, cursor: CursorText, settings: Settings,
                   max_tokens: int, whole: bool = False) -> FimPrompt:
        """The FIM prompt for ``cursor`` within the budgets; the prompt plus ``max_tokens`` fit n_ctx
        (the prefix quota shrinks first). Engine thread.

        At a place the KV cache has not seen, where reading the part of the whole prompt that
        the cache lacks would take longer than ``completion.coldPromptMs`` at the rate measured
        here (``model.prompt_rate``), the prompt is a shorter window around the cursor: the
        budgets scaled to what that time reads (at least COLD_MIN_PREFIX / COLD_MIN_SUFFIX
        tokens), with its own window start kept per document. The document is then noted in
        ``_cut``, and the whole prompt is read when the user pauses (:meth:`_read_idle`); once
        the cache holds it, requests use it again. ``whole``: never the shorter window (a
        request the user made and waits for).
        """
        room = model.n_ctx - max_tokens - 8 - len(self.fim.bos)
        context_budget = min(settings.completion_context_tokens, room // 4)
        room -= context_budget
        suffix_budget = min(settings.completion_suffix_tokens, room // 4)
        budget = Budget(min(settings.completion_prefix_tokens, room - suffix_budget), suffix_budget)
        context = self._cross_file(uri, cursor, settings)
        name = uri.rsplit("/", 1)[-1]
        prompt = build_fim_prompt(model, self.fim, cursor, budget, self.counter, context, context_budget, name,
                                  keep_start=self._starts.get(uri))
        self._starts[uri] = prompt.start_line
        afford = (model.prompt_rate or 0.0) * settings.completion_cold_prompt_ms / 1000
        if whole or afford <= 0 or len(prompt.tokens) <= afford \
                or len(prompt.tokens) - model.cached_tokens(prompt.tokens) <= afford:
            self._cut.discard(uri)
            return prompt
        total = budget.prefix_tokens + budget.suffix_tokens + (context_budget if context else 0)
        short = Budget(max(COLD_MIN_PREFIX, int(afford * budget.prefix_tokens / total)),
                       max(COLD_MIN_SUFFIX, int(afford * budget.suffix_tokens / total)))
        if short.prefix_tokens >= budget.prefix_tokens:
            return prompt
        cut = build_fim_prompt(model, self.fim, cursor, short, self.counter, context,
                               int(afford * context_budget / total), name, keep_start=self._short_starts.get(uri),
                               grid=COLD_GRID_LINES)
        self._short_starts[uri] = cut.start_line
        self._cut.add(uri)
        return cut

    def _generate(self, model: LoadedModel, uri: str, cursor: CursorText, policy: LengthPolicy,
                  settings: Settings, flight: _Flight, not_before: float, cap_ms: float,
                  resume: _Entry | None, manual: bool = False) -> _Entry | None:
        cancel = flight.cancel
        if cancel.is_set():
            return None
        forced = b""
        # The model writes an indentation-only line's indentation (see below); the editor has it.
        blank_line = bool(cursor.typed) and not cursor.typed.strip() and resume is None or \
            resume is not None and resume.unindented
        def unindent(text: str) -> str:
            return text.lstrip(" \t") if blank_line else text

        max_tokens = settings.completion_max_tokens if policy.mode is Mode.MULTI_LINE \
            else min(settings.completion_max_tokens, SINGLE_LINE_MAX_TOKENS)
        if resume is not None:
            prompt, base_typed, base_text = resume.tokens, resume.typed, resume.text
            dropped = (resume.prefix_dropped, resume.suffix_dropped)
            max_tokens = max(1, max_tokens - resume.generated)
        else:
            fim_prompt = self.fim_prompt(model, uri, cursor, settings, max_tokens, whole=manual)
            prompt, base_typed, base_text = fim_prompt.tokens, cursor.typed, ""
            dropped = (fim_prompt.prefix_dropped_tokens, fim_prompt.suffix_dropped_tokens)
            self.short_windows += uri in self._cut and not flight.idle
            # Token healing: the typed text usually ends inside a word ("appna"), a split
            # the model never saw after its middle marker. Take the word's tokens back and
            # make the model's output begin with their text, spelled the model's own way.
            # Only indentation typed (Enter on an empty line): the middle starts at the line's
            # start and the model writes the indentation itself, as in training; forcing the
            # editor's indentation token by token threw it into runs of spaces.
            if blank_line:
                prompt = fim_prompt.anchor
            elif n_heal := healing_tokens([model.piece(t) for t in fim_prompt.typed[-MAX_HEALED_TOKENS:]]):
                forced = b"".join(model.piece(t) for t in prompt[-n_heal:])
                prompt = prompt[:-n_heal]
        if len(prompt) + max_tokens > model.n_ctx:
            max_tokens = model.n_ctx - len(prompt)
            if max_tokens <= 0:
                return None
        # Prompt processing first: the next keystroke's prompt starts the same way, so this
        # work is kept even if this request is superseded during the debounce below.
        self.configure_kv(model, settings)
        prep = model.prefill(prompt, cancel)
        self._kv = (len(model.snapshots), model.snapshots.nbytes, settings.completion_kv_snapshots_mb)
        self._rate = model.prompt_rate
        if not prep.done:
            return None
        if (wait := not_before - time.monotonic()) > 0 and cancel.wait(wait):
            return None
        def judge(text: str) -> bool:
            flight.partial = unindent(base_text + text)  # joiners compare their typed text with this
            return trim((base_typed + flight.partial)[len(cursor.typed):], policy)[1]

        # A user who asks on an empty line wants a line: the first line must hold text, and a
        # candidate the length policy rejects whole (it re-types a line that is there) gives
        # way to the next one, while the time cap allows: the same up to the token of its first
        # line where the model was least sure, then its second choice there.
        # The same at the end of a block opener whose body is empty, where the text may start
        # on the next line.
        asked = manual and resume is None
        opener = asked and body_missing(policy)
        insist = opener or asked and not (policy.line_left + policy.line_right).strip()
        deadline, banned, branch = time.monotonic() + cap_ms / 1000, frozenset(), b""
        for _ in range(1 + REJECTED_CANDIDATES if insist else 1):
            start = branch.decode("utf-8")
            gen = model.generate(prompt, max_tokens=max_tokens, cancel=cancel, deadline=deadline,
                                 stop_ids=self.fim.stop_ids, judge=(lambda text, s=start: judge(s + text)),
                                 forced=forced + branch, text_first=insist, banned_first=banned, record_margins=insist,
                                 breaks_first=opener and not branch)
            if gen.finish == "cancelled":
                return None
            gen = dataclasses.replace(gen, text=start + gen.text)
            if not insist or not gen.tokens or trim(unindent(gen.text), policy, final=True)[0] \
                    or time.monotonic() > deadline:
                break
            log.info("completion: candidate %r rejected by the length policy; trying the next", gen.text[:60])
            at, token = _least_sure(model, gen, len(forced + branch))
            at = at[len(forced):]  # beyond the healed text, which is forced anyway
            banned = banned | {token} if at == branch else frozenset({token})
            branch = at
        # Report the prompt processing done before the debounce as part of this generation.
        gen = dataclasses.replace(gen, reused_tokens=prep.reused, prompt_ms=gen.prompt_ms + prep.ms,
                                  total_ms=gen.total_ms + prep.ms)
        self.prompt_tokens += gen.prompt_tokens
        self.reused_tokens += gen.reused_tokens
        self.shifted_tokens += prep.shifted
        self.restored_states += prep.restored
        complete = gen.finish in ("stop", "complete", "max_tokens")
        log.info("completion: %s, %d chars; prompt %d tokens (%d reused, %d of them shifted%s; %d evaluated) "
                 "in %.0f ms; %d generated in %.0f ms; finish %s%s", policy.mode.value, len(gen.text),
                 gen.prompt_tokens, gen.reused_tokens, prep.shifted,
                 (", saved state restored" if prep.restored else "")
                 + (", the shorter window of a place not read yet" if resume is None and uri in self._cut else ""),
                 gen.evaluated_tokens, gen.prompt_ms, gen.generated_tokens, gen.total_ms - gen.prompt_ms, gen.finish,
                 " (continued)" if resume else "")
        return _Entry(base_typed, unindent(base_text + gen.text), prompt + gen.tokens, complete, policy.mode,
                      dropped[0], dropped[1], (resume.generated if resume else 0) + gen.generated_tokens, gen,
                      insisted=insist, unindented=blank_line)


class RemoteCompletionService(CompletionService):
    """The same pipeline against an OpenAI-compatible server (:mod:`server.remote`).

    Caches, joining, debounce, gates and length control are shared with the local
    service; generation differs: the FIM prompt is sent as text in the classic
    prefix-suffix-middle layout (the typed text ends the prefix; the remote server reuses
    its own prompt cache), there is no token healing (it needs logits), and token budgets
    are estimated (about 3.5 characters a token).
    """

    def __init__(self, backend: OpenAIBackend, family: FimFormat, context: ContextProvider | None = None,
                 workers: int = 4):
        """Args:
            backend: the OpenAI-compatible server.
            family: the FIM format of the server's model (its vocabulary cannot be read from here).
            workers: threads for requests in flight (``remote-*``; HTTP waits, not CPU).
        """
        from .remote import ApproxVocabulary
        super().__init__(None, None, TokenCounter(ApproxVocabulary()), context)
        self.backend, self.family = backend, family
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remote")

    def _submit(self, job: Callable[[LoadedModel | None], "_Entry | None"]) -> Future:
        """Run a request on the ``remote-*`` pool (there is no local model: the job gets None)."""
        return self._pool.submit(job, None)

    def shutdown(self) -> None:
        """Stop the requests in flight and close the HTTP client."""
        self.cancel_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()

    def _generate(self, model, uri: str, cursor: CursorText, policy: LengthPolicy, settings: Settings,
                  flight: _Flight, not_before: float, cap_ms: float, resume: _Entry | None,
                  manual: bool = False) -> _Entry | None:
        from .prompting import window
        cancel = flight.cancel
        if cancel.is_set():
            return None
        max_tokens = settings.completion_max_tokens if policy.mode is Mode.MULTI_LINE \
            else min(settings.completion_max_tokens, SINGLE_LINE_MAX_TOKENS)
        budget = Budget(settings.completion_prefix_tokens, settings.completion_suffix_tokens)
        above, typed, suffix, p_drop, s_drop, _ = window(cursor, budget, self.counter)
        f = self.family
        prompt = f"{f.fim_prefix}{above}{typed}{f.fim_suffix}{suffix}{f.fim_middle}"
        if (wait := not_before - time.monotonic()) > 0 and cancel.wait(wait):
            return None
        t0 = time.monotonic()

        def judge(text: str) -> bool:
            flight.partial = text
            return trim(text, policy)[1]

        result = self.backend.complete(prompt, max_tokens=max_tokens, stop=list(f.stop_tokens), cancel=cancel,
                                              cap_s=cap_ms / 1000, judge=judge)
        if result.finish == "cancelled":
            return None
        ms = (time.monotonic() - t0) * 1000
        n_prompt = self.counter.count(prompt)
        gen = Generation(result.text, result.finish, [], n_prompt, 0, 0, ms, ms)
        log.info("remote completion: %s, %d chars in %.0f ms; finish %s", policy.mode.value, len(result.text), ms,
                 result.finish)
        return _Entry(cursor.typed, result.text, [], result.finish in ("stop", "complete", "length"), policy.mode,
                      p_drop, s_drop, 0, gen)
