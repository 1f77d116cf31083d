"""The ANN index of one folder (hnswlib, cosine, labels = chunk ids), derived from SQLite's vectors.

- Chunk ids are never given to another chunk (:mod:`index.database`), so a label always
  names the chunk whose vector it holds, or a deleted one (dropped from results).
- The file (``vectors.hnsw``) is saved with a sidecar stamp (``vectors.hnsw.stamp``: the
  database's id and generation, :func:`index.database.db_stamp`), written atomically after
  the index file. At load, a missing or different stamp means the file is out of step (a
  process killed between a commit and a save): the index is rebuilt from SQLite's vectors.
  A process killed mid-write loses nothing committed.
- A store that only reads (another process writes) follows the writer: it loads the
  writer's newer file once its stamp matches the database, at most every ANN_RECHECK_S.

Threads: :meth:`AnnIndex.add`, :meth:`~AnnIndex.remove`, :meth:`~AnnIndex.ids` and
:meth:`~AnnIndex.query` may be called from any thread (one lock guards the hnswlib index);
the writer thread adds and saves while search threads query. :meth:`~AnnIndex.load` runs
on the thread that owns the store (or while it is made); :meth:`~AnnIndex.follow` on a
search thread of a read-only store, one at a time. This module imports nothing from pygls
or lsprotocol.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from server.private_files import private_file

from .database import SearchConnection, db_stamp
from .rows import chunk_count, chunk_vectors

log = logging.getLogger(__name__)

DIM = 384                  # embedding dimensions (all-MiniLM-L6-v2)
ANN_RECHECK_S = 1.0        # a read-only store looks for a newer ANN file at most this often
EF_CONSTRUCTION, M, EF = 200, 16, 64   # hnswlib's build and search parameters
MIN_CAPACITY = 1024        # elements an index has room for at least (it grows when full)


class AnnIndex:
    """The hnswlib index of one folder, its file ``path`` and the stamp file ``stamp_path``;
    :meth:`load` before anything else.

    Attributes:
        stamp: the database state the index in memory matches (None before a load).
        rebuilt: the last :meth:`load` rebuilt the index from SQLite (its file was missing,
            damaged or out of step with the database).
    """

    def __init__(self, path: Path, stamp_path: Path):
        self.path, self.stamp_path = path, stamp_path
        self._lock = threading.Lock()          # guards _index
        self._follow_lock = threading.Lock()   # one follow() at a time
        self._index = None                     # hnswlib.Index, from load()
        self._checked = 0.0                    # when follow() last compared the stamps
        self.stamp: str | None = None
        self.rebuilt = False

    # -- the hnswlib object ------------------------------------------------------------------
    @staticmethod
    def _new(capacity: int):
        import hnswlib
        index = hnswlib.Index(space="cosine", dim=DIM)
        index.init_index(max_elements=max(MIN_CAPACITY, capacity), ef_construction=EF_CONSTRUCTION, M=M,
                         allow_replace_deleted=True)
        index.set_ef(EF)
        return index

    def _load_file(self, capacity: int):
        import hnswlib
        index = hnswlib.Index(space="cosine", dim=DIM)
        index.load_index(str(self.path), max_elements=max(MIN_CAPACITY, capacity), allow_replace_deleted=True)
        index.set_ef(EF)
        return index

    def _swap(self, index, stamp: str | None) -> None:
        with self._lock:
            self._index, self.stamp = index, stamp

    def read_stamp(self) -> str | None:
        """The stamp file's content (None when there is none)."""
        try:
            return self.stamp_path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    # -- load, rebuild, follow ---------------------------------------------------------------
    def load(self, reader: SearchConnection) -> None:
        """The file when its stamp matches the database (read through ``reader``), else rebuilt
        from SQLite's vectors; sets :attr:`rebuilt`. Saving a rebuilt index is the caller's
        (a writer saves it at once, so that the next start loads it)."""
        self.rebuilt = False
        with reader as db:
            stamp = db_stamp(db)
            n_chunks = chunk_count(db) if stamp else 0
        on_disk = self.read_stamp()
        if stamp is not None and on_disk == stamp and self.path.is_file():
            try:
                self._swap(self._load_file(2 * n_chunks), stamp)
                return
            except (RuntimeError, ValueError, OSError, MemoryError) as e:
                log.warning("ANN index %s is damaged (%s): rebuilding it from the database", self.path, e)
        elif self.path.is_file():
            log.warning("ANN index %s is out of step with the database (stamp %s, database %s): "
                        "rebuilding it from the database", self.path, on_disk, stamp)
        with reader as db:
            db.execute("BEGIN")  # one snapshot: the stamp and the vectors it stands for
            try:
                stamp = db_stamp(db)
                n_chunks = chunk_count(db) if stamp else 0
                rows = chunk_vectors(db) if stamp else []
            finally:
                db.rollback()
        index = self._new(2 * n_chunks)
        if rows:
            index.add_items(np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]),
                            np.array([i for i, _ in rows]), replace_deleted=True)
        self._swap(index, stamp)
        self.rebuilt = True

    def follow(self, reader: SearchConnection) -> None:
        """A read-only store's index follows the writer (at most every ANN_RECHECK_S; skipped
        while another thread is at it).

        The writer's newer file is loaded once its stamp matches the database. Until then the
        index in memory is older than the database, which is harmless: ids are never reused,
        so a stale label names the right chunk or a deleted one. When the writer has rebuilt
        the database (another file, another ``db_id``: ids start over), the connection is
        reopened and the index, whose labels name nothing any more, is replaced at once: by
        the writer's file if in step, else rebuilt from the new database.
        """
        now = time.monotonic()
        if now - self._checked < ANN_RECHECK_S:
            return
        if not self._follow_lock.acquire(blocking=False):
            return  # another search thread is at it
        try:
            self._checked = now
            reader.reopen_if_replaced()
            with reader as db:
                stamp = db_stamp(db)
                n_chunks = chunk_count(db) if stamp else 0
            if stamp is None or stamp == self.stamp:
                return
            same_db = self.stamp is not None and stamp.split()[0] == self.stamp.split()[0]
            if self.read_stamp() == stamp:
                try:
                    self._swap(self._load_file(2 * n_chunks), stamp)
                    return
                except (RuntimeError, ValueError, OSError, MemoryError):
                    pass  # being replaced right now
            if not same_db:
                self.load(reader)
        finally:
            self._follow_lock.release()

    # -- contents ----------------------------------------------------------------------------
    def add(self, ids: list[int], vectors: list[np.ndarray]) -> None:
        """Put ``vectors`` (DIM float32 each) under the labels ``ids``, growing the index when full."""
        if not ids:
            return
        with self._lock:
            need = self._index.get_current_count() + len(ids)
            if need > self._index.get_max_elements():
                self._index.resize_index(max(need, 2 * self._index.get_max_elements()))
            self._index.add_items(np.stack(vectors), np.array(ids), replace_deleted=True)

    def remove(self, ids: list[int]) -> None:
        """Mark these labels deleted (those not in the index are skipped)."""
        with self._lock:
            present = set(self._index.get_ids_list())
            for i in ids:
                if i in present:
                    try:
                        self._index.mark_deleted(i)
                    except RuntimeError:
                        pass

    def ids(self) -> set[int]:
        """The labels in the index (deleted ones included)."""
        with self._lock:
            return set(self._index.get_ids_list())

    def query(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(label, cosine similarity) of up to ``k`` nearest live elements, nearest first."""
        with self._lock:
            k = min(k, self._index.get_current_count())
            while k > 0:
                try:
                    labels, distances = self._index.knn_query(vector.reshape(1, -1), k=k)
                    break
                except RuntimeError:  # fewer live elements than k (some are marked deleted)
                    k //= 2
            if k == 0:
                return []
        return [(int(i), 1.0 - float(d)) for i, d in zip(labels[0], distances[0])]

    # -- saving ------------------------------------------------------------------------------
    def save(self, stamp: str) -> None:
        """Save the index as matching the database state ``stamp`` (the writer's thread, its
        changes committed); nothing when that is already on disk.

        Order: the old stamp goes, the index file is renamed into place, then the new stamp is
        renamed into place: a process killed at any point leaves no stamp or the right one,
        never a stamp on the wrong file.
        """
        if stamp == self.stamp and self.read_stamp() == stamp and self.path.is_file():
            return  # nothing changed since the last save
        tmp = private_file(self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}"))
        with self._lock:
            self._index.save_index(str(tmp))
        self.stamp_path.unlink(missing_ok=True)
        os.replace(tmp, self.path)
        tmp_stamp = private_file(self.stamp_path.with_name(f"{self.stamp_path.name}.tmp-{os.getpid()}"))
        with open(tmp_stamp, "w", encoding="utf-8") as f:
            f.write(stamp + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_stamp, self.stamp_path)
        self.stamp = stamp
