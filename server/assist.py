"""Explain, refactor, write tests, hover and chat: the assistant behind code actions and the panel.

The model answers through its own chat template (read from the GGUF, rendered by
llama-cpp-python's Jinja2 formatter) on a chat model of its own (``chatModel``, or a
second instance of the completion model: the weights are memory-mapped and shared, and
the completion model's KV cache is left alone). Replies stream through a callback.

SQLite in the user data directory keeps conversations (sessions and messages, with
model and prompt version), a response cache (an identical request with the same model
and prompt version is answered from it, marked as a cache hit) and local metrics (task,
model, latency, tokens, cache hit). Nothing ever leaves the machine.

Prompt packs are versioned files, ``server/prompts/<task>@v<N>.md``: a system message,
a line ``=== user ===``, and the user message template. The newest version is used and
stored with each answer.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import platformdirs

from index.chunking import DEFINITIONS, language_for, _parser, _name
from index.store import words

from .engine import Engine, LoadedModel
from .models import APP_NAME

log = logging.getLogger(__name__)

OnDelta = Callable[[str, str], None]  # (session id, text delta); called from the engine thread
TEST_TIMEOUT_S = 60        # a generated test run is stopped after this long
REPAIR_ROUNDS = 2          # write-tests: how many times failing tests go back to the model
TEST_MAX_TOKENS = 768      # write-tests: a test module needs more room than a chat answer
RECENT_TURNS = 2           # chat: the last exchanges always come back ...
RELEVANT_TURNS = 2         # ... plus this many older ones most related to the new message
FENCE = re.compile(r"```[\w+#.-]*\n(.*?)```", re.S)


class AssistError(Exception):
    """A request that cannot be served; ``str(e)`` is the message for the user."""


# -- prompt packs --------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptPack:
    task: str
    version: str    # "explain@v1"
    system: str
    user: str

    def render(self, **values: str) -> list[dict[str, str]]:
        class Blank(dict):
            def __missing__(self, key: str) -> str:
                return ""
        return [{"role": "system", "content": self.system.strip()},
                {"role": "user", "content": self.user.format_map(Blank(values)).strip()}]


def load_pack(task: str) -> PromptPack:
    """The newest version of the prompt pack for ``task``, read now (packs are files)."""
    folder = resources.files("server").joinpath("prompts")
    versions = sorted((int(m.group(1)), f.name) for f in folder.iterdir()
                      if (m := re.fullmatch(re.escape(task) + r"@v(\d+)\.md", f.name)))
    if not versions:
        raise AssistError(f"no prompt pack for {task!r}")
    name = versions[-1][1]
    system, _, user = folder.joinpath(name).read_text("utf-8").partition("=== user ===")
    return PromptPack(task, name[:-3], system, user)


# -- storage -------------------------------------------------------------------------------
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


class AssistStore:
    """Conversations, response cache and metrics in one SQLite file (WAL). Thread-safe."""

    def __init__(self, path: Path | None = None):
        self.path = path or data_dir() / "assistant.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
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
                    prompt_version: str | None = None, refs: list | None = None) -> None:
        self._run("INSERT INTO messages(session_id, role, text, ts, model, prompt_version, refs) VALUES (?,?,?,?,?,?,?)",
                  (sid, role, text, time.time(), model, prompt_version, json.dumps(refs or [])))

    def messages(self, sid: str) -> list[dict]:
        rows = self._run("SELECT role, text, ts, model, prompt_version, refs FROM messages WHERE session_id = ? "
                         "ORDER BY id", (sid,))
        return [{"role": r, "text": t, "timestamp": ts, "model": m, "promptVersion": v,
                 "references": json.loads(refs or "[]")} for r, t, ts, m, v, refs in rows]

    def reset(self, sid: str) -> None:
        self._run("DELETE FROM messages WHERE session_id = ?", (sid,))

    def all_sessions(self) -> list[str]:
        return [r[0] for r in self._run("SELECT id FROM sessions ORDER BY created")]

    def cached(self, key: str) -> str | None:
        rows = self._run("SELECT reply FROM response_cache WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def cache(self, key: str, reply: str) -> None:
        self._run("INSERT OR REPLACE INTO response_cache(key, reply, created) VALUES (?,?,?)", (key, reply, time.time()))

    def metric(self, task: str, model: str, latency_ms: float, prompt_tokens: int, output_tokens: int,
               cache_hit: bool) -> None:
        self._run("INSERT INTO metrics VALUES (?,?,?,?,?,?,?)",
                  (time.time(), task, model, latency_ms, prompt_tokens, output_tokens, int(cache_hit)))

    def latency_table(self) -> list[tuple[str, int, float, float, float]]:
        """(task, count, p50 ms, p95 ms, cache hit share) per task type."""
        out = []
        for (task,) in self._run("SELECT DISTINCT task FROM metrics ORDER BY task"):
            rows = self._run("SELECT latency_ms, cache_hit FROM metrics WHERE task = ? ORDER BY latency_ms", (task,))
            lat = [r[0] for r in rows]
            out.append((task, len(lat), lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.95 * len(lat)))],
                        sum(r[1] for r in rows) / len(rows)))
        return out


# -- code helpers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeSpan:
    """A piece of a document: whole lines ``start_line..end_line`` (0-based, inclusive)."""

    path: Path
    text: str           # the whole document
    start_line: int
    end_line: int
    language: str       # tree-sitter / fence language ("python", "javascript", ...; "text" when unknown)
    symbol: str

    @property
    def code(self) -> str:
        return "".join(self.text.splitlines(keepends=True)[self.start_line:self.end_line + 1])


def enclosing_definition(path: str, text: str, line: int) -> tuple[int, int, str] | None:
    """The innermost function, method or class around ``line``: (start, end, name)."""
    language = language_for(path)
    if language is None:
        return None
    kinds = DEFINITIONS[language]
    best = None

    def visit(node) -> None:
        nonlocal best
        for child in node.children:
            if child.start_point[0] <= line <= child.end_point[0]:
                if child.type in kinds:
                    best = (child.start_point[0], child.end_point[0], _name(child))
                visit(child)

    visit(_parser(language).parse(text.encode("utf-8", "replace")).root_node)
    return best


def syntax_errors(language: str, source: str) -> int:
    """ERROR and MISSING nodes tree-sitter finds in ``source`` (0 for unknown languages)."""
    if language == "text":
        return 0
    tree = _parser(language).parse(source.encode("utf-8", "replace"))
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            count += 1
        stack.extend(node.children)
    return count


def code_block(reply: str) -> str | None:
    """The (longest) fenced code block of a model reply, or None.

    An answer cut off by the token limit has an opening fence and no closing one: then
    everything after the opening fence counts (see :func:`parseable_prefix`).
    """
    blocks = FENCE.findall(reply)
    if blocks:
        return max(blocks, key=len)
    opening = list(re.finditer(r"```[\w+#.-]*\n", reply))
    return reply[opening[-1].end():] if opening else None


def parseable_prefix(language: str, code: str) -> str:
    """The longest run of whole lines from the start of ``code`` that parses (for cut-off answers)."""
    lines = code.splitlines(keepends=True)
    for end in range(len(lines), 0, -1):
        candidate = "".join(lines[:end])
        if candidate.strip() and not syntax_errors(language, candidate):
            return candidate
    return ""


def python_tests(code: str, symbol: str, import_line: str) -> str:
    """Tests must test the real code: drop top-level copies of ``symbol`` and import it instead."""
    tree = ast.parse(code)
    lines = code.splitlines(keepends=True)
    for node in reversed(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == symbol:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            del lines[start:node.end_lineno]
    code = "".join(lines)
    if import_line not in code:
        code = import_line + "\n" + code
    return code


def docstring_and_signature(language: str, code: str) -> tuple[str, str]:
    """The definition's first line(s) up to its body, and its docstring / leading comment."""
    lines = code.splitlines()
    sig = []
    for line in lines:
        sig.append(line)
        if line.rstrip().endswith((":", "{")) or ")" in line and language != "python":
            break
    doc = ""
    if language == "python":
        try:
            node = ast.parse(code.lstrip() if not code.startswith((" ", "\t")) else "if 1:\n" + code).body[0]
            if isinstance(node, ast.If):
                node = node.body[0]
            doc = ast.get_docstring(node) or ""
        except (SyntaxError, IndexError):
            doc = ""
    return "\n".join(sig).strip(), doc


