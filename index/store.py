"""Persistent storage of one workspace's index: SQLite (WAL) plus an hnswlib ANN file.

SQLite is the source of truth: files (with mtime, size and content hash), chunks, a
full-text index (FTS5, BM25 ranking) over identifier-aware words, and chunk embeddings
keyed by the chunk's content hash (so an unchanged chunk is never embedded twice, even
when it moves). The hnswlib index (cosine, labels = chunk ids) is derived: it is saved
to a temporary file and renamed, and rebuilt from SQLite's vectors when it is missing,
damaged or out of step. A process killed mid-write loses nothing that was committed.

Use one :class:`IndexStore` from one thread (the index's writer); :meth:`search_lexical`
and :meth:`search_dense` may be called from other threads (own connection, a lock).
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chunking import Chunk

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DIM = 384
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, hash TEXT);
CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, path TEXT NOT NULL, start_line INTEGER, end_line INTEGER,
                                  symbol TEXT, kind TEXT, text TEXT, hash TEXT);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(hash);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(words, tokenize='unicode61');
CREATE TABLE IF NOT EXISTS vectors(hash TEXT PRIMARY KEY, vec BLOB NOT NULL);
"""


def words(text: str) -> str:
    """Identifier-aware words for full-text search.

    Each identifier gives itself (lowercased) and its parts: ``readConfigFile`` ->
    ``readconfigfile read config file``; ``max_file_size`` -> ``max_file_size max file size``.
    """
    out = []
    for ident in _IDENT.findall(text):
        low = ident.lower()
        out.append(low)
        parts = [p.lower() for piece in ident.split("_") for p in _CAMEL.findall(piece)]
        if len(parts) > 1:
            out.extend(parts)
    return " ".join(out)


def fts_query(text: str) -> str:
    """An FTS5 query matching any of the words of ``text`` (BM25 ranks by how many and how rare)."""
    terms = sorted(set(words(text).split()))
    return " OR ".join(f'"{t}"' for t in terms[:64])


@dataclass(frozen=True)
class Hit:
    """One search result: a chunk and its score (higher is better)."""

    chunk_id: int
    path: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    text: str
    score: float


