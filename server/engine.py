"""The model engine: one thread owns each llama.cpp model; everything else sends it jobs.

``llama_cpp.Llama`` is not thread-safe, so an :class:`Engine` keeps one worker thread
(``ThreadPoolExecutor(max_workers=1)``) and runs every job that touches the model
there: tokenizing, building a prompt, generating. Async callers ``await`` the job.

Cancellation is real: each generation gets a ``threading.Event`` checked by a llama.cpp
stopping criterion after every sampled token, so a cancelled or superseded request
stops within one token and frees the thread. Prompt processing is cancellable too: the
prompt tokens not already in the KV cache are evaluated in chunks of PREFILL_CHUNK
tokens with the event checked between chunks.

KV-prefix reuse: ``Llama.generate`` keeps the longest common token prefix of the
previous prompt in the KV cache; :class:`Generation` reports how many prompt tokens
were reused and how many had to be evaluated.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import psutil

from .loading import CrashGuard, Verdict, load_llama, open_llama

log = logging.getLogger(__name__)
T = TypeVar("T")

# Prompt tokens evaluated between two looks at the cancel event. Measured with 1,024
# prompt tokens on the default model, 2 threads: 214 tokens/s at 512 per chunk, 211 at 64
# (303 ms per chunk), 191 at 32. So 64 costs nothing and a cancel lands within ~0.3 s.
PREFILL_CHUNK = 64

def default_threads() -> int:
    """Physical cores (llama.cpp is slower on hyper-threads), at least 1."""
    return max(1, psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)


@dataclass
class Generation:
    """What one generation produced and what it cost.

    Attributes:
        text: the raw generated text (before length control's final trim).
        finish: why it ended: ``stop`` (end-of-text or a stop token), ``complete``
            (the judge saw the end), ``max_tokens``, ``cancelled`` or ``timeout``.
        tokens: the generated token ids.
        prompt_tokens: tokens in the prompt.
        reused_tokens: prompt tokens found in the KV cache (no evaluation needed).
        generated_tokens: tokens sampled.
        prompt_ms: time to the first sampled token (prompt processing), ms.
        total_ms: whole generation, ms.
    """

    text: str
    finish: str
    tokens: list[int]
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    prompt_ms: float
    total_ms: float

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


class LoadedModel:
    """A loaded llama.cpp model. Use it only on its engine's thread.

    Implements the ``server.prompting.Vocabulary`` protocol.
    """

    def __init__(self, path: str, *, n_ctx: int, n_threads: int, vocab_only: bool = False,
                 load_config: str = "auto"):
        """Load ``path``; a full load is probed first (:mod:`server.loading`), a vocab-only one is not.

        Args:
            load_config: the ``model.loadConfig`` setting: ``auto`` (probe) or a configuration name.

        Raises:
            ModelCrashes: llama.cpp crashes with this model on this machine in every configuration.
            ValueError / RuntimeError: llama.cpp could not load the file (corrupt or
                unsupported); callers turn this into a user-facing message.
        """
        from llama_cpp import llama_cpp as _ll  # heavy import, deferred to load time

        # verbose=False: no per-call timing prints. It briefly points fds 1 and 2 at
        # /dev/null while loading; the JSON-RPC stream is safe because the serve command
        # writes it to a duplicate of fd 1 (see server.cli.cmd_serve).
        self.guard: CrashGuard | None = None
        self.verdict: Verdict | None = None
        if vocab_only:  # no weights, no decode: nothing to probe
            llama_log = logging.getLogger("llama.cpp")
            saved = llama_log.level
            llama_log.setLevel(logging.ERROR)  # its context warns about n_ctx_train 0, which means nothing here
            try:
                self.llm = open_llama(path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                      vocab_only=True, seed=0)
            finally:
                llama_log.setLevel(saved)
        else:
            self.llm, self.guard, self.verdict = load_llama(path, kind="generate", n_threads=n_threads,
                                                            forced=load_config, n_ctx=n_ctx, seed=0)
        self.path = path
        self.metadata: dict[str, str] = dict(self.llm.metadata)
        self._ll = _ll
        self._piece_index: tuple | None = None
        self._eog = _ll.llama_vocab_is_eog
        self._break_ids: list[int] | None = None
        self._blank_ids: list[int] | None = None
        self._vocab = self.llm._model.vocab

    @property
    def load_config(self) -> str | None:
        """The load configuration in use (None for a vocab-only load)."""
        return self.verdict.config if self.verdict else None

    def close(self) -> None:
        self.llm.close()
        if self.guard is not None:
            self.guard.disarm()

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    # -- Vocabulary protocol -------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        if not text:
            return []
        return self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=add_special, special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens), special=True).decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (empty for control tokens)."""
        return self.llm.detokenize([token], special=False)

    def _pieces(self) -> tuple[list[bytes], list[int], dict[bytes, list[int]]]:
        """All token pieces, sorted (with their ids), and ids by piece. Built once, ~0.5 s."""
        if self._piece_index is None:
            n = self.llm.n_vocab()
            pairs = sorted((p, t) for t in range(n) if (p := self.piece(t)))
            by_piece: dict[bytes, list[int]] = {}
            for p, t in pairs:
                by_piece.setdefault(p, []).append(t)
            self._piece_index = ([p for p, _ in pairs], [t for _, t in pairs], by_piece)
        return self._piece_index

    def tokens_consistent_with(self, head: bytes) -> list[int]:
        """Tokens whose piece starts with ``head``, or is a non-empty head of ``head``.

        These are the tokens an output that must begin with ``head`` may start with.
        """
        pieces, ids, by_piece = self._pieces()
        out = []
        i = bisect.bisect_left(pieces, head)
        while i < len(pieces) and pieces[i].startswith(head):
            out.append(ids[i])
            i += 1
        for k in range(1, len(head)):
            out.extend(by_piece.get(head[:k], ()))
        return out

    def line_break_tokens(self) -> list[int]:
        """Tokens whose piece holds a line break, and the control tokens (empty pieces) that
        end or restructure text (end of text, FIM markers...). Built once with the piece index."""
        if self._break_ids is None:
            pieces, ids, _ = self._pieces()
            have_piece = set(ids)
            self._break_ids = [t for p, t in zip(pieces, ids) if b"\n" in p or b"\r" in p] + \
                [t for t in range(self.llm.n_vocab()) if t not in have_piece]
        return self._break_ids

    def blank_tokens(self) -> list[int]:
        """Tokens whose piece is only spaces and tabs. Built once."""
        if self._blank_ids is None:
            pieces, ids, _ = self._pieces()
            self._blank_ids = [t for p, t in zip(pieces, ids) if not p.strip(b" \t")]
        return self._blank_ids

    def is_special(self, token: int) -> bool:
        attr = self._ll.llama_vocab_get_attr(self._vocab, token)
        return bool(attr & (self._ll.LLAMA_TOKEN_ATTR_CONTROL | self._ll.LLAMA_TOKEN_ATTR_USER_DEFINED))

    # -- generation ----------------------------------------------------------------------
    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """Length of the longest common prefix of ``tokens`` and the KV cache."""
        cached = self.llm._input_ids  # tokens currently in the KV cache
        n = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            n += 1
        return n

    def prefill(self, prompt: list[int], cancel: threading.Event) -> bool:
        """Evaluate all of ``prompt`` but its last token into the KV cache, cancellably.

        Returns:
            False when ``cancel`` was set before it finished (what was done stays cached).
        """
        reused = min(self.cached_prefix(prompt), len(prompt) - 1)
        return self._prefill(prompt, reused, lambda: "cancelled" if cancel.is_set() else "")

    def _prefill(self, prompt: list[int], reused: int, stopped: Callable[[], str]) -> bool:
        """Evaluate ``prompt[reused:-1]`` into the KV cache in chunks; False when stopped early.

        ``Llama.generate`` then finds all but the last prompt token cached and evaluates
        only that one before sampling. A stopped prefill leaves a valid shorter prefix in
        the cache, which the next request can reuse.
        """
        llm = self.llm
        llm.n_tokens = reused  # Llama.eval drops the KV cache beyond n_tokens first
        end = len(prompt) - 1
        for start in range(reused, end, PREFILL_CHUNK):
            if stopped():
                return False
            llm.eval(prompt[start:min(start + PREFILL_CHUNK, end)])
        return not stopped()

    def _forcing(self, prompt_len: int, head: bytes):
        """A logits processor that makes the output begin with ``head`` (token healing).

        While the output so far is shorter than ``head``, only tokens consistent with the
        rest of ``head`` may be sampled; after that it changes nothing.
        """
        import numpy as np

        state = {"done": 0, "allowed": None}

        def process(input_ids, logits):
            generated = input_ids[prompt_len:]
            if state["done"] != len(generated) or state["allowed"] is None:
                text = b"".join(self.piece(int(t)) for t in generated)
                rest = head[len(text):] if head.startswith(text) else b""
                state["done"] = len(generated)
                state["allowed"] = self.tokens_consistent_with(rest) if rest else []
            if not state["allowed"]:
                return logits
            masked = np.full_like(logits, -np.inf)
            masked[state["allowed"]] = logits[state["allowed"]]
            return masked
        return process

    def _text_first(self, prompt_len: int, forced: bytes, banned_first: frozenset[int]):
        """A logits processor that makes the first line of the output (after ``forced``)
        hold some text: until a non-blank character is out, no line break, end of text or
        control token may be sampled, nor any of ``banned_first``."""
        import numpy as np

        breaks = np.array(self.line_break_tokens(), dtype=np.int64)
        blanks = np.array(self.blank_tokens(), dtype=np.int64)
        banned = np.array(sorted(banned_first), dtype=np.int64)

        def process(input_ids, logits):
            text = b"".join(self.piece(int(t)) for t in input_ids[prompt_len:])
            if text[len(forced):].strip():
                return logits
            logits = logits.copy()
            logits[breaks] = -np.inf
            if forced and len(text) >= len(forced):
                logits[blanks] = -np.inf  # the typed indentation is there: now the line's text
            if len(banned):
                logits[banned] = -np.inf
            return logits
        return process

    def generate(self, prompt: list[int], *, max_tokens: int, cancel: threading.Event, deadline: float,
                 stop_ids: frozenset[int] = frozenset(),
                 judge: Callable[[str], bool] | None = None, forced: bytes = b"",
                 text_first: bool = False, banned_first: frozenset[int] = frozenset()) -> Generation:
        """Greedy generation from ``prompt`` (token ids) until a stop condition.

        Args:
            prompt: the prompt's token ids; must be shorter than ``n_ctx - max_tokens``.
            max_tokens: most tokens to sample.
            cancel: set from any thread to stop within one token.
            deadline: ``time.monotonic()`` value after which generation stops (finish ``timeout``).
            stop_ids: tokens that end the output besides the model's end-of-generation tokens.
            judge: called with the text so far (after ``forced``) after each token; True means complete.
            forced: bytes the output must begin with (token healing: the text of prompt tokens
                taken back so the model can re-spell them its own way). They are not part of
                the returned text.
            text_first: the output's first line must hold text (a line is known to be missing:
                no end of text or line break before a non-blank character).
            banned_first: tokens that may not bring the output's first text (after ``forced``
                and any indentation): the first content tokens of candidates already rejected,
                so the next best one comes out.

        Raises:
            ValueError: the prompt does not fit the context window.
        """
        from llama_cpp import LogitsProcessorList, StoppingCriteriaList

        if len(prompt) + max_tokens > self.n_ctx:
            raise ValueError(f"prompt of {len(prompt)} tokens + {max_tokens} to generate exceeds n_ctx {self.n_ctx}")
        t0 = time.monotonic()
        # The last prompt token is always evaluated again: sampling needs its logits, and
        # the logits left in the context belong to whatever was decoded last.
        reused = min(self.cached_prefix(prompt), len(prompt) - 1)
        out: list[int] = []
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text, finish, first_at = "", "", 0.0

        def stopped() -> str:
            return "cancelled" if cancel.is_set() else "timeout" if time.monotonic() > deadline else ""

        if not self._prefill(prompt, reused, stopped):
            ms = (time.monotonic() - t0) * 1000
            return Generation("", stopped(), [], len(prompt), reused, 0, ms, ms)
        criteria = StoppingCriteriaList([lambda ids, logits: bool(stopped())])
        processors = LogitsProcessorList(([self._forcing(len(prompt), forced)] if forced else []) + (
            [self._text_first(len(prompt), forced, banned_first)] if text_first or banned_first else [])) or None
        raw = b""
        for token in self.llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                       reset=True, stopping_criteria=criteria, logits_processor=processors):
            if not first_at:
                first_at = time.monotonic()
            if token in stop_ids or self._eog(self._vocab, token):
                finish = "stop"
                break
            out.append(token)
            piece = self.piece(token)
            if len(raw) < len(forced):  # still re-spelling the healed text
                raw += piece
                piece = raw[len(forced):] if len(raw) > len(forced) else b""
            text += decoder.decode(piece)
            if judge is not None and judge(text):
                finish = "complete"
                break
            if len(out) >= max_tokens:
                finish = "max_tokens"
                break
        if not finish:  # the stopping criterion ended the loop
            finish = stopped() or "stop"
        text += decoder.decode(b"", final=True)
        if self.guard is not None:
            self.guard.decoded()
        now = time.monotonic()
        return Generation(text, finish, out, len(prompt), reused, len(out),
                          ((first_at or now) - t0) * 1000, (now - t0) * 1000)


