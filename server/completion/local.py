"""The local generator: FIM prompts and generation with the in-process model, on its engine thread.

Everything here runs on the engine's owner thread (``engine-completion``), called through
:meth:`LocalGenerator.submit`. For one request it builds the FIM prompt (the window around the
cursor, a shorter one at a place the KV cache has not read, other files' chunks), heals the
typed text's last word, reads the prompt into the KV cache, waits out the debounce and
generates; on an empty line a manual request may try a few candidates. The alternatives
(:mod:`server.alternatives`) use the same prompt and healing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable

from ..config import Settings
from ..engine import Engine, LoadedModel
from ..length import body_missing, trim
from ..prompting import WINDOW_GRID_LINES, Budget, CursorText, FimFormat, FimPrompt, TokenCounter, build_fim_prompt
from ..text import split_lines
from .parts import (
    CACHE_ENTRIES,
    COLD_GRID_LINES,
    COLD_MIN_PREFIX,
    COLD_MIN_SUFFIX,
    MAX_HEALED_TOKENS,
    REJECTED_CANDIDATES,
    Entry,
    Flight,
    healing_tokens,
    least_sure,
)
from .request import CompletionRequest

log = logging.getLogger("server.completion")

# Other files' best chunks for the code around the cursor: (document URI, query text,
# budget in characters) -> [(workspace-relative path, code)]. Called on the engine's owner
# thread (``engine-completion``) once per 32-line cell of a document, cached by the generator;
# it must not block on the event loop.
ContextProvider = Callable[[str, str, int], list[tuple[str, str]]]


def heal(model: LoadedModel, prompt: FimPrompt) -> tuple[list[int], bytes]:
    """Token healing: the typed text usually ends inside a word ("appna"), a split the model
    never saw after its middle marker. Take the word's tokens back and make the model's
    output begin with their text, spelled the model's own way.

    Returns:
        (the prompt's tokens without the healed ones, the bytes the output must begin with).
    """
    tokens = prompt.tokens
    n_heal = healing_tokens([model.piece(t) for t in prompt.typed[-MAX_HEALED_TOKENS:]])
    if not n_heal:
        return tokens, b""
    return tokens[:-n_heal], b"".join(model.piece(t) for t in tokens[-n_heal:])


class LocalGenerator:
    """Prompts and generations for one loaded FIM model (engine thread only, but for :meth:`submit`).

    Attributes (written on the engine thread, read for ``deepseek.status``):
        prompt_tokens / reused_tokens / shifted_tokens / restored_states: KV-cache reuse, summed.
        short_windows: suggestions made from the shorter window of a place not read yet.
        read_ahead: prompts read ahead at a place the cursor went to.
        cut: documents whose last prompt was the shorter window.
        rate: the model's prompt rate as last seen (tokens/s); kv: saved KV states (count, bytes, budget MiB).
    """

    def __init__(self, engine: Engine, fim: FimFormat, counter: TokenCounter,
                 context: ContextProvider | None = None):
        self.engine, self.fim, self.counter = engine, fim, counter
        self._context = context
        self._context_cache: OrderedDict[tuple, list[tuple[str, str]]] = OrderedDict()
        self._starts: dict[str, int] = {}  # document URI -> its last prompt's window start line
        self._short_starts: dict[str, int] = {}  # ... of its last shorter window (see fim_prompt)
        self.cut: set[str] = set()
        self.prompt_tokens = self.reused_tokens = self.shifted_tokens = self.restored_states = 0
        self.short_windows = self.read_ahead = 0
        self.rate: float | None = None
        self.kv = (0, 0, 0)

    def submit(self, job: Callable[[LoadedModel], Entry | bool | None], ahead: threading.Event | None = None) -> Future:
        """Run ``job(model)`` on the engine's owner thread; ``ahead``: as work ahead, stopped by this
        event (:meth:`server.engine.Engine.submit`)."""
        return self.engine.submit(job, ahead)

    def configure_kv(self, model: LoadedModel, settings: Settings) -> None:
        """Apply ``completion.kvShiftMinTokens`` and ``completion.kvSnapshotsMb`` to ``model``."""
        model.min_reuse = settings.completion_kv_shift_min_tokens
        model.reuse_markers = frozenset({self.fim.prefix_id, self.fim.suffix_id, self.fim.middle_id})
        model.snapshots.resize(settings.completion_kv_snapshots_mb * 2**20)

    def cross_file(self, uri: str, cursor: CursorText, settings: Settings) -> list[tuple[str, str]]:
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
        ``cut``, and the whole prompt is read when the user pauses (:meth:`read_ahead_job`); once
        the cache holds it, requests use it again. ``whole``: never the shorter window (a
        request the user made and waits for).
        """
        room = model.n_ctx - max_tokens - 8 - len(self.fim.bos)
        context_budget = min(settings.completion_context_tokens, room // 4)
        room -= context_budget
        suffix_budget = min(settings.completion_suffix_tokens, room // 4)
        budget = Budget(min(settings.completion_prefix_tokens, room - suffix_budget), suffix_budget)
        context = self.cross_file(uri, cursor, settings)
        name = uri.rsplit("/", 1)[-1]
        prompt = build_fim_prompt(model, self.fim, cursor, budget, self.counter, context, context_budget, name,
                                  keep_start=self._starts.get(uri))
        self._starts[uri] = prompt.start_line
        afford = (model.prompt_rate or 0.0) * settings.completion_cold_prompt_ms / 1000
        if whole or afford <= 0 or len(prompt.tokens) <= afford \
                or len(prompt.tokens) - model.cached_tokens(prompt.tokens) <= afford:
            self.cut.discard(uri)
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
        self.cut.add(uri)
        return cut

    def affords(self, model: LoadedModel, req: CompletionRequest, settings: Settings, budget_ms: float) -> bool:
        """Whether this model reads what its KV cache lacks of ``req``'s whole prompt within ``budget_ms``
        at the rate measured here (``model.prompt_rate``; unknown: yes). Engine thread.

        The larger model answers an explicit request (``completion.manualModel`` auto) only where
        this holds: at a place it has read (ahead, or asked before), the prompt costs it little;
        at a new one, on a slow machine, the completion model answers instead."""
        self.configure_kv(model, settings)
        prompt = self.fim_prompt(model, req.uri, req.cursor, settings, req.max_tokens, whole=True)
        missing = len(prompt.tokens) - model.cached_tokens(prompt.tokens)
        rate = model.prompt_rate
        ok = not rate or missing / rate * 1000 <= budget_ms
        if not ok:
            log.info("%d prompt tokens to read at %.0f tokens/s: %.0f ms, over the %.0f ms left",
                     missing, rate, missing / rate * 1000, budget_ms)
        return ok

    def read_ahead_job(self, model: LoadedModel, req: CompletionRequest, settings: Settings, flight: Flight,
                       whole: bool) -> bool:
        """Read the FIM prompt of ``req`` into the KV cache, nothing generated; stopped by ``flight.cancel``
        within one chunk. ``whole``: the whole prompt, read exactly (no run shifted from elsewhere).

        Returns:
            True when the prompt is in the cache.
        """
        cursor = req.cursor
        self.configure_kv(model, settings)
        prompt = self.fim_prompt(model, req.uri, cursor, settings, settings.completion_max_tokens, whole=whole)
        prep = model.prefill(prompt.anchor if not cursor.typed.strip() else prompt.tokens, flight.cancel, exact=whole,
                             chunk=model.prefill_chunk)
        self.read_ahead += prep.done and prep.evaluated > 0
        log.info("prepared ahead: the %s prompt at line %d of %s: %d tokens read, %d reused%s in %.0f ms",
                 "whole" if whole else "first", cursor.above.count("\n") + 1, req.uri, prep.evaluated,
                 prep.reused, "" if prep.done else " (stopped: a request came, or the user turned to the assistant)",
                 prep.ms)
        return prep.done

    def generate(self, model: LoadedModel, req: CompletionRequest, settings: Settings, flight: Flight,
                 not_before: float, cap_ms: float, resume: Entry | None) -> Entry | None:
        """The suggestion for ``req``: prompt read, debounce waited out (until ``not_before``),
        generated within ``cap_ms``; ``resume`` continues a time-capped entry from its tokens.

        Returns:
            The entry (raw text after its typed text, the tokens the KV cache holds), or None
            when cancelled (``flight.cancel``) or the prompt leaves no room.
        """
        cancel, cursor, policy, uri, manual = flight.cancel, req.cursor, req.policy, req.uri, req.manual
        if cancel.is_set():
            return None
        forced = b""
        # The model writes an indentation-only line's indentation (see below); the editor has it.
        blank_line = bool(cursor.typed) and not cursor.typed.strip() and resume is None or \
            resume is not None and resume.unindented

        def unindent(text: str) -> str:
            return text.lstrip(" \t") if blank_line else text

        max_tokens = req.max_tokens
        if resume is not None:
            prompt, base_typed, base_text = resume.tokens, resume.typed, resume.text
            dropped = (resume.prefix_dropped, resume.suffix_dropped)
            max_tokens = max(1, max_tokens - resume.generated)
        else:
            fim_prompt = self.fim_prompt(model, uri, cursor, settings, max_tokens, whole=manual)
            prompt, base_typed, base_text = fim_prompt.tokens, cursor.typed, ""
            dropped = (fim_prompt.prefix_dropped_tokens, fim_prompt.suffix_dropped_tokens)
            self.short_windows += uri in self.cut and not flight.idle
            # Token healing (:func:`heal`). Only indentation typed (Enter on an empty line): the
            # middle starts at the line's start and the model writes the indentation itself, as in
            # training; forcing the editor's indentation token by token threw it into runs of spaces.
            if blank_line:
                prompt = fim_prompt.anchor
            else:
                prompt, forced = heal(model, fim_prompt)
        if len(prompt) + max_tokens > model.n_ctx:
            max_tokens = model.n_ctx - len(prompt)
            if max_tokens <= 0:
                return None
        # Prompt processing first: the next keystroke's prompt starts the same way, so this
        # work is kept even if this request is superseded during the debounce below.
        self.configure_kv(model, settings)
        prep = model.prefill(prompt, cancel)
        self.kv = (len(model.snapshots), model.snapshots.nbytes, settings.completion_kv_snapshots_mb)
        self.rate = model.prompt_rate
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
            gen = dataclasses.replace(gen, text=start + gen.text, ends=tuple(len(start) + e for e in gen.ends))
            if not insist or not gen.tokens or trim(unindent(gen.text), policy, final=True)[0] \
                    or time.monotonic() > deadline:
                break
            log.info("completion: candidate %r rejected by the length policy; trying the next", gen.text[:60])
            at, token = least_sure(model, gen, len(forced + branch))
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
                 + (", the shorter window of a place not read yet" if resume is None and uri in self.cut else ""),
                 gen.evaluated_tokens, gen.prompt_ms, gen.generated_tokens, gen.total_ms - gen.prompt_ms, gen.finish,
                 " (continued)" if resume else "")
        text = unindent(base_text + gen.text)
        shift = len(text) - len(base_text + gen.text)  # the indentation unindent took off
        return Entry(base_typed, text, prompt + gen.tokens, complete, policy.mode,
                     dropped[0], dropped[1], (resume.generated if resume else 0) + gen.generated_tokens, gen,
                     insisted=insist, unindented=blank_line, asked=manual or bool(resume and resume.asked),
                     logprobs=(resume.logprobs if resume else ()) + gen.logprobs,
                     ends=(tuple(e + shift for e in resume.ends) if resume else ())
                     + tuple(len(base_text) + e + shift for e in gen.ends))

