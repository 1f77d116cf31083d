"""The record of what one model's KV cache holds, and every change made to it.

:class:`KvCache` keeps ``cells``, the token at each position of sequence 0 (:data:`HOLE` where
there is none), in step with llama.cpp's memory: each operation on the cache (arranging it for
a prompt, evaluating tokens after it, rewinding it, saving and restoring its state) goes through
here and updates both. ``Llama``'s own record (``n_tokens``, ``input_ids``) is pointed at the
contiguous start of the cells after each, so its ``eval`` appends in the right place.

Arranging for a prompt (:meth:`KvCache.prefill`): :func:`server.engine.kv_plan.plan_reuse`
says which runs of the prompt the cache (or a saved state) holds; the cells nothing keeps
are removed, moved runs shifted (``seq_add``: llama.cpp re-rotates their keys at the next
decode), and only the gaps evaluated, each token at its own position, in cancellable
chunks of :data:`PREFILL_CHUNK` tokens.

Stopping a chunk part way (:attr:`KvCache.abort_when`, a background model's): llama.cpp
checks after each node of its compute graph (a few ms apart) and drops the stopped ubatch's
cells; the prefill then looks at its ``stopped`` before reading the chunk again. But the
decode after a shift first re-rotates the keys of every cell of the cache (~0.4 s for the
1.5B's 32k-token context on 2 cores, ~0.05 s for 4k), and that is never stopped: a K-shift
stopped part way stays pending and would rotate the layers it had done again
(``llama_kv_cache::update`` returns before ``reset_shift``). So it is done with one token,
and the rest of the chunk may be stopped.

Use it only on the owner thread of its model.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .kv_plan import HOLE, MIN_REUSE_TOKENS, KvSnapshot, KvSnapshots, plan_reuse
from .llama_api import Native

log = logging.getLogger("server.engine")

# Prompt tokens evaluated between two looks at the cancel event. Measured with 1,024
# prompt tokens on the default model, 2 threads: 214 tokens/s at 512 per chunk, 211 at 64
# (303 ms per chunk), 191 at 32. So 64 costs nothing and a cancel lands within ~0.3 s.
PREFILL_CHUNK = 64


@dataclass
class Prefill:
    """What :meth:`KvCache.prefill` did.

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


def _contiguous(cells: Sequence[int]) -> int:
    """Positions filled from 0 up to the first hole."""
    return cells.index(HOLE) if HOLE in cells else len(cells)


