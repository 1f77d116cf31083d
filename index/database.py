"""The SQLite file of one folder's index: its schema, its connections, damage, its stamp.

SQLite is the source of truth: files (with mtime, size and content hash), chunks, a
full-text index (FTS5, see :mod:`index.lexical`) and chunk embeddings keyed by the chunk's
content hash. Chunk ids are ``AUTOINCREMENT``: an id is never given to another chunk, even
after deletes. Every commit that changes chunks or vectors bumps ``meta.generation``; the
database's id and generation together are its *stamp* (:func:`db_stamp`), which the ANN
file is checked against (:mod:`index.ann`).

Only the process holding the writer's lock (:mod:`index.writer_lock`) opens the file to
write (:func:`open_writer`), and it rebuilds the database only when it is really damaged
(SQLITE_CORRUPT, SQLITE_NOTADB) or of another schema version, never because it is busy or
locked: connections wait up to BUSY_TIMEOUT_S.

Threads: :func:`open_writer`'s connection belongs to the index-writer thread. A
:class:`SearchConnection` may be used from any thread, one at a time (``with conn as db:``
holds its lock). This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from pathlib import Path

from server.private_files import private_sqlite

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3         # 2: chunk ids AUTOINCREMENT (never reused), meta(generation, db_id); 3: chunks.secret
BUSY_TIMEOUT_S = 30.0      # how long a connection waits for another one's lock before failing
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

SCHEMA = """
CREATE TABLE files(path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, hash TEXT);
CREATE TABLE chunks(id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, start_line INTEGER,
                    end_line INTEGER, symbol TEXT, kind TEXT, text TEXT, hash TEXT,
                    secret INTEGER NOT NULL DEFAULT 0);
CREATE INDEX chunks_path ON chunks(path);
CREATE INDEX chunks_hash ON chunks(hash);
CREATE VIRTUAL TABLE chunks_fts USING fts5(words, tokenize='unicode61');
CREATE TABLE vectors(hash TEXT PRIMARY KEY, vec BLOB NOT NULL);
CREATE TABLE meta(key TEXT PRIMARY KEY, value);
"""


class SchemaMismatch(sqlite3.DatabaseError):
    """The database was written by another schema version (it is rebuilt by the writer)."""


def is_corruption(e: sqlite3.DatabaseError) -> bool:
    """True when ``e`` says the database itself is unusable (damaged, not a database, another schema).

    A busy or locked database (another connection is writing), a full disk, a permission
    or I/O error are not corruption: deleting the index would not help and would destroy
    another process's work.
    """
    if isinstance(e, SchemaMismatch):
        return True
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    message = str(e).lower()
    return "malformed" in message or "not a database" in message


def connect(db_path: Path, read_only: bool, any_thread: bool = False) -> sqlite3.Connection:
    """A connection that waits BUSY_TIMEOUT_S for locks; ``read_only``: ``PRAGMA query_only``."""
    private_sqlite(db_path)  # 0600 before SQLite opens it: its -wal and -shm files follow
    db = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S, check_same_thread=not any_thread)
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    if read_only:
        db.execute("PRAGMA query_only=ON")
    return db


def open_writer(db_path: Path, derived: tuple[Path, ...]) -> sqlite3.Connection:
    """Open the database to write (the writer's lock is held).

    A damaged database or one of another schema is started afresh: its files and the
    ``derived`` files made from it (the ANN stamp and file) are deleted first. Any other
    error (busy, locked, I/O) is raised: nothing is deleted.
    """
    for attempt in (1, 2):
        db = None
        try:
            db = connect(db_path, read_only=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise SchemaMismatch("tables without a schema version")
                # One transaction: a process killed here leaves an empty database, never half a schema.
                db.executescript(f"BEGIN; {SCHEMA} INSERT INTO meta(key, value) VALUES "
                                 f"('db_id', '{uuid.uuid4().hex}'), ('generation', 0); "
                                 f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            elif version != SCHEMA_VERSION:
                raise SchemaMismatch(f"schema version {version}, expected {SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM chunks").fetchone()
            if db_stamp(db) is None:
                raise SchemaMismatch("no generation in meta")
            return db
        except sqlite3.DatabaseError as e:
            if db is not None:
                try:
                    db.rollback()
                    db.close()
                except Exception:
                    pass
            if attempt == 2 or not is_corruption(e):
                raise
            log.warning("index database %s is unusable (%s): rebuilding it", db_path, e)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_path}{suffix}").unlink(missing_ok=True)
            for path in derived:
                path.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def db_stamp(db: sqlite3.Connection) -> str | None:
    """``"<db id> <generation>"``: the state of chunks and vectors; None without a usable schema."""
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return None
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('db_id', 'generation')"))
    except sqlite3.DatabaseError:
        return None
    if "db_id" not in meta or "generation" not in meta:
        return None
    return f"{meta['db_id']} {meta['generation']}"


class SearchConnection:
    """A read-only connection to the database that any thread may use, one at a time.

    ``with conn as db:`` holds its lock for the block and gives the ``sqlite3.Connection``.
    When the writer rebuilds the database (a new file), :meth:`reopen_if_replaced` or
    :meth:`reopen` makes the connection see the new file.
    """

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._lock = threading.Lock()
        self._db = connect(db_path, read_only=True, any_thread=True)
        self._ino = self._file_ino()

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        return self._db

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _file_ino(self) -> int | None:
        try:
            return os.stat(self.db_path).st_ino
        except OSError:
            return None

    def stamp(self) -> str | None:
        """The database's stamp (:func:`db_stamp`), read through this connection."""
        with self as db:
            return db_stamp(db)

    def reopen(self) -> None:
        """A new connection, which sees the file now at ``db_path``."""
        with self as db:
            db.close()
            self._db = connect(self.db_path, read_only=True, any_thread=True)
        self._ino = self._file_ino()

    def reopen_if_replaced(self) -> None:
        """Reopen when the database file was replaced (rebuilt by the writer)."""
        try:
            ino = os.stat(self.db_path).st_ino
        except OSError:
            return
        if ino != self._ino:
            with self as db:
                db.close()
                self._db = connect(self.db_path, read_only=True, any_thread=True)
            self._ino = ino

    def close(self) -> None:
        self._db.close()
