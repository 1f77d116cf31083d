"""The workspace index: its life cycle, and the one object the server holds.

:class:`WorkspaceIndex` owns one :class:`~index.store.IndexStore` per workspace folder,
kept in the user cache directory (one sub-folder per folder path, :func:`store_dir`), and
the two threads that keep them: a writer (discovery, chunking, SQLite writes:
:mod:`index.indexing`) and an embedder (:mod:`index.embedding_loop`, paused while
completions are being asked for so typing never waits on it). What may be read is
decided by one rule, :class:`~index.rules.IndexRules`, in discovery and in every update.
Searches (:mod:`index.retrieval`: lexical and dense lists merged by reciprocal rank
fusion) read the stores directly.

When another process (a second editor window on the same folder) already writes a
folder's index, this one reads it (searches work) and indexes nothing for that folder
until it can take the writer's lock (tried again at each update).

Threads: every public method may be called from any thread; the work of :meth:`start`
and :meth:`update_file` runs on the index-writer thread. This module imports nothing from
pygls or lsprotocol.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

from server.models import cache_dir
from server.private_files import private_dir

from .embedding import Embedder
from .embedding_loop import EmbeddingLoop
from .indexing import FolderIndexer
from .retrieval import CONTEXT_RESULTS, SearchResult, context_chunks, search
from .rules import IndexOptions, IndexRules, discover
from .store import IndexStore

log = logging.getLogger(__name__)


def store_dir(root: Path) -> Path:
    """One directory per workspace folder in the user cache directory."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "index" / f"{root.name or 'root'}-{key}"


