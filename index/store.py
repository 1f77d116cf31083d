"""Persistent storage of one workspace's index: SQLite (WAL) plus an hnswlib ANN file.

SQLite is the source of truth: files (with mtime, size and content hash), chunks, a
full-text index (FTS5, BM25 ranking) over identifier-aware words, and chunk embeddings
keyed by the chunk's content hash (so an unchanged chunk is never embedded twice, even
when it moves). The hnswlib index (cosine, labels = chunk ids) is derived:

- chunk ids are ``AUTOINCREMENT``: an id is never given to another chunk, even after
  deletes, so a label always names the chunk whose vector it holds (or a deleted one);
- every commit that changes chunks or vectors bumps ``meta.generation``; the ANN file is
  saved with a sidecar stamp (``vectors.hnsw.stamp``: database id and generation),
  written atomically after the index file. At load, a missing or different stamp means
  the file is out of step (a process killed between a commit and a save): the ANN is
  rebuilt from SQLite's vectors. A process killed mid-write loses nothing committed.

Several processes (two editor windows on one folder) share one index directory. The one
that holds ``writer.lock`` (``flock``) writes; the others open the same files read-only
(``PRAGMA query_only``): they search, never index, never delete, and may take the lock
later (:meth:`IndexStore.try_become_writer`). Only the writer rebuilds a database, and
only when it is really damaged (SQLITE_CORRUPT, SQLITE_NOTADB) or of another schema
version, never because it is busy or locked: connections wait up to BUSY_TIMEOUT_S.

Threads: use one :class:`IndexStore` from one thread (the index's writer) for everything
that writes; :meth:`search_lexical`, :meth:`search_dense` and :meth:`counts_readonly` may
be called from any thread (their own connection, locks).
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.private_files import private_dir, private_file, private_sqlite

from .chunking import Chunk

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3         # 2: chunk ids AUTOINCREMENT (never reused), meta(generation, db_id); 3: chunks.secret
DIM = 384
BUSY_TIMEOUT_S = 30.0      # how long a connection waits for another one's lock before failing
ANN_RECHECK_S = 1.0        # a read-only store looks for a newer ANN file at most this often
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
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


class WriterLock:
    """The advisory lock (``flock``, exclusive, never waited for) of the process writing an index directory.

    The lock file is never deleted (deleting a lock file races with other processes taking it).
    The kernel drops the lock when the process dies, however it dies.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; False at once otherwise."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(private_file(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:  # a read-only cache directory: read what is there
            log.warning("cannot open the index lock %s: %s", self.path, e)
            return False
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                import msvcrt
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


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
        ann_rebuilt: the ANN index was rebuilt from SQLite at the last load (its file was
            missing, damaged or out of step with the database).
    """

    def __init__(self, directory: Path):
        self.directory = private_dir(directory)
        self.db_path = directory / "index.sqlite"
        self.ann_path = directory / "vectors.hnsw"
        self.stamp_path = directory / "vectors.hnsw.stamp"
        for older in (self.ann_path, self.stamp_path):  # written 0644 by versions before 0600
            private_file(older, create=False)
        self._lock = WriterLock(directory / "writer.lock")
        self._read_lock = threading.Lock()
        self._ann_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._dirty = False             # chunks or vectors changed since the last commit
        self._ann_checked = 0.0         # read-only stores: when the ANN stamp was last compared
        self.ann_stamp: str | None = None   # the database state the ANN in memory matches
        self.ann_rebuilt = False
        self.writable = self._lock.acquire()
        if self.writable:
            try:
                self.db = self._open_writer()
            except sqlite3.OperationalError as e:  # busy beyond BUSY_TIMEOUT_S, I/O: read what is there
                log.warning("cannot write the index %s (%s): reading it only", directory, e)
                self._lock.release()
                self.writable = False
            except BaseException:
                self._lock.release()
                raise
        if not self.writable:
            log.info("index %s is written by another process: this one reads it", directory)
            self.db = self._connect(read_only=True)
        self._read = self._connect(read_only=True, any_thread=True)
        self._db_ino = self._ino()
        self.ann = self._load_ann()

    # -- SQLite ----------------------------------------------------------------------------
    def _connect(self, read_only: bool, any_thread: bool = False) -> sqlite3.Connection:
        private_sqlite(self.db_path)  # 0600 before SQLite opens it: its -wal and -shm files follow
        db = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, check_same_thread=not any_thread)
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        if read_only:
            db.execute("PRAGMA query_only=ON")
        return db

    def _ino(self) -> int | None:
        try:
            return os.stat(self.db_path).st_ino
        except OSError:
            return None

    def _open_writer(self) -> sqlite3.Connection:
        """Open the database to write (the lock is held); a damaged one or one of another schema
        is started afresh. Any other error (busy, locked, I/O) is raised: nothing is deleted."""
        for attempt in (1, 2):
            db = None
            try:
                db = self._connect(read_only=False)
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
                if self._db_stamp(db) is None:
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
                log.warning("index database %s is unusable (%s): rebuilding it", self.db_path, e)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
                self.stamp_path.unlink(missing_ok=True)
                self.ann_path.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    @staticmethod
    def _db_stamp(db: sqlite3.Connection) -> str | None:
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

    def generation(self) -> int:
        """The database's generation: bumped by every commit that changes chunks or vectors (any thread)."""
        with self._read_lock:
            row = self._read.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
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
            db = self._open_writer()
        except sqlite3.DatabaseError as e:
            log.warning("cannot write the index %s: %s", self.directory, e)
            self._lock.release()
            return False
        old, self.db = self.db, db
        old.close()
        with self._read_lock:  # the file may have been rebuilt: a new connection sees the new one
            self._read.close()
            self._read = self._connect(read_only=True, any_thread=True)
        self._db_ino = self._ino()
        self.writable = True
        ann = self._load_ann()
        with self._ann_lock:
            self.ann = ann
        log.info("index %s: this process writes it now", self.directory)
        return True

    def _check_writable(self) -> None:
        if not self.writable:
            raise RuntimeError(f"index {self.directory} is read-only in this process (another one writes it)")

    def file_state(self, under: str = "") -> dict[str, tuple[int, int]]:
        """path -> (mtime_ns, size) of every indexed file (under the folder ``under``, relative, when given)."""
        if not under:
            rows = self.db.execute("SELECT path, mtime_ns, size FROM files")
        else:  # a range on the primary key: "a/b/" <= path < "a/b0" ('0' follows '/')
            rows = self.db.execute("SELECT path, mtime_ns, size FROM files WHERE path >= ? AND path < ?",
                                   (under + "/", under + "0"))
        return {p: (m, s) for p, m, s in rows}

    def replace_file(self, path: str, mtime_ns: int, size: int, content_hash: str, chunks: list[Chunk]) -> list[int]:
        """Replace one file's chunks (no commit). Returns the ids of the chunks removed.

        New chunks whose content already has an embedding (unchanged functions of an edited
        file, moved code) go into the ANN index at once under their new ids: the embedder
        only sees chunks without a vector.
        """
        self._check_writable()
        removed = self._delete_chunks(path)
        self.db.execute("INSERT OR REPLACE INTO files(path, mtime_ns, size, hash) VALUES (?,?,?,?)",
                        (path, mtime_ns, size, content_hash))
        new_ids = []
        for c in chunks:
            cur = self.db.execute(
                "INSERT INTO chunks(path, start_line, end_line, symbol, kind, text, hash, secret) "
                "VALUES (?,?,?,?,?,?,?,?)", (c.path, c.start_line, c.end_line, c.symbol, c.kind, c.text, c.hash,
                                             int(c.secret)))
            new_ids.append(cur.lastrowid)
            self.db.execute("INSERT INTO chunks_fts(rowid, words) VALUES (?, ?)",
                            (cur.lastrowid, words(f"{c.path} {c.symbol} {c.text}")))
        if new_ids:
            marks = ",".join("?" * len(new_ids))
            known = self.db.execute(f"SELECT c.id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash "
                                    f"WHERE c.id IN ({marks})", new_ids).fetchall()
            self.ann_add([i for i, _ in known], [np.frombuffer(v, dtype=np.float32) for _, v in known])
        self._dirty = self._dirty or bool(removed or chunks)
        return removed

    def remove_file(self, path: str) -> list[int]:
        """Forget a file (no commit). Returns the ids of the chunks removed."""
        self._check_writable()
        removed = self._delete_chunks(path)
        self.db.execute("DELETE FROM files WHERE path = ?", (path,))
        self._dirty = self._dirty or bool(removed)
        return removed

    def _delete_chunks(self, path: str) -> list[int]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
        if ids:
            marks = ",".join("?" * len(ids))
            self.db.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", ids)
            self.db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", ids)
        return ids

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
        """Store embeddings by content hash (committed) and put every chunk with that hash in the ANN index."""
        self._check_writable()
        self.db.executemany("INSERT OR REPLACE INTO vectors(hash, vec) VALUES (?, ?)",
                            [(h, v.astype(np.float32).tobytes()) for h, v in items])
        self._dirty = self._dirty or bool(items)
        self.commit()
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

    def _read_stamp(self) -> str | None:
        try:
            return self.stamp_path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def _load_ann_file(self, capacity: int):
        import hnswlib
        ann = hnswlib.Index(space="cosine", dim=DIM)
        ann.load_index(str(self.ann_path), max_elements=max(1024, capacity), allow_replace_deleted=True)
        ann.set_ef(64)
        return ann

    def _load_ann(self):
        """The ANN index: its file when its stamp matches the database, else rebuilt from SQLite's vectors.

        Runs on the thread that owns the store (the writer), or in ``__init__``. A writer saves a
        rebuilt index at once (so the next start loads it); a read-only store keeps it in memory.
        """
        self.ann_rebuilt = False
        with self._read_lock:
            stamp = self._db_stamp(self._read)
            n_chunks = self._read.execute("SELECT count(*) FROM chunks").fetchone()[0] if stamp else 0
        on_disk = self._read_stamp()
        if stamp is not None and on_disk == stamp and self.ann_path.is_file():
            try:
                ann = self._load_ann_file(2 * n_chunks)
                self.ann_stamp = stamp
                return ann
            except (RuntimeError, ValueError, OSError, MemoryError) as e:
                log.warning("ANN index %s is damaged (%s): rebuilding it from the database", self.ann_path, e)
        elif self.ann_path.is_file():
            log.warning("ANN index %s is out of step with the database (stamp %s, database %s): "
                        "rebuilding it from the database", self.ann_path, on_disk, stamp)
        with self._read_lock:
            self._read.execute("BEGIN")  # one snapshot: the stamp and the vectors it stands for
            try:
                stamp = self._db_stamp(self._read)
                n_chunks = self._read.execute("SELECT count(*) FROM chunks").fetchone()[0] if stamp else 0
                rows = self._read.execute(
                    "SELECT c.id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash").fetchall() if stamp else []
            finally:
                self._read.rollback()
        ann = self._new_ann(2 * n_chunks)
        if rows:
            ann.add_items(np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]),
                          np.array([i for i, _ in rows]), replace_deleted=True)
        self.ann_stamp = stamp
        self.ann_rebuilt = True
        if self.writable and stamp is not None:
            with self._ann_lock:
                self.ann = ann
            try:
                self.save_ann()
            except OSError as e:
                log.warning("could not save the ANN index: %s", e)
        return ann

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
        """Save the ANN index and its stamp (writer thread; nothing on a read-only store).

        Pending changes are committed first, so the index in memory matches the database's
        generation. Order: the old stamp goes, the index file is renamed into place, then the
        new stamp is renamed into place: a process killed at any point leaves no stamp or the
        right one, never a stamp on the wrong file.
        """
        if not self.writable:
            return
        self.commit()
        with self._read_lock:
            stamp = self._db_stamp(self._read)
        if stamp is None:
            return
        if stamp == self.ann_stamp and self._read_stamp() == stamp and self.ann_path.is_file():
            return  # nothing changed since the last save
        tmp = private_file(self.ann_path.with_name(f"{self.ann_path.name}.tmp-{os.getpid()}"))
        with self._ann_lock:
            self.ann.save_index(str(tmp))
        self.stamp_path.unlink(missing_ok=True)
        os.replace(tmp, self.ann_path)
        tmp_stamp = private_file(self.stamp_path.with_name(f"{self.stamp_path.name}.tmp-{os.getpid()}"))
        with open(tmp_stamp, "w", encoding="utf-8") as f:
            f.write(stamp + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_stamp, self.stamp_path)
        self.ann_stamp = stamp

    def _refresh_ann(self) -> None:
        """Read-only stores (any thread, at most every ANN_RECHECK_S): follow the writer.

        The writer's newer ANN file is loaded once its stamp matches the database. Until then
        the ANN in memory is older than the database, which is harmless: ids are never reused,
        so a stale label names the right chunk or a deleted one (dropped from results). When the
        writer has rebuilt the database (another file, another ``db_id``: ids start over), the
        connection is reopened and the ANN in memory, whose labels name nothing any more, is
        replaced at once: by the writer's file if in step, else rebuilt from the new database.
        """
        now = time.monotonic()
        if self.writable or now - self._ann_checked < ANN_RECHECK_S:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another search thread is at it
        try:
            self._ann_checked = now
            self._reopen_if_replaced()
            with self._read_lock:
                stamp = self._db_stamp(self._read)
                n_chunks = self._read.execute("SELECT count(*) FROM chunks").fetchone()[0] if stamp else 0
            if stamp is None or stamp == self.ann_stamp:
                return
            same_db = self.ann_stamp is not None and stamp.split()[0] == self.ann_stamp.split()[0]
            if self._read_stamp() == stamp:
                try:
                    ann = self._load_ann_file(2 * n_chunks)
                    with self._ann_lock:
                        self.ann, self.ann_stamp = ann, stamp
                    return
                except (RuntimeError, ValueError, OSError, MemoryError):
                    pass  # being replaced right now
            if not same_db:
                ann = self._load_ann()
                with self._ann_lock:
                    self.ann = ann
        finally:
            self._refresh_lock.release()

    def _reopen_if_replaced(self) -> None:
        """Reopen the search connection when the database file was replaced (rebuilt by the writer)."""
        try:
            ino = os.stat(self.db_path).st_ino
        except OSError:
            return
        if ino != self._db_ino:
            with self._read_lock:
                self._read.close()
                self._read = self._connect(read_only=True, any_thread=True)
            self._db_ino = ino

    # -- search (any thread) ---------------------------------------------------------------
    def _hits(self, rows, scores: dict[int, float]) -> list[Hit]:
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], scores[r[0]], bool(r[7])) for r in rows]

    def _chunks(self, ids: list[int]) -> list[tuple]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._read_lock:
            rows = self._read.execute(f"SELECT id, path, start_line, end_line, symbol, kind, text, secret FROM chunks "
                                      f"WHERE id IN ({marks})", ids).fetchall()
        by_id = {r[0]: r for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def search_lexical(self, query: str, k: int) -> list[Hit]:
        """BM25 over identifier-aware words; best first ([] while another process creates the database)."""
        q = fts_query(query)
        if not q:
            return []
        try:
            with self._read_lock:
                rows = self._read.execute(
                    "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                    "ORDER BY bm25(chunks_fts) LIMIT ?", (q, k)).fetchall()
            scores = {i: -s for i, s in rows}
            return self._hits(self._chunks([i for i, _ in rows]), scores)
        except sqlite3.OperationalError as e:
            if self.writable:
                raise
            log.debug("index %s not searchable yet: %s", self.directory, e)
            return []

    def search_dense(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Nearest chunks by cosine similarity; best first."""
        self._refresh_ann()
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
        """Save the ANN index (writer), close the connections, give the writer lock back."""
        try:
            self.save_ann()
        except Exception as e:
            log.warning("could not save the ANN index: %s", e)
        try:
            self.db.close()
            self._read.close()
        finally:
            self._lock.release()
