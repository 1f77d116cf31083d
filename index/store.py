"""Persistent storage of one workspace folder's index: the store that holds it together.

:class:`IndexStore` keeps one folder's index in a directory: the SQLite database
(:mod:`index.database`: schema, connections, damage), the rows of files, chunks and vectors
(here), their words for full-text search (:mod:`index.lexical`), the ANN index derived from
the vectors (:mod:`index.ann`) and the writer's lock (:mod:`index.writer_lock`).

Several processes (two editor windows on one folder) share one index directory. The one
that holds ``writer.lock`` writes; the others open the same files read-only (``PRAGMA
query_only``): they search, never index, never delete, and may take the lock later
(:meth:`IndexStore.try_become_writer`). Embeddings are keyed by the chunk's content hash,
so an unchanged chunk is never embedded twice, even when it moves.

Threads: use one :class:`IndexStore` from one thread (the index's writer) for everything
that writes; :meth:`~IndexStore.search_lexical`, :meth:`~IndexStore.search_dense`,
:meth:`~IndexStore.generation` and :meth:`~IndexStore.counts_readonly` may be called from
any thread (their own connection, locks).
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.private_files import private_dir, private_file

from . import rows
from .ann import AnnIndex
from .chunking import Chunk
from .database import SearchConnection, connect, open_writer
from .lexical import bm25_search
from .writer_lock import WriterLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One search result: a chunk and its score (higher is better); ``secret``: the chunk
    holds a credential (:attr:`index.chunking.Chunk.secret`)."""

    chunk_id: int
    path: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    text: str
    score: float
    secret: bool = False


