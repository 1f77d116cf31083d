"""The one module that reaches into llama-cpp-python beyond ``Llama``'s public methods.

``llama_cpp.Llama`` generates from a prompt it manages itself. Reusing the KV cache beyond a
common prefix, saving its states, branching the alternatives and choosing a load configuration
need more: llama.cpp's low-level functions (``llama_cpp.llama_cpp``) on ``Llama``'s private
context and model handles (``_ctx``, ``_model``), its batch class (``llama_cpp._internals``),
its record of the evaluated tokens (``n_tokens``, ``input_ids``, written here to match what the
cache holds) and two default-parameter functions patched while a model loads. Every such name
is listed in :data:`PRIVATE_API`; tests/test_seams.py checks that each exists in the pinned
llama-cpp-python (pyproject.toml) and that no other module of ``server/`` or ``index/`` touches
one. An upgrade that renames one breaks here, and the test says where.

Everything runs on the thread that owns the ``Llama`` (see :class:`server.engine.Engine`), except
:func:`default_params` and :func:`route_llama_logs`, which the loader calls under its lock.
This module imports llama_cpp on first use, not at import.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from typing import Any, Callable, Iterator, Sequence

# What this module uses beyond ``Llama``'s public methods, by owner (checked by tests/test_seams.py).
PRIVATE_API: dict[str, tuple[str, ...]] = {
    "Llama": ("_ctx", "_model", "n_tokens", "input_ids",    # n_tokens, input_ids: written
              # second_context:
              "_stack", "_batch", "scores", "_candidates", "_sampler", "n_batch", "_n_ctx", "_n_vocab"),
    "LlamaContext": ("ctx", "decode", "get_logits_ith"),
    "LlamaModel": ("vocab", "token_get_text"),
    "LlamaBatch": ("batch",),
    "llama_batch": ("n_tokens", "token", "pos", "n_seq_id", "seq_id", "logits"),
    "llama_cpp._internals": ("LlamaBatch", "LlamaContext", "LlamaTokenDataArray"),
    "llama_cpp.llama_cpp": (
        "llama_model_default_params", "llama_context_default_params",  # patched while loading
        "llama_get_memory", "llama_memory_can_shift", "llama_memory_clear", "llama_memory_seq_rm",
        "llama_memory_seq_add", "llama_memory_seq_cp", "llama_set_n_threads", "llama_state_seq_get_size",
        "llama_state_seq_get_data", "llama_state_seq_set_data", "llama_vocab_is_eog",
        "llama_vocab_get_attr", "LLAMA_TOKEN_ATTR_CONTROL", "LLAMA_TOKEN_ATTR_USER_DEFINED", "llama_token_to_piece",
        "llama_log_callback", "llama_log_set", "llama_decode", "llama_set_abort_callback", "ggml_abort_callback"),
}


_bindings = None


def _ll():
    """llama-cpp-python's low-level bindings (a heavy import, deferred to first use)."""
    global _bindings
    if _bindings is None:
        from llama_cpp import llama_cpp
        _bindings = llama_cpp
    return _bindings


