"""Background embedding: the index-embedder thread gives every chunk without a vector one.

One :class:`EmbeddingLoop` per workspace index. Its thread loads the embedding model
(all-MiniLM-L6-v2 in llama.cpp, :mod:`index.embedding`), then walks each writable store's
chunks that have no vector yet, EMBED_BATCH at a time, one chunk per model call, and hands
the vectors to the index-writer thread, which stores them (the stores are the writer's).
It rests PAUSE_AFTER_COMPLETION_S after each completion request, so that typing never
waits on it, never embeds while the completion model works (:mod:`server.engine.schedule`:
it looks before each chunk), and sleeps when there is nothing to embed until woken.

Threads: the loop runs on its own thread, ``index-embedder``; :meth:`EmbeddingLoop.start`,
:meth:`~EmbeddingLoop.wake`, :meth:`~EmbeddingLoop.pause` and
:meth:`~EmbeddingLoop.embed_query` may be called from any thread (one model call at a
time: a query waits at most one chunk). This module imports nothing from pygls or
lsprotocol.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from server.engine.schedule import SCHEDULE

from .embedding import Embedder, EmbeddingUnavailable, ensure_embedding_model
from .store import IndexStore

log = logging.getLogger(__name__)

EMBED_BATCH = 32           # chunks fetched per embedding round
PAUSE_AFTER_COMPLETION_S = 2.0  # the embedder rests this long after a completion request


class EmbeddingLoop:
    """The index-embedder thread of one workspace index.

    Args:
        stores: root -> store, the workspace index's own dict (read, never changed here).
        writer: the index-writer thread, which every store call goes through.
        n_threads: CPU threads of the embedding model.
        load_config: ``model.loadConfig`` for the embedding model.
        closed: set when the index closes: the loop ends.
        timings: the index's timings; ``dense_s`` is set after each round that embedded.

    Attributes:
        embedder: the embedding model once loaded, else None.
        error: why dense search is off (the message has the fix), or None.
    """

    def __init__(self, stores: dict[Path, IndexStore], writer: ThreadPoolExecutor, n_threads: int,
                 load_config: str, closed: threading.Event, timings: dict[str, float]):
        self._stores, self._writer, self._closed, self.timings = stores, writer, closed, timings
        self._n_threads, self._load_config = n_threads, load_config
        self.embedder: Embedder | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._wakeup = threading.Event()
        self._pause_until = 0.0
        self._lock = threading.Lock()   # one model call at a time

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-embedder", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Chunks may have come: look now rather than at the next 30 s check."""
        self._wakeup.set()

    def pause(self) -> None:
        """A completion is being asked for: rest for PAUSE_AFTER_COMPLETION_S (CPU for typing)."""
        self._pause_until = time.monotonic() + PAUSE_AFTER_COMPLETION_S

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (``closed`` set first)."""
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def embed_query(self, text: str) -> np.ndarray | None:
        """The query's embedding, or None when dense search is unavailable."""
        if self.embedder is None:
            return None
        return self._embed([text])[0]

    def _run(self) -> None:
        """The thread: load the model, then embed what has no vector until ``closed``."""
        try:
            self.embedder = Embedder(ensure_embedding_model(), n_threads=self._n_threads,
                                    load_config=self._load_config)
        except EmbeddingUnavailable as e:
            self.error = str(e)
            log.warning("index: %s", e)
            return
        t0, n_embedded = time.monotonic(), 0
        # Chunks embedded before but missing from the ANN (belt and braces: a stamped ANN has them all).
        for store in list(self._stores.values()):
            if store.writable:
                self._writer.submit(lambda s=store: s.ann_add(*_unzip(s.chunks_missing_from_ann()))).result()
        cursors: dict[Path, int] = {}
        while not self._closed.is_set():
            worked = False
            for root, store in list(self._stores.items()):
                if not store.writable:  # another process embeds this folder's chunks
                    continue
                while (rest := self._pause_until - time.monotonic()) > 0 and not self._closed.is_set():
                    time.sleep(min(rest, 0.5))
                after = cursors.get(root, 0)
                todo = self._writer.submit(store.chunks_without_vectors, after, EMBED_BATCH).result()
                if not todo:
                    if after:  # end of a pass: start over to catch chunks added behind the cursor
                        cursors[root] = 0
                        worked = True
                    continue
                cursors[root] = todo[-1][0]
                vectors = []
                for _, _, text in todo:  # one at a time: queries interleave, a suggestion waits at most one
                    while not SCHEDULE.pause(SCHEDULE.completion_working, 0.5) and not self._closed.is_set():
                        pass
                    vectors.append(self._embed([text])[0])
                self._writer.submit(store.add_vectors, [(h, v) for (_, h, _), v in zip(todo, vectors)]).result()
                n_embedded += len(todo)
                worked = True
            if not worked:
                if n_embedded:
                    for store in list(self._stores.values()):
                        self._writer.submit(store.save_ann).result()  # nothing on a read-only store
                    self.timings["dense_s"] = time.monotonic() - t0
                    log.info("index: %d chunks embedded in %.1f s", n_embedded, self.timings["dense_s"])
                    n_embedded = 0
                self._wakeup.wait(timeout=30)
                self._wakeup.clear()
                t0 = time.monotonic()

    def _embed(self, texts: list[str]):
        """One llama.cpp context serves the background loop and queries: one at a time.

        The loop embeds one chunk per call, so a query waits at most one chunk (~50 ms).
        """
        with self._lock:
            return self.embedder.embed(texts)


def _unzip(rows: list[tuple[int, bytes]]) -> tuple[list[int], list[np.ndarray]]:
    """(ids, vectors) of (id, float32 bytes) rows."""
    return [i for i, _ in rows], [np.frombuffer(v, dtype=np.float32) for _, v in rows]