class WorkspaceIndex:
    """The index of a set of workspace folders.

    Attributes:
        state: ``indexing`` until every file's chunks are searchable lexically, then ``ready``;
            ``error`` when the first pass failed (the index folder cannot be created or
            written, ...): searches then find nothing and ``error`` says why.
        error: why the first pass failed (``"<exception type>: <message>"``), or None.
        timings: seconds of the last first pass (``lexical_s``) and embedding round (``dense_s``).
    """

    def __init__(self, roots: list[Path], options: IndexOptions = IndexOptions(), embed_threads: int | None = None):
        self.roots = [r.resolve() for r in roots]
        self.options = options
        self.rules = IndexRules(self.roots, options)
        self.state = "indexing"
        self.error: str | None = None
        self.timings: dict[str, float] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        self._stores: dict[Path, IndexStore] = {}
        self._closed = threading.Event()
        # All physical cores: the embedder pauses whenever completions are asked for.
        from server.engine import default_threads
        self._embed_threads = embed_threads or default_threads()
        self._embedding = EmbeddingLoop(self._stores, self._writer, self._embed_threads, options.load_config,
                                        self._closed, self.timings)
        self._indexer = FolderIndexer(self.rules, options, self._stores, self._closed, self._embedding)

    @property
    def embedding_error(self) -> str | None:
        """Why dense search is off (the message has the fix), or None."""
        return self._embedding.error

    @property
    def _embedder(self) -> Embedder | None:
        """The embedding model once the embedder thread has loaded it."""
        return self._embedding.embedder

    # -- life cycle ------------------------------------------------------------------------
    def start(self, progress: Callable[[str, int], None] | None = None,
              cancel: threading.Event | None = None) -> Future:
        """Index every folder (only what changed since last time) on the writer thread.

        A folder whose index another process writes is not indexed here: its index is
        searched as that process keeps it.

        Args:
            progress: called with (message, percent) from the writer thread.
            cancel: set to stop the first pass early (what was done stays committed).

        Returns:
            A future that resolves when the lexical index is ready, or raises what made the
            first pass fail (then :attr:`state` is ``error``).
        """
        return self._writer.submit(self._first_pass, progress or (lambda m, p: None), cancel or threading.Event())

    def _first_pass(self, progress: Callable[[str, int], None], cancel: threading.Event) -> None:
        """Writer thread: the first pass; when it fails, the state is ``error`` with the reason."""
        try:
            self._index_all(progress, cancel)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.state = "error"
            log.exception("index: the first pass failed")
            raise

    def _index_all(self, progress: Callable[[str, int], None], cancel: threading.Event) -> None:
        """Writer thread: open the stores, discover, index what changed, drop what went."""
        t0 = time.monotonic()
        for root in self.roots:
            private_dir(store_dir(root).parent)  # the list of indexed folders is nobody else's business
            self._stores[root] = IndexStore(store_dir(root))
        found = {root: discover(root, self.options, self.rules) for root in self.roots if self._stores[root].writable}
        total = sum(len(v) for v in found.values()) or 1
        done = 0
        for root, files in found.items():
            done = self._indexer.sync(root, self._stores[root], files, "", cancel, progress, done, total)
            if done < 0:
                return
        self.timings["lexical_s"] = time.monotonic() - t0
        self.state = "ready"
        progress(f"{done} files searchable", 100)
        log.info("index: %d files lexically searchable in %.1f s", done, self.timings["lexical_s"])
        if self.options.embeddings:
            self._embedding.start()

    def close(self) -> None:
        """Stop both threads and close the stores (the ANN indexes are saved); waits for them."""
        self._closed.set()
        self._embedding.join(timeout=10)
        self._writer.submit(self._close_stores).result(timeout=30)
        self._writer.shutdown(wait=True)

    def _close_stores(self) -> None:
        for store in self._stores.values():
            store.close()

    # -- what may be read, and keeping up with changes -------------------------------------
    def indexable(self, path: Path | str, text: str | None = None) -> bool:
        """May ``path`` be read into the index (and so into prompts)? The rule of :class:`IndexRules`.

        Callable from any thread (the event loop included: a few ``stat`` calls and an 8 KiB
        read), e.g. before the server puts the chat's current file into a prompt.

        Args:
            text: the editor's unsaved text of the file: checked instead of the file on disk.
        """
        return self.rules.indexable(path, text)

    def update_file(self, path: Path, text: str | None = None) -> Future:
        """Re-chunk one file (from ``text`` when given, else from disk), or drop it when it
        is gone or not indexable (:meth:`indexable`). Returns a future that resolves when committed.

        A folder (created, moved in, deleted) is brought in step as a whole; an edited
        ``.gitignore`` brings its folder in step with its new patterns. Callable from any
        thread; the work runs on the writer thread.
        """
        return self._writer.submit(self._indexer.update, path, text)

    def pause_embedding(self) -> None:
        """A completion is being asked for: the embedder rests for a moment (CPU for typing)."""
        self._embedding.pause()

    # -- search ----------------------------------------------------------------------------
    def embed_query(self, text: str):
        """The query's embedding, or None when dense search is unavailable."""
        return self._embedding.embed_query(text)

    def search(self, query: str, k: int = 10, mode: str = "hybrid") -> list[SearchResult]:
        """Best chunks for ``query``.

        Args:
            query: natural language or code.
            k: results wanted.
            mode: ``hybrid`` (RRF of both), ``lexical`` or ``dense``.
        """
        return search(self._stores, query, k, mode, self.embed_query)

    def completion_context(self, here: Path | None, query: str, budget_chars: int) -> list[tuple[str, str]]:
        """Best chunks of files other than ``here`` for ``query``, as (path, text), within ``budget_chars``;
        never a chunk that holds a credential (this goes into a prompt, maybe to ``backend.url``).

        Lexical search only (SQLite full text, milliseconds), never the embedder: it runs on a
        completion engine's owner thread while the user types; callers cache it.
        """
        return context_chunks(self.search(query, k=CONTEXT_RESULTS, mode="lexical"), here, budget_chars)

    def status(self) -> dict:
        """Counts, from any thread. ``readOnly`` (only when true): another process writes a folder's index;
        ``error`` (only in the ``error`` state): why the first pass failed."""
        files = chunks = embedded = 0
        read_only = False
        for store in list(self._stores.values()):
            read_only = read_only or not store.writable
            try:
                f, c, e = store.counts_readonly()
            except Exception:
                continue
            files, chunks, embedded = files + f, chunks + c, embedded + e
        out = {"state": self.state, "files": files, "chunks": chunks, "embedded": embedded}
        if self.error:
            out["error"] = self.error
        if self.embedding_error:
            out["embeddingError"] = self.embedding_error
        if read_only:
            out["readOnly"] = True
        return out


def context_provider(current: Callable[[], WorkspaceIndex | None]) -> Callable[[str, str, int], list[tuple[str, str]]]:
    """The completion generator's cross-file context, straight from the index: ``(document URI,
    query, budget in characters) -> [(path, code)]`` from whatever index ``current()`` returns
    (none, or one not ready yet: nothing). Runs on the completion engine's owner thread; used
    by the language server and ``serve`` alike (:data:`server.completion.ContextProvider`).
    """
    def context(uri: str, query: str, budget_chars: int) -> list[tuple[str, str]]:
        index = current()
        if index is None or index.state != "ready":
            return []
        here = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else None
        return index.completion_context(here, query, budget_chars)
    return context