# -- results ---------------------------------------------------------------------------------
@dataclass
class Reply:
    """A model answer. ``references`` are (path, start_line, end_line) of the code it used."""

    text: str
    session_id: str | None
    cache_hit: bool
    prompt_version: str
    references: list[tuple[Path, int, int]] = field(default_factory=list)


@dataclass
class TestRun:
    passed: list[str]
    failed: list[str]
    output: str
    ok: bool


# -- the assistant ---------------------------------------------------------------------------
class Assistant:
    """The tasks, on top of a chat model's :class:`Engine`.

    Args:
        engine: owner thread of the chat model (loaded).
        model_name: stored with each answer and in the cache key.
        store: conversations, cache, metrics.
        max_tokens: longest reply.
        context_tokens: budget for everything sent with a chat message (file, selection,
            retrieved chunks, past turns), in tokens.
    """

    def __init__(self, engine: Engine | None, model_name: str, store: AssistStore, max_tokens: int = 512,
                 context_tokens: int = 2048, time_cap_s: float = 120.0, remote=None):
        self.engine, self.model_name, self.store = engine, model_name, store
        self.max_tokens, self.context_tokens, self.time_cap_s = max_tokens, context_tokens, time_cap_s
        self.remote = remote  # an OpenAIBackend: chat goes to /v1/chat/completions instead of `engine`

    # -- generation ------------------------------------------------------------------------
    def _format(self, model: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = model.metadata.get("tokenizer.chat_template")
        if not template:
            raise AssistError(f"{self.model_name} has no chat template; set chatModel to an instruct model")
        llm = model.llm
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        prompt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        return model.tokenize(prompt, add_special=False, parse_special=True)

    def _generate(self, task: str, messages: list[dict[str, str]], pack: PromptPack, session_id: str | None,
                  on_delta: OnDelta | None, max_tokens: int | None = None, time_cap_s: float | None = None,
                  cancel: threading.Event | None = None, use_cache: bool = True) -> Reply:
        """Run one chat completion (blocking, call from a worker thread), with cache and metrics."""
        key = hashlib.sha256(json.dumps([task, self.model_name, pack.version, messages]).encode()).hexdigest()
        t0 = time.monotonic()
        if use_cache and (hit := self.store.cached(key)) is not None:
            if on_delta:
                on_delta(session_id or "", hit)
            self.store.metric(task, self.model_name, (time.monotonic() - t0) * 1000, 0, 0, True)
            return Reply(hit, session_id, True, pack.version)
        cancel = cancel or threading.Event()
        sent = [0]

        def stream(text: str) -> bool:
            if on_delta and len(text) > sent[0]:
                on_delta(session_id or "", text[sent[0]:])
                sent[0] = len(text)
            return False

        def job(model: LoadedModel):
            tokens = self._format(model, messages)
            budget = max_tokens or self.max_tokens
            if len(tokens) + budget > model.n_ctx:
                raise AssistError(f"the request is {len(tokens):,} tokens; with {budget} for the answer it does not fit "
                                  f"the model's context of {model.n_ctx:,}. Select less code or raise model.nCtx.")
            return len(tokens), model.generate(tokens, max_tokens=budget, cancel=cancel,
                                               deadline=time.monotonic() + (time_cap_s or self.time_cap_s),
                                               judge=stream)
        if self.remote is not None:
            from .remote import BackendUnavailable
            try:
                result = self.remote.chat(messages, max_tokens=max_tokens or self.max_tokens, cancel=cancel,
                                          cap_s=time_cap_s or self.time_cap_s, on_text=stream)
            except BackendUnavailable as e:
                raise AssistError(str(e)) from None
            text, finish, n_prompt, n_out = result.text.strip(), result.finish, 0, 0
        else:
            n_prompt, gen = self.engine.submit(job).result()
            text, finish, n_out = gen.text.strip(), gen.finish, gen.generated_tokens
        if finish not in ("cancelled", "timeout") and text:
            self.store.cache(key, text)
        self.store.metric(task, self.model_name, (time.monotonic() - t0) * 1000, n_prompt, n_out, False)
        return Reply(text, session_id, False, pack.version)

    # -- tasks -----------------------------------------------------------------------------
    def explain(self, span: CodeSpan, on_delta: OnDelta | None = None) -> Reply:
        pack = load_pack("explain")
        sid = self.store.new_session(f"Explain {span.symbol or span.path.name}")
        question = f"Explain `{span.symbol or span.path.name}` ({span.path.name}:{span.start_line + 1}-{span.end_line + 1})"
        self.store.add_message(sid, "user", question)
        messages = pack.render(symbol=span.symbol or "this code", path=span.path.name, start_line=str(span.start_line + 1),
                               end_line=str(span.end_line + 1), language=span.language, code=span.code)
        reply = self._generate("explain", messages, pack, sid, on_delta)
        # The answer always names the code it is about, whatever the model wrote.
        heading = f"**`{span.symbol}`** in `{span.path.name}`, lines {span.start_line + 1}-{span.end_line + 1}\n\n" \
            if span.symbol else f"`{span.path.name}`, lines {span.start_line + 1}-{span.end_line + 1}\n\n"
        reply.text = heading + reply.text
        reply.references = [(span.path, span.start_line, span.end_line)]
        self.store.add_message(sid, "assistant", reply.text, self.model_name, pack.version,
                               [_ref(p, s, e) for p, s, e in reply.references])
        return reply

    def refactor(self, span: CodeSpan, instruction: str = "") -> tuple[str | None, str, Reply]:
        """The rewritten code for the span, or None with the reason it is refused."""
        pack = load_pack("refactor")
        messages = pack.render(path=span.path.name, language=span.language, code=span.code,
                               instruction=(f"Instruction: {instruction.strip()}" if instruction.strip() else
                                            "Make it clearer and simpler."))
        budget = max(self.max_tokens, len(span.code) // 2 + 128)  # room for the whole rewrite
        reply = self._generate("refactor", messages, pack, None, None, max_tokens=budget)
        new = code_block(reply.text)
        if new is None:
            return None, "the model's answer held no code block", reply
        if "```" not in reply.text[reply.text.find("```") + 3:]:
            return None, f"the answer was cut off after {budget} tokens; nothing was changed", reply
        new = _drop_redefinitions(span, new)
        new = _match_indent(span.code, new)
        lines = span.text.splitlines(keepends=True)
        after = "".join(lines[:span.start_line]) + new + "".join(lines[span.end_line + 1:])
        before_errors, after_errors = syntax_errors(span.language, span.text), syntax_errors(span.language, after)
        if after_errors > before_errors:
            return None, (f"the rewritten code does not parse ({after_errors - before_errors} new syntax error(s)); "
                          "nothing was changed"), reply
        if new.strip() == span.code.strip():
            return None, "the model proposed no change", reply
        if span.symbol and not re.search(rf"\b{re.escape(span.symbol)}\b", new):
            return None, (f"the rewrite no longer defines `{span.symbol}`, which other code may call; "
                          "nothing was changed"), reply
        return new, "", reply

    def write_tests(self, span: CodeSpan, root: Path, test_path: Path) -> tuple[str | None, TestRun | None, int, str]:
        """Tests for the span: (test code or None, last run, rounds, reason when refused).

        Python: pytest, run in a subprocess with no network, repaired up to REPAIR_ROUNDS
        times with the failure shown to the model. Other languages: written, parsed, not run.
        """
        pack = load_pack("tests")
        framework = {"python": "pytest", "javascript": "Jest", "typescript": "Jest", "go": "Go's testing package",
                     "rust": "Rust's #[test]", "java": "JUnit 5"}.get(span.language, "the usual framework")
        rel = span.path.resolve().relative_to(root.resolve()) if span.path.resolve().is_relative_to(root.resolve()) \
            else Path(span.path.name)
        module = ".".join(rel.with_suffix("").parts)
        import_line = f"from {module} import {span.symbol}" if span.language == "python" and span.symbol \
            else f"import {module}"
        feedback, run, code = "", None, None
        for round_no in range(REPAIR_ROUNDS + 1):
            messages = pack.render(framework=framework, symbol=span.symbol or "this code", path=str(rel),
                                   import_line=import_line, language=span.language, code=span.code, feedback=feedback)
            reply = self._generate("tests", messages, pack, None, None, use_cache=round_no == 0,
                                   max_tokens=max(self.max_tokens, TEST_MAX_TOKENS))
            candidate = code_block(reply.text)
            if candidate is None:
                feedback = "\nYour answer had no fenced code block. Answer with the test module in one code block."
                continue
            candidate = parseable_prefix(span.language, candidate)
            if span.language == "python" and candidate:
                candidate = python_tests(candidate, span.symbol, import_line)
            if not candidate or (span.language == "python" and "def test" not in candidate):
                feedback = ("\nYour answer had no complete test function. Write short test functions named "
                            f"test_..., that import `{span.symbol}` (do not copy it).")
                continue
            code = candidate
            if span.language != "python":
                return code, None, round_no + 1, ""
            run = run_pytest(root, test_path.name, code)
            if run.ok:
                return code, run, round_no + 1, ""
            feedback = (f"\nThese tests failed:\n```\n{run.output[-2000:]}\n```\nFix the tests (the code under test is "
                        f"right unless a test shows a real bug):\n```python\n{code}\n```")
        if code is None:
            return None, None, REPAIR_ROUNDS + 1, "the model did not produce tests that parse"
        return code, run, REPAIR_ROUNDS + 1, ""

    def hover(self, symbol: str, language: str, code: str, time_cap_s: float) -> str | None:
        """A one-line explanation, from the cache or the model within ``time_cap_s``; None if late."""
        pack = load_pack("hover")
        messages = pack.render(symbol=symbol, language=language, code=code[:4000])
        try:
            reply = self._generate("hover", messages, pack, None, None, max_tokens=60, time_cap_s=time_cap_s)
        except AssistError:
            return None
        return reply.text or None

    def chat(self, session_id: str | None, message: str, context: list[tuple[str, Path | None, int, int, str]],
             on_delta: OnDelta | None = None, count: Callable[[str], int] | None = None) -> Reply:
        """Answer ``message`` in a session (a new one when None or unknown).

        Args:
            context: (label, path, start, end, text) pieces, most important first: the
                selection, the current file, retrieved chunks. Kept within the budget.
            count: token counter for the budget (characters / 4 when None).
        """
        count = count or (lambda s: len(s) // 4 + 1)
        if count(message) > self.context_tokens:
            raise AssistError(f"the message is about {count(message):,} tokens, over the chat budget of "
                              f"{self.context_tokens:,} (chat.contextTokens). Shorten it or select less.")
        pack = load_pack("chat")
        if not session_id or not self.store.has_session(session_id):
            session_id = self.store.new_session(message)
        history = self.store.messages(session_id)
        budget = self.context_tokens - count(message)
        turns = _relevant_turns(history, message)
        chosen_turns = []
        for turn in turns:
            n = sum(count(m["text"]) for m in turn)
            if n <= budget:
                chosen_turns.append(turn)
                budget -= n
        parts, refs = [], []
        for label, path, start, end, text in context:
            block = f"{label}:\n```\n{text.rstrip()}\n```\n"
            n = count(block)
            if n > budget:
                continue
            budget -= n
            parts.append(block)
            if path is not None:
                refs.append((path, start, end))
        messages = pack.render(context="\n".join(parts), message=message)
        system, user = messages
        past = [{"role": m["role"], "content": m["text"]} for turn in sorted(chosen_turns, key=lambda t: t[0]["timestamp"])
                for m in turn]
        full = [system, *past, user]
        self.store.add_message(session_id, "user", message)
        reply = self._generate("chat", full, pack, session_id, on_delta)
        reply.references = refs
        self.store.add_message(session_id, "assistant", reply.text, self.model_name, pack.version,
                               [_ref(p, s, e) for p, s, e in refs])
        return reply


def _ref(path: Path, start: int, end: int) -> dict:
    return {"uri": path.resolve().as_uri(), "range": {"start": {"line": start, "character": 0},
                                                       "end": {"line": end + 1, "character": 0}}}


def _relevant_turns(history: list[dict], message: str) -> list[list[dict]]:
    """Past exchanges to bring back: the most recent ones, then the older ones sharing the most
    words with the new message. Never the whole history of a long conversation."""
    turns, current = [], []
    for m in history:
        if m["role"] == "user" and current:
            turns.append(current)
            current = []
        current.append(m)
    if current:
        turns.append(current)
    recent, older = turns[-RECENT_TURNS:], turns[:-RECENT_TURNS]
    want = set(words(message).split())

    def overlap(turn: list[dict]) -> float:
        have = set(words(" ".join(m["text"] for m in turn)).split())
        return len(want & have) / (1 + len(have)) ** 0.5
    ranked = sorted((t for t in older if overlap(t) > 0), key=overlap, reverse=True)[:RELEVANT_TURNS]
    return recent[::-1] + ranked


def _drop_redefinitions(span: CodeSpan, new: str) -> str:
    """Remove from a rewrite any top-level definition of a name defined elsewhere in the file.

    A small model likes to append its own versions of the helpers it saw; applied, they
    would shadow the real ones.
    """
    from index.chunking import chunk_file
    lines = span.text.splitlines(keepends=True)
    rest = "".join(lines[:span.start_line]) + "\n" * (span.end_line - span.start_line + 1) + "".join(lines[span.end_line + 1:])
    elsewhere = {c.symbol for c in chunk_file(span.path.name, rest) if c.symbol and c.kind != "lines"} - {span.symbol}
    new_lines = new.splitlines(keepends=True)
    drop: set[int] = set()
    for c in chunk_file(span.path.name, new):
        if c.symbol in elsewhere and not new_lines[c.start_line][:1].isspace():
            first = c.start_line
            while first > 0 and new_lines[first - 1].lstrip().startswith("@"):
                first -= 1  # its decorators go too
            drop.update(range(first, c.end_line + 1))
    kept = "".join(line for i, line in enumerate(new_lines) if i not in drop)
    return re.sub(r"\n{3,}$", "\n", kept)


def _match_indent(original: str, new: str) -> str:
    """Re-indent ``new`` to the original's first-line indentation; end with a newline."""
    import textwrap
    first = next((ln for ln in original.splitlines() if ln.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    body = textwrap.indent(textwrap.dedent(new), indent, lambda ln: bool(ln.strip()))
    return body if body.endswith("\n") else body + "\n"


def run_pytest(root: Path, name: str, code: str) -> TestRun:
    """Run a test module with pytest in a subprocess: workspace on the import path, no network,
    a time limit. The module is written to a temporary folder, never into the workspace."""
    with tempfile.TemporaryDirectory(prefix="deepseek-tests-") as folder:
        test_file = Path(folder) / name
        test_file.write_text(code, encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", folder, str(test_file)]
        if _can_unshare():
            cmd = ["unshare", "-rn", *cmd]  # a network namespace of its own: no network at all
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
                   PYTHONDONTWRITEBYTECODE="1")
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
            output = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            output = f"(stopped after {TEST_TIMEOUT_S} s)\n{e.stdout or ''}"
            return TestRun([], [], output, False)
    passed = re.findall(r"^(\S+::\S+) PASSED", output, re.M)
    failed = re.findall(r"^FAILED (\S+::\S+)", output, re.M)
    # -q prints no per-test lines for passes: count them from the summary.
    summary = re.search(r"(\d+) passed", output)
    if not passed and summary:
        passed = [f"{name}: {summary.group(1)} passed"]
    ok = proc.returncode == 0 and bool(summary)
    return TestRun(passed, failed, output, ok)


_UNSHARE: bool | None = None


def _can_unshare() -> bool:
    global _UNSHARE
    if _UNSHARE is None:
        try:
            _UNSHARE = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _UNSHARE = False
    return _UNSHARE
