"""A loaded llama.cpp model: its vocabulary, its KV cache, and the decode loop that generates from it.

:class:`LoadedModel` holds one ``llama_cpp.Llama`` and the parts built on it: the vocabulary
(:mod:`server.engine.vocabulary`), the record of its KV cache (:mod:`server.engine.kv_cache`)
and llama.cpp's handles (:mod:`server.engine.llama_api`). :meth:`LoadedModel.generate` is the
decode loop: read the prompt into the cache, then evaluate, constrain (:mod:`server.engine.sampling`),
pick, stop or append, one token at a time. Use a LoadedModel only on its engine's thread
(:class:`server.engine.Engine`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import psutil

from . import sampling
from .cpu_load import CPU_LOAD
from .crash_guard import CrashGuard
from .kv_cache import PREFILL_CHUNK, KvCache, Prefill
from .kv_plan import KvSnapshot, KvSnapshots
from .llama_api import Native
from .load_configs import Verdict
from .loading import load_llama, open_llama
from .lookup import NgramIndex
from .vocabulary import ModelVocabulary

log = logging.getLogger(__name__)


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
        margins: with ``record_margins``, for each of ``tokens``, how sure the model was there:
            its best logit minus its second best (before any constraint), in nats; else empty.
        drafted_tokens, accepted_tokens: prompt-lookup drafting's figures (``lookup``).
    """

    text: str
    finish: str
    tokens: list[int]
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    prompt_ms: float
    total_ms: float
    margins: tuple[float, ...] = ()
    drafted_tokens: int = 0   # with ``lookup``: tokens drafted from earlier text and checked in a batch
    accepted_tokens: int = 0  # ... of which the model would have written (the output has them)

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


