"""The indexing pass: bring a folder's store in step with its files.

:class:`FolderIndexer` re-reads the files that changed since the store last saw them
(mtime and size), chunks them (:mod:`index.chunking`), marks the chunks that hold a
credential (:func:`mark_secrets`: they are never put into a prompt), and drops the files
that went or are no longer indexable (:mod:`index.rules`). An edited file, a folder that
came or went, an edited ``.gitignore`` are brought in step one at a time
(:meth:`FolderIndexer.update`). A folder whose index another process writes is left alone
until this process can take the writer's lock.

Threads: the index-writer thread only (the stores are written from it alone).
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Callable

from server.credentials import credential_lines

from .chunking import Chunk, chunk_file
from .embedding_loop import EmbeddingLoop
from .rules import IndexOptions, IndexRules, discover, read_text
from .store import IndexStore

COMMIT_EVERY_FILES = 200   # files per SQLite transaction during the first pass


def mark_secrets(path: str, text: str, chunks: list[Chunk]) -> list[Chunk]:
    """``chunks`` of the file ``path`` with ``secret`` set on those that share a line with a
    credential found in the whole ``text`` (so a key longer than a chunk marks every chunk of it)."""
    spans = credential_lines(text, path)
    if not spans:
        return chunks
    return [dataclasses.replace(c, secret=True) if any(a <= c.end_line and c.start_line <= b for a, b in spans) else c
            for c in chunks]


class FolderIndexer:
    """The writer thread's work on the stores of a workspace index.

    Args:
        rules: what may be read (the workspace index's own).
        options: the ``index.*`` settings.
        stores: root -> store, the workspace index's own dict.
        closed: set when the index closes: a pass stops at the next file.
        embedding: woken when chunks may need vectors, started when a store becomes writable.
    """

    def __init__(self, rules: IndexRules, options: IndexOptions, stores: dict[Path, IndexStore],
                 closed: threading.Event, embedding: EmbeddingLoop):
        self.rules, self.options, self.stores, self.closed, self.embedding = rules, options, stores, closed, embedding

    def sync(self, root: Path, store: IndexStore, files: list[tuple[str, os.stat_result]], under: str,
             cancel: threading.Event | None = None, progress: Callable[[str, int], None] | None = None,
             done: int = 0, total: int = 1) -> int:
        """Writer thread: make the index of ``root`` (of its folder ``under``, when given) hold
        exactly ``files`` (from :func:`discover`): changed ones re-read, gone or no longer
        indexable ones dropped. Returns the files done so far, or -1 when cancelled."""
        known = store.file_state(under)
        present = set()
        for n, (rel, st) in enumerate(files):
            if (cancel is not None and cancel.is_set()) or self.closed.is_set():
                store.commit()
                return -1
            present.add(rel)
            if known.get(rel) != (st.st_mtime_ns, st.st_size):
                self.index_file(store, root, rel, st)
            done += 1
            if n % COMMIT_EVERY_FILES == COMMIT_EVERY_FILES - 1:
                store.commit()
                if progress is not None:
                    progress(f"{done}/{total} files", int(100 * done / total))
        for rel in set(known) - present:
            store.ann_remove(store.remove_file(rel))
        store.commit()
        return done

    def index_file(self, store: IndexStore, root: Path, rel: str, st: os.stat_result | None,
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

    def update(self, path: Path, text: str | None) -> None:
        """Writer thread: the update of one path, in every root that holds it."""
        for root, rel in self.rules.locations(path):
            store = self.stores.get(root)
            if store is None or not self._writable(root, store):
                continue
            full = root / rel
            is_gitignore = rel.rsplit("/", 1)[-1] == ".gitignore"
            if is_gitignore:
                self.rules.forget(full)
            if text is None and full.is_dir() and not full.is_symlink():
                self.sync(root, store, discover(root, self.options, self.rules, under=rel), rel)
            else:
                verdict = self.rules.check(root, rel, text)
                if verdict is None:
                    store.ann_remove(store.remove_file(rel))
                else:
                    self.index_file(store, root, rel, verdict if text is None else None, text)
                if text is None and not os.path.lexists(full):  # a folder that went: its files too
                    self.sync(root, store, [], rel)
                if is_gitignore:
                    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
                    self.sync(root, store, discover(root, self.options, self.rules, under=folder), folder)
            store.commit()
        self.embedding.wake()

    def _writable(self, root: Path, store: IndexStore) -> bool:
        """Writer thread: can this process write ``root``'s index? A read-only store tries to take
        the writer's lock (the other process may be gone); when it does, the folder is brought in
        step at once and the embedder woken."""
        if store.writable:
            return True
        if not store.try_become_writer():
            return False
        self.sync(root, store, discover(root, self.options, self.rules), "")
        if self.options.embeddings:
            self.embedding.start()
        self.embedding.wake()
        return True
