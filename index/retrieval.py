"""Retrieval: hybrid search over the folders' stores, reciprocal rank fusion, cross-file context.

Per folder, the lexical list (FTS5 BM25, :mod:`index.lexical`) and the dense list (hnswlib
cosine, :mod:`index.ann`) are merged by reciprocal rank fusion: score = sum over lists of
1 / (RRF_K + rank). The folders' results are then ranked together by that score.

Threads: any thread (the stores' searches have their own connection and locks); the
query's embedding is the caller's (:meth:`index.workspace.WorkspaceIndex.embed_query`).
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .store import Hit, IndexStore

RRF_K = 60                 # reciprocal rank fusion constant (Cormack et al.)
CANDIDATES = 50            # results taken from each list before fusion
CONTEXT_RESULTS = 8        # results looked at for one completion's cross-file context


@dataclass(frozen=True)
class SearchResult:
    """A hybrid search result. Lines are 0-based, ``end_line`` inclusive. ``secret``: the chunk
    holds (a line of) a credential: shown to the user, never put into a prompt."""

    root: Path
    path: str
    start_line: int
    end_line: int
    score: float
    symbol: str
    kind: str
    text: str
    secret: bool = False

    @property
    def file(self) -> Path:
        return self.root / self.path


def rrf(lists: list[list[Hit]], k: int = RRF_K) -> list[tuple[Hit, float]]:
    """Reciprocal rank fusion of ranked lists: score = sum of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    first: dict[int, Hit] = {}
    for hits in lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
            first.setdefault(hit.chunk_id, hit)
    return sorted(((first[i], s) for i, s in scores.items()), key=lambda pair: -pair[1])


def search(stores: dict[Path, IndexStore], query: str, k: int, mode: str,
           embed_query: Callable[[str], np.ndarray | None]) -> list[SearchResult]:
    """Best chunks of all ``stores`` (root -> store) for ``query``, best first.

    Args:
        k: results wanted.
        mode: ``hybrid`` (RRF of both lists), ``lexical`` or ``dense``.
        embed_query: the query's embedding, or None when dense search is unavailable (then
            ``hybrid`` is lexical only).
    """
    fused: list[tuple[Hit, float, Path]] = []
    for root, store in list(stores.items()):
        lists = []
        if mode in ("hybrid", "lexical"):
            lists.append(store.search_lexical(query, CANDIDATES))
        if mode in ("hybrid", "dense"):
            vector = embed_query(query)
            if vector is not None:
                lists.append(store.search_dense(vector, CANDIDATES))
        if len(lists) == 1:
            fused.extend((h, h.score, root) for h in lists[0])
        else:
            fused.extend((h, s, root) for h, s in rrf(lists))
    fused.sort(key=lambda t: -t[1])
    return [SearchResult(root, h.path, h.start_line, h.end_line, s, h.symbol, h.kind, h.text, h.secret)
            for h, s, root in fused[:k]]


def context_chunks(results: list[SearchResult], here: Path | None, budget_chars: int) -> list[tuple[str, str]]:
    """(path, text) of ``results`` in order, within ``budget_chars`` in all: none of the file
    ``here``, none that holds a credential (this goes into a prompt)."""
    out, used = [], 0
    for r in results:
        if r.secret or here is not None and r.file == here or used + len(r.text) > budget_chars:
            continue
        out.append((r.path, r.text))
        used += len(r.text)
    return out