class KvCache:
    """The KV cache of one loaded model: its cells, the reuse rules, the saved states, the prompt rate.

    Attributes:
        cells: the token at each position of sequence 0 (:data:`HOLE`: none).
        min_reuse: shortest run shifted into place; 0 keeps only the common prefix.
        reuse_markers: the FIM markers (:func:`plan_reuse` keeps runs in their part of the prompt).
        abort_when: True stops a prompt chunk part way (module docstring); a background model's
            is "a suggestion is being made": a suggestion never shares the CPU with its chunks.
        snapshots: saved states; their budget is set by the owner (``completion.kvSnapshotsMb``).
        prompt_rate: prompt tokens evaluated per second on this machine, or None: the load
            probe's figure until the first real prefill replaces it, then a moving average.
    """

    def __init__(self, native: Native, *, can_shift: bool, prompt_rate: float | None):
        self.native = native
        self.llm = native.llm
        self.closing = False  # set from any thread when the engine shuts down: every prompt read stops
        self.cells: list[int] = []
        self.min_reuse = MIN_REUSE_TOKENS
        self.reuse_markers: frozenset[int] = frozenset()
        self.abort_when: Callable[[], bool] | None = None
        self.snapshots = KvSnapshots(0)
        self.prompt_rate = prompt_rate
        self._rate_seen = False
        self._shift_pending = False  # shifted cells whose keys llama.cpp rotates at the next decode
        self._decode_s = 0.0  # time spent decoding in the current prefill (its pauses left out)
        self._can_shift = can_shift

    @property
    def rate_measured(self) -> bool:
        """:attr:`prompt_rate` was measured on a real prompt (not the load probe's figure)."""
        return self._rate_seen

    # -- the record --------------------------------------------------------------------------
    def live_cells(self) -> list[int]:
        """The token at each KV position, re-read from ``Llama`` when something evaluated through it."""
        llm, cells = self.llm, self.cells
        n = llm.n_tokens
        if len(cells) < n or (HOLE in cells[:n]) or (n < len(cells) and cells[n] != HOLE) \
                or list(llm.input_ids[:n]) != cells[:n]:
            self.cells = cells = [int(t) for t in llm.input_ids[:n]]
        return cells

    def _sync(self) -> None:
        """Point ``Llama``'s own bookkeeping at the contiguous start of the cache."""
        self.native.set_evaluated(self.cells[:_contiguous(self.cells)])

    def clear(self) -> None:
        """Empty the KV cache (saved states stay)."""
        self.native.clear()
        self.cells = []
        self._shift_pending = False
        self._sync()

    def evaluate(self, tokens: Sequence[int], each: bool = False):
        """Evaluate ``tokens`` after the contiguous start of the cache (cells beyond it go).

        Returns:
            The logits after the last of ``tokens`` (float32 numpy array of n_vocab, a copy);
            ``each``: a list, the logits after each (one batch: at most :data:`PREFILL_CHUNK`).
        """
        if len(self.cells) != self.llm.n_tokens:  # holes after a stopped prefill, or evaluated through Llama
            cells = self.live_cells()
            del cells[_contiguous(cells):]
            self._sync()
        self._shift_pending = False
        if not each:
            self.llm.eval(list(tokens))
            self.cells.extend(tokens)
            return self.native.last_logits()
        self.native.seq_rm(-1, len(self.cells), -1)
        self.native.decode_at(tokens, len(self.cells), 0, PREFILL_CHUNK, every=True)
        self.cells.extend(tokens)
        self._sync()
        return [self.native.logits_at(i) for i in range(len(tokens))]

    def rewind(self, n: int) -> None:
        """Keep the first ``n`` positions of the cache, drop the rest (what :meth:`evaluate` added after them)."""
        cells = self.live_cells()
        if n < len(cells):
            self.native.seq_rm(0, n, -1)
            del cells[n:]
        self._sync()

    # -- saved states ------------------------------------------------------------------------
    def save_state(self) -> KvSnapshot:
        """The KV state of sequence 0 as bytes (llama_state_seq_get_data), with its cells."""
        return KvSnapshot(list(self.live_cells()), self.native.state_get(0))

    def restore_state(self, snap: KvSnapshot) -> None:
        """Make the KV cache hold ``snap`` (llama_state_seq_set_data).

        Raises:
            RuntimeError: llama.cpp refused the state (the cache is then empty).
        """
        self.native.seq_rm(0, -1, -1)
        if not self.native.state_set(snap.data, 0):
            self.native.seq_rm(0, -1, -1)
            self.cells = []
            self._sync()
            raise RuntimeError("llama.cpp refused a saved KV state")
        self.cells = list(snap.cells)
        self._sync()

    def _save_contiguous(self) -> None:
        """Save the live cache (up to its first hole) in :attr:`snapshots`."""
        cells = self.live_cells()
        n = _contiguous(cells)
        if n < 2 * PREFILL_CHUNK or self.snapshots.budget_bytes <= 0 or self._shift_pending:
            return  # (a pending shift would save keys not yet rotated to their positions)
        if n < len(cells):
            self.native.seq_rm(0, n, -1)
            self.cells = cells[:n]
        self.snapshots.add(self.save_state())

    # -- a prompt ------------------------------------------------------------------------------
    def _plan(self, cells: Sequence[int], target: Sequence[int], exact: bool = False) -> list[tuple[int, int, int]]:
        return plan_reuse(cells, target, self.min_reuse if self._can_shift and not exact else 0, self.reuse_markers)

    def prefill(self, prompt: list[int], cancel: threading.Event | None = None,
                stopped: Callable[[], str] | None = None, exact: bool = False,
                chunk: int = PREFILL_CHUNK, progress: Callable[[int, int], None] | None = None,
                abort: Callable[[], bool] | None = None) -> Prefill:
        """Make the KV cache hold all of ``prompt`` but its last token, reusing what it can.

        The live cache or a saved state (whichever holds more of the prompt) is arranged
        by :func:`plan_reuse`: unmatched cells removed, moved runs shifted, gaps evaluated
        in chunks of PREFILL_CHUNK tokens, ``stopped``/``cancel`` looked at between chunks.
        A state about to lose most of its tokens is saved first. ``exact``: reuse only a common prefix
        (no run shifted), as reading the prompt afresh gives. ``chunk``: tokens evaluated between two
        looks at ``stopped`` (at most :data:`PREFILL_CHUNK`); a saved state is restored when it holds at
        least this many more tokens. ``progress``: called after each chunk with (tokens evaluated so far,
        tokens to evaluate). ``abort``: this prefill's :attr:`abort_when` (reading ahead's is wider).

        Returns:
            The figures; ``done`` is False when stopped early (what was done stays cached,
            holes included, for the next prompt to reuse).
        """
        t0 = time.monotonic()
        stopped = stopped or (lambda: "cancelled" if cancel is not None and cancel.is_set() else "")
        target = prompt[:-1]
        cells = self.live_cells()
        runs = self._plan(cells, target, exact)
        live = sum(m for _, _, m in runs)
        best, best_n = None, live
        chunk = max(1, min(chunk, PREFILL_CHUNK))
        for snap in self.snapshots if len(target) - live > chunk else ():
            if (n := sum(m for _, _, m in self._plan(snap.cells, target, exact))) > best_n + chunk:
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
        if best is not None or self.cells is not cells:  # another state, or the save trimmed a hole
            runs = self._plan(self.live_cells(), target, exact)
        self._decode_s = 0.0
        reused, shifted, evaluated, done = self._arrange(target, runs, stopped, chunk, progress,
                                                         abort or self.abort_when)
        if evaluated >= PREFILL_CHUNK:
            rate = evaluated / max(self._decode_s, 1e-3)  # decoding only: not the pauses for others
            self.prompt_rate = 0.7 * self.prompt_rate + 0.3 * rate if self._rate_seen else rate
            self._rate_seen = True
        return Prefill(done, reused, shifted, evaluated, restored, (time.monotonic() - t0) * 1000)

    def cached_tokens(self, prompt: list[int]) -> int:
        """How many tokens of ``prompt`` (all but its last, as :meth:`prefill` reads it) the live
        cache or the best saved state already holds: what :meth:`prefill` would reuse."""
        target = prompt[:-1]
        best = sum(m for _, _, m in self._plan(self.live_cells(), target))
        for snap in self.snapshots if len(target) - best > PREFILL_CHUNK else ():
            best = max(best, sum(m for _, _, m in self._plan(snap.cells, target)))
        return best

    def _arrange(self, target: list[int], runs: list[tuple[int, int, int]],
                 stopped: Callable[[], str], chunk: int = PREFILL_CHUNK,
                 progress: Callable[[int, int], None] | None = None,
                 abort: Callable[[], bool] | None = None) -> tuple[int, int, int, bool]:
        """Turn the live cache into ``target`` by ``runs`` (:func:`plan_reuse` of the live cells; see
        :meth:`prefill`): (reused, shifted, evaluated, done)."""
        native = self.native
        kept = 0
        for _, src, m in runs:  # remove what no run keeps
            if src > kept:
                native.seq_rm(0, kept, src)
            kept = src + m
        native.seq_rm(0, kept, -1)
        for dst, src, m in [r for r in runs if r[0] < r[1]]:  # leftwards, first to last ...
            native.seq_add(0, src, src + m, dst - src)
        for dst, src, m in reversed([r for r in runs if r[0] > r[1]]):  # ... rightwards, last to first
            native.seq_add(0, src, src + m, dst - src)
        self._shift_pending |= any(d != s for d, s, _ in runs)
        new = [HOLE] * len(target)
        for dst, _, m in runs:
            new[dst:dst + m] = target[dst:dst + m]
        self.cells = new
        reused = sum(m for _, _, m in runs)
        shifted = sum(m for d, s, m in runs if (d, s) != (0, 0))
        evaluated, done = 0, True
        to_evaluate = len(target) - reused
        pos = 0
        while pos < len(target):
            if new[pos] != HOLE:
                pos += 1
                continue
            end = pos
            while end < len(target) and new[end] == HOLE and end - pos < chunk:
                end += 1
            if self.closing or stopped():
                done = False
                break
            t1 = time.monotonic()
            if not self.decode_at(target[pos:end], pos, abort):
                continue  # stopped within the chunk (abort_when): nothing of it kept; stopped() says what next
            self._decode_s += time.monotonic() - t1
            new[pos:end] = target[pos:end]
            evaluated += end - pos
            pos = end
            if progress is not None:
                progress(evaluated, to_evaluate)
        self._sync()
        if reused or evaluated:
            log.debug("KV cache: %d reused (%d shifted), %d evaluated%s", reused, shifted, evaluated,
                      "" if done else ", stopped")
        return reused, shifted, evaluated, done

    def decode_at(self, tokens: list[int], pos: int, abort: Callable[[], bool] | None = None) -> bool:
        """Evaluate ``tokens`` (:func:`decode_gap`); False when ``abort`` stopped it (nothing kept;
        a pending shift is applied with the first token alone). The caller records the new cells."""
        if self._shift_pending and abort is not None and len(tokens) > 1:
            if not self.decode_at(tokens[:1], pos, abort):
                return False
            self.cells[pos] = tokens[0]
            if not self.decode_at(tokens[1:], pos + 1, abort):
                self.native.seq_rm(0, pos, pos + 1)
                self.cells[pos] = HOLE
                return False
            return True
        if not decode_gap(self.native, self.cells, tokens, pos, None if self._shift_pending else abort):
            return False
        self._shift_pending = False
        return True


