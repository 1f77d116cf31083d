"""The completion service: suggestions for one model, fast while typing (event loop only).

For each request (one keystroke), with its :class:`CompletionRequest` worked out once:

1. **Gate.** Refuse binary and huge documents; an automatic request with more than
   ``completion.maxRightChars`` non-blank characters right of the cursor gets nothing.
2. **Type-through cache** (:mod:`.cache`): when the user has typed the start of a suggestion
   made before, the rest is served with no model call.
3. **In-flight join.** When a generation for the same anchor is running and what the user
   typed agrees with what it has produced so far, the request waits for it instead of
   cancelling it. Otherwise the running generation is cancelled (within one token).
4. **Generate** on the generator's thread (:mod:`.local`, :mod:`.remote`) after the adaptive
   debounce, under the time cap; a time-capped answer is cached as incomplete and the next
   agreeing request continues it from its exact cached tokens.

Work ahead (the local model only): the prompt at a place the cursor went to is read into the
KV cache (:meth:`CompletionService.prefill_at`), and the suggestion after accepting one and
pressing Enter is prepared while the user pauses (:meth:`CompletionService.prefetch_after`).
Any request stops that work within one chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..config import Settings
from ..engine import Engine
from ..engine.schedule import EDITOR, SCHEDULE
from ..length import cut_to_parse, trim
from ..prompting import FimFormat, TokenCounter
from .ahead import LARGE_SLOT, WorkAhead
from .cache import SuggestionCache
from .large import TOO_SLOW, LargerModel
from .local import ContextProvider, LocalGenerator
from .parts import (
    CompletionStats,
    Confidence,
    Entry,
    Flight,
    Snapshot,
    Suggestion,
    TypingPace,
    ema,
)
from .request import CompletionRequest

if TYPE_CHECKING:
    from ..remote import OpenAIBackend
    from .remote import RemoteGenerator

log = logging.getLogger("server.completion")


class CompletionService:
    """Suggestions for one model: caches, coalescing, debounce, time caps, work ahead.

    Use from one asyncio event loop; the model work runs on the generator's thread.

    Attributes:
        local: the local generator (None for a remote model, or for no model at all).
        larger: the assistant's larger model writing explicit requests (:mod:`.large`), or None.
        cache: the suggestions and alternatives shown, by place (:class:`.cache.SuggestionCache`).
        latency_ms: moving average of the latency of answers that needed the model (ms).
        generation_ms: moving average of generation time (first token to last, ms).
    """

    def __init__(self, engine: Engine | None, fim: FimFormat | None, counter: TokenCounter | None,
                 context: ContextProvider | None = None, *, generator: RemoteGenerator | None = None):
        """Args:
            engine, fim, counter: the local model's owner thread, FIM format and token counter
                (None: no local model; ``generator`` then generates, or nothing does).
            context: other files' best chunks for the code around the cursor (see
                :data:`ContextProvider`), or None for no cross-file context.
            generator: a remote generator instead of the local one.
        """
        self.local = LocalGenerator(engine, fim, counter, context) if engine is not None else None
        self.generator = generator or self.local
        self.cache = SuggestionCache()
        self._flights: dict[str, Flight] = {}
        self.pace = TypingPace()
        self.latency_ms: float | None = None
        self.generation_ms: float | None = None
        self.model_answers = 0
        self.cache_answers = 0
        self.prefetched = 0      # suggestions prepared ahead, while the user was idle
        self.alternatives_running = 0  # server.alternatives searching (the work ahead waits for them)
        self._idle_tasks: dict[str, asyncio.Task] = {}  # each document's pending work ahead
        self._closed = False  # shut down: no work ahead is started
        self._ahead = WorkAhead(self)
        # The assistant's larger model, for explicit requests (attached by server.runtime.Runtime.attach_large).
        self.larger: LargerModel | None = None
        self.last_model: str | None = None  # who wrote the last model answer: small, large
        self.last_confidence: Confidence | None = None  # how sure it was (Suggestion.confidence)
        self.quiet_answers = 0  # automatic suggestions left unshown (completion.minConfidence)

    @property
    def large(self) -> LocalGenerator | None:
        """The larger model's generator while it is attached (:class:`.large.LargerModel`)."""
        return self.larger.generator if self.larger is not None else None

    def stats(self) -> CompletionStats:
        """Figures for ``deepseek.status``: answers, latency, KV-cache reuse."""
        g = self.local
        n, nbytes, budget = g.kv if g else (0, 0, 0)
        return CompletionStats(self.model_answers, self.cache_answers,
                               round(self.latency_ms, 1) if self.latency_ms is not None else None,
                               g.prompt_tokens if g else 0, g.reused_tokens if g else 0,
                               g.shifted_tokens if g else 0, g.restored_states if g else 0,
                               n, round(nbytes / 2**20, 1), budget, self.prefetched, g.read_ahead if g else 0,
                               g.short_windows if g else 0, round(g.rate, 1) if g and g.rate else None,
                               large_answers=self.larger.answers if self.larger else 0,
                               large_rate=round(self.large.rate, 1) if self.large and self.large.rate else None,
                               large_read_ahead=self.large.read_ahead if self.large else 0,
                               large_model=self.larger.name if self.larger else None, last_model=self.last_model,
                               last_confidence=self.last_confidence, quiet_answers=self.quiet_answers)

    def forget(self, uri: str) -> None:
        """The document closed: stop its generation and drop its typing history."""
        for slot in (uri, uri + LARGE_SLOT):
            if (flight := self._flights.pop(slot, None)) is not None:
                flight.cancel.set()
            if (task := self._idle_tasks.pop(slot, None)) is not None:
                task.cancel()
        self.pace.forget(uri)

    def cancel_all(self) -> None:
        """Shutdown: stop the generations in flight and the pending work ahead; start no more."""
        self._closed = True
        for flight in self._flights.values():
            flight.cancel.set()
        for task in list(self._idle_tasks.values()):
            task.cancel()
        self._idle_tasks.clear()

    def shutdown(self) -> None:
        """:meth:`cancel_all`, then close a remote generator's connections."""
        self.cancel_all()
        if self.generator is not None and self.generator is not self.local:
            self.generator.close()

    def debounce_ms(self, uri: str, settings: Settings) -> float:
        """How long an automatic request for ``uri`` waits before generating (:meth:`TypingPace.debounce_ms`)."""
        return self.pace.debounce_ms(uri, settings, self.generation_ms)

    # -- work ahead (see :class:`.ahead.WorkAhead`) ------------------------------------------
    def prefetch_after(self, snap: Snapshot, text: str, settings: Settings) -> None:
        """Prepare the suggestion after accepting ``text`` and pressing Enter (:meth:`WorkAhead.prefetch_after`)."""
        self._ahead.prefetch_after(snap, text, settings)

    def prefill_at(self, snap: Snapshot, settings: Settings) -> None:
        """Read the prompt at a place the cursor went to (:meth:`WorkAhead.prefill_at`)."""
        self._ahead.prefill_at(snap, settings)

    # -- the request ---------------------------------------------------------------------
    async def suggest(self, snap: Snapshot, settings: Settings, manual: bool, idle: bool = False) -> Suggestion | None:
        """The suggestion for ``snap``; None when there is none (gated, cancelled, superseded).

        Args:
            snap: the document at the cursor.
            settings: ``completion.*`` budgets, caps and debounce bounds.
            manual: the user asked (no debounce, no right-of-cursor gate, longer time cap).
            idle: work ahead (:meth:`prefetch_after`): not a keystroke, no debounce, the manual
                time cap, stopped by any request.

        An automatic request's suggestion is not shown (None) when the model gave one of the
        tokens it wrote for it (those still to come, for a cache hit) a probability below
        ``completion.minConfidence``; the rest of one the user asked for always is.

        Raises:
            Unsuitable: see :func:`check_document`.
            asyncio.CancelledError: the request was cancelled; its generation stops unless
                another request is waiting for it.
        """
        s = await self._suggest(snap, settings, manual, idle)
        if s is not None and not manual and not idle and s.text and not s.asked and s.confidence is not None \
                and 100 * s.confidence.least < settings.completion_min_confidence:
            self.quiet_answers += 1
            log.info("completion: left unshown, the model was not sure enough (least sure token %.2f < %d%%): %r",
                     s.confidence.least, settings.completion_min_confidence, s.text[:60])
            return None
        return s

    async def _suggest(self, snap: Snapshot, settings: Settings, manual: bool, idle: bool) -> Suggestion | None:
        t0 = time.monotonic()
        if not idle:
            SCHEDULE.want(EDITOR)  # a keystroke or an explicit request: the user is in the editor
            SCHEDULE.typed()
            self.pace.keystroke(snap.uri, t0)
            for uri, flight in self._flights.items():  # a request: work ahead elsewhere gives way
                if flight.idle and uri != snap.uri:
                    flight.cancel.set()
        req = CompletionRequest.of(snap, settings, manual)
        if not manual and req.busy_right(settings):
            return None
        key, typed = req.key, req.cursor.typed
        ahead = self._flights.get(snap.uri)
        if ahead is not None and ahead.idle and not idle and not (
                ahead.key == key and ahead.mode is req.policy.mode and ahead.agrees(typed)):
            ahead.cancel.set()  # work ahead for something else than what the user did

        large = self.larger is not None and self.larger.takes(manual, idle, settings)
        generator = self.large if large else self.generator
        entry = self.cache.get(key)
        if entry is not None and large and not entry.large:
            entry = None  # the user asked, and the larger model answers: not the small one's suggestion
        resume = None
        if entry is not None and entry.mode is req.policy.mode and entry.rest_after(typed) is not None \
                and not (manual and not entry.insisted and not trim(entry.rest_after(typed), req.policy,
                                                                     final=entry.complete)[0]):
            if entry.complete:
                self.cache_answers += 1
                return _answer(self.cache, req, entry, "cache", t0)
            resume = entry  # time-capped earlier: continue it from its cached tokens
        elif (through := self.cache.typed_through(key, req.cursor)) is not None:
            k, entry, rest = through
            self.cache_answers += 1
            return Suggestion(rest, entry.policy or req.policy, "cache", None, entry.prefix_dropped,
                              entry.suffix_dropped, (time.monotonic() - t0) * 1000,
                              through=self.cache.offered(k, entry), request=req, large=entry.large)

        flight = self._flights.get(snap.uri)
        if flight is not None and flight.key == key and flight.mode is req.policy.mode and flight.large == large \
                and not flight.cancel.is_set() and flight.agrees(typed):
            joined = await self._wait(snap.uri, flight)
            if joined is not None and (s := _answer(self.cache, req, joined, "joined", t0)) is not None:
                return self._record(s)
        elif flight is not None:
            flight.cancel.set()  # superseded: stops within one token or one prefill chunk
        if generator is None:
            return None
        if resume is not None and resume.large != large:
            resume = None  # the other model's KV cache holds it: start afresh
        entry = await self._generate(snap, req, settings, generator, large, manual, idle, t0, resume)
        if entry is TOO_SLOW:  # manualModel auto: the larger model would not read this place in time
            log.info("explicit request: the larger model would read this place's prompt too slowly; "
                     "the completion model answers (it reads the place ahead for the next request)")
            self._ahead.read_large(snap, settings)
            resume = None
            entry = await self._generate(snap, req, settings, self.generator, False, manual, idle, t0, None)
        if entry is None:
            return None
        entry.policy = req.policy
        self.cache.put(key, entry)
        s = _answer(self.cache, req, entry, "continued" if resume else "model", t0)
        return self._record(s) if s is not None and not idle else s

    async def _generate(self, snap: Snapshot, req: CompletionRequest, settings: Settings, generator, large: bool,
                        manual: bool, idle: bool, t0: float, resume: Entry | None) -> Entry | object | None:
        """Run ``generator``'s generation (``large``: the larger model's) for ``req`` as the document's
        flight; its entry, None (cancelled, superseded), or TOO_SLOW (the larger model under ``completion.manualModel``
        auto, at a place whose prompt it would not read within half of ``completion.manualMaxTimeMs``)."""
        typed = req.cursor.typed
        flight = self._flights[snap.uri] = Flight(req.key, resume.typed if resume else typed, req.policy.mode,
                                                  partial=resume.text if resume else "", idle=idle)
        flight.large = large
        not_before = t0 + (0 if manual or idle else self.debounce_ms(snap.uri, settings) / 1000)
        cap_ms = settings.completion_manual_max_time_ms if manual or idle \
            else settings.completion_auto_max_time_ms

        def job(model):
            return generator.generate(model, req, settings, flight, not_before, cap_ms, resume)
        if large:
            job = self.larger.job(job, req, settings, cap_ms, t0)
        flight.future = asyncio.wrap_future(generator.submit(job, ahead=flight.cancel if idle else None))
        return await self._wait(snap.uri, flight)

    def _record(self, s: Suggestion) -> Suggestion:
        self.model_answers += 1
        if s.large and self.larger is not None:
            self.larger.answers += 1
        self.last_model = "large" if s.large else "small"
        self.last_confidence = s.confidence
        self.latency_ms = ema(self.latency_ms, s.latency_ms)
        if s.generation is not None and s.generation.generated_tokens:
            self.generation_ms = ema(self.generation_ms, s.generation.total_ms - s.generation.prompt_ms)
        return s

    async def _wait(self, uri: str, flight: Flight) -> Entry | bool | None:
        """Await ``flight``'s result; cancelling the last waiter cancels the generation.

        A finished flight is unregistered: its result lives on in the cache. One whose last
        waiter was cancelled is unregistered when it has stopped (within a token or a chunk),
        so work ahead that waits for no flight to be running is not held up by it forever.
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
            if self._flights.get(uri) is flight:
                if flight.future.done():
                    del self._flights[uri]
                elif flight.waiters == 0:  # cancelled, still stopping: unregistered once it has stopped
                    flight.future.add_done_callback(
                        lambda _: self._flights.get(uri) is flight and self._flights.pop(uri))


def _answer(cache: SuggestionCache, req: CompletionRequest, entry: Entry, source: str, t0: float) -> Suggestion | None:
    """What ``entry`` suggests at ``req``'s cursor (trimmed to the policy, a block cut to parse)."""
    rest = entry.rest_after(req.cursor.typed)
    if rest is None:
        return None
    text = trim(rest, req.policy, final=entry.complete)[0]
    snap = req.snap
    if "\n" in text and entry.complete:
        text = cut_to_parse(req.grammar, snap.text[: snap.offset], snap.text[snap.offset:], text)
    entry.asked = entry.asked or req.manual  # shown because the user asked: its rest stays shown as they type
    return Suggestion(text, req.policy, source, entry.generation if source != "cache" else None,
                      entry.prefix_dropped, entry.suffix_dropped, (time.monotonic() - t0) * 1000,
                      through=req.cursor.typed != entry.typed and cache.offered(req.key, entry),
                      request=req, large=entry.large, confidence=entry.confidence(req.cursor.typed, text),
                      asked=entry.asked)


def RemoteCompletionService(backend: OpenAIBackend, family: FimFormat,  # noqa: N802 (kept name: a factory)
                            context: ContextProvider | None = None, workers: int = 4) -> CompletionService:
    """The service with the remote generator (:class:`.remote.RemoteGenerator`): the same caches,
    joining, debounce, gates and length control, generation on an OpenAI-compatible server."""
    from .remote import RemoteGenerator
    return CompletionService(None, None, None, context, generator=RemoteGenerator(backend, family, workers))
