"""The model engine: one thread owns each llama.cpp model; everything else sends it jobs.

``llama_cpp.Llama`` is not thread-safe, so an :class:`Engine` keeps one worker thread
(``ThreadPoolExecutor(max_workers=1)``) and runs every job that touches the model
there: tokenizing, building a prompt, generating. Async callers ``await`` the job.

Cancellation is real: each generation gets a ``threading.Event`` checked by a llama.cpp
stopping criterion after every sampled token, so a cancelled or superseded request
stops within one token and frees the thread. Prompt processing is cancellable too: the
prompt tokens not already in the KV cache are evaluated in chunks of PREFILL_CHUNK
tokens with the event checked between chunks.

KV-cache reuse (:meth:`LoadedModel.prefill`): the new prompt is compared with what the
KV cache holds, token by token. The common prefix is kept as it is; further runs of at
least ``min_reuse`` tokens that the cache holds at other positions (the code window slid,
a file's lines moved down after an accepted block) are kept and *shifted* to their new
positions (``llama_memory_seq_add``: llama.cpp re-rotates their keys); the cells nothing
matches are removed; only the gaps are evaluated, each token at its own position, in
cancellable chunks. A shifted run keeps the attention it computed in its old place, so
its entries are close to, not exactly, what evaluating it afresh would give (llama.cpp's
``--cache-reuse`` makes the same trade); ``bench/editing_session.py`` measures what it
does to the suggestions. Before the cache is overwritten by a prompt that keeps little of
it, its state is saved (:class:`KvSnapshots`, a memory budget in MiB, least recently
used out): coming back to a file or a place restores it instead of evaluating it again.
:class:`Generation` reports the prompt tokens reused and evaluated.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import ctypes
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
# A run of prompt tokens the KV cache holds elsewhere is shifted into place when it is at
# least this long; shorter runs are evaluated (see plan_reuse). Measured on
# bench/editing_session.py (see HOW-IT-WORKS).
MIN_REUSE_TOKENS = 16
HOLE = -1  # a position of the KV cache that holds nothing

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

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


def _regions(tokens: Sequence[int], markers: frozenset[int]) -> list[int]:
    """For each position, how many of ``markers`` come before it (its part of a FIM prompt)."""
    out, n = [], 0
    for t in tokens:
        out.append(n)
        n += t in markers
    return out


def plan_reuse(cells: Sequence[int], target: Sequence[int], min_run: int,
               markers: frozenset[int] = frozenset()) -> list[tuple[int, int, int]]:
    """Which runs of ``target`` the KV cache already holds, in order.

    Args:
        cells: the token at each position of the KV cache (:data:`HOLE` where there is none).
        target: the tokens the cache should hold at positions ``0..len(target)-1``.
        min_run: shortest run worth shifting; the common prefix counts whatever its length.
        markers: the FIM markers: a run is kept only in the same part of the prompt (code
            read as prefix is not reused as suffix, where it would mean something else).

    Returns:
        ``(dst, src, length)`` triples, increasing in both ``dst`` and ``src``, not overlapping:
        ``target[dst:dst+length] == cells[src:src+length]``. The first has ``dst == src == 0``
        when the two share a prefix. Greedy: each run is the longest found at the first
        ``target`` position where one of at least ``min_run`` tokens starts.
    """
    n = min(len(cells), len(target))
    head = 0
    while head < n and cells[head] == target[head] and cells[head] != HOLE:
        head += 1
    runs = [(0, 0, head)] if head else []
    if min_run <= 0 or len(target) - head < min_run:
        return runs
    k = min(min_run, 8)  # look-up key: the first k tokens of a run
    cell_part, target_part = _regions(cells, markers), _regions(target, markers)
    starts: dict[tuple, list[int]] = {}
    for j in range(head, len(cells) - k + 1):
        key = tuple(cells[j:j + k])
        if HOLE not in key:
            starts.setdefault(key, []).append(j)
    i, low = head, head
    while i + min_run <= len(target):
        best_j, best_m = -1, 0
        for j in starts.get(tuple(target[i:i + k]), ()):
            if j < low or cell_part[j] != target_part[i]:
                continue
            m = k
            while i + m < len(target) and j + m < len(cells) and target[i + m] == cells[j + m] \
                    and cells[j + m] != HOLE:
                m += 1
            if m > best_m:
                best_j, best_m = j, m
        if best_m >= min_run:
            runs.append((i, best_j, best_m))
            i, low = i + best_m, best_j + best_m
        else:
            i += 1
    return runs


@dataclass
class KvSnapshot:
    """The saved KV state of sequence 0: ``cells`` (token per position) and llama.cpp's bytes."""

    cells: list[int]
    data: bytes