def decode_gap(native: Native, cells: Sequence[int], tokens: list[int], pos: int,
               abort: Callable[[], bool] | None = None) -> bool:
    """Evaluate ``tokens`` at positions ``pos..`` of sequence 0, whose record is ``cells``; False
    when ``abort`` stopped it (:meth:`Native.decode_at`; then no cell of ``pos..`` is kept).

    llama.cpp appends to a sequence only after its last position. A gap before cells kept
    further on is therefore evaluated in sequence 1, which first shares the cells before
    ``pos`` (``seq_cp`` shares cells, it copies nothing), so the gap attends to exactly what
    precedes it; the new cells are then shared into sequence 0.
    """
    end = pos + len(tokens)
    inside = any(c != HOLE for c in cells[end:])
    seq = 1 if inside else 0
    if inside:
        native.seq_rm(1, -1, -1)
        native.seq_cp(0, 1, 0, pos)
    try:
        read = native.decode_at(tokens, pos, seq, PREFILL_CHUNK, abort=abort)
    finally:
        if inside:
            native.seq_cp(1, 0, pos, end)
            native.seq_rm(1, -1, -1)
    if not read:  # llama.cpp dropped the stopped ubatch; drop any done before it too (the record has none)
        native.seq_rm(0, pos, end)
    return read
