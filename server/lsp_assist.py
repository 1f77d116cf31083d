"""LSP wiring of the assistant: code actions, hover, and the deepseek.* commands of the panel.

Handlers take the document, build a :class:`server.assist.CodeSpan`, run the assistant
off the event loop (model work happens on the chat engine's thread), stream replies as
``deepseek/chatDelta`` notifications and convert results. The contract is in
docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams

from .assist import (Assistant, AssistError, AssistStore, CodeSpan, Reply, docstring_and_signature,
                     enclosing_definition)
from .lsp_server import DeepseekLanguageServer, _plain, server, uri_to_path
from .manager import ModelManager, ModelState
from index.chunking import chunk_file, language_for

log = logging.getLogger(__name__)

CMD_EXPLAIN, CMD_REFACTOR, CMD_WRITE_TESTS = "deepseek.explain", "deepseek.refactor", "deepseek.writeTests"
CMD_CHAT, CMD_CHAT_HISTORY, CMD_CHAT_RESET = "deepseek.chat", "deepseek.chatHistory", "deepseek.chatReset"
CHAT_DELTA = "deepseek/chatDelta"


class AssistantHost:
    """The chat model and the assistant, created on first use (loading obeys the RAM check)."""

    def __init__(self) -> None:
        self.models = ModelManager("chat")
        self.assistant: Assistant | None = None
        self._lock = asyncio.Lock()
        self._store: AssistStore | None = None

    @property
    def store(self) -> AssistStore:
        if self._store is None:
            self._store = AssistStore()
        return self._store

    async def get(self, ls: DeepseekLanguageServer) -> Assistant:
        async with self._lock:
            s = ls.settings
            target = s.backend_kind if s.chat_backend == "same" else s.chat_backend
            if target == "openai":
                if not s.backend_url:
                    raise JsonRpcInternalError("chat goes to an OpenAI-compatible server but backend.url is not set")
                key = ("openai", s.backend_url, s.backend_api_key, s.backend_model)
                if self.assistant is None or getattr(self.assistant, "key", None) != key:
                    from .remote import OpenAIBackend
                    self.assistant = Assistant(None, s.backend_model or "remote", self.store,
                                               remote=OpenAIBackend(s.backend_url, s.backend_api_key, s.backend_model))
                    self.assistant.key = key
                self.assistant.max_tokens = s.chat_max_tokens
                self.assistant.context_tokens = s.chat_context_tokens
                return self.assistant
            chat = s.chat_model
            wanted = dataclasses.replace(
                s, model_path=chat if chat and (chat.endswith(".gguf") or "/" in chat) else s.model_path,
                model_name=chat if chat and not (chat.endswith(".gguf") or "/" in chat) else s.model_name)
            if chat and wanted.model_path == s.model_path and chat.endswith(".gguf"):
                wanted = dataclasses.replace(wanted, model_name=None)
            status = await asyncio.get_running_loop().run_in_executor(None, self.models.load, wanted)
            if not status.loaded:
                if status.state is ModelState.CRASHED:
                    ls.crashed_notice(f"chat model {status.error}")
                raise JsonRpcInternalError(f"the chat model is not available: {status.error}")
            if self.assistant is None or self.assistant.remote is not None or self.assistant.model_name != status.name:
                self.assistant = Assistant(self.models.engine, status.name or "model", self.store)
            self.assistant.max_tokens = s.chat_max_tokens
            self.assistant.context_tokens = s.chat_context_tokens
            return self.assistant


host = AssistantHost()
server.shutdown_hooks.append(host.models.shutdown)


def _arg(args: tuple) -> dict[str, Any]:
    arg = _plain(args[0]) if args else {}
    if not isinstance(arg, dict):
        raise JsonRpcInvalidParams("expected one object argument")
    return arg


def _span(ls: DeepseekLanguageServer, arg: dict[str, Any]) -> CodeSpan:
    """The code a command is about: its range (whole lines), or the definition around an empty one.

    Raises:
        JsonRpcInvalidParams: unknown document, range outside it, not code, nothing selected.
    """
    uri, rng = arg.get("uri"), arg.get("range")
    if not isinstance(uri, str) or not isinstance(rng, dict):
        raise JsonRpcInvalidParams("expected {uri, range}")
    path = uri_to_path(uri)
    doc = ls.workspace.text_documents.get(uri)
    if doc is not None:
        text = doc.source
    elif path is not None and path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        raise JsonRpcInvalidParams(f"{uri} is neither open nor a file")
    if path is None:
        raise JsonRpcInvalidParams(f"{uri} is not a file on disk")
    language = language_for(path.name)
    if language is None:
        raise JsonRpcInvalidParams(f"{path.name} is not code deepseek-lsp knows (Python, JavaScript, TypeScript, Go, "
                                   "Rust, Java, C, C++)")
    n_lines = len(text.splitlines()) or 1
    try:
        start, end = int(rng["start"]["line"]), int(rng["end"]["line"])
        end_char = int(rng["end"].get("character", 0))
        start_char = int(rng["start"].get("character", 0))
    except (KeyError, TypeError, ValueError):
        raise JsonRpcInvalidParams("range must be {start: {line, character}, end: {line, character}}") from None
    if start < 0 or end < start or start >= n_lines:
        raise JsonRpcInvalidParams(f"range lines {start}-{end} are outside the document ({n_lines} lines)")
    if end > start and end_char == 0:
        end -= 1  # a selection ending at the start of a line does not include that line
    end = min(end, n_lines - 1)
    symbol = ""
    if start == end and start_char == end_char:  # nothing selected: the definition around the cursor
        found = enclosing_definition(path.name, text, start)
        if found is None:
            raise JsonRpcInvalidParams("select some code, or put the cursor inside a function or class")
        start, end, symbol = found
    else:
        inner = enclosing_definition(path.name, text, start)
        symbol = inner[2] if inner and inner[0] == start else ""
    code = "".join(text.splitlines(keepends=True)[start:end + 1])
    if not code.strip():
        raise JsonRpcInvalidParams("the selection is empty")
    return CodeSpan(path, text, start, end, language, symbol)


def _streamer(ls: DeepseekLanguageServer):
    loop = asyncio.get_running_loop()

    def on_delta(session_id: str, delta: str) -> None:  # engine thread -> loop
        loop.call_soon_threadsafe(ls.protocol.notify, CHAT_DELTA, {"sessionId": session_id, "delta": delta})
    return on_delta


async def _run(fn, *args):
    try:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    except AssistError as e:
        raise JsonRpcInvalidParams(str(e)) from None


def _lines_range(start: int, end: int) -> types.Range:
    return types.Range(start=types.Position(line=start, character=0), end=types.Position(line=end + 1, character=0))


@server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
    code_action_kinds=[types.CodeActionKind.Empty, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.Source]))
def code_action(ls: DeepseekLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    """Explain, Refactor and Write tests for the selection or the definition around the cursor.

    Instant: nothing runs until one is chosen."""
    uri = params.text_document.uri
    doc = ls.workspace.text_documents.get(uri)
    path = uri_to_path(uri)
    if doc is None or path is None or language_for(path.name) is None:
        return None
    rng = params.range
    if rng.start == rng.end:
        found = enclosing_definition(path.name, doc.source, rng.start.line)
        if found is None:
            return None
        rng = _lines_range(found[0], found[1])
    arg = {"uri": uri, "range": {"start": {"line": rng.start.line, "character": rng.start.character},
                                 "end": {"line": rng.end.line, "character": rng.end.character}}}
    actions = [("Explain", CMD_EXPLAIN, types.CodeActionKind.Empty),
               ("Refactor", CMD_REFACTOR, types.CodeActionKind.RefactorRewrite),
               ("Write tests", CMD_WRITE_TESTS, types.CodeActionKind.Source)]
    return [types.CodeAction(title=f"deepseek: {title}", kind=kind,
                             command=types.Command(title=title, command=cmd, arguments=[arg]))
            for title, cmd, kind in actions]


@server.command(CMD_EXPLAIN)
async def explain(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    span = _span(ls, _arg(args))
    assistant = await host.get(ls)
    reply = await _run(assistant.explain, span, _streamer(ls))
    return {"markdown": reply.text, "sessionId": reply.session_id, "cacheHit": reply.cache_hit,
            "promptVersion": reply.prompt_version, "references": _references(reply)}


@server.command(CMD_REFACTOR)
async def refactor(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    arg = _arg(args)
    span = _span(ls, arg)
    assistant = await host.get(ls)
    new, reason, reply = await _run(assistant.refactor, span, str(arg.get("instruction") or ""))
    if new is None:
        return {"applied": False, "reason": reason, "edit": None}
    doc = ls.workspace.text_documents.get(span.path.as_uri())
    edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(
            uri=span.path.as_uri(), version=doc.version if doc else None),
        edits=[types.TextEdit(range=_lines_range(span.start_line, span.end_line), new_text=new)])])
    result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="deepseek: refactor"))
    return {"applied": bool(result.applied), "reason": result.failure_reason or "",
            "edit": ls.protocol._converter.unstructure(edit), "cacheHit": reply.cache_hit}


def _test_path(root: Path, span: CodeSpan) -> Path:
    """The conventional test file: tests/test_<module>.py under the workspace (Python), or next to
    the file in the language's convention."""
    stem = span.path.stem
    if span.language == "python":
        return root / "tests" / f"test_{stem}.py"
    if span.language in ("javascript", "typescript"):
        return span.path.with_name(f"{stem}.test{span.path.suffix}")
    if span.language == "go":
        return span.path.with_name(f"{stem}_test.go")
    return span.path.with_name(f"test_{span.path.name}")