class KvSnapshots:
    """Saved KV states under a memory budget, least recently used first out.

    A state is saved when a prompt is about to overwrite most of the cache (another file,
    a far place); a later prompt that shares more with a saved state than with the live
    cache restores it. Restoring takes it out of the store (it is the live cache again).
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._items: list[KvSnapshot] = []  # least recently used first

    @property
    def nbytes(self) -> int:
        return sum(len(s.data) for s in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def add(self, snap: KvSnapshot) -> None:
        """Keep ``snap`` as the most recent; evict the least recent over the budget (a state
        larger than the whole budget is not kept)."""
        self._items = [s for s in self._items if s.cells != snap.cells] + [snap]
        while self._items and self.nbytes > self.budget_bytes:
            self._items.pop(0)

    def resize(self, budget_bytes: int) -> None:
        """A new budget; the least recent states over it are dropped."""
        self.budget_bytes = budget_bytes
        while self._items and self.nbytes > self.budget_bytes:
            self._items.pop(0)

    def take(self, snap: KvSnapshot) -> None:
        self._items = [s for s in self._items if s is not snap]


@dataclass
class Prefill:
    """What :meth:`LoadedModel.prefill` did.

    Attributes:
        done: False when it was stopped before the whole prompt was in the KV cache.
        reused: prompt tokens the cache held (common prefix plus shifted runs).
        shifted: of those, the tokens beyond the common prefix: runs kept after a change
            before them (moved by the change's length; by 0 when it kept its length).
        evaluated: prompt tokens evaluated.
        restored: a saved state (:class:`KvSnapshots`) was restored first.
        ms: wall time, ms.
    """

    done: bool
    reused: int
    shifted: int
    evaluated: int
    restored: bool
    ms: float


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
        self._control_ids: list[int] | None = None
        self._vocab = self.llm._model.vocab
        self.min_reuse = MIN_REUSE_TOKENS  # 0: keep only the common prefix (no shifting)
        self.reuse_markers: frozenset[int] = frozenset()  # FIM markers (plan_reuse keeps runs in their part)
        self.snapshots = KvSnapshots(0)    # budget set by the owner (completion.kvSnapshotsMb)
        # Prompt tokens evaluated per second on this machine: the load probe's figure (a short
        # prompt) until the first real prefill replaces it, then a moving average (see :meth:`prefill`).
        self.prompt_rate: float | None = next((r.prompt_tokens_per_s for r in self.verdict.tried
                                               if r.ok and r.config == self.verdict.config), None) \
            if self.verdict else None
        self._rate_seen = False
        self._cells: list[int] = []        # the token at each KV position (HOLE: none)
        self._batch = None
        self._shift_pending = False        # shifted cells whose keys llama.cpp rotates at the next decode
        self._can_shift = not vocab_only and bool(
            _ll.llama_memory_can_shift(_ll.llama_get_memory(self.llm._ctx.ctx)))

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
            self._break_ids = [t for p, t in zip(pieces, ids) if b"\n" in p or b"\r" in p] + self.control_tokens()
        return self._break_ids

    def control_tokens(self) -> list[int]:
        """Tokens without a text piece: end of text, FIM markers and the other control tokens. Built once."""
        if self._control_ids is None:
            _, ids, _ = self._pieces()
            have_piece = set(ids)
            self._control_ids = [t for t in range(self.llm.n_vocab()) if t not in have_piece]
        return self._control_ids

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
    def _live_cells(self) -> list[int]:
        """The token at each KV position, re-read from ``Llama`` when something evaluated through it."""
        llm, cells = self.llm, self._cells
        n = llm.n_tokens
        if len(cells) < n or (HOLE in cells[:n]) or (n < len(cells) and cells[n] != HOLE) \
                or list(llm.input_ids[:n]) != cells[:n]:
            self._cells = cells = [int(t) for t in llm.input_ids[:n]]
        return cells

    def _sync(self) -> None:
        """Point ``Llama``'s own bookkeeping at the contiguous start of the cache."""
        cells = self._cells
        n = cells.index(HOLE) if HOLE in cells else len(cells)
        self.llm.input_ids[:n] = cells[:n]
        self.llm.n_tokens = n

    def clear_cache(self) -> None:
        """Empty the KV cache (saved states stay)."""
        self._ll.llama_memory_clear(self._ll.llama_get_memory(self.llm._ctx.ctx), True)
        self._cells = []
        self._shift_pending = False
        self._sync()

    def save_state(self) -> KvSnapshot:
        """The KV state of sequence 0 as bytes (llama_state_seq_get_data), with its cells."""
        ll, ctx = self._ll, self.llm._ctx.ctx
        size = ll.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = ll.llama_state_seq_get_data(ctx, buf, size, 0)
        return KvSnapshot(list(self._live_cells()), bytes(buf[:written]))

    def restore_state(self, snap: KvSnapshot) -> None:
        """Make the KV cache hold ``snap`` (llama_state_seq_set_data).

        Raises:
            RuntimeError: llama.cpp refused the state (the cache is then empty).
        """
        ll, ctx = self._ll, self.llm._ctx.ctx
        buf = (ctypes.c_uint8 * len(snap.data)).from_buffer_copy(snap.data)
        ll.llama_memory_seq_rm(ll.llama_get_memory(ctx), 0, -1, -1)
        if ll.llama_state_seq_set_data(ctx, buf, len(snap.data), 0) == 0:
            ll.llama_memory_seq_rm(ll.llama_get_memory(ctx), 0, -1, -1)
            self._cells = []
            self._sync()
            raise RuntimeError("llama.cpp refused a saved KV state")
        self._cells = list(snap.cells)
        self._sync()
        self.llm._requires_eval = True

    def _save_contiguous(self) -> None:
        """Save the live cache (up to its first hole) in :attr:`snapshots`."""
        cells = self._live_cells()
        n = cells.index(HOLE) if HOLE in cells else len(cells)
        if n < 2 * PREFILL_CHUNK or self.snapshots.budget_bytes <= 0 or self._shift_pending:
            return  # (a pending shift would save keys not yet rotated to their positions)
        if n < len(cells):
            self._ll.llama_memory_seq_rm(self._ll.llama_get_memory(self.llm._ctx.ctx), 0, n, -1)
            self._cells = cells[:n]
        self.snapshots.add(self.save_state())

    def _plan(self, cells: Sequence[int], target: Sequence[int], exact: bool = False) -> list[tuple[int, int, int]]:
        return plan_reuse(cells, target, self.min_reuse if self._can_shift and not exact else 0, self.reuse_markers)

    def prefill(self, prompt: list[int], cancel: threading.Event | None = None,
                stopped: Callable[[], str] | None = None, exact: bool = False) -> Prefill:
        """Make the KV cache hold all of ``prompt`` but its last token, reusing what it can.

        The live cache or a saved state (whichever holds more of the prompt) is arranged
        by :func:`plan_reuse`: unmatched cells removed, moved runs shifted, gaps evaluated
        in chunks of PREFILL_CHUNK tokens, ``stopped``/``cancel`` looked at between chunks.
        A state about to lose most of its tokens is saved first. ``exact``: reuse only a
        common prefix (no run shifted from another place), so the cache then holds what
        reading the prompt afresh gives.

        Returns:
            The figures; ``done`` is False when stopped early (what was done stays cached,
            holes included, for the next prompt to reuse).
        """
        t0 = time.monotonic()
        stopped = stopped or (lambda: "cancelled" if cancel is not None and cancel.is_set() else "")
        target = prompt[:-1]
        cells = self._live_cells()
        runs = self._plan(cells, target, exact)
        live = sum(m for _, _, m in runs)
        best, best_n = None, live
        for snap in self.snapshots if len(target) - live > PREFILL_CHUNK else ():
            if (n := sum(m for _, _, m in self._plan(snap.cells, target, exact))) > best_n + PREFILL_CHUNK:
                best, best_n = snap, n
        filled = len(cells) - cells.count(HOLE)
        if best is not None or 2 * live < filled:
            self._save_contiguous()
        restored = False
        if best is not None:
            self.snapshots.take(best)
            try:
                self.restore_state(best)
                restored = True
            except RuntimeError as e:
                log.warning("%s; evaluating the prompt", e)
        if best is not None or self._cells is not cells:  # another state, or the save trimmed a hole
            runs = self._plan(self._live_cells(), target, exact)
        t1 = time.monotonic()
        reused, shifted, evaluated, done = self._arrange(target, runs, stopped)
        if evaluated >= PREFILL_CHUNK:
            rate = evaluated / max(time.monotonic() - t1, 1e-3)
            self.prompt_rate = 0.7 * self.prompt_rate + 0.3 * rate if self._rate_seen else rate
            self._rate_seen = True
        return Prefill(done, reused, shifted, evaluated, restored, (time.monotonic() - t0) * 1000)

    def cached_tokens(self, prompt: list[int]) -> int:
        """How many tokens of ``prompt`` (all but its last, as :meth:`prefill` reads it) the live
        cache or the best saved state already holds: what :meth:`prefill` would reuse."""
        target = prompt[:-1]
        best = sum(m for _, _, m in self._plan(self._live_cells(), target))
        for snap in self.snapshots if len(target) - best > PREFILL_CHUNK else ():
            best = max(best, sum(m for _, _, m in self._plan(snap.cells, target)))
        return best

    def _arrange(self, target: list[int], runs: list[tuple[int, int, int]],
                 stopped: Callable[[], str]) -> tuple[int, int, int, bool]:
        """Turn the live cache into ``target`` by ``runs`` (:func:`plan_reuse` of the live cells; see
        :meth:`prefill`): (reused, shifted, evaluated, done)."""
        ll = self._ll
        mem = ll.llama_get_memory(self.llm._ctx.ctx)
        kept = 0
        for _, src, m in runs:  # remove what no run keeps
            if src > kept:
                ll.llama_memory_seq_rm(mem, 0, kept, src)
            kept = src + m
        ll.llama_memory_seq_rm(mem, 0, kept, -1)
        for dst, src, m in [r for r in runs if r[0] < r[1]]:  # leftwards, first to last ...
            ll.llama_memory_seq_add(mem, 0, src, src + m, dst - src)
        for dst, src, m in reversed([r for r in runs if r[0] > r[1]]):  # ... rightwards, last to first
            ll.llama_memory_seq_add(mem, 0, src, src + m, dst - src)
        self._shift_pending |= any(d != s for d, s, _ in runs)
        new = [HOLE] * len(target)
        for dst, _, m in runs:
            new[dst:dst + m] = target[dst:dst + m]
        self._cells = new
        reused = sum(m for _, _, m in runs)
        shifted = sum(m for d, s, m in runs if (d, s) != (0, 0))
        evaluated, done = 0, True
        pos = 0
        while pos < len(target):
            if new[pos] != HOLE:
                pos += 1
                continue
            end = pos
            while end < len(target) and new[end] == HOLE and end - pos < PREFILL_CHUNK:
                end += 1
            if stopped():
                done = False
                break
            self._decode_at(target[pos:end], pos)
            new[pos:end] = target[pos:end]
            evaluated += end - pos
            pos = end
        self._sync()
        self.llm._requires_eval = True
        if reused or evaluated:
            log.debug("KV cache: %d reused (%d shifted), %d evaluated%s", reused, shifted, evaluated,
                      "" if done else ", stopped")
        return reused, shifted, evaluated, done

    def _decode_at(self, tokens: list[int], pos: int) -> None:
        """Evaluate ``tokens`` at positions ``pos..`` of sequence 0 (no logits kept).

        llama.cpp appends to a sequence only after its last position. A gap before cells
        kept further on is therefore evaluated in sequence 1, which first shares the cells
        before ``pos`` (``seq_cp`` shares cells, it copies nothing), so the gap attends to
        exactly what precedes it; the new cells are then shared into sequence 0.
        """
        from llama_cpp._internals import LlamaBatch

        ll = self._ll
        mem = ll.llama_get_memory(self.llm._ctx.ctx)
        if self._batch is None:
            self._batch = LlamaBatch(n_tokens=PREFILL_CHUNK, embd=0, n_seq_max=1, verbose=False)
        end = pos + len(tokens)
        inside = any(c != HOLE for c in self._cells[end:])
        seq = 1 if inside else 0
        if inside:
            ll.llama_memory_seq_rm(mem, 1, -1, -1)
            ll.llama_memory_seq_cp(mem, 0, 1, 0, pos)
        b = self._batch.batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos + i, 1, False
            b.seq_id[i][0] = seq
        b.logits[len(tokens) - 1] = True
        try:
            self.llm._ctx.decode(self._batch)
        finally:
            if inside:
                ll.llama_memory_seq_cp(mem, 1, 0, pos, end)
                ll.llama_memory_seq_rm(mem, 1, -1, -1)
        self._shift_pending = False

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

    def _text_first(self, prompt_len: int, forced: bytes, banned_first: frozenset[int], breaks_first: bool = False):
        """A logits processor that makes the first line of the output (after ``forced``)
        hold some text: until a non-blank character is out, no line break, end of text or
        control token may be sampled, nor any of ``banned_first``. With ``breaks_first`` the
        text may begin on a later line (the body after a block opener): only the end of text
        and control tokens are masked until then."""
        import numpy as np

        breaks = np.array(self.control_tokens() if breaks_first else self.line_break_tokens(), dtype=np.int64)
        blanks = np.array(self.blank_tokens(), dtype=np.int64)
        banned = np.array(sorted(banned_first), dtype=np.int64)

        def process(input_ids, logits):
            text = b"".join(self.piece(int(t)) for t in input_ids[prompt_len:])
            if text[len(forced):].strip():
                return logits
            logits = logits.copy()
            logits[breaks] = -np.inf
            if forced and len(text) >= len(forced) and not breaks_first:
                logits[blanks] = -np.inf  # the typed indentation is there: now the line's text
            if len(banned):
                logits[banned] = -np.inf
            return logits
        return process

    def generate(self, prompt: list[int], *, max_tokens: int, cancel: threading.Event, deadline: float,
                 stop_ids: frozenset[int] = frozenset(),
                 judge: Callable[[str], bool] | None = None, forced: bytes = b"",
                 text_first: bool = False, banned_first: frozenset[int] = frozenset(),
                 record_margins: bool = False, breaks_first: bool = False) -> Generation:
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

        Raises:
            ValueError: the prompt does not fit the context window.
        """
        from llama_cpp import LogitsProcessorList, StoppingCriteriaList

        if len(prompt) + max_tokens > self.n_ctx:
            raise ValueError(f"prompt of {len(prompt)} tokens + {max_tokens} to generate exceeds n_ctx {self.n_ctx}")
        t0 = time.monotonic()
        out: list[int] = []
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text, finish, first_at = "", "", 0.0

        def stopped() -> str:
            return "cancelled" if cancel.is_set() else "timeout" if time.monotonic() > deadline else ""

        # The last prompt token is always evaluated again: sampling needs its logits, and
        # the logits left in the context belong to whatever was decoded last.
        prep = self.prefill(prompt, stopped=stopped)
        reused = prep.reused
        if not prep.done:
            ms = (time.monotonic() - t0) * 1000
            return Generation("", stopped(), [], len(prompt), reused, 0, ms, ms)
        criteria = StoppingCriteriaList([lambda ids, logits: bool(stopped())])
        margins: list[float] = []
        import numpy as np

        def record(input_ids, logits):
            top = np.partition(logits, -2)[-2:]
            margins.append(float(top[1] - top[0]))
            return logits
        processors = LogitsProcessorList(([record] if record_margins else []) + (
            [self._forcing(len(prompt), forced)] if forced else []) + (
            [self._text_first(len(prompt), forced, banned_first, breaks_first)]
            if text_first or banned_first else [])) or None
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
        self._live_cells()  # generating evaluated through Llama: re-read what the cache holds
        self._shift_pending = False
        if self.guard is not None:
            self.guard.decoded()
        now = time.monotonic()
        return Generation(text, finish, out, len(prompt), reused, len(out),
                          ((first_at or now) - t0) * 1000, (now - t0) * 1000, tuple(margins[:len(out)]))


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