class Engine:
    """Owns one model and the one thread allowed to touch it.

    Jobs are callables ``job(model) -> T`` run on the owner thread in submission order.
    """

    def __init__(self, name: str = "llm"):
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self.model: LoadedModel | None = None

    def _load(self, path: str, n_ctx: int, n_threads: int, load_config: str) -> LoadedModel:
        if self.model is not None:
            self.model.close()
            self.model = None
        t0 = time.monotonic()
        self.model = LoadedModel(path, n_ctx=n_ctx, n_threads=n_threads, load_config=load_config)
        log.info("loaded %s (n_ctx %d, %d threads, %s) in %.2f s", path, n_ctx, n_threads,
                 self.model.verdict.explain() if self.model.verdict else "", time.monotonic() - t0)
        return self.model

    def load(self, path: str, *, n_ctx: int, n_threads: int, load_config: str = "auto") -> Future[LoadedModel]:
        """Load (or replace) the model on the owner thread, probed first (see :mod:`server.loading`).

        Raises (through the future): ModelCrashes, ValueError, RuntimeError as :class:`LoadedModel`.
        """
        return self._executor.submit(self._load, path, n_ctx, n_threads, load_config)

    def unload(self) -> Future[None]:
        def _unload() -> None:
            if self.model is not None:
                self.model.close()
                self.model = None
        return self._executor.submit(_unload)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on the owner thread, loaded model or not (e.g. a vocab-only probe)."""
        return self._executor.submit(fn)

    def submit(self, job: Callable[[LoadedModel], T]) -> Future[T]:
        """Run ``job(model)`` on the owner thread.

        Raises (through the future):
            RuntimeError: no model is loaded.
        """
        def run() -> T:
            if self.model is None:
                raise RuntimeError("no model is loaded")
            return job(self.model)
        return self._executor.submit(run)

    async def run(self, job: Callable[[LoadedModel], T]) -> T:
        """``await`` form of :meth:`submit`."""
        return await asyncio.wrap_future(self.submit(job))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