@server.command(CMD_WRITE_TESTS)
async def write_tests(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    span = _span(ls, _arg(args))
    roots = ls.workspace_roots()
    root = next((r for r in roots if span.path.resolve().is_relative_to(r.resolve())), span.path.parent)
    target = _test_path(root, span)
    assistant = await host.get(ls)
    code, run, rounds, reason = await _run(assistant.write_tests, span, root, target)
    if code is None:
        return {"applied": False, "reason": reason, "rounds": rounds}
    uri = target.as_uri()
    changes: list[Any] = []
    if target.exists():  # extend the existing test file at its end
        existing = target.read_text(encoding="utf-8", errors="replace")
        n = len(existing.splitlines())
        changes.append(types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
            edits=[types.TextEdit(range=types.Range(start=types.Position(line=n, character=0),
                                                    end=types.Position(line=n, character=0)),
                                  new_text=("\n\n" if existing.strip() else "") + code)]))
    else:
        changes.append(types.CreateFile(uri=uri, options=types.CreateFileOptions(ignore_if_exists=True)))
        changes.append(types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
            edits=[types.TextEdit(range=types.Range(start=types.Position(line=0, character=0),
                                                    end=types.Position(line=0, character=0)), new_text=code)]))
    result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
        edit=types.WorkspaceEdit(document_changes=changes), label="deepseek: write tests"))
    return {"applied": bool(result.applied), "uri": uri, "rounds": rounds,
            "ran": run is not None, "ok": bool(run and run.ok),
            "passed": run.passed if run else [], "failed": run.failed if run else [],
            "output": run.output[-3000:] if run else "", "reason": result.failure_reason or ""}


