"""The workspace index: discovery, incremental chunking, background embedding, hybrid search.

:class:`WorkspaceIndex` owns one :class:`~index.store.IndexStore` per workspace folder,
kept in the user cache directory (one sub-folder per folder path). Work runs on two
threads of its own: a writer (discovery, chunking, SQLite writes) and an embedder
(all-MiniLM-L6-v2 in llama.cpp, one thread, paused while completions are being asked
for so typing never waits on it). Search and :meth:`WorkspaceIndex.indexable` may be
called from any thread.

What may be read is decided by one rule, :class:`IndexRules`, in discovery and in every
update. When another process (a second editor window on the same folder) already writes a
folder's index, this one reads it (searches work) and indexes nothing for that folder
until it can take the writer's lock (tried again at each update).

Hybrid retrieval: lexical (FTS5 BM25) and dense (hnswlib cosine) lists are merged by
reciprocal rank fusion: score = sum over lists of 1 / (RRF_K + rank).

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pathspec

from server.credentials import credential_lines
from server.models import cache_dir
from server.private_files import private_dir

from .chunking import Chunk, chunk_file
from .embedding import Embedder, EmbeddingUnavailable, ensure_embedding_model
from .store import Hit, IndexStore

log = logging.getLogger(__name__)

RRF_K = 60                 # reciprocal rank fusion constant (Cormack et al.)
CANDIDATES = 50            # results taken from each list before fusion
COMMIT_EVERY_FILES = 200   # files per SQLite transaction during the first pass
EMBED_BATCH = 32           # chunks fetched per embedding round
PAUSE_AFTER_COMPLETION_S = 2.0  # the embedder rests this long after a completion request
CONTEXT_RESULTS = 8        # results looked at for one completion's cross-file context

DEFAULT_EXCLUDED_DIRS = {
    ".git", ".hg", ".svn", ".bzr", "node_modules", ".venv", "venv", "env", ".env", "__pycache__", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", "target", "out", ".next", ".nuxt",
    ".gradle", ".idea", ".vscode", "site-packages", ".eggs", "bower_components", ".terraform", ".cache",
}
# Files that hold secrets are never read, whatever the settings say. Matched case-insensitively
# (lowercase patterns), on the file's name and, for a symlink, on its target's name too.
SECRET_PATTERNS = (".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
                   "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".npmrc", ".pypirc", ".netrc", "_netrc",
                   ".pgpass", ".git-credentials", "credentials*", "*.gpg", "*.asc", ".htpasswd", "secrets.*",
                   "*.tfstate", "*.tfstate.*", "service-account*.json", "*.kdbx")
# Folders that hold keys and tokens (never walked into, whatever the settings say; case-insensitive).
SECRET_DIRS = {".ssh", ".gnupg", ".aws", ".kube"}
BINARY_EXTENSIONS = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz",
    ".7z", ".rar", ".jar", ".war", ".class", ".so", ".dll", ".dylib", ".exe", ".o", ".a", ".lib", ".pyc",
    ".pyo", ".whl", ".gguf", ".bin", ".safetensors", ".onnx", ".pt", ".pth", ".npy", ".npz", ".sqlite",
    ".db", ".woff", ".woff2", ".ttf", ".otf", ".mp3", ".mp4", ".wav", ".mov", ".avi", ".lock", ".min.js",
}
BINARY_PROBE_BYTES = 8192  # a NUL byte in this many first bytes makes a file binary


@dataclass(frozen=True)
class IndexOptions:
    """What to index (settings ``index.*``)."""

    include: tuple[str, ...] = ()       # extra glob patterns indexed even if ignored
    exclude: tuple[str, ...] = ()       # extra glob patterns never indexed
    max_file_size_kb: int = 512
    embeddings: bool = True
    load_config: str = "auto"           # model.loadConfig for the embedding model (server.loading)


def is_secret(name: str) -> bool:
    """True for the name of a file that may hold secrets (case-insensitive: ``.ENV``, ``ID_RSA`` too)."""
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p) for p in SECRET_PATTERNS)


def is_binary_name(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(ext) for ext in BINARY_EXTENSIONS)


def is_binary_data(data: bytes) -> bool:
    """True when ``data`` (a file's beginning) is not text: a NUL byte in its first BINARY_PROBE_BYTES."""
    return b"\x00" in data[:BINARY_PROBE_BYTES]


class IndexRules:
    """The one rule for what the index may read, used by discovery and by every update.

    A file is indexable when:

    - its real path (symlinks resolved) lies inside a workspace root; the path the index
      knows it by is the path with its folders' symlinks resolved and its own name kept
      (discovery does not follow symlinked folders, so that is the path it finds);
    - no folder between the root and it is a default-excluded folder (``.git``,
      ``node_modules``, ``*.egg-info``...) or a secret folder (``.ssh``...);
    - it is not git-ignored: the ``.gitignore`` of every folder from the root down, the
      deepest one that decides winning (``!negations`` included), and a file in an ignored
      folder stays ignored, as in git;
    - ``index.exclude`` does not match it, unless ``index.include`` does (which also rescues
      a git-ignored file, not a default-excluded folder, a secret or a binary file);
    - its name is not a secret name (:func:`is_secret`, case-insensitive);
    - for a symlink: its target passes all of the above too, where it lies;
    - its size is between 1 byte and ``index.maxFileSizeKb``;
    - it is not binary: neither by extension nor by content (a NUL byte in its first 8 KiB).

    Threads: every method may be called from any thread (the index-writer thread during
    discovery and updates; the event loop or an executor, e.g. for the chat's current
    file). The only shared state is the cache of parsed ``.gitignore`` files, one per
    folder, behind a lock. Each entry is checked against its file's (mtime, size) at
    every use, and :meth:`forget` drops one at once, so an edited ``.gitignore`` counts
    from the next check. A check costs a few ``stat`` calls (one per folder from the root
    down) and reading the file's first 8 KiB.
    """

    def __init__(self, roots: list[Path], options: IndexOptions):
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.options = options
        self._exclude = pathspec.GitIgnoreSpec.from_lines(options.exclude)
        self._include = pathspec.GitIgnoreSpec.from_lines(options.include)
        self._max_bytes = options.max_file_size_kb * 1024
        self._specs: dict[str, tuple[tuple[int, int, int] | None, pathspec.GitIgnoreSpec | None]] = {}
        self._lock = threading.Lock()

    # -- where a path is -------------------------------------------------------------------
    def locations(self, path: Path | str) -> list[tuple[Path, str]]:
        """(root, POSIX path relative to root) for every root that holds ``path`` (its folders'
        symlinks resolved, its own name kept). Empty when no root holds it, or for a root itself."""
        p = os.path.abspath(path)
        real = Path(os.path.realpath(os.path.dirname(p))) / os.path.basename(p)
        out = []
        for root in self.roots:
            try:
                rel = real.relative_to(root).as_posix()
            except ValueError:
                continue
            if rel not in ("", "."):
                out.append((root, rel))
        return out

    # -- .gitignore files ------------------------------------------------------------------
    def _spec(self, root: Path, rel_folder: str, memo: dict | None = None) -> pathspec.GitIgnoreSpec | None:
        """The parsed .gitignore of a folder (None when it has none); cached, checked against its stat.

        ``memo``: one walk's own cache (discovery), so that a folder's .gitignore is looked at once per walk.
        """
        file = os.path.join(root, rel_folder, ".gitignore") if rel_folder else os.path.join(root, ".gitignore")
        if memo is not None and file in memo:
            return memo[file]
        try:
            st = os.stat(file)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            key = None
        with self._lock:
            cached = self._specs.get(file)
        if cached is not None and cached[0] == key:
            if memo is not None:
                memo[file] = cached[1]
            return cached[1]
        spec = None
        if key is not None:
            try:
                with open(file, encoding="utf-8", errors="replace") as f:
                    spec = pathspec.GitIgnoreSpec.from_lines(f)
            except OSError:
                spec = None
        with self._lock:
            self._specs[file] = (key, spec)
        if memo is not None:
            memo[file] = spec
        return spec

    def forget(self, gitignore: Path | str) -> None:
        """Drop the cached parse of one .gitignore file (it changed); any thread."""
        p = os.path.abspath(gitignore)
        real = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        with self._lock:
            self._specs.pop(real, None)

    def _ignored(self, root: Path, rel: str, is_dir: bool, memo: dict | None = None) -> bool:
        probe = rel + "/" if is_dir else rel
        if self._include.match_file(probe):
            return False
        if self._exclude.match_file(probe):
            return True
        parts = rel.split("/")[:-1]
        for depth in range(len(parts), -1, -1):  # the deepest .gitignore that has a say wins
            base = "/".join(parts[:depth])
            spec = self._spec(root, base, memo)
            if spec is None:
                continue
            decided = spec.check_file(probe[len(base) + 1:] if base else probe).include
            if decided is not None:
                return decided
        return False

    # -- the checks --------------------------------------------------------------------------
    def folder_allowed(self, root: Path, rel_folder: str, memo: dict | None = None) -> bool:
        """May discovery walk into this folder (relative to root)? Its parents are taken as allowed."""
        name = rel_folder.rsplit("/", 1)[-1]
        if name in DEFAULT_EXCLUDED_DIRS or name.endswith(".egg-info") or name.lower() in SECRET_DIRS:
            return False
        return not self._ignored(root, rel_folder, True, memo)

    def name_allowed(self, root: Path, rel: str, memo: dict | None = None) -> bool:
        """The name checks of a file whose folders are allowed: secret, binary extension, ignored."""
        name = rel.rsplit("/", 1)[-1]
        return not (is_secret(name) or is_binary_name(name) or self._ignored(root, rel, False, memo))

    def path_allowed(self, root: Path, rel: str) -> bool:
        """Every folder from root to the file allowed, and the file's name: no disk access but .gitignore."""
        parts = rel.split("/")
        return (all(self.folder_allowed(root, "/".join(parts[:i])) for i in range(1, len(parts)))
                and self.name_allowed(root, rel))

    def target_allowed(self, root: Path, rel: str) -> bool:
        """For a symlink: its target lies inside a root and passes the path checks there."""
        full = root / rel
        if not os.path.islink(full):
            return True
        where = self.locations(os.path.realpath(full))
        return bool(where) and any(self.path_allowed(r, t) for r, t in where)

    def size_allowed(self, size: int) -> bool:
        return 0 < size <= self._max_bytes

    def check(self, root: Path, rel: str, text: str | None = None) -> os.stat_result | bool | None:
        """The whole rule for ``root / rel``.

        Args:
            text: the editor's unsaved text of the file: its size and content are checked
                instead of the file on disk's (which may not exist yet).

        Returns:
            None when the file may not be indexed; else its stat (read from disk), or True
            (``text`` given).
        """
        if not self.path_allowed(root, rel) or not self.target_allowed(root, rel):
            return None
        if text is not None:
            data = text.encode("utf-8", "replace")
            return True if self.size_allowed(len(data)) and not is_binary_data(data) else None
        full = root / rel
        try:
            st = os.stat(full)
            if not stat.S_ISREG(st.st_mode) or not self.size_allowed(st.st_size):
                return None
            with open(full, "rb") as f:
                head = f.read(BINARY_PROBE_BYTES)
        except OSError:
            return None
        return None if is_binary_data(head) else st

    def indexable(self, path: Path | str, text: str | None = None) -> bool:
        """May the index read ``path`` (its unsaved ``text``, when given)? Any thread; see the class."""
        return any(self.check(root, rel, text) is not None for root, rel in self.locations(path))


def discover(root: Path, options: IndexOptions, rules: IndexRules | None = None,
             under: str = "") -> list[tuple[str, os.stat_result]]:
    """Files of ``root`` worth indexing, as (POSIX path relative to root, stat).

    Applies :class:`IndexRules` (made from ``options`` when not given): folders are pruned
    with :meth:`IndexRules.folder_allowed`, files checked by name, symlink target and size.
    The content check (a NUL byte) is left to the reading of the file (:func:`read_text`,
    when the file is new or changed), so that a start does not read every unchanged file.

    Args:
        under: only this folder (relative to root, POSIX; its parents are checked too).
    """
    rules = rules or IndexRules([root], options)
    root = Path(os.path.realpath(root))
    if under:
        parts = under.split("/")
        if not all(rules.folder_allowed(root, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            return []
    out: list[tuple[str, os.stat_result]] = []
    memo: dict = {}
    for folder, dirs, files in os.walk(root / under if under else root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = sorted(d for d in dirs if rules.folder_allowed(root, rel_folder + d, memo))
        for name in sorted(files):
            rel = rel_folder + name
            if not rules.name_allowed(root, rel, memo) or not rules.target_allowed(root, rel):
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and rules.size_allowed(st.st_size):
                out.append((rel, st))
    return out


def read_text(path: Path) -> str | None:
    """The file as text, or None when it is binary (a NUL byte in its first 8 KiB) or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if is_binary_data(data):
        return None
    return data.decode("utf-8", "replace")


def mark_secrets(path: str, text: str, chunks: list[Chunk]) -> list[Chunk]:
    """``chunks`` of the file ``path`` with ``secret`` set on those that share a line with a
    credential found in the whole ``text`` (so a key longer than a chunk marks every chunk of it)."""
    spans = credential_lines(text, path)
    if not spans:
        return chunks
    return [dataclasses.replace(c, secret=True) if any(a <= c.end_line and c.start_line <= b for a, b in spans) else c
            for c in chunks]


def store_dir(root: Path) -> Path:
    """One directory per workspace folder in the user cache directory."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "index" / f"{root.name or 'root'}-{key}"


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


class WorkspaceIndex:
    """The index of a set of workspace folders.

    Attributes:
        state: ``indexing`` until every file's chunks are searchable lexically, then ``ready``;
            ``error`` when the first pass failed (the index folder cannot be created or
            written, ...): searches then find nothing and ``error`` says why.
        error: why the first pass failed (``"<exception type>: <message>"``), or None.
        embedding_error: why dense search is off (the message has the fix), or None.
    """

    def __init__(self, roots: list[Path], options: IndexOptions = IndexOptions(), embed_threads: int | None = None):
        self.roots = [r.resolve() for r in roots]
        self.options = options
        self.rules = IndexRules(self.roots, options)
        self.state = "indexing"
        self.error: str | None = None
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
            done = self._sync(root, self._stores[root], files, "", cancel, progress, done, total)
            if done < 0:
                return
        self.timings["lexical_s"] = time.monotonic() - t0
        self.state = "ready"
        progress(f"{done} files searchable", 100)
        log.info("index: %d files lexically searchable in %.1f s", done, self.timings["lexical_s"])
        if self.options.embeddings:
            self._start_embedding()

    def _sync(self, root: Path, store: IndexStore, files: list[tuple[str, os.stat_result]], under: str,
              cancel: threading.Event | None = None, progress: Callable[[str, int], None] | None = None,
              done: int = 0, total: int = 1) -> int:
        """Writer thread: make the index of ``root`` (of its folder ``under``, when given) hold
        exactly ``files`` (from :func:`discover`): changed ones re-read, gone or no longer
        indexable ones dropped. Returns the files done so far, or -1 when cancelled."""
        known = store.file_state(under)
        present = set()
        for n, (rel, st) in enumerate(files):
            if (cancel is not None and cancel.is_set()) or self._closed.is_set():
                store.commit()
                return -1
            present.add(rel)
            if known.get(rel) != (st.st_mtime_ns, st.st_size):
                self._index_file(store, root, rel, st)
            done += 1
            if n % COMMIT_EVERY_FILES == COMMIT_EVERY_FILES - 1:
                store.commit()
                if progress is not None:
                    progress(f"{done}/{total} files", int(100 * done / total))
        for rel in set(known) - present:
            store.ann_remove(store.remove_file(rel))
        store.commit()
        return done

    def _index_file(self, store: IndexStore, root: Path, rel: str, st: os.stat_result | None,
                    text: str | None = None) -> None:
        """Writer thread: re-chunk one file that passed the rules (no commit); a binary one is dropped."""
        if text is None:
            text = read_text(root / rel)
            if text is None:
                store.ann_remove(store.remove_file(rel))
                return
        digest = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()
        mtime, size = (st.st_mtime_ns, st.st_size) if st is not None else (0, len(text))
        removed = store.replace_file(rel, mtime, size, digest, mark_secrets(rel, text, chunk_file(rel, text)))
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

    # -- what may be read ------------------------------------------------------------------
    def indexable(self, path: Path | str, text: str | None = None) -> bool:
        """May ``path`` be read into the index (and so into prompts)? The rule of :class:`IndexRules`.

        Callable from any thread (the event loop included: a few ``stat`` calls and an 8 KiB
        read), e.g. before the server puts the chat's current file into a prompt.

        Args:
            text: the editor's unsaved text of the file: checked instead of the file on disk.
        """
        return self.rules.indexable(path, text)

    # -- incremental updates ---------------------------------------------------------------
    def update_file(self, path: Path, text: str | None = None) -> Future:
        """Re-chunk one file (from ``text`` when given, else from disk), or drop it when it
        is gone or not indexable (:meth:`indexable`). Returns a future that resolves when committed.

        A folder (created, moved in, deleted) is brought in step as a whole; an edited
        ``.gitignore`` brings its folder in step with its new patterns. Callable from any
        thread; the work runs on the writer thread.
        """
        return self._writer.submit(self._update, path, text)

    def _update(self, path: Path, text: str | None) -> None:
        """Writer thread: the update of one path, in every root that holds it."""
        for root, rel in self.rules.locations(path):
            store = self._stores.get(root)
            if store is None or not self._writable(root, store):
                continue
            full = root / rel
            is_gitignore = rel.rsplit("/", 1)[-1] == ".gitignore"
            if is_gitignore:
                self.rules.forget(full)
            if text is None and full.is_dir() and not full.is_symlink():
                self._sync(root, store, discover(root, self.options, self.rules, under=rel), rel)
            else:
                verdict = self.rules.check(root, rel, text)
                if verdict is None:
                    store.ann_remove(store.remove_file(rel))
                else:
                    self._index_file(store, root, rel, verdict if text is None else None, text)
                if text is None and not os.path.lexists(full):  # a folder that went: its files too
                    self._sync(root, store, [], rel)
                if is_gitignore:
                    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
                    self._sync(root, store, discover(root, self.options, self.rules, under=folder), folder)
            store.commit()
        self._embed_wakeup.set()

    def _writable(self, root: Path, store: IndexStore) -> bool:
        """Writer thread: can this process write ``root``'s index? A read-only store tries to take
        the writer's lock (the other process may be gone); when it does, the folder is brought in
        step at once and the embedder woken."""
        if store.writable:
            return True
        if not store.try_become_writer():
            return False
        self._sync(root, store, discover(root, self.options, self.rules), "")
        if self.options.embeddings:
            self._start_embedding()
        self._embed_wakeup.set()
        return True

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
                vectors = [self._embed([text])[0] for _, _, text in todo]  # one at a time: queries interleave
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
        return [SearchResult(root, h.path, h.start_line, h.end_line, s, h.symbol, h.kind, h.text, h.secret)
                for h, s, root in fused[:k]]

    def completion_context(self, here: Path | None, query: str, budget_chars: int) -> list[tuple[str, str]]:
        """Best chunks of files other than ``here`` for ``query``, as (path, text), within ``budget_chars``;
        never a chunk that holds a credential (this goes into a prompt, maybe to ``backend.url``).

        Lexical search only (SQLite full text, milliseconds), never the embedder: it runs on a
        completion engine's owner thread while the user types; callers cache it.
        """
        out, used = [], 0
        for r in self.search(query, k=CONTEXT_RESULTS, mode="lexical"):
            if r.secret or here is not None and r.file == here or used + len(r.text) > budget_chars:
                continue
            out.append((r.path, r.text))
            used += len(r.text)
        return out

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


def _unzip(rows: list[tuple[int, bytes]]):
    import numpy as np
    return [i for i, _ in rows], [np.frombuffer(v, dtype=np.float32) for _, v in rows]
