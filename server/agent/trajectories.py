"""Agent runs kept as training data: stored in SQLite, exported as JSONL with span offsets.

Every run (:class:`~.records.AgentRun`) goes to the table ``agent_runs`` of the assistant's
own file (``~/.local/share/deepseek-lsp/assistant.sqlite``, beside the conversations of
:mod:`server.assist.store`; 0700 folder, 0600 file, WAL). ``deepseek-lsp export --format
trajectories`` writes one JSON object per run: each step's text (the model's turn, a blank
line, ``Observation: ...``) with its spans ``reason``, ``action``, ``observation`` as
character offsets (:meth:`~.records.Step.spans`) and, with a :class:`SpanTokenizer`, as
token offsets in that tokenizer (the student model's), for span-specific losses. Only runs
that finished with edits that passed their tests (:attr:`~.records.AgentRun.verified`) are
marked ``"training": true``. Nothing leaves the machine. No pygls or lsprotocol here.
"""

from __future__ import annotations

import bisect
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO, Any

from ..private_files import private_dir, private_sqlite
from .records import AgentRun, Observation, Step, ToolCall

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_runs(id TEXT PRIMARY KEY, created REAL, problem TEXT, model TEXT,
                                      prompt_version TEXT, outcome TEXT, answer TEXT, verified INTEGER,
                                      seconds REAL, steps TEXT, edits TEXT, edit_check TEXT);
"""
_COLUMNS = ("id", "created", "problem", "model", "prompt_version", "outcome", "answer", "verified", "seconds",
            "steps", "edits", "edit_check")


class TrajectoryStore:
    """Agent runs in the table ``agent_runs`` of one SQLite file (WAL). Thread-safe.

    Args:
        path: the database file (default: ``assistant.sqlite`` in :func:`server.assist.store.data_dir`,
            whose folder is made 0700); the file is made 0600.

    Raises:
        OSError: the folder cannot be created.
        sqlite3.Error: the file is not a database.
    """

    def __init__(self, path: Path | None = None):
        from ..assist.store import data_dir
        self.path = path or data_dir() / "assistant.sqlite"
        if path is None:
            private_dir(self.path.parent)
        else:  # a folder the caller chose: created if missing, never changed
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(private_sqlite(self.path), check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def save(self, run: AgentRun) -> None:
        """Store ``run``, or replace the row with its id (the first save's ``created`` time is kept)."""
        steps = [{"index": s.index, "text": s.text, "thought": s.thought, "tool": s.tool,
                  "args": s.call.args if s.call is not None else None, "observation": s.observation.text,
                  "ok": s.observation.ok, "seconds": s.seconds, "tokens": s.tokens, "draft": s.draft}
                 for s in run.steps]
        edits = [{"path": str(e.path), "old": e.old, "new": e.new} for e in run.edits]
        check = None if run.check is None else {"verdict": run.check.verdict, "summary": run.check.summary,
                                                 "tests": list(run.check.tests), "failed": list(run.check.failed)}
        row = (run.id, time.time(), run.problem, run.model, run.prompt_version, run.outcome, run.answer,
               int(run.verified), run.seconds, json.dumps(steps, ensure_ascii=False),
               json.dumps(edits, ensure_ascii=False), None if check is None else json.dumps(check, ensure_ascii=False))
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("id", "created"))
        with self.lock:
            self.db.execute(f"INSERT INTO agent_runs({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(row))}) "
                            f"ON CONFLICT(id) DO UPDATE SET {updates}", row)
            self.db.commit()

    def runs(self, only_verified: bool = False) -> list[dict[str, Any]]:
        """The stored runs, oldest first, as plain dicts.

        Returns:
            ``{"id", "created" (epoch s), "problem", "model", "prompt_version", "outcome", "answer",
            "verified" (bool), "seconds", "steps" (list of {"index", "text", "thought", "tool", "args"
            (dict or None for a malformed turn), "observation", "ok", "seconds", "tokens", "draft"}), "edits"
            (list of {"path", "old", "new"}), "check" ({"verdict", "summary", "tests", "failed"} or None)}``.
        """
        where = " WHERE verified = 1" if only_verified else ""
        with self.lock:
            rows = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM agent_runs{where} ORDER BY created, rowid"
                                   ).fetchall()
        out = []
        for row in rows:
            d = dict(zip(_COLUMNS, row))
            d["verified"] = bool(d["verified"])
            d["steps"], d["edits"] = json.loads(d["steps"]), json.loads(d["edits"])
            for step in d["steps"]:
                step.setdefault("draft", False)  # stored before drafts existed
            raw = d.pop("edit_check")
            d["check"] = json.loads(raw) if raw is not None else None
            out.append(d)
        return out

    def count(self) -> int:
        """How many runs are stored."""
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM agent_runs").fetchone()[0]

    def close(self) -> None:
        with self.lock:
            self.db.close()