@server.command(CMD_CHAT)
async def chat(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    arg = _arg(args)
    message = arg.get("message")
    if not isinstance(message, str) or not message.strip():
        raise JsonRpcInvalidParams("deepseek.chat needs {message: string, sessionId?, uri?, range?}")
    context: list[tuple[str, Path | None, int, int, str]] = []
    if isinstance(arg.get("uri"), str):
        path = uri_to_path(arg["uri"])
        doc = ls.workspace.text_documents.get(arg["uri"])
        text = doc.source if doc else (path.read_text(errors="replace") if path and path.is_file() else "")
        if isinstance(arg.get("range"), dict) and text:
            span = _span(ls, {"uri": arg["uri"], "range": arg["range"]})
            context.append((f"Selected code from {span.path.name} (lines {span.start_line + 1}-{span.end_line + 1})",
                            span.path, span.start_line, span.end_line, span.code))
        if text and path is not None:
            n = len(text.splitlines())
            context.append((f"The current file, {path.name}", path, 0, max(0, n - 1), text))
    if ls.index is not None and ls.index.state == "ready":
        results = await asyncio.get_running_loop().run_in_executor(None, ls.index.search, message, 5)
        for r in results:
            context.append((f"From {r.path} (lines {r.start_line + 1}-{r.end_line + 1})", r.file, r.start_line,
                            r.end_line, r.text))
    assistant = await host.get(ls)
    count = (lambda s: ls.models.counter.count(s)) if ls.models.counter is not None else None
    on_delta = _streamer(ls)
    reply = await _run(lambda: assistant.chat(arg.get("sessionId"), message, context, on_delta, count))
    return {"sessionId": reply.session_id, "reply": reply.text, "cacheHit": reply.cache_hit,
            "promptVersion": reply.prompt_version,
            "references": _references(reply)}


def _references(reply: Reply) -> list[dict[str, Any]]:
    """``[{uri, range}]`` of whole lines (end exclusive) for the code a reply is about."""
    return [{"uri": p.resolve().as_uri(),
             "range": {"start": {"line": s, "character": 0}, "end": {"line": e + 1, "character": 0}}}
            for p, s, e in reply.references]


@server.command(CMD_CHAT_HISTORY)
async def chat_history(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    arg = _arg(args) if args else {}
    sid = arg.get("sessionId") or host.store.latest_session()
    return {"sessionId": sid, "messages": host.store.messages(sid) if sid else []}


@server.command(CMD_CHAT_RESET)
async def chat_reset(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    sid = _arg(args).get("sessionId")
    if not isinstance(sid, str) or not host.store.has_session(sid):
        raise JsonRpcInvalidParams("deepseek.chatReset needs the {sessionId} of an existing session")
    host.store.reset(sid)
    return {"sessionId": sid, "reset": True}


@server.feature(types.TEXT_DOCUMENT_HOVER)
async def hover(ls: DeepseekLanguageServer, params: types.HoverParams) -> types.Hover | None:
    """The definition's signature and docstring at once, plus a short model explanation
    (cached by content, capped at hover.timeMs)."""
    uri = params.text_document.uri
    doc = ls.workspace.text_documents.get(uri)
    path = uri_to_path(uri)
    if doc is None or path is None or language_for(path.name) is None:
        return None
    try:
        word = doc.word_at_position(params.position)
    except (IndexError, ValueError):
        return None
    if not word or not (word[0].isalpha() or word[0] == "_"):
        return None
    language = language_for(path.name)
    found = next((c for c in chunk_file(path.name, doc.source) if c.symbol == word and c.kind != "lines"), None)
    where = path.name
    if found is None and ls.index is not None and ls.index.state == "ready":
        hits = await asyncio.get_running_loop().run_in_executor(None, ls.index.search, word, 10, "lexical")
        hit = next((h for h in hits if h.symbol == word), None)
        if hit is not None:
            found = hit
            where = hit.path
            language = language_for(hit.path) or language
    if found is None:
        return None
    signature, docstring = docstring_and_signature(language, found.text)
    parts = [f"```{language}\n{signature}\n```", f"*{where}, line {found.start_line + 1}*"]
    if docstring:
        parts.append(docstring)
    if ls.settings.hover_time_ms > 0:
        try:
            assistant = await asyncio.wait_for(host.get(ls), timeout=ls.settings.hover_time_ms / 1000)
            note = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                None, assistant.hover, word, language, found.text, ls.settings.hover_time_ms / 1000),
                timeout=ls.settings.hover_time_ms / 1000 + 0.5)
            if note:
                parts.append(f"---\n{note}")
        except (asyncio.TimeoutError, JsonRpcInternalError) as e:
            log.info("hover without explanation: %s", e or "time cap")
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value="\n\n".join(parts)))