class Native:
    """llama.cpp's own handles of one ``Llama``: its memory (the KV cache), state, logits and vocabulary.

    Positions and sequence ids are llama.cpp's: ``p1 = -1`` means "to the end"; sequence 0
    holds the prompt, sequence 1 is scratch (see :class:`server.engine.kv_cache.KvCache`).
    """

    def __init__(self, llm: Any):
        self.llm = llm
        self._batch = None  # a llama_batch for decode_at, made on first use
        self.vocab = llm._model.vocab
        self._abort: Callable[[], bool] | None = None  # the stop rule of the abortable decode in progress
        self._abort_callback = None  # its ctypes callback, made on first use (kept alive here)

    def _memory(self):
        return _ll().llama_get_memory(self.llm._ctx.ctx)

    # -- the KV cache ----------------------------------------------------------------------
    def can_shift(self) -> bool:
        """Whether this context's memory can move cells to other positions (``seq_add``)."""
        return bool(_ll().llama_memory_can_shift(self._memory()))

    def clear(self) -> None:
        """Empty the KV cache, all sequences."""
        _ll().llama_memory_clear(self._memory(), True)

    def seq_rm(self, seq: int, p0: int, p1: int) -> None:
        """Remove the cells of ``seq`` (-1: every sequence) at positions ``[p0, p1)``."""
        _ll().llama_memory_seq_rm(self._memory(), seq, p0, p1)

    def seq_add(self, seq: int, p0: int, p1: int, delta: int) -> None:
        """Shift the cells of ``seq`` at ``[p0, p1)`` by ``delta`` positions (keys re-rotated at the next decode)."""
        _ll().llama_memory_seq_add(self._memory(), seq, p0, p1, delta)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        """Make ``dst`` share the cells of ``src`` at ``[p0, p1)`` (nothing is copied)."""
        _ll().llama_memory_seq_cp(self._memory(), src, dst, p0, p1)

    def decode_at(self, tokens: Sequence[int], pos: int, seq: int, capacity: int, every: bool = False,
                  abort: Callable[[], bool] | None = None) -> bool:
        """Evaluate ``tokens`` at positions ``pos..`` of ``seq``, logits of the last only
        (``every``: of each, read with :meth:`logits_at`).

        Args:
            capacity: the most tokens one call will pass (the batch is made once, this size).
            abort: looked at by llama.cpp after each node of the compute graph (hundreds per
                decode: a few ms apart); True stops the decode there (``llama_set_abort_callback``).

        Returns:
            True; False when ``abort`` stopped it. llama.cpp then removed the cells of the
            stopped ubatch from ``seq`` (from its first position on); ubatches done before it
            stay (llama.h, ``llama_decode``: return 2).

        Raises:
            RuntimeError: llama_decode failed (no room in the KV cache, an invalid batch).
        """
        if self._batch is None:
            from llama_cpp._internals import LlamaBatch
            self._batch = LlamaBatch(n_tokens=capacity, embd=0, n_seq_max=1, verbose=False)
        b = self._batch.batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos + i, 1, every
            b.seq_id[i][0] = seq
        b.logits[len(tokens) - 1] = True
        if abort is None:
            self.llm._ctx.decode(self._batch)
            return True
        ll, ctx = _ll(), self.llm._ctx.ctx
        if self._abort_callback is None:
            # Called by the compute graph's first thread, the caller's: it takes the GIL for a moment
            # (measured: no change in the 1.5B's prompt rate, 94 tokens/s either way on 2 cores).
            self._abort_callback = ll.ggml_abort_callback(self._should_abort)
        self._abort = abort
        ll.llama_set_abort_callback(ctx, self._abort_callback, None)
        try:
            code = ll.llama_decode(ctx, b)
        finally:  # no callback for other decodes (Llama.eval would raise on an abort)
            ll.llama_set_abort_callback(ctx, ll.ggml_abort_callback(), None)
            self._abort = None
            _aborting.on = False
        if code not in (0, 2):
            raise RuntimeError(f"llama_decode returned {code}")
        return code == 0

    def _should_abort(self, _data) -> bool:
        stop = self._abort is not None and bool(self._abort())
        if stop:
            _aborting.on = True  # llama.cpp's warnings about the stopped decode are expected: DEBUG
        return stop

    def last_logits(self):
        """The logits after the last token of the last decode: a float32 numpy array, one per
        vocabulary entry (a copy: the next decode overwrites llama.cpp's)."""
        import numpy as np

        view = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),))
        return np.array(view)

    def set_threads(self, n: int) -> None:
        """Use ``n`` threads for the next decodes, single tokens and batches (``llama_set_n_threads``)."""
        _ll().llama_set_n_threads(self.llm._ctx.ctx, n, n)

    def logits_at(self, i: int):
        """The logits after the ``i``-th token of the last decode (one made with ``every``): a
        float32 numpy array (a copy)."""
        import numpy as np

        view = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(i), shape=(self.llm.n_vocab(),))
        return np.array(view)

    def set_evaluated(self, tokens: Sequence[int]) -> None:
        """Make ``Llama``'s own record (``input_ids``, ``n_tokens``) say the cache holds ``tokens`` from
        position 0: its ``eval`` then appends after them (and drops whatever lies beyond)."""
        n = len(tokens)
        self.llm.input_ids[:n] = tokens
        self.llm.n_tokens = n

    # -- saved states ----------------------------------------------------------------------
    def state_get(self, seq: int = 0) -> bytes:
        """The state of ``seq`` (its KV cells) as bytes (``llama_state_seq_get_data``)."""
        ll, ctx = _ll(), self.llm._ctx.ctx
        size = ll.llama_state_seq_get_size(ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = ll.llama_state_seq_get_data(ctx, buf, size, seq)
        return bytes(buf[:written])

    def state_set(self, data: bytes, seq: int = 0) -> bool:
        """Load ``data`` (from :meth:`state_get`) into ``seq``; False when llama.cpp refused it."""
        ll, ctx = _ll(), self.llm._ctx.ctx
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return ll.llama_state_seq_set_data(ctx, buf, len(data), seq) != 0

    # -- the vocabulary --------------------------------------------------------------------
    def is_eog(self, token: int) -> bool:
        """End of generation (end of text, end of turn...)."""
        return bool(_ll().llama_vocab_is_eog(self.vocab, token))

    def is_special(self, token: int) -> bool:
        """A control or user-defined (added) token."""
        ll = _ll()
        attr = ll.llama_vocab_get_attr(self.vocab, token)
        return bool(attr & (ll.LLAMA_TOKEN_ATTR_CONTROL | ll.LLAMA_TOKEN_ATTR_USER_DEFINED))

    def token_text(self, token: int) -> str:
        """The vocabulary's text of ``token`` (special tokens as their name, e.g. ``<|endoftext|>``)."""
        return self.llm._model.token_get_text(token)

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for in text, whole (``Llama.detokenize`` silently gives b"" for a
        piece over 32 bytes, such as DeepSeek-Coder's 64 spaces); control tokens give b""."""
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = _ll().llama_token_to_piece(self.vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n  # too small: llama.cpp says how many bytes it needs


# -- loading ---------------------------------------------------------------------------------
def second_context(llm: Any, n_ctx: int) -> Any:
    """A ``Llama`` with a context (a KV cache) of its own on ``llm``'s model: the weights are not loaded again.

    ``Llama`` makes one context per load; a second load of the same file costs the weights
    again (the 1.5B: ~760 MB more, its repacked tensors are not shared), while a context costs
    its KV cache and compute buffers. The copy shares ``llm``'s model, tokenizer and metadata
    and gets its own context (``llm``'s parameters, ``n_ctx`` tokens), batch, record of
    evaluated tokens and logits. Closing it frees only those; it must be closed before ``llm``
    (which frees the model). Both may decode at once on different threads (llama.cpp's model is
    read-only while contexts decode), each context from one thread.

    Raises:
        ValueError: llama.cpp could not make the context (out of memory).
    """
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaTokenDataArray

    twin = Llama.__new__(Llama)
    twin.__dict__.update(llm.__dict__)
    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_ctx = n_ctx
    params.n_batch = min(llm.n_batch, n_ctx)
    params.n_ubatch = min(params.n_ubatch, params.n_batch)
    twin.context_params, twin.n_batch = params, params.n_batch
    twin._stack = contextlib.ExitStack()
    twin._ctx = twin._stack.enter_context(contextlib.closing(LlamaContext(model=llm._model, params=params,
                                                                          verbose=False)))
    twin._batch = twin._stack.enter_context(contextlib.closing(LlamaBatch(n_tokens=params.n_batch, embd=0,
                                                                          n_seq_max=n_ctx, verbose=False)))
    twin._n_ctx = twin._ctx.n_ctx()
    twin._candidates = LlamaTokenDataArray(n_vocab=llm._n_vocab)
    twin._sampler = None
    twin.n_tokens = 0
    twin.input_ids = np.ndarray((n_ctx,), dtype=np.intc)
    twin.scores = np.ndarray((params.n_batch, llm._n_vocab), dtype=np.single)
    return twin


@contextlib.contextmanager
def default_params(model: dict[str, Any], context: dict[str, Any] | None = None) -> Iterator[None]:
    """Make ``llama_model_default_params()`` / ``llama_context_default_params()`` return
    ``model`` / ``context`` on top of llama.cpp's defaults.

    ``Llama.__init__`` takes its parameters from those functions and has no argument for
    fields such as ``use_extra_bufts``, ``n_seq_max`` or ``kv_unified``. Callers hold the
    loader's lock (:func:`server.engine.loading.open_llama`).
    """
    ll = _ll()
    originals = {"llama_model_default_params": ll.llama_model_default_params,
                 "llama_context_default_params": ll.llama_context_default_params}

    def patch(name: str, fields: dict[str, Any]):
        def patched():
            p = originals[name]()
            for key, value in fields.items():
                setattr(p, key, value)
            return p
        return patched
    for name, fields in (("llama_model_default_params", model), ("llama_context_default_params", context or {})):
        if fields:
            setattr(ll, name, patch(name, fields))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(ll, name, fn)


_llama_log_callback = None  # keeps the ctypes callback alive
_aborting = threading.local()  # .on: this thread's decode was stopped on purpose (Native.decode_at's abort)


def route_llama_logs() -> None:
    """Send llama.cpp's own log lines to the ``llama.cpp`` Python logger (once per process).

    Its INFO chatter (hundreds of lines per load) becomes DEBUG; warnings and errors stay.
    """
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    ll = _ll()
    llama_log = logging.getLogger("llama.cpp")
    # enum ggml_log_level in the ggml.h this llama-cpp-python ships: NONE 0, DEBUG 1, INFO 2,
    # WARN 3, ERROR 4, CONT 5 (continues the previous line). llama_cpp._logger's table is older.
    levels = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
    last = [logging.DEBUG]

    @ll.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lvl = last[0] if level == 5 else levels.get(level, logging.DEBUG)
        if getattr(_aborting, "on", False):
            lvl = logging.DEBUG
        last[0] = lvl
        if llama_log.isEnabledFor(lvl):
            msg = text.decode("utf-8", "replace").rstrip()
            if msg:
                llama_log.log(lvl, "%s", msg)

    _llama_log_callback = callback
    ll.llama_log_set(callback, ctypes.c_void_p(0))
