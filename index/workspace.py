"""The workspace index: discovery, incremental chunking, background embedding, hybrid search.

:class:`WorkspaceIndex` owns one :class:`~index.store.IndexStore` per workspace folder,
kept in the user cache directory (one sub-folder per folder path). Work runs on two
threads of its own: a writer (discovery, chunking, SQLite writes) and an embedder
(all-MiniLM-L6-v2 in llama.cpp, one thread, paused while completions are being asked
for so typing never waits on it). Search may be called from any thread.

Hybrid retrieval: lexical (FTS5 BM25) and dense (hnswlib cosine) lists are merged by
reciprocal rank fusion: score = sum over lists of 1 / (RRF_K + rank).

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pathspec

from server.models import cache_dir

from .chunking import chunk_file
from .embedding import Embedder, EmbeddingUnavailable, ensure_embedding_model
from .store import Hit, IndexStore

log = logging.getLogger(__name__)

RRF_K = 60                 # reciprocal rank fusion constant (Cormack et al.)
CANDIDATES = 50            # results taken from each list before fusion
COMMIT_EVERY_FILES = 200   # files per SQLite transaction during the first pass
EMBED_BATCH = 32           # chunks fetched per embedding round
PAUSE_AFTER_COMPLETION_S = 2.0  # the embedder rests this long after a completion request

DEFAULT_EXCLUDED_DIRS = {
    ".git", ".hg", ".svn", ".bzr", "node_modules", ".venv", "venv", "env", ".env", "__pycache__", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", "target", "out", ".next", ".nuxt",
    ".gradle", ".idea", ".vscode", "site-packages", ".eggs", "bower_components", ".terraform", ".cache",
}
# Files that hold secrets are never read, whatever the settings say.
SECRET_PATTERNS = (".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
                   "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".npmrc", ".pypirc", ".netrc",
                   "credentials", "credentials.*", "*.gpg", "*.asc", ".htpasswd", "secrets.*")
BINARY_EXTENSIONS = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz",
    ".7z", ".rar", ".jar", ".war", ".class", ".so", ".dll", ".dylib", ".exe", ".o", ".a", ".lib", ".pyc",
    ".pyo", ".whl", ".gguf", ".bin", ".safetensors", ".onnx", ".pt", ".pth", ".npy", ".npz", ".sqlite",
    ".db", ".woff", ".woff2", ".ttf", ".otf", ".mp3", ".mp4", ".wav", ".mov", ".avi", ".lock", ".min.js",
}


@dataclass(frozen=True)
class IndexOptions:
    """What to index (settings ``index.*``)."""

    include: tuple[str, ...] = ()       # extra glob patterns indexed even if ignored
    exclude: tuple[str, ...] = ()       # extra glob patterns never indexed
    max_file_size_kb: int = 512
    embeddings: bool = True
    load_config: str = "auto"           # model.loadConfig for the embedding model (server.loading)


def is_secret(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in SECRET_PATTERNS)


def discover(root: Path, options: IndexOptions) -> list[tuple[str, os.stat_result]]:
    """Files of ``root`` worth indexing, as (POSIX path relative to root, stat).

    Respects .gitignore files (at every level), the default excluded folders, the
    ``index.exclude`` / ``index.include`` globs, the size cap, binary files and secrets.
    """
    out = []
    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    exclude = pathspec.GitIgnoreSpec.from_lines(options.exclude)
    include = pathspec.GitIgnoreSpec.from_lines(options.include)
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        ignore_file = os.path.join(folder, ".gitignore")
        if os.path.isfile(ignore_file):
            try:
                with open(ignore_file, encoding="utf-8", errors="replace") as f:
                    specs.append((rel_folder, pathspec.GitIgnoreSpec.from_lines(f)))
            except OSError:
                pass

        def ignored(rel: str, is_dir: bool) -> bool:
            probe = rel + "/" if is_dir else rel
            if include.match_file(probe):
                return False
            if exclude.match_file(probe):
                return True
            return any(rel.startswith(base) and spec.match_file(probe[len(base):]) for base, spec in specs)

        dirs[:] = sorted(d for d in dirs if d not in DEFAULT_EXCLUDED_DIRS and not d.endswith(".egg-info")
                         and not ignored(rel_folder + d, True))
        for name in sorted(files):
            rel = rel_folder + name
            lower = name.lower()
            if is_secret(name) or any(lower.endswith(ext) for ext in BINARY_EXTENSIONS) or ignored(rel, False):
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if st.st_size == 0 or st.st_size > options.max_file_size_kb * 1024:
                continue
            out.append((rel, st))
    return out


def read_text(path: Path) -> str | None:
    """The file as text, or None when it is binary (a NUL byte in its first 8 KiB) or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:8192]:
        return None
    return data.decode("utf-8", "replace")