class SpanTokenizer:
    """A model's tokenizer (vocabulary only, no weights) that turns character spans into token spans.

    Args:
        path: a GGUF file (a whole model or a vocab-only file); :attr:`name` is its file name.

    Raises:
        ValueError: llama.cpp cannot read the file.
    """

    def __init__(self, path: Path | str):
        from ..engine.llama_api import Native
        from ..engine.loading import open_llama
        self.path = Path(path)
        self.name = self.path.name
        llama_log = logging.getLogger("llama.cpp")
        saved = llama_log.level
        llama_log.setLevel(logging.ERROR)  # a vocab-only context warns about n_ctx_train 0, which means nothing
        try:
            self.llm = open_llama(self.path, vocab_only=True, n_ctx=256)
        finally:
            llama_log.setLevel(saved)
        self.native = Native(self.llm)

    def tokens(self, text: str) -> list[int]:
        """``text`` as token ids: no BOS, special-token text kept as plain text."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def n_tokens(self, text: str) -> int:
        """How many tokens ``text`` is (as :meth:`tokens`)."""
        return len(self.tokens(text))

    def token_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Tokenize ``text`` once; each token's ``(start, end)`` in characters of ``text``.

        A token that holds part of a multi-byte character covers that whole character (so two
        neighbours can share it). A leading space the tokenizer adds (SentencePiece) is skipped.

        Raises:
            ValueError: the tokens' bytes do not give ``text`` back (a normalizing tokenizer).
        """
        data = text.encode("utf-8")
        tokens = self.tokens(text)
        pieces = [self.native.piece(t) for t in tokens]  # whole pieces, however long
        joined = b"".join(pieces)
        skip = 1 if joined != data and joined[:1] == b" " and joined[1:] == data else 0
        if joined[skip:] != data:
            raise ValueError(f"the tokenizer {self.name} does not give this text back from its tokens; "
                             "token offsets cannot be computed with it")
        char_of = [0] * (len(data) + 1)  # byte offset -> index of the character holding that byte
        b = 0
        for i, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            char_of[b:b + n] = [i] * n
            b += n
        char_of[len(data)] = len(text)
        offsets, pos = [], -skip
        for p in pieces:
            start, end = max(pos, 0), max(pos + len(p), 0)
            offsets.append((char_of[start], char_of[end - 1] + 1 if end > start else char_of[start]))
            pos += len(p)
        return tokens, offsets

    def token_spans(self, text: str, spans: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Character spans ``(kind, start, end)`` of ``text`` as token spans ``(kind, token_start, token_end)``.

        ``text`` is tokenized once (:meth:`tokens`); a span's token range is the half-open range
        of the tokens that overlap it, so a token across a boundary (``">\\n\\n"``) belongs to
        both spans. An empty span gives an empty range where it starts.

        Raises:
            ValueError: as :meth:`token_offsets`.
        """
        _, offsets = self.token_offsets(text)
        starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
        out = []
        for kind, start, end in spans:
            first = bisect.bisect_right(ends, start)  # first token ending after the span's start
            last = bisect.bisect_left(starts, end) if end > start else first  # tokens starting before its end
            out.append((kind, first, max(first, last)))
        return out

    def close(self) -> None:
        self.llm.close()


def _step(raw: dict[str, Any]) -> Step:
    """A stored step (:meth:`TrajectoryStore.runs`) as a :class:`Step` again."""
    call = ToolCall(raw["tool"], raw["args"]) if raw.get("args") is not None else None
    return Step(index=raw["index"], text=raw["text"], thought=raw.get("thought", ""), call=call,
                observation=Observation(raw["observation"], bool(raw["ok"])), seconds=raw.get("seconds", 0.0),
                tokens=raw.get("tokens", 0), draft=raw.get("draft", False))


def export_trajectories(store: TrajectoryStore, out: IO[str], tokenizer: SpanTokenizer | None,
                        only_verified: bool = False) -> int:
    """Write the stored runs to ``out`` as JSONL, oldest first; returns how many lines were written.

    Each line: ``{"id", "problem", "model", "prompt_version", "outcome", "verified", "training"
    (= verified), "answer", "tokenizer" (file name or null), "steps": [{"index", "tool", "ok", "draft",
    "text", "spans": [{"kind", "start", "end", "token_start", "token_end"}]}], "edits": [{"path",
    "old", "new"}], "check"}``. Offsets are half-open, characters of ``text`` (Python ``str``
    indices) and tokens of ``tokenizer`` (``token_start``/``token_end`` left out without one).

    Raises:
        ValueError: the tokenizer cannot map a step's text (see :meth:`SpanTokenizer.token_offsets`).
        OSError: writing to ``out`` failed.
    """
    n = 0
    for run in store.runs(only_verified):
        steps = []
        for raw in run["steps"]:
            text, spans = _step(raw).spans()
            rows = [{"kind": k, "start": s, "end": e} for k, s, e in spans]
            if tokenizer is not None:
                for row, (_, ts, te) in zip(rows, tokenizer.token_spans(text, spans)):
                    row.update(token_start=ts, token_end=te)
            steps.append({"index": raw["index"], "tool": raw["tool"], "ok": raw["ok"],
                          "draft": raw.get("draft", False), "text": text, "spans": rows})
        line = {"id": run["id"], "problem": run["problem"], "model": run["model"],
                "prompt_version": run["prompt_version"], "outcome": run["outcome"], "verified": run["verified"],
                "training": run["verified"], "answer": run["answer"],
                "tokenizer": tokenizer.name if tokenizer is not None else None, "steps": steps,
                "edits": run["edits"], "check": run["check"]}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        n += 1
    return n


def find_tokenizer(spec: str | None) -> tuple[Path | None, str]:
    """The GGUF file to take token offsets from, and a sentence saying which (or why none).

    Args:
        spec: a GGUF path, or a catalog model name that is installed (assembled, or its pip part
            packages installed: assembled here if needed); None: the smallest installed catalog model.

    Returns:
        ``(path, note)``; ``path`` None when ``spec`` is None and no catalog model is installed.

    Raises:
        server.models.ModelError: ``spec`` is not a GGUF file, an unknown name, or not installed.
    """
    from ..models import (
        ModelError,
        check_gguf_file,
        ensure_model_file,
        is_installed,
        load_catalog,
        parts_installed,
        resolve_model,
    )
    _, entries = load_catalog()
    if spec is not None and spec not in entries:
        if not (spec.endswith(".gguf") or Path(spec).expanduser().exists()):
            raise ModelError(f"--tokenizer {spec!r} is neither a GGUF file nor a catalog model "
                             f"(known: {', '.join(sorted(entries))})")
        path = Path(spec).expanduser()
        check_gguf_file(path)
        return path, f"token offsets in {path.name}"
    here = [e for e in entries.values() if is_installed(e) or parts_installed(e)]
    if spec is None:
        if not here:
            return None, ("no catalog model is installed: no token offsets (give --tokenizer FILE.gguf, "
                          "or install one: deepseek-lsp models pull NAME)")
        spec = min(here, key=lambda e: e.size_mb or float("inf")).name
    elif entries[spec] not in here:
        raise ModelError(f"model {spec} is not installed. Fix: deepseek-lsp models pull {spec}")
    return ensure_model_file(resolve_model(None, spec)), f"token offsets in {spec}'s tokenizer"


__all__ = ["SpanTokenizer", "TrajectoryStore", "export_trajectories", "find_tokenizer"]
