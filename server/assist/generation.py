"""The assistant's core: one chat completion, with the response cache and the metrics.

The model answers through its own chat template (read from the GGUF, rendered by
llama-cpp-python's Jinja2 formatter) on a chat model of its own (``chatModel``, or a
second instance of the completion model: the weights are memory-mapped and shared, and
the completion model's KV cache is left alone), or on an OpenAI-compatible server.
Replies stream through a callback. The tasks (:mod:`.chat`, :mod:`.explain`,
:mod:`.refactor`, :mod:`.write_tests`) are built on :class:`AssistantCore`.

Threads: a generation blocks its caller, a worker thread, never the event loop; the
model runs on its engine's owner thread, which calls the ``on_delta`` callbacks.
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from concurrent.futures import Future
from typing import Callable, TypeVar

from ..engine import Engine, LoadedModel
from ..engine.schedule import ASSISTANT, SCHEDULE
from .packs import PromptPack
from .records import AssistError, Reply
from .store import AssistStore

log = logging.getLogger(__name__)

OPEN_END = "\ue000"  # a message's content cut here: the prompt before it is read ahead (see :mod:`.ahead`)
OnDelta = Callable[[str, str], None]  # (session id, text delta); called from the engine thread
OnProgress = Callable[[str], None]    # a step of a long task ("round 2 of 3: running the tests"); worker thread
OnPromptRead = Callable[[int, int], None]  # (tokens read, tokens to read) of a long prompt; engine thread
T = TypeVar("T")
# A request is refused before it starts when reading its new prompt tokens at the measured rate
# would take this many times its time cap (the rate is a moving average: it can be off).
TOO_SLOW_MARGIN = 1.5
COUNT_CACHE = 1024  # texts whose token count an assistant keeps
# Tasks whose answers repeat their prompt, written with prompt-lookup drafting (server.engine.lookup):
# the same greedy answer, sooner (measured per task: bench/lookup_drafting.py).
LOOKUP_TASKS = frozenset({"refactor", "tests"})
LONG_PROMPT = 1024  # new prompt tokens from which reading the prompt is reported (OnPromptRead, the log)
LONG_PROMPT_LOG_S = 10.0  # seconds between two log lines about one long prompt
FENCE = re.compile(r"```[\w+#.-]*\n(.*?)```", re.S)


def code_block(reply: str) -> str | None:
    """The (longest) fenced code block of a model reply, or None.

    An answer cut off by the token limit has an opening fence and no closing one: then
    everything after the opening fence counts (see :func:`index.syntax.parseable_prefix`).
    """
    blocks = FENCE.findall(reply)
    if blocks:
        return max(blocks, key=len)
    opening = list(re.finditer(r"```[\w+#.-]*\n", reply))
    return reply[opening[-1].end():] if opening else None


class AssistantCore:
    """Generation for the tasks, on top of a chat model's :class:`Engine` (or a remote server).

    Args:
        engine: owner thread of the chat model (loaded), or None with ``remote``.
        model_name: stored with each answer and in the cache key.
        store: conversations, cache, metrics.
        max_tokens: longest reply.
        context_tokens: budget for everything sent with a chat message (file, selection,
            retrieved chunks, past turns), in tokens.
        time_cap_s: longest a generation may take, in seconds.
        remote: an OpenAI-compatible backend (``OpenAIBackend``): chat goes to its
            ``/v1/chat/completions`` instead of ``engine``.
    """

    def __init__(self, engine: Engine | None, model_name: str, store: AssistStore, max_tokens: int = 512,
                 context_tokens: int = 2048, time_cap_s: float = 120.0, remote=None):
        self.engine, self.model_name, self.store = engine, model_name, store
        self.max_tokens, self.context_tokens, self.time_cap_s = max_tokens, context_tokens, time_cap_s
        self.remote = remote  # an OpenAIBackend: chat goes to /v1/chat/completions instead of `engine`
        self.sandbox = "bubblewrap"  # tests.sandbox: how generated tests are run (server.assist.testrun)
        self._counts: dict[str, int] = {}  # text -> its length in the chat model's tokens (see _counter)
        self._counts_lock = threading.Lock()

    def _submit(self, job: Callable[[LoadedModel], T], background: bool = False,
                cancel: threading.Event | None = None) -> Future[T]:
        """Run ``job(model)`` on the chat engine. A request (not ``background``) stops all work ahead
        there (reading ahead, answers written ahead) within one chunk or token; ``background``:
        work ahead itself, stopped by ``cancel`` (:meth:`server.engine.Engine.submit`)."""
        if background:
            return self.engine.submit(job, gives_way=cancel or threading.Event())
        return self.engine.submit(job)

    def _counter(self, background: bool = False) -> Callable[[str], int]:
        """Counts tokens with the chat model's own tokenizer, on its owner thread (never another model's,
        which a settings change may unload meanwhile); characters / 4 without a local model.
        One cache per assistant (COUNT_CACHE texts), shared by every request and reading ahead.

        Args:
            background: counting for reading ahead: it waits its turn and stops no answer
                written ahead (a request's counting stops them, like its generation).
        """
        if self.engine is None:
            return lambda text: len(text) // 4 + 1

        def count(text: str) -> int:
            with self._counts_lock:
                n = self._counts.get(text)
            if n is None:
                n = self._submit(lambda model: len(model.tokenize(text)), background).result()
                with self._counts_lock:
                    if len(self._counts) >= COUNT_CACHE:
                        del self._counts[next(iter(self._counts))]  # the oldest
                    self._counts[text] = n
            return n
        return count

    def _prompt_rate(self, background: bool = False) -> float | None:
        """The chat model's prompt-reading rate on this machine, tokens/s (measured on real
        prompts, else the load probe's figure); None for a remote model or when not known."""
        if self.engine is None:
            return None
        return self._submit(lambda model: model.prompt_rate, background).result()

    # -- generation ------------------------------------------------------------------------
    def _format(self, model: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens: ``messages`` in the model's chat template, ready for an answer; cut
        before :data:`OPEN_END` when a message holds it (the part known before the question).

        Raises:
            AssistError: the model has no chat template.
        """
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = model.metadata.get("tokenizer.chat_template")
        if not template:
            raise AssistError(f"{self.model_name} has no chat template; set chatModel to an instruct model")
        llm = model.llm
        eos = model.vocab.token_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        bos = model.vocab.token_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        prompt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        prompt = prompt.split(OPEN_END, 1)[0]
        return model.tokenize(prompt, add_special=False, parse_special=True)

    def _generate(self, task: str, messages: list[dict[str, str]], pack: PromptPack, session_id: str | None,
                  on_delta: OnDelta | None, max_tokens: int | None = None, time_cap_s: float | None = None,
                  cancel: threading.Event | None = None, use_cache: bool = True,
                  stop: Callable[[str], bool] | None = None, background: bool = False,
                  on_prompt: OnPromptRead | None = None, temperature: float = 0.0, seed: int = 0) -> Reply:
        """Run one chat completion (blocking, call from a worker thread), with cache and metrics.

        ``stop`` is called with the text so far after each token; True ends the answer there.
        ``background``: an answer written ahead, for the response cache (a hover where the
        cursor rests): any request stops it within one token. ``on_prompt``: while a prompt
        with at least LONG_PROMPT new tokens is read, (tokens read, tokens to read) about once
        a second; such a prompt is also logged every LONG_PROMPT_LOG_S seconds. ``temperature``,
        ``seed``: a sampled answer (:func:`server.engine.writing.generate`), neither cached nor
        taken from the cache (a local model; a remote one answers as it does).
        """
        use_cache = use_cache and temperature <= 0
        key = hashlib.sha256(json.dumps([task, self.model_name, pack.version, messages]).encode()).hexdigest()
        t0 = time.monotonic()
        if use_cache and (hit := self.store.cached(key)) is not None:
            if on_delta:
                on_delta(session_id or "", hit)
            self.store.metric(task, self.model_name, (time.monotonic() - t0) * 1000, 0, 0, True)
            return Reply(hit, session_id, True, pack.version, finish="cache")
        cancel = cancel or threading.Event()
        sent = [0]

        def stream(text: str) -> bool:
            if on_delta and len(text) > sent[0]:
                on_delta(session_id or "", text[sent[0]:])
                sent[0] = len(text)
            return stop is not None and stop(text)

        cap_s = time_cap_s or self.time_cap_s

        def job(model: LoadedModel):
            tokens = self._format(model, messages)
            budget = max_tokens or self.max_tokens
            if len(tokens) + budget > model.n_ctx:
                raise AssistError(f"the request is {len(tokens):,} tokens; with {budget} for the answer it does "
                                  f"not fit the chat model's context of {model.n_ctx:,} tokens. Send less, or "
                                  "raise chat.nCtx.")
            new, rate = len(tokens) - model.cached_tokens(tokens), model.prompt_rate
            if rate and model.prompt_rate_measured and new / rate > TOO_SLOW_MARGIN * cap_s and not background:
                raise AssistError(_too_slow(len(tokens), new, rate, cap_s))
            return len(tokens), model.generate(tokens, max_tokens=budget, cancel=cancel,
                                               deadline=time.monotonic() + cap_s, judge=stream,
                                               on_prompt=_reading(task, on_prompt),
                                               lookup=task in LOOKUP_TASKS, temperature=temperature,
                                               seed=seed), new, rate
        if self.remote is not None:
            from ..remote import BackendUnavailable
            try:
                result = self.remote.chat(messages, max_tokens=max_tokens or self.max_tokens, cancel=cancel,
                                          cap_s=cap_s, on_text=stream)
            except BackendUnavailable as e:
                raise AssistError(str(e)) from None
            text, finish, n_prompt, n_out, n_read, first_ms = result.text.strip(), result.finish, 0, 0, 0, 0.0
        else:
            if not background and task != "hover":  # a hover asks from where the cursor rests
                SCHEDULE.want(ASSISTANT)  # the user waits for the assistant: the editor's work ahead stops
            n_prompt, gen, new, rate = self._submit(job, background, cancel).result()
            if gen.finish == "timeout" and not gen.text.strip() and not background:
                raise AssistError(_too_slow(n_prompt, new, gen.evaluated_tokens / max(gen.prompt_ms / 1000, 1e-3)
                                            if gen.evaluated_tokens else rate or 0.0, cap_s, late=True))
            text, finish, n_out, n_read = gen.text.strip(), gen.finish, gen.generated_tokens, gen.evaluated_tokens
            first_ms = (time.monotonic() - t0) * 1000 - (gen.total_ms - gen.prompt_ms)
        if finish not in ("cancelled", "timeout") and text and use_cache:
            self.store.cache(key, text)
        if not background:  # the metrics are the user's requests
            self.store.metric(task, self.model_name, (time.monotonic() - t0) * 1000, n_prompt, n_out, False)
        return Reply(text, session_id, False, pack.version, prompt_tokens=n_prompt, output_tokens=n_out,
                     finish=finish, read_tokens=n_read, first_token_ms=first_ms)

    def answer(self, task: str, messages: list[dict[str, str]], pack: PromptPack, on_text: Callable[[str], None],
               max_tokens: int | None = None, cancel: threading.Event | None = None,
               on_prompt: OnPromptRead | None = None, stop: Callable[[str], bool] | None = None,
               time_cap_s: float | None = None, temperature: float = 0.0, seed: int = 0) -> Reply:
        """Answer a conversation a client built itself (the OpenAI-compatible endpoint). Blocks.

        Args:
            task: the task it is recorded under in the metrics (``chat``, ``explain``...).
            messages: ``[{"role", "content"}]``, the pack's system message already first.
            pack: the prompt pack whose version is recorded and cached with the answer.
            on_text: called with each piece of the answer as it is generated (engine thread).
            max_tokens: longest answer (default ``chat.maxTokens``).
            on_prompt: the progress of reading a long prompt (see :meth:`_generate`).
            stop: called with the answer so far after each token; True ends it there (the agent's
                turn ends after its tool call).
            time_cap_s: longest the answer may take, in seconds (default: the assistant's cap).
            temperature, seed: sample the answer instead of the greedy one (see :meth:`_generate`).

        Raises:
            AssistError: the conversation does not fit the model's context, or the model has no
                chat template, or the remote server is unavailable.
        """
        return self._generate(task, messages, pack, None, lambda _sid, delta: on_text(delta), max_tokens=max_tokens,
                              cancel=cancel, on_prompt=on_prompt, stop=stop, time_cap_s=time_cap_s,
                              temperature=temperature, seed=seed)


def _reading(task: str, on_prompt: OnPromptRead | None) -> OnPromptRead:
    """The progress of reading one prompt: nothing below LONG_PROMPT new tokens; above, to
    ``on_prompt`` about once a second and to the log every LONG_PROMPT_LOG_S seconds, with the
    time left at the rate so far."""
    t0 = time.monotonic()
    sent = logged = t0

    def reading(done: int, total: int) -> None:
        nonlocal sent, logged
        if total < LONG_PROMPT:
            return
        now = time.monotonic()
        if on_prompt is not None and (now - sent >= 1.0 or done >= total):
            sent = now
            on_prompt(done, total)
        if now - logged >= LONG_PROMPT_LOG_S:
            logged = now
            left = (total - done) * (now - t0) / max(done, 1)
            log.info("reading a long %s prompt: %d of %d tokens (%.0f%%), about %.0f s left",
                     task, done, total, 100 * done / total, left)
    return reading


def _too_slow(prompt: int, new: int, rate: float, cap_s: float, late: bool = False) -> str:
    """Why a request gets no answer in time: how long its prompt takes to read here, and what to do."""
    took = f"about {new / rate:,.0f} s" if rate > 0 else "longer than that"
    head = f"no answer within {cap_s:,.0f} s" if late else f"this request cannot be answered within {cap_s:,.0f} s"
    return (f"{head}: its prompt is {prompt:,} tokens, {new:,} of them new, and reading them takes {took} on this "
            f"machine ({rate:,.0f} tokens/s). Ask about less code (a smaller selection, fewer past turns: "
            "chat.contextTokens), or use a faster machine or a smaller chatModel.")