def store_dir(root: Path) -> Path:
    """One directory per workspace folder in the user cache directory."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "index" / f"{root.name or 'root'}-{key}"


@dataclass(frozen=True)
class SearchResult:
    """A hybrid search result. Lines are 0-based, ``end_line`` inclusive."""

    root: Path
    path: str
    start_line: int
    end_line: int
    score: float
    symbol: str
    kind: str
    text: str

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


class WorkspaceIndex:
    """The index of a set of workspace folders.

    Attributes:
        state: ``indexing`` until every file's chunks are searchable lexically, then ``ready``.
        embedding_error: why dense search is off (the message has the fix), or None.
    """

    def __init__(self, roots: list[Path], options: IndexOptions = IndexOptions(), embed_threads: int | None = None):
        self.roots = [r.resolve() for r in roots]
        self.options = options
        self.state = "indexing"
        self.embedding_error: str | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        self._stores: dict[Path, IndexStore] = {}
        # All physical cores: the embedder pauses whenever completions are asked for.
        from server.engine import default_threads
        self._embed_threads = embed_threads or default_threads()
        self._embedder: Embedder | None = None
        self._embed_thread: threading.Thread | None = None
        self._embed_wakeup = threading.Event()
        self._closed = threading.Event()
        self._pause_until = 0.0
        self._embed_lock = threading.Lock()
        self.timings: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------------
    def start(self, progress: Callable[[str, int], None] | None = None,
              cancel: threading.Event | None = None) -> Future:
        """Index every folder (only what changed since last time) on the writer thread.

        Args:
            progress: called with (message, percent) from the writer thread.
            cancel: set to stop the first pass early (what was done stays committed).

        Returns:
            A future that resolves when the lexical index is ready.
        """
        return self._writer.submit(self._first_pass, progress or (lambda m, p: None), cancel or threading.Event())

    def _first_pass(self, progress: Callable[[str, int], None], cancel: threading.Event) -> None:
        t0 = time.monotonic()
        for root in self.roots:
            self._stores[root] = IndexStore(store_dir(root))
        found = {root: discover(root, self.options) for root in self.roots}
        total = sum(len(v) for v in found.values()) or 1
        done = 0
        for root, files in found.items():
            store = self._stores[root]
            known = store.file_state()
            present = set()
            for n, (rel, st) in enumerate(files):
                if cancel.is_set() or self._closed.is_set():
                    store.commit()
                    return
                present.add(rel)
                if known.get(rel) != (st.st_mtime_ns, st.st_size):
                    self._index_file(store, root, rel, st)
                done += 1
                if n % COMMIT_EVERY_FILES == COMMIT_EVERY_FILES - 1:
                    store.commit()
                    progress(f"{done}/{total} files", int(100 * done / total))
            for rel in set(known) - present:
                store.ann_remove(store.remove_file(rel))
            store.commit()
        self.timings["lexical_s"] = time.monotonic() - t0
        self.state = "ready"
        progress(f"{done} files searchable", 100)
        log.info("index: %d files lexically searchable in %.1f s", done, self.timings["lexical_s"])
        if self.options.embeddings:
            self._start_embedding()

    def _index_file(self, store: IndexStore, root: Path, rel: str, st: os.stat_result | None,
                    text: str | None = None) -> None:
        if text is None:
            text = read_text(root / rel)
            if text is None:
                store.ann_remove(store.remove_file(rel))
                return
        digest = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()
        mtime, size = (st.st_mtime_ns, st.st_size) if st is not None else (0, len(text))
        removed = store.replace_file(rel, mtime, size, digest, chunk_file(rel, text))
        store.ann_remove(removed)

    def close(self) -> None:
        self._closed.set()
        self._embed_wakeup.set()
        if self._embed_thread is not None:
            self._embed_thread.join(timeout=10)
        self._writer.submit(self._close_stores).result(timeout=30)
        self._writer.shutdown(wait=True)

    def _close_stores(self) -> None:
        for store in self._stores.values():
            store.close()

    # -- incremental updates ---------------------------------------------------------------
    def _locate(self, path: Path) -> tuple[Path, str] | None:
        path = path.resolve()
        for root in self.roots:
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                continue
            return root, rel
        return None

    def update_file(self, path: Path, text: str | None = None) -> Future:
        """Re-chunk one file (from ``text`` when given, else from disk), or drop it when it
        is gone or no longer indexable. Returns a future that resolves when committed."""
        return self._writer.submit(self._update, path, text)

    def _update(self, path: Path, text: str | None) -> None:
        where = self._locate(path)
        if where is None or where[0] not in self._stores:
            return
        root, rel = where
        store = self._stores[root]
        name = path.name
        try:
            st = os.stat(path)
        except OSError:
            st = None
        parts = rel.split("/")
        indexable = (st is not None and not is_secret(name) and 0 < st.st_size <= self.options.max_file_size_kb * 1024
                     and not any(p in DEFAULT_EXCLUDED_DIRS for p in parts[:-1])
                     and not any(name.lower().endswith(ext) for ext in BINARY_EXTENSIONS))
        if not indexable and text is None:
            store.ann_remove(store.remove_file(rel))
        else:
            self._index_file(store, root, rel, st, text)
        store.commit()
        self._embed_wakeup.set()

    # -- embeddings ------------------------------------------------------------------------
    def pause_embedding(self) -> None:
        """A completion is being asked for: the embedder rests for a moment (CPU for typing)."""
        self._pause_until = time.monotonic() + PAUSE_AFTER_COMPLETION_S

    def _start_embedding(self) -> None:
        if self._embed_thread is None:
            self._embed_thread = threading.Thread(target=self._embed_loop, name="index-embedder", daemon=True)
            self._embed_thread.start()

    def _embed_loop(self) -> None:
        try:
            self._embedder = Embedder(ensure_embedding_model(), n_threads=self._embed_threads,
                                     load_config=self.options.load_config)
        except EmbeddingUnavailable as e:
            self.embedding_error = str(e)
            log.warning("index: %s", e)
            return
        t0, n_embedded = time.monotonic(), 0
        # Chunks embedded before but missing from the ANN file (a crash between saves).
        for store in list(self._stores.values()):
            self._writer.submit(lambda s=store: s.ann_add(*_unzip(s.chunks_missing_from_ann()))).result()
        cursors: dict[Path, int] = {}
        while not self._closed.is_set():
            worked = False
            for root, store in list(self._stores.items()):
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
                vectors = [self._embed([text])[0] for _, _, text in todo]  # one at a time: queries interleave
                self._writer.submit(store.add_vectors, [(h, v) for (_, h, _), v in zip(todo, vectors)]).result()
                n_embedded += len(todo)
                worked = True
            if not worked:
                if n_embedded:
                    for store in list(self._stores.values()):
                        self._writer.submit(store.save_ann).result()
                    self.timings["dense_s"] = time.monotonic() - t0
                    log.info("index: %d chunks embedded in %.1f s", n_embedded, self.timings["dense_s"])
                    n_embedded = 0
                self._embed_wakeup.wait(timeout=30)
                self._embed_wakeup.clear()
                t0 = time.monotonic()

    def _embed(self, texts: list[str]):
        """One llama.cpp context serves the background loop and queries: one at a time.

        The loop embeds one chunk per call, so a query waits at most one chunk (~50 ms).
        """
        with self._embed_lock:
            return self._embedder.embed(texts)

    def embed_query(self, text: str):
        """The query's embedding, or None when dense search is unavailable."""
        if self._embedder is None:
            return None
        return self._embed([text])[0]

    # -- search ----------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, mode: str = "hybrid") -> list[SearchResult]:
        """Best chunks for ``query``.

        Args:
            query: natural language or code.
            k: results wanted.
            mode: ``hybrid`` (RRF of both), ``lexical`` or ``dense``.
        """
        fused: list[tuple[Hit, float, Path]] = []
        for root, store in list(self._stores.items()):
            lists = []
            if mode in ("hybrid", "lexical"):
                lists.append(store.search_lexical(query, CANDIDATES))
            if mode in ("hybrid", "dense"):
                vector = self.embed_query(query)
                if vector is not None:
                    lists.append(store.search_dense(vector, CANDIDATES))
            if len(lists) == 1:
                fused.extend((h, h.score, root) for h in lists[0])
            else:
                fused.extend((h, s, root) for h, s in rrf(lists))
        fused.sort(key=lambda t: -t[1])
        return [SearchResult(root, h.path, h.start_line, h.end_line, s, h.symbol, h.kind, h.text)
                for h, s, root in fused[:k]]

    def status(self) -> dict:
        files = chunks = embedded = 0
        for store in list(self._stores.values()):
            try:
                f, c, e = store.counts_readonly()
            except Exception:
                continue
            files, chunks, embedded = files + f, chunks + c, embedded + e
        out = {"state": self.state, "files": files, "chunks": chunks, "embedded": embedded}
        if self.embedding_error:
            out["embeddingError"] = self.embedding_error
        return out


def _unzip(rows: list[tuple[int, bytes]]):
    import numpy as np
    return [i for i, _ in rows], [np.frombuffer(v, dtype=np.float32) for _, v in rows]
