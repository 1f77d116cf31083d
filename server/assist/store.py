"""The assistant's SQLite file: conversations, the response cache and local metrics.

One file in the user data directory (``~/.local/share/deepseek-lsp/assistant.sqlite``,
WAL mode), shared by every server process of the user; the folder is 0700, the file and its
``-wal``/``-shm`` 0600 (:mod:`server.private_files`). Nothing ever leaves the machine.
Thread-safe: every call takes the store's lock (callers are the event loop and worker
threads).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import platformdirs

from ..models import APP_NAME
from ..private_files import private_dir, private_sqlite
from .records import Reference

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, created REAL, title TEXT);
CREATE TABLE IF NOT EXISTS messages(id INTEGER PRIMARY KEY, session_id TEXT, role TEXT, text TEXT, ts REAL,
                                    model TEXT, prompt_version TEXT, refs TEXT);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session_id, id);
CREATE TABLE IF NOT EXISTS response_cache(key TEXT PRIMARY KEY, reply TEXT, created REAL);
CREATE TABLE IF NOT EXISTS metrics(ts REAL, task TEXT, model TEXT, latency_ms REAL, prompt_tokens INTEGER,
                                   output_tokens INTEGER, cache_hit INTEGER);
"""


def data_dir() -> Path:
    """The user data directory (``~/.local/share/deepseek-lsp``; honours XDG_DATA_HOME)."""
    return Path(platformdirs.user_data_dir(APP_NAME))


@dataclass(frozen=True)
class StoredMessage:
    """One message of a conversation as stored.

    Attributes:
        role: ``user`` or ``assistant``.
        text: the message (Markdown for the assistant).
        timestamp: seconds since the epoch.
        model: the model that answered (assistant messages).
        prompt_version: the prompt pack that produced it (``chat@v1``).
        references: the code the answer used.
    """

    role: str
    text: str
    timestamp: float
    model: str | None = None
    prompt_version: str | None = None
    references: list[Reference] = field(default_factory=list)


@dataclass(frozen=True)
class LatencyRow:
    """Latency of one task type from the local metrics: counts, ms, share of cache hits (0..1)."""

    task: str
    requests: int
    p50_ms: float
    p95_ms: float
    cache_hit_share: float


@dataclass(frozen=True)
class SessionRow:
    """A conversation: its id, title (its first message, cut to 80 characters), start time (epoch s), messages."""

    id: str
    title: str
    created: float
    messages: int


@dataclass(frozen=True)
class MetricRow:
    """One recorded request: time (epoch s), task, model, latency ms, prompt/output tokens, cache hit."""

    ts: float
    task: str
    model: str
    latency_ms: float
    prompt_tokens: int
    output_tokens: int
    cache_hit: bool


def _references(raw: str | None) -> list[Reference]:
    """Stored references: ``{path, start, end}``, or the ``{uri, range}`` rows older versions wrote."""
    out = []
    for r in json.loads(raw or "[]"):
        try:
            if "path" in r:
                out.append(Reference(Path(r["path"]), int(r["start"]), int(r["end"])))
            else:
                path = Path(unquote(urlparse(r["uri"]).path))
                out.append(Reference(path, int(r["range"]["start"]["line"]), int(r["range"]["end"]["line"]) - 1))
        except (KeyError, TypeError, ValueError):
            continue
    return out


