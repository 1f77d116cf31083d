"""The rows of one folder's index database: files, chunks (with their words) and vectors.

Plain SQL on a connection the caller holds; no commits (the store decides when, and bumps
the generation with them: :meth:`index.store.IndexStore.commit`). Paths are POSIX,
relative to the folder; chunk lines are 0-based; vectors are float32 bytes keyed by the
chunk's content hash.

Threads: the writing functions run on the writer's connection (the index-writer thread);
the reading ones on whichever connection the caller holds, under that connection's lock
(any thread). This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from .chunking import Chunk
from .lexical import add_words, delete_words

CHUNK_COLUMNS = "id, path, start_line, end_line, symbol, kind, text, secret"


def _marks(ids: list) -> str:
    return ",".join("?" * len(ids))


def file_state(db: sqlite3.Connection, under: str = "") -> dict[str, tuple[int, int]]:
    """path -> (mtime_ns, size) of every indexed file (under the folder ``under``, relative, when given)."""
    if not under:
        rows = db.execute("SELECT path, mtime_ns, size FROM files")
    else:  # a range on the primary key: "a/b/" <= path < "a/b0" ('0' follows '/')
        rows = db.execute("SELECT path, mtime_ns, size FROM files WHERE path >= ? AND path < ?",
                          (under + "/", under + "0"))
    return {p: (m, s) for p, m, s in rows}


def put_file(db: sqlite3.Connection, path: str, mtime_ns: int, size: int, content_hash: str) -> None:
    db.execute("INSERT OR REPLACE INTO files(path, mtime_ns, size, hash) VALUES (?,?,?,?)",
               (path, mtime_ns, size, content_hash))


def delete_file(db: sqlite3.Connection, path: str) -> None:
    db.execute("DELETE FROM files WHERE path = ?", (path,))


def insert_chunks(db: sqlite3.Connection, chunks: list[Chunk]) -> list[int]:
    """Insert chunks and their words; their new ids, in order."""
    ids = []
    for c in chunks:
        cur = db.execute(
            "INSERT INTO chunks(path, start_line, end_line, symbol, kind, text, hash, secret) "
            "VALUES (?,?,?,?,?,?,?,?)", (c.path, c.start_line, c.end_line, c.symbol, c.kind, c.text, c.hash,
                                         int(c.secret)))
        ids.append(cur.lastrowid)
        add_words(db, cur.lastrowid, c)
    return ids


def delete_chunks(db: sqlite3.Connection, path: str) -> list[int]:
    """Delete one file's chunks and their words; the ids deleted."""
    ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
    if ids:
        delete_words(db, ids)
        db.execute(f"DELETE FROM chunks WHERE id IN ({_marks(ids)})", ids)
    return ids


def chunks_by_id(db: sqlite3.Connection, ids: list[int]) -> dict[int, tuple]:
    """id -> (``CHUNK_COLUMNS``) of the chunks among ``ids`` that exist."""
    if not ids:
        return {}
    rows = db.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE id IN ({_marks(ids)})", ids).fetchall()
    return {r[0]: r for r in rows}


def ids_with_hash(db: sqlite3.Connection, content_hash: str) -> list[int]:
    return [r[0] for r in db.execute("SELECT id FROM chunks WHERE hash = ?", (content_hash,))]


def put_vectors(db: sqlite3.Connection, items: list[tuple[str, np.ndarray]]) -> None:
    """Store embeddings (content hash, vector) as float32 bytes."""
    db.executemany("INSERT OR REPLACE INTO vectors(hash, vec) VALUES (?, ?)",
                   [(h, v.astype(np.float32).tobytes()) for h, v in items])


def chunk_vectors(db: sqlite3.Connection, ids: list[int] | None = None) -> list[tuple[int, bytes]]:
    """(chunk id, vector bytes) of every chunk whose content has an embedding (of those among ``ids``)."""
    sql = "SELECT c.id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash"
    if ids is None:
        return db.execute(sql).fetchall()
    return db.execute(f"{sql} WHERE c.id IN ({_marks(ids)})", ids).fetchall()


def chunks_without_vectors(db: sqlite3.Connection, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    """(id, hash, text) of chunks after ``after_id`` whose content has no embedding yet, by id;
    the same content twice in one batch comes once."""
    rows = db.execute(
        "SELECT c.id, c.hash, c.text FROM chunks c WHERE c.id > ? AND NOT EXISTS "
        "(SELECT 1 FROM vectors v WHERE v.hash = c.hash) ORDER BY c.id LIMIT ?", (after_id, limit)).fetchall()
    seen, out = set(), []
    for row in rows:
        if row[1] not in seen:
            seen.add(row[1])
            out.append(row)
    return out or rows[:0]


def chunk_count(db: sqlite3.Connection) -> int:
    return db.execute("SELECT count(*) FROM chunks").fetchone()[0]


def counts(db: sqlite3.Connection) -> tuple[int, int, int]:
    """(files, chunks, chunks with an embedding)."""
    files = db.execute("SELECT count(*) FROM files").fetchone()[0]
    chunks = chunk_count(db)
    embedded = db.execute("SELECT count(*) FROM chunks c JOIN vectors v ON v.hash = c.hash").fetchone()[0]
    return files, chunks, embedded
