"""What the KV cache can keep of a new prompt, and the saved states it can come back to.

Pure bookkeeping on token lists, no llama.cpp: :func:`plan_reuse` compares the cache's cells
(the token at each position) with the prompt wanted; :class:`KvSnapshots` keeps saved states
under a memory budget. :class:`server.engine.kv_cache.KvCache` carries the plans out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# A run of prompt tokens the KV cache holds elsewhere is shifted into place when it is at
# least this long; shorter runs are evaluated (see plan_reuse). Measured on
# bench/editing_session.py (see HOW-IT-WORKS).
MIN_REUSE_TOKENS = 16
HOLE = -1  # a position of the KV cache that holds nothing


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