class AssistStore:
    """Conversations, response cache and metrics in one SQLite file (WAL). Thread-safe.

    Args:
        path: the database file (default: ``assistant.sqlite`` in :func:`data_dir`); its folder
            is created if needed and made 0700, the file 0600.

    Raises:
        OSError: the folder cannot be created.
    """

    def __init__(self, path: Path | None = None):
        self.path = path or data_dir() / "assistant.sqlite"
        if path is None:  # our own folder: 0700, tightened when an older version left it wider
            private_dir(self.path.parent)
        else:  # a folder the caller chose (/tmp, a project folder): created if missing, never changed
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(private_sqlite(self.path), check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
            self.db.commit()
            return rows

    def new_session(self, title: str) -> str:
        sid = uuid.uuid4().hex[:16]
        self._run("INSERT INTO sessions(id, created, title) VALUES (?,?,?)", (sid, time.time(), title[:80]))
        return sid

    def has_session(self, sid: str) -> bool:
        return bool(self._run("SELECT 1 FROM sessions WHERE id = ?", (sid,)))

    def latest_session(self) -> str | None:
        rows = self._run("SELECT id FROM sessions ORDER BY created DESC LIMIT 1")
        return rows[0][0] if rows else None

    def add_message(self, sid: str, role: str, text: str, model: str | None = None,
                    prompt_version: str | None = None, references: list[Reference] | None = None) -> None:
        refs = [{"path": str(r.path), "start": r.start_line, "end": r.end_line} for r in references or []]
        self._run("INSERT INTO messages(session_id, role, text, ts, model, prompt_version, refs) "
                  "VALUES (?,?,?,?,?,?,?)",
                  (sid, role, text, time.time(), model, prompt_version, json.dumps(refs)))

    def messages(self, sid: str) -> list[StoredMessage]:
        rows = self._run("SELECT role, text, ts, model, prompt_version, refs FROM messages WHERE session_id = ? "
                         "ORDER BY id", (sid,))
        return [StoredMessage(r, t, ts, m, v, _references(refs)) for r, t, ts, m, v, refs in rows]

    def reset(self, sid: str) -> None:
        self._run("DELETE FROM messages WHERE session_id = ?", (sid,))

    def all_sessions(self) -> list[str]:
        return [r[0] for r in self._run("SELECT id FROM sessions ORDER BY created")]

    def sessions(self, query: str = "", limit: int = 50) -> list[SessionRow]:
        """Conversations, newest first; with ``query``, only those with a message holding every word of it.

        Args:
            query: words to look for (case-insensitive substring match), "" for all.
            limit: most rows returned.
        """
        where, args = "", []
        for word in query.split()[:8]:
            where += " AND s.id IN (SELECT session_id FROM messages WHERE text LIKE ? ESCAPE '\\')"
            args.append("%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        rows = self._run("SELECT s.id, s.title, s.created, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) "
                         f"FROM sessions s WHERE 1{where} ORDER BY s.created DESC LIMIT ?", (*args, limit))
        return [SessionRow(sid, title or "", created, n) for sid, title, created, n in rows]

    def metric_rows(self, since: float = 0.0) -> list[MetricRow]:
        """The local metrics recorded since ``since`` (seconds since the epoch), oldest first."""
        rows = self._run("SELECT ts, task, model, latency_ms, prompt_tokens, output_tokens, cache_hit FROM metrics "
                         "WHERE ts >= ? ORDER BY ts", (since,))
        return [MetricRow(ts, task, model or "", lat, p or 0, o or 0, bool(hit)) for ts, task, model, lat, p, o, hit
                in rows]

    def cached(self, key: str) -> str | None:
        rows = self._run("SELECT reply FROM response_cache WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def cache(self, key: str, reply: str) -> None:
        self._run("INSERT OR REPLACE INTO response_cache(key, reply, created) VALUES (?,?,?)",
                  (key, reply, time.time()))

    def metric(self, task: str, model: str, latency_ms: float, prompt_tokens: int, output_tokens: int,
               cache_hit: bool) -> None:
        self._run("INSERT INTO metrics VALUES (?,?,?,?,?,?,?)",
                  (time.time(), task, model, latency_ms, prompt_tokens, output_tokens, int(cache_hit)))

    def latency_table(self) -> list[LatencyRow]:
        """Latency per task type, from the metrics table."""
        out = []
        for (task,) in self._run("SELECT DISTINCT task FROM metrics ORDER BY task"):
            rows = self._run("SELECT latency_ms, cache_hit FROM metrics WHERE task = ? ORDER BY latency_ms", (task,))
            lat = [r[0] for r in rows]
            out.append(LatencyRow(task, len(lat), lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.95 * len(lat)))],
                                  sum(r[1] for r in rows) / len(rows)))
        return out
