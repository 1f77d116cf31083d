"""Lexical search: identifier-aware words, their FTS5 table and BM25 ranking.

A chunk's words (its path, symbol and text split into identifiers and their parts) go
into the ``chunks_fts`` table under the chunk's id; a query matches any of its own words
and SQLite's ``bm25`` ranks by how many match and how rare they are.

Threads: :func:`words` and :func:`fts_query` are pure (any thread). :func:`add_words` and
:func:`delete_words` run on the writer's connection (the index-writer thread);
:func:`bm25_search` on whatever connection the caller holds (any thread, under that
connection's lock). This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import re
import sqlite3

from .chunking import Chunk

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


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


def add_words(db: sqlite3.Connection, chunk_id: int, chunk: Chunk) -> None:
    """Index the words of one chunk (its path, symbol and text) under its id (no commit)."""
    db.execute("INSERT INTO chunks_fts(rowid, words) VALUES (?, ?)",
               (chunk_id, words(f"{chunk.path} {chunk.symbol} {chunk.text}")))


def delete_words(db: sqlite3.Connection, chunk_ids: list[int]) -> None:
    """Forget the words of these chunks (no commit)."""
    marks = ",".join("?" * len(chunk_ids))
    db.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", chunk_ids)


def bm25_search(db: sqlite3.Connection, query: str, k: int) -> list[tuple[int, float]]:
    """(chunk id, score) of the ``k`` chunks that best match ``query``, best first; the score is
    BM25's negated (higher is better). Empty for a query without words.

    Raises:
        sqlite3.OperationalError: the database has no FTS table yet (another process creates it).
    """
    q = fts_query(query)
    if not q:
        return []
    rows = db.execute("SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                      "ORDER BY bm25(chunks_fts) LIMIT ?", (q, k)).fetchall()
    return [(i, -s) for i, s in rows]