class LoadedModel:
    """A loaded llama.cpp model. Use it only on its engine's thread.

    Implements the ``server.prompting.Vocabulary`` protocol.

    Attributes:
        llm: the ``llama_cpp.Llama``.
        vocab: its vocabulary and token tables.
        kv: the record of its KV cache (prefill, evaluate, rewind, saved states).
        guard: the crash marker of its first decodes (None for a vocab-only load).
        verdict: how its load configuration was chosen (None for a vocab-only load).
        prefill_chunk: prompt tokens :meth:`generate` reads between two looks at ``cancel`` and
            ``yield_to`` (and the least gain for which a saved state is restored).
        yield_to: called between two prompt chunks and two tokens of :meth:`generate` (a
            background model waits there while a suggestion is made, see
            :mod:`server.engine.schedule`); None: never pauses.
    """

    def __init__(self, path: str, *, n_ctx: int, n_threads: int, vocab_only: bool = False,
                 load_config: str = "auto"):
        """Load ``path``; a full load is probed first (:mod:`server.engine.loading`), a vocab-only one is not.

        Args:
            load_config: the ``model.loadConfig`` setting: ``auto`` (probe) or a configuration name.

        Raises:
            ModelCrashes: llama.cpp crashes with this model on this machine in every configuration.
            ValueError / RuntimeError: llama.cpp could not load the file (corrupt or
                unsupported); callers turn this into a user-facing message.
        """
        # verbose=False: no per-call timing prints. It briefly points fds 1 and 2 at
        # /dev/null while loading; the JSON-RPC stream is safe because the serve command
        # writes it to a duplicate of fd 1 (see server.cli.cmd_serve).
        self.guard: CrashGuard | None = None
        self.verdict: Verdict | None = None
        self.vocab_only = vocab_only
        self.yield_to: Callable[[], None] | None = None
        self.prefill_chunk = PREFILL_CHUNK
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
        native = self.native = Native(self.llm)
        self.max_threads = int(self.llm.context_params.n_threads)  # as loaded (the configuration may force 1)
        self.threads = self.max_threads
        self.vocab = ModelVocabulary(self.llm, native)
        # The load probe's prompt rate (a short prompt) until the first real prefill measures one.
        rate = next((r.prompt_tokens_per_s for r in self.verdict.tried if r.ok and r.config == self.verdict.config),
                    None) if self.verdict else None
        self.kv = KvCache(native, can_shift=not vocab_only and native.can_shift(), prompt_rate=rate)

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

    # -- the vocabulary (server.prompting.Vocabulary and the piece tables) -----------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        return self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.vocab.detokenize(tokens)

    def is_special(self, token: int) -> bool:
        return self.vocab.is_special(token)

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (empty for control tokens)."""
        return self.vocab.piece(token)

    def tokens_consistent_with(self, head: bytes) -> list[int]:
        """Tokens an output that must begin with ``head`` may start with (see :class:`ModelVocabulary`)."""
        return self.vocab.tokens_consistent_with(head)

    def fit_threads(self) -> int:
        """Use as many threads as the cores other programs leave free (:mod:`server.engine.cpu_load`),
        at most those it was loaded with. Owner thread. Returns the number in use."""
        n = CPU_LOAD.free_threads(self.max_threads)
        if n != self.threads:
            log.info("%s: %d threads (other programs keep %.1f cores busy)", self.path.rsplit("/", 1)[-1], n,
                     CPU_LOAD.others())
            self.native.set_threads(n)
            self.threads = n
        return n

    # -- the KV cache (see KvCache) ----------------------------------------------------------
    def prefill(self, prompt: list[int], cancel: threading.Event | None = None,
                stopped: Callable[[], str] | None = None, exact: bool = False, chunk: int = PREFILL_CHUNK) -> Prefill:
        """Make the KV cache hold all of ``prompt`` but its last token, reusing what it can (see :class:`KvCache`)."""
        return self.kv.prefill(prompt, cancel, stopped, exact, chunk)

    def cached_tokens(self, prompt: list[int]) -> int:
        """How many tokens of ``prompt`` :meth:`prefill` would reuse (:meth:`KvCache.cached_tokens`)."""
        return self.kv.cached_tokens(prompt)

    def evaluate(self, tokens: Sequence[int]):
        """Evaluate ``tokens`` after what the cache holds; the logits after the last (numpy float32, n_vocab)."""
        return self.kv.evaluate(tokens)

    def rewind(self, n: int) -> None:
        """Keep the first ``n`` positions of the KV cache, drop the rest."""
        self.kv.rewind(n)

    def clear_cache(self) -> None:
        """Empty the KV cache (saved states stay)."""
        self.kv.clear()

    def save_state(self) -> KvSnapshot:
        return self.kv.save_state()

    def restore_state(self, snap: KvSnapshot) -> None:
        """Make the KV cache hold ``snap``. Raises RuntimeError when llama.cpp refuses it (the cache is then empty)."""
        self.kv.restore_state(snap)

    @property
    def snapshots(self) -> KvSnapshots:
        return self.kv.snapshots

    @property
    def min_reuse(self) -> int:
        """Shortest run of prompt tokens shifted into place; 0 keeps only the common prefix."""
        return self.kv.min_reuse

    @min_reuse.setter
    def min_reuse(self, tokens: int) -> None:
        self.kv.min_reuse = tokens

    @property
    def reuse_markers(self) -> frozenset[int]:
        """The FIM markers: a run is reused only in its own part of the prompt."""
        return self.kv.reuse_markers

    @reuse_markers.setter
    def reuse_markers(self, markers: frozenset[int]) -> None:
        self.kv.reuse_markers = markers

    @property
    def prompt_rate(self) -> float | None:
        """Prompt tokens evaluated per second on this machine (moving average), None before any."""
        return self.kv.prompt_rate

    @property
    def prompt_rate_measured(self) -> bool:
        """:attr:`prompt_rate` comes from a real prompt read here (not from the load probe's short one)."""
        return self.kv.rate_measured

    @prompt_rate.setter
    def prompt_rate(self, tokens_per_s: float | None) -> None:
        self.kv.prompt_rate = tokens_per_s

    # -- generation --------------------------------------------------------------------------
    def generate(self, prompt: list[int], *, max_tokens: int, cancel: threading.Event, deadline: float,
                 stop_ids: frozenset[int] = frozenset(),
                 judge: Callable[[str], bool] | None = None, forced: bytes = b"",
                 text_first: bool = False, banned_first: frozenset[int] = frozenset(),
                 record_margins: bool = False, breaks_first: bool = False,
                 on_prompt: Callable[[int, int], None] | None = None, lookup: bool = False) -> Generation:
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
            breaks_first: with ``text_first``, the text may begin after line breaks (the end of
                a block opener whose body is empty: the body is known to be missing).
            record_margins: keep, for every sampled token, the gap between the model's two
                best logits there (``Generation.margins``; about 0.5 ms a token).
            on_prompt: called while the prompt is read, after each chunk, with (tokens read
                so far, tokens to read): progress for a long prompt.
            lookup: draft the next tokens from earlier text (:mod:`server.engine.lookup`) and
                check them in one batch: the same output (greedy), sooner where the answer
                repeats its prompt (a rewrite, tests).

        Raises:
            ValueError: the prompt does not fit the context window.
        """
        import numpy as np

        if len(prompt) + max_tokens > self.n_ctx:
            raise ValueError(f"prompt of {len(prompt)} tokens + {max_tokens} to generate exceeds n_ctx {self.n_ctx}")
        t0 = time.monotonic()

        steps = 0

        def stopped() -> str:
            nonlocal steps
            if self.yield_to is not None:
                self.yield_to()
            steps += 1
            if steps % 16 == 0:  # a long answer follows the machine's load as it goes
                self.fit_threads()
            return "cancelled" if cancel.is_set() else "timeout" if time.monotonic() > deadline else ""

        # Read the prompt into the KV cache, all but its last token, reusing what the cache holds.
        prep = self.kv.prefill(prompt, stopped=stopped, chunk=self.prefill_chunk, progress=on_prompt)
        if not prep.done:
            ms = (time.monotonic() - t0) * 1000
            return Generation("", stopped(), [], len(prompt), prep.reused, 0, ms, ms)
        margins: list[float] = []
        constrain = sampling.constraints(self.vocab, forced=forced, first_line_text=text_first,
                                         banned_first=banned_first, breaks_first=breaks_first,
                                         record=margins if record_margins else None)
        out: list[int] = []
        text = sampling.HealedText(forced)
        finish, first_at = "", 0.0
        index = NgramIndex(prompt) if lookup else None
        drafts: list[tuple[int, Any]] = []  # drafted tokens in the cache after the last one taken, with their logits
        drafted = accepted = 0
        # The last prompt token is always evaluated again: its logits are the first token's.
        logits = self.kv.evaluate(prompt[-1:])
        while True:
            # Constrain the logits: token healing, text on the first line (margins noted before).
            logits = constrain(out, logits)
            # Pick the most likely token (greedy).
            token = int(np.argmax(logits))
            # Cancelled or out of time: stop without it.
            if finish := stopped():
                break
            first_at = first_at or time.monotonic()
            # The end of text or a stop token ends the output; it is not part of it.
            if token in stop_ids or self.vocab.is_eog(token):
                finish = "stop"
                break
            # Append it; the text grows by its piece (the healed bytes left out).
            out.append(token)
            text.add(self.vocab.piece(token))
            # The judge (the length policy) or the token budget may end the output here.
            if judge is not None and judge(text.text):
                finish = "complete"
                break
            if len(out) >= max_tokens:
                finish = "max_tokens"
                break
            if index is not None:
                index.add(token)
            # A drafted token the model wrote as well is in the cache already, with its logits.
            if drafts:
                drafted_token, after = drafts.pop(0)
                if drafted_token == token:
                    accepted += 1
                    logits = after
                    continue
                self.kv.rewind(len(prompt) + len(out) - 1)  # the draft from here on was wrong
                drafts = []
            # Evaluate it: the logits of the next token (with a draft: of each drafted one too).
            draft = index.draft() if index is not None else []
            if draft:
                drafted += len(draft)
                logits, *rest = self.kv.evaluate_each([token, *draft])
                drafts = list(zip(draft, rest))
            else:
                logits = self.kv.evaluate([token])
        if drafts:  # drafted tokens left unused leave the cache (the last one taken may be among them)
            self.kv.rewind(len(prompt) + max(len(out) - 1, 0))
        if self.guard is not None:
            self.guard.decoded()
        now = time.monotonic()
        return Generation(text.final(), finish, out, len(prompt), prep.reused, len(out),
                          ((first_at or now) - t0) * 1000, (now - t0) * 1000, tuple(margins[:len(out)]),
                          drafted, accepted)