class IndexStore:
    """The index of one workspace folder, in ``directory``.

    Attributes:
        writable: this process holds ``writer.lock`` and may write; False: another process
            writes, this one only reads (searches work, every write method must not be called).
        db: the writer's connection (read-only when not ``writable``); the index-writer thread's.
        ann: the folder's :class:`~index.ann.AnnIndex`.
    """

    def __init__(self, directory: Path):
        self.directory = private_dir(directory)
        self.db_path = directory / "index.sqlite"
        ann_path, stamp_path = directory / "vectors.hnsw", directory / "vectors.hnsw.stamp"
        for older in (ann_path, stamp_path):  # written 0644 by versions before 0600
            private_file(older, create=False)
        self._derived = (stamp_path, ann_path)  # deleted with a damaged database, stamp first
        self._lock = WriterLock(directory / "writer.lock")
        self._dirty = False             # chunks or vectors changed since the last commit
        self.writable = self._lock.acquire()
        if self.writable:
            try:
                self.db = open_writer(self.db_path, self._derived)
            except sqlite3.OperationalError as e:  # busy beyond BUSY_TIMEOUT_S, I/O: read what is there
                log.warning("cannot write the index %s (%s): reading it only", directory, e)
                self._lock.release()
                self.writable = False
            except BaseException:
                self._lock.release()
                raise
        if not self.writable:
            log.info("index %s is written by another process: this one reads it", directory)
            self.db = connect(self.db_path, read_only=True)
        self._reader = SearchConnection(self.db_path)
        self.ann = AnnIndex(ann_path, stamp_path)
        self._load_ann()

    @property
    def ann_rebuilt(self) -> bool:
        """The ANN index was rebuilt from SQLite at the last load (its file was missing,
        damaged or out of step with the database)."""
        return self.ann.rebuilt

    def _load_ann(self) -> None:
        """Load the ANN index, or rebuild it; a writer saves a rebuilt one at once (so the next
        start loads it). The thread that owns the store, or ``__init__``."""
        self.ann.load(self._reader)
        if self.writable and self.ann.rebuilt and self.ann.stamp is not None:
            try:
                self.save_ann()
            except OSError as e:
                log.warning("could not save the ANN index: %s", e)

    def generation(self) -> int:
        """The database's generation: bumped by every commit that changes chunks or vectors (any thread)."""
        with self._reader as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def try_become_writer(self) -> bool:
        """Take the writer lock if the process that held it is gone (writer thread only).

        Returns True when this store is (now) writable: the database is reopened to write
        (rebuilt if damaged) and the ANN index reloaded, or rebuilt if out of step.
        """
        if self.writable:
            return True
        if not self._lock.acquire():
            return False
        try:
            db = open_writer(self.db_path, self._derived)
        except sqlite3.DatabaseError as e:
            log.warning("cannot write the index %s: %s", self.directory, e)
            self._lock.release()
            return False
        old, self.db = self.db, db
        old.close()
        self._reader.reopen()  # the file may have been rebuilt: a new connection sees the new one
        self.writable = True
        self._load_ann()
        log.info("index %s: this process writes it now", self.directory)
        return True

    def _check_writable(self) -> None:
        if not self.writable:
            raise RuntimeError(f"index {self.directory} is read-only in this process (another one writes it)")

    # -- rows: files, chunks, vectors (writer thread) --------------------------------------
    def file_state(self, under: str = "") -> dict[str, tuple[int, int]]:
        """path -> (mtime_ns, size) of every indexed file (under the folder ``under``, relative, when given)."""
        return rows.file_state(self.db, under)

    def replace_file(self, path: str, mtime_ns: int, size: int, content_hash: str, chunks: list[Chunk]) -> list[int]:
        """Replace one file's chunks (no commit). Returns the ids of the chunks removed.

        New chunks whose content already has an embedding (unchanged functions of an edited
        file, moved code) go into the ANN index at once under their new ids: the embedder
        only sees chunks without a vector.
        """
        self._check_writable()
        removed = rows.delete_chunks(self.db, path)
        rows.put_file(self.db, path, mtime_ns, size, content_hash)
        new_ids = rows.insert_chunks(self.db, chunks)
        if new_ids:
            known = rows.chunk_vectors(self.db, new_ids)
            self.ann.add([i for i, _ in known], [np.frombuffer(v, dtype=np.float32) for _, v in known])
        self._dirty = self._dirty or bool(removed or chunks)
        return removed

    def remove_file(self, path: str) -> list[int]:
        """Forget a file (no commit). Returns the ids of the chunks removed."""
        self._check_writable()
        removed = rows.delete_chunks(self.db, path)
        rows.delete_file(self.db, path)
        self._dirty = self._dirty or bool(removed)
        return removed

    def commit(self) -> None:
        """Commit; when chunks or vectors changed, the generation is bumped in the same transaction."""
        if not self.writable:
            return
        if self._dirty:
            self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            self._dirty = False
        self.db.commit()

    def counts_readonly(self) -> tuple[int, int, int]:
        """(files, chunks, chunks with an embedding); safe from any thread."""
        with self._reader as db:
            return rows.counts(db)

    def chunks_without_vectors(self, after_id: int, limit: int) -> list[tuple[int, str, str]]:
        """(id, hash, text) of chunks after ``after_id`` whose content has no embedding yet, by id
        (one of each content). Walking forward with ``after_id`` keeps a full pass linear in the
        number of chunks."""
        return rows.chunks_without_vectors(self.db, after_id, limit)

    def chunks_missing_from_ann(self) -> list[tuple[int, bytes]]:
        """(id, vector) of chunks that have an embedding but are not in the ANN index."""
        present = self.ann.ids()
        return [(i, vec) for i, vec in rows.chunk_vectors(self.db) if i not in present]

    def ids_with_hash(self, content_hash: str) -> list[int]:
        return rows.ids_with_hash(self.db, content_hash)

    def add_vectors(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Store embeddings by content hash (committed) and put every chunk with that hash in the ANN index."""
        self._check_writable()
        rows.put_vectors(self.db, items)
        self._dirty = self._dirty or bool(items)
        self.commit()
        ids, vecs = [], []
        for h, v in items:
            for i in self.ids_with_hash(h):
                ids.append(i)
                vecs.append(v)
        self.ann.add(ids, vecs)

    # -- the ANN index (writer thread) ------------------------------------------------------
    def ann_add(self, ids: list[int], vectors: list[np.ndarray]) -> None:
        """Put chunks' vectors into the ANN index under their ids (see :meth:`index.ann.AnnIndex.add`)."""
        self.ann.add(ids, vectors)

    def ann_remove(self, ids: list[int]) -> None:
        """Take chunks out of the ANN index (the ids :meth:`replace_file` and :meth:`remove_file` return)."""
        self.ann.remove(ids)

    def save_ann(self) -> None:
        """Save the ANN index and its stamp (writer thread; nothing on a read-only store).

        Pending changes are committed first, so the index in memory matches the database's
        generation (see :meth:`index.ann.AnnIndex.save`).
        """
        if not self.writable:
            return
        self.commit()
        stamp = self._reader.stamp()
        if stamp is not None:
            self.ann.save(stamp)

    # -- search (any thread) ---------------------------------------------------------------
    def _hits(self, scored: list[tuple[int, float]]) -> list[Hit]:
        """The chunks of (id, score) pairs that still exist, in the pairs' order."""
        if not scored:
            return []
        with self._reader as db:
            by_id = rows.chunks_by_id(db, [i for i, _ in scored])
        return [Hit(*by_id[i][:7], score, bool(by_id[i][7])) for i, score in scored if i in by_id]

    def search_lexical(self, query: str, k: int) -> list[Hit]:
        """BM25 over identifier-aware words; best first ([] while another process creates the database)."""
        try:
            with self._reader as db:
                found = bm25_search(db, query, k)
            return self._hits(found)
        except sqlite3.OperationalError as e:
            if self.writable:
                raise
            log.debug("index %s not searchable yet: %s", self.directory, e)
            return []

    def search_dense(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Nearest chunks by cosine similarity; best first."""
        if not self.writable:
            self.ann.follow(self._reader)
        return self._hits(self.ann.query(vector, k))

    def close(self) -> None:
        """Save the ANN index (writer), close the connections, give the writer lock back."""
        try:
            self.save_ann()
        except Exception as e:
            log.warning("could not save the ANN index: %s", e)
        try:
            self.db.close()
            self._reader.close()
        finally:
            self._lock.release()