class IndexStore:
    """The index of one workspace folder, in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.db_path = directory / "index.sqlite"
        self.ann_path = directory / "vectors.hnsw"
        self.db = self._open()
        self._read = sqlite3.connect(self.db_path, check_same_thread=False)
        self._read_lock = threading.Lock()
        self._ann_lock = threading.Lock()
        self.ann = self._load_ann()

    # -- SQLite ----------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        """Open the database; a damaged one or one of an older schema is started afresh."""
        for attempt in (1, 2):
            try:
                db = sqlite3.connect(self.db_path)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("SELECT count(*) FROM chunks").fetchone()
                return db
            except sqlite3.DatabaseError as e:
                if attempt == 2:
                    raise
                log.warning("index database %s is unusable (%s): rebuilding it", self.db_path, e)
                try:
                    db.close()
                except Exception:
                    pass
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
                self.ann_path.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def file_state(self) -> dict[str, tuple[int, int]]:
        """path -> (mtime_ns, size) of every indexed file."""
        return {p: (m, s) for p, m, s in self.db.execute("SELECT path, mtime_ns, size FROM files")}

    def replace_file(self, path: str, mtime_ns: int, size: int, content_hash: str, chunks: list[Chunk]) -> list[int]:
        """Replace one file's chunks (no commit). Returns the ids of the chunks removed."""
        removed = self._delete_chunks(path)
        self.db.execute("INSERT OR REPLACE INTO files(path, mtime_ns, size, hash) VALUES (?,?,?,?)",
                        (path, mtime_ns, size, content_hash))
        for c in chunks:
            cur = self.db.execute(
                "INSERT INTO chunks(path, start_line, end_line, symbol, kind, text, hash) VALUES (?,?,?,?,?,?,?)",
                (c.path, c.start_line, c.end_line, c.symbol, c.kind, c.text, c.hash))
            self.db.execute("INSERT INTO chunks_fts(rowid, words) VALUES (?, ?)",
                            (cur.lastrowid, words(f"{c.path} {c.symbol} {c.text}")))
        return removed

    def remove_file(self, path: str) -> list[int]:
        """Forget a file (no commit). Returns the ids of the chunks removed."""
        removed = self._delete_chunks(path)
        self.db.execute("DELETE FROM files WHERE path = ?", (path,))
        return removed

    def _delete_chunks(self, path: str) -> list[int]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
        if ids:
            marks = ",".join("?" * len(ids))
            self.db.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", ids)
            self.db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", ids)
        return ids

    def commit(self) -> None:
        self.db.commit()

    def counts_readonly(self) -> tuple[int, int, int]:
        """(files, chunks, chunks with an embedding); safe from any thread."""
        with self._read_lock:
            files = self._read.execute("SELECT count(*) FROM files").fetchone()[0]
            chunks = self._read.execute("SELECT count(*) FROM chunks").fetchone()[0]
            embedded = self._read.execute(
                "SELECT count(*) FROM chunks c JOIN vectors v ON v.hash = c.hash").fetchone()[0]
        return files, chunks, embedded

    def chunks_without_vectors(self, after_id: int, limit: int) -> list[tuple[int, str, str]]:
        """(id, hash, text) of chunks after ``after_id`` whose content has no embedding yet, by id.

        Walking forward with ``after_id`` keeps a full pass linear in the number of chunks.
        """
        rows = self.db.execute(
            "SELECT c.id, c.hash, c.text FROM chunks c WHERE c.id > ? AND NOT EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.hash = c.hash) ORDER BY c.id LIMIT ?", (after_id, limit)).fetchall()
        seen, out = set(), []
        for row in rows:  # the same content twice in one batch is embedded once
            if row[1] not in seen:
                seen.add(row[1])
                out.append(row)
        return out or rows[:0]

    def chunks_missing_from_ann(self) -> list[tuple[int, bytes]]:
        """(id, vector) of chunks that have an embedding but are not in the ANN index."""
        with self._ann_lock:
            present = set(self.ann.get_ids_list())
        rows = self.db.execute("SELECT c.id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash").fetchall()
        return [(i, vec) for i, vec in rows if i not in present]

    def ids_with_hash(self, content_hash: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE hash = ?", (content_hash,))]

    def add_vectors(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Store embeddings by content hash and put every chunk with that hash in the ANN index."""
        self.db.executemany("INSERT OR REPLACE INTO vectors(hash, vec) VALUES (?, ?)",
                            [(h, v.astype(np.float32).tobytes()) for h, v in items])
        self.db.commit()
        ids, vecs = [], []
        for h, v in items:
            for i in self.ids_with_hash(h):
                ids.append(i)
                vecs.append(v)
        self.ann_add(ids, vecs)

    # -- the ANN index ---------------------------------------------------------------------
    def _new_ann(self, capacity: int):
        import hnswlib
        ann = hnswlib.Index(space="cosine", dim=DIM)
        ann.init_index(max_elements=max(1024, capacity), ef_construction=200, M=16, allow_replace_deleted=True)
        ann.set_ef(64)
        return ann

    def _load_ann(self):
        """Load the ANN file; rebuild it from SQLite's vectors when missing or out of step."""
        import hnswlib
        n_chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        if self.ann_path.is_file():
            try:
                ann = hnswlib.Index(space="cosine", dim=DIM)
                ann.load_index(str(self.ann_path), max_elements=max(1024, 2 * n_chunks), allow_replace_deleted=True)
                ann.set_ef(64)
                return ann
            except (RuntimeError, ValueError, OSError) as e:
                log.warning("ANN index %s is damaged (%s): rebuilding it from the database", self.ann_path, e)
        self.ann = self._new_ann(2 * n_chunks)
        rows = self.db.execute("SELECT c.id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash").fetchall()
        if rows:
            self.ann.add_items(np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]),
                               np.array([i for i, _ in rows]), replace_deleted=True)
        return self.ann

    def ann_add(self, ids: list[int], vectors: list[np.ndarray]) -> None:
        if not ids:
            return
        with self._ann_lock:
            need = self.ann.get_current_count() + len(ids)
            if need > self.ann.get_max_elements():
                self.ann.resize_index(max(need, 2 * self.ann.get_max_elements()))
            self.ann.add_items(np.stack(vectors), np.array(ids), replace_deleted=True)

    def ann_remove(self, ids: list[int]) -> None:
        with self._ann_lock:
            present = set(self.ann.get_ids_list())
            for i in ids:
                if i in present:
                    try:
                        self.ann.mark_deleted(i)
                    except RuntimeError:
                        pass

    def save_ann(self) -> None:
        """Write the ANN index to a temporary file and rename it into place."""
        tmp = self.ann_path.with_name(f"{self.ann_path.name}.tmp-{os.getpid()}")
        with self._ann_lock:
            self.ann.save_index(str(tmp))
        os.replace(tmp, self.ann_path)

    # -- search (any thread) ---------------------------------------------------------------
    def _hits(self, rows, scores: dict[int, float]) -> list[Hit]:
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], scores[r[0]]) for r in rows]

    def _chunks(self, ids: list[int]) -> list[tuple]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._read_lock:
            rows = self._read.execute(f"SELECT id, path, start_line, end_line, symbol, kind, text FROM chunks "
                                      f"WHERE id IN ({marks})", ids).fetchall()
        by_id = {r[0]: r for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def search_lexical(self, query: str, k: int) -> list[Hit]:
        """BM25 over identifier-aware words; best first."""
        q = fts_query(query)
        if not q:
            return []
        with self._read_lock:
            rows = self._read.execute(
                "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) "
                "LIMIT ?", (q, k)).fetchall()
        scores = {i: -s for i, s in rows}
        return self._hits(self._chunks([i for i, _ in rows]), scores)

    def search_dense(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Nearest chunks by cosine similarity; best first."""
        with self._ann_lock:
            k = min(k, self.ann.get_current_count())
            while k > 0:
                try:
                    labels, distances = self.ann.knn_query(vector.reshape(1, -1), k=k)
                    break
                except RuntimeError:  # fewer live elements than k (some are marked deleted)
                    k //= 2
            if k == 0:
                return []
        ids = [int(i) for i in labels[0]]
        scores = {i: 1.0 - float(d) for i, d in zip(ids, distances[0])}
        return self._hits(self._chunks(ids), scores)

    def close(self) -> None:
        try:
            self.save_ann()
        except Exception as e:
            log.warning("could not save the ANN index: %s", e)
        self.db.close()
        self._read.close()
