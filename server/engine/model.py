"""A loaded llama.cpp model: its vocabulary, its KV cache, and the decode loop that generates from it.

:class:`LoadedModel` holds one ``llama_cpp.Llama`` and the parts built on it: the vocabulary
(:mod:`server.engine.vocabulary`), the record of its KV cache (:mod:`server.engine.kv_cache`)
and llama.cpp's handles (:mod:`server.engine.llama_api`). :meth:`LoadedModel.generate` runs the
decode loop of :mod:`server.engine.writing`. Use a LoadedModel only on its engine's thread
(:class:`server.engine.Engine`).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

import psutil

from . import writing
from .cpu_load import CPU_LOAD
from .crash_guard import CrashGuard
from .kv_cache import PREFILL_CHUNK, KvCache, Prefill
from .kv_plan import KvSnapshot, KvSnapshots
from .llama_api import Native, second_context
from .load_configs import Verdict
from .loading import load_llama, open_llama
from .vocabulary import ModelVocabulary
from .writing import Generation

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Physical cores (llama.cpp is slower on hyper-threads), at least 1."""
    return max(1, psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)


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
        self._attach(path)

    def _attach(self, path: str) -> None:
        """The tables, the native handles and the KV cache's record around ``self.llm``."""
        self.path = path
        self.metadata: dict[str, str] = dict(self.llm.metadata)
        native = self.native = Native(self.llm)
        self.max_threads = int(self.llm.context_params.n_threads)  # as loaded (the configuration may force 1)
        self.threads = self.max_threads
        self.vocab = ModelVocabulary(self.llm, native)
        # The load probe's prompt rate (a short prompt) until the first real prefill measures one.
        rate = next((r.prompt_tokens_per_s for r in self.verdict.tried if r.ok and r.config == self.verdict.config),
                    None) if self.verdict else None
        self.kv = KvCache(native, can_shift=not self.vocab_only and native.can_shift(), prompt_rate=rate)

    def second_context(self, n_ctx: int) -> LoadedModel:
        """This model again, with a KV cache of its own of ``n_ctx`` tokens and the weights shared
        (:func:`server.engine.llama_api.second_context`): a second line of work on the same model
        (the larger model's fill-in-the-middle beside its chat) where neither evicts the other's
        cache. Same thread rules as this one; :meth:`close` it before this one.

        Raises:
            ValueError: llama.cpp could not make the context (out of memory).
        """
        twin = LoadedModel.__new__(LoadedModel)
        twin.llm = second_context(self.llm, n_ctx)
        twin.guard, twin.verdict, twin.vocab_only = None, self.verdict, False
        twin.yield_to, twin.prefill_chunk = None, PREFILL_CHUNK
        twin._attach(self.path)
        if self.prompt_rate_measured:  # the same weights read at the same rate
            twin.prompt_rate = self.prompt_rate
        return twin

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
                stopped: Callable[[], str] | None = None, exact: bool = False, chunk: int = PREFILL_CHUNK,
                abort: Callable[[], bool] | None = None) -> Prefill:
        """Make the KV cache hold all of ``prompt`` but its last token, reusing what it can (see :class:`KvCache`)."""
        return self.kv.prefill(prompt, cancel, stopped, exact, chunk, abort=abort)

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
    def generate(self, prompt: list[int], **kwargs) -> Generation:
        """Greedy generation from ``prompt`` (token ids): :func:`server.engine.writing.generate`."""
        return writing.generate(self, prompt, **kwargs)
