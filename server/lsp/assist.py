"""LSP wiring of the assistant: code actions, hover, and the deepseek.* commands of the panel.

Module-level handlers, registered from :data:`server.lsp.routes.ROUTES`. They take the
document, build a :class:`server.assist.CodeSpan`, run the task on the ``assist-*`` threads of
the server's :class:`server.assist.host.AssistHost` (``ls.assist``; model
work itself runs on the chat engine's owner thread, ``engine-chat``), stream replies as
``deepseek/chatDelta`` notifications and convert results with :mod:`server.lsp.convert`.
Code actions, hover and the definition around a cursor take the document's tree-sitter parse
from the server's :class:`server.parse_cache.ParseCache` (``ls.parses``; made on a worker
thread, once per version);
a document over ``completion.maxFileSizeKb`` (completion's rule) gets no code actions and no
hover. The contract is in docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Any, Callable, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams

from index.syntax import grammar_for

from ..assist import Assistant, AssistError, CodeSpan, ContextItem, Reference
from ..assist.host import ModelUnavailable
from ..assist.symbols import HoverCard, definition_of, hover_card, is_symbol
from ..assist.targets import where_tests_go, workspace_root
from ..completion import Unsuitable, check_document
from ..engine.schedule import ASSISTANT, SCHEDULE
from ..languages import names_with_grammar
from ..manager import ModelState
from .convert import (
    SOURCE,
    InvalidPosition,
    lines_range,
    lsp_append_or_create,
    lsp_chat_history,
    lsp_chat_reset,
    lsp_code_actions,
    lsp_hover,
    lsp_refactor,
    lsp_references,
    lsp_replace_lines,
    lsp_reply,
    lsp_write_tests,
    plain,
    snapshot,
    split_lines,
    to_json,
    uri_to_path,
)
from .state import DeepseekLanguageServer

log = logging.getLogger(__name__)
T = TypeVar("T")

CMD_EXPLAIN, CMD_REFACTOR, CMD_WRITE_TESTS = "deepseek.explain", "deepseek.refactor", "deepseek.writeTests"
CMD_CHAT, CMD_CHAT_HISTORY, CMD_CHAT_RESET = "deepseek.chat", "deepseek.chatHistory", "deepseek.chatReset"
CHAT_DELTA = "deepseek/chatDelta"
CHAT_SEARCH_RESULTS = 5   # retrieved chunks offered with a chat message
HOVER_SEARCH_RESULTS = 10
MOVED_ON = "the document changed while the rewrite was being written; nothing was changed (run Refactor again)"


async def _assistant(ls: DeepseekLanguageServer) -> Assistant:
    """The assistant for the server's settings.

    Raises:
        JsonRpcInternalError: the chat model cannot be used (the message says why).
    """
    try:
        return await ls.assist.get(ls.settings)
    except ModelUnavailable as e:
        if e.status is not None and e.status.state is ModelState.CRASHED:
            ls.backend.crashed(f"chat model {e.status.error}")
        raise JsonRpcInternalError(str(e)) from None


async def _run_with_progress(ls: DeepseekLanguageServer, title: str, fn: Callable[..., T], *args: Any) -> T:
    """:func:`_run` with work-done progress: each step the task reports (``on_progress``) is shown,
    and the progress's cancel button stops the task like ``$/cancelRequest`` does."""
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    token = await ls.begin_progress("assist", title, "starting", True)
    progress = ls.work_done_progress
    if token is not None:
        progress.tokens[token].add_done_callback(lambda f: cancel.set())

    def on_progress(message: str) -> None:  # assist thread -> loop
        if token is not None:
            loop.call_soon_threadsafe(lambda: progress.report(token, types.WorkDoneProgressReport(message=message)))
    try:
        return await ls.assist.run(fn, *args, cancel=cancel, on_progress=on_progress)
    except AssistError as e:
        raise JsonRpcInvalidParams(str(e)) from None
    finally:
        if token is not None:
            progress.end(token, types.WorkDoneProgressEnd(message="cancelled" if cancel.is_set() else "done"))


async def _run(ls: DeepseekLanguageServer, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """:meth:`AssistHost.run`, with an AssistError as InvalidParams (its message for the user)."""
    try:
        return await ls.assist.run(fn, *args, **kwargs)
    except AssistError as e:
        raise JsonRpcInvalidParams(str(e)) from None


def _arg(args: tuple) -> dict[str, Any]:
    arg = plain(args[0]) if args else {}
    if not isinstance(arg, dict):
        raise JsonRpcInvalidParams("expected one object argument")
    return arg


def _unsuitable(ls: DeepseekLanguageServer, text: str) -> str | None:
    """Why ``text`` gets no code actions, hover or definition lookup (completion's rule:
    over ``completion.maxFileSizeKb`` or binary), or None when it may be parsed."""
    try:
        check_document(text, ls.settings.completion_max_file_size_kb)
    except Unsuitable as e:
        return str(e)
    return None


async def _span(ls: DeepseekLanguageServer, arg: dict[str, Any]) -> CodeSpan:
    """The code a command is about: its range (whole lines), or the definition around an empty one.

    The text and version are those of the document when the request arrived. The definition is
    found in its parse (:class:`ParseCache`, on a worker thread); a document over
    ``completion.maxFileSizeKb`` is not parsed: a selection names no symbol, an empty range is refused.

    Raises:
        JsonRpcInvalidParams: unknown document, range outside it, not code, nothing selected,
            an empty range in a document too big to parse.
    """
    uri, rng = arg.get("uri"), arg.get("range")
    if not isinstance(uri, str) or not isinstance(rng, dict):
        raise JsonRpcInvalidParams("expected {uri, range}")
    path = uri_to_path(uri)
    doc = ls.document(uri)
    if doc is not None:
        text, version = doc.source, doc.version
    elif path is not None and path.is_file():
        text, version = path.read_text(encoding="utf-8", errors="replace"), None
    else:
        raise JsonRpcInvalidParams(f"{uri} is neither open nor a file")
    if path is None:
        raise JsonRpcInvalidParams(f"{uri} is not a file on disk")
    grammar = grammar_for(path.name)
    if grammar is None:
        raise JsonRpcInvalidParams(f"{path.name} is not code deepseek-lsp knows ({names_with_grammar()})")
    n_lines = len(split_lines(text)) or 1
    try:
        start, end = int(rng["start"]["line"]), int(rng["end"]["line"])
        end_char = int(rng["end"].get("character", 0))
        start_char = int(rng["start"].get("character", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise JsonRpcInvalidParams("range must be {start: {line, character}, end: {line, character}}") from None
    if start < 0 or end < start or start >= n_lines:
        raise JsonRpcInvalidParams(f"range lines {start}-{end} are outside the document ({n_lines} lines)")
    if end > start and end_char == 0:
        end -= 1  # a selection ending at the start of a line does not include that line
    end = min(end, n_lines - 1)
    symbol = ""
    too_big = _unsuitable(ls, text)
    parsed = await ls.parses.get(arg["uri"], version, path.name, text) if too_big is None else None
    if start == end and start_char == end_char:  # nothing selected: the definition around the cursor
        if too_big is not None:
            raise JsonRpcInvalidParams(f"{too_big}: select the code (the definition around the cursor is "
                                       "not looked for in a file this big)")
        found = parsed.definition_at(start) if parsed is not None else None
        if found is None:
            raise JsonRpcInvalidParams("select some code, or put the cursor inside a function or class")
        start, end, symbol = found.start_line, found.end_line, found.name
    else:
        inner = parsed.definition_at(start) if parsed is not None else None
        symbol = inner.name if inner and inner.start_line == start else ""
    span = CodeSpan(path, text, start, end, grammar, symbol, version)
    if not span.code.strip():
        raise JsonRpcInvalidParams("the selection is empty")
    return span


def _moved_on(ls: DeepseekLanguageServer, span: CodeSpan) -> bool:
    """The document is no longer the text the request saw (edited, opened with other text, or changed on disk)."""
    doc = ls.document(span.path.as_uri())
    if doc is not None:
        return doc.version != span.version if span.version is not None else doc.source != span.text
    try:
        return span.version is not None or span.path.read_text(encoding="utf-8", errors="replace") != span.text
    except OSError:
        return True


def _streamer(ls: DeepseekLanguageServer) -> Callable[[str, str], None]:
    loop = asyncio.get_running_loop()

    def on_delta(session_id: str, delta: str) -> None:  # engine thread -> loop
        loop.call_soon_threadsafe(ls.protocol.notify, CHAT_DELTA, {"sessionId": session_id, "delta": delta})
    return on_delta


def _chat_stream(ls: DeepseekLanguageServer) -> dict[str, Callable]:
    """A chat's callbacks, each a ``deepseek/chatDelta``: the text (``on_delta``), the references
    first, before the model reads its prompt (``on_references``), and the progress of reading a
    long prompt (``on_prompt``)."""
    loop = asyncio.get_running_loop()
    session = [""]

    def notify(params: dict[str, Any]) -> None:  # assist or engine thread -> loop
        loop.call_soon_threadsafe(ls.protocol.notify, CHAT_DELTA, params)

    def on_references(session_id: str, refs: list) -> None:
        session[0] = session_id
        notify({"sessionId": session_id, "delta": "", "references": lsp_references(refs)})

    def on_prompt(read: int, total: int) -> None:
        notify({"sessionId": session[0], "delta": "", "prompt": {"read": read, "total": total}})
    return {"on_delta": _streamer(ls), "on_references": on_references, "on_prompt": on_prompt}


async def code_action(ls: DeepseekLanguageServer,
                      params: types.CodeActionParams) -> list[types.CodeAction] | None:
    """Explain, Refactor and Write tests for the selection or the definition around the cursor.

    Nothing runs until one is chosen; the definition is looked up in the document's parse
    (made on a worker thread once per version). None for a document over completion.maxFileSizeKb."""
    uri = params.text_document.uri
    doc, path = ls.document(uri), uri_to_path(uri)
    if doc is None:
        return None
    if (why := _unsuitable(ls, doc.source)) is not None:
        log.debug("no code actions for %s: %s", uri, why)
        return None
    if params.context.trigger_kind == types.CodeActionTriggerKind.Invoked:
        SCHEDULE.want(ASSISTANT)  # the user opened the menu (not the editor's automatic ask)
    elif params.range.start == params.range.end and (service := ls.backend.active()) is not None:
        try:  # the editor asks at every cursor move: the user went there, read the prompt while they look
            service.prefill_at(snapshot(doc, params.range.start), ls.settings)
        except InvalidPosition:
            pass
    fixes = _fixes(uri, params.context.diagnostics)  # a problem anywhere, also outside a definition
    if path is None or grammar_for(path.name) is None:
        return fixes or None
    rng = params.range
    if rng.start == rng.end:
        parsed = await ls.parses.get(uri, doc.version, path.name, doc.source)
        found = parsed.definition_at(rng.start.line) if parsed is not None else None
        if found is None:
            return fixes or None
        rng = lines_range(found.start_line, found.end_line)
    return lsp_code_actions(uri, rng, [("Explain", CMD_EXPLAIN, types.CodeActionKind.Empty),
                                       ("Refactor", CMD_REFACTOR, types.CodeActionKind.RefactorRewrite),
                                       ("Write tests", CMD_WRITE_TESTS, types.CodeActionKind.Source)]) + fixes


def _fixes(uri: str, diagnostics: list[types.Diagnostic]) -> list[types.CodeAction]:
    """"deepseek: Fix" for each problem the editor shows here (not this server's own resource notes):
    the agent with the diagnostic as its task (docs/PROTOCOL.md ``deepseek.agent``)."""
    out = []
    for d in diagnostics[:3]:
        if d.source == SOURCE:
            continue
        where = f"line {d.range.start.line + 1}"
        message = f"Fix this problem reported{f' by {d.source}' if d.source else ''} at {where}: {d.message}"
        arg = {"message": message, "uri": uri, "range": to_json(lines_range(d.range.start.line, d.range.end.line))}
        out.append(types.CodeAction(title="deepseek: Fix", kind=types.CodeActionKind.QuickFix, diagnostics=[d],
                                    command=types.Command(title="Fix", command="deepseek.agent", arguments=[arg])))
    return out


async def explain(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    span = await _span(ls, _arg(args))
    assistant = await _assistant(ls)
    return lsp_reply(await _run(ls, assistant.explain, span, _streamer(ls)), "markdown")


async def refactor(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    arg = _arg(args)
    span = await _span(ls, arg)
    assistant = await _assistant(ls)
    root = workspace_root(ls.index.roots(), span.path)
    result = await _run_with_progress(ls, "deepseek: Refactor", assistant.refactor, span,
                                      str(arg.get("instruction") or ""), root, ls.trusted)
    if _moved_on(ls, span):  # first: whatever the rewrite was, it was written for text that is gone
        return lsp_refactor(result, reason=MOVED_ON)
    if result.code is None:
        return lsp_refactor(result)
    edit = lsp_replace_lines(span.path.as_uri(), span.version, span.start_line, span.end_line, result.code)
    applied, reason = await ls.apply_edit(edit, "deepseek: refactor")
    return lsp_refactor(result, edit, applied, reason)


async def write_tests(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    if not ls.trusted:
        raise JsonRpcInvalidParams("this workspace is not trusted, and Write tests runs code from it: trust the "
                                   "workspace (VS Code: Manage Workspace Trust; Neovim: :DeepSeekTrust; another "
                                   "client: initializationOptions.workspaceTrusted) and run it again")
    span = await _span(ls, _arg(args))
    root = workspace_root(ls.index.roots(), span.path)
    try:
        target = where_tests_go(root, span)
    except AssistError as e:
        raise JsonRpcInvalidParams(str(e)) from None
    assistant = await _assistant(ls)
    result = await _run_with_progress(ls, "deepseek: Write tests", assistant.write_tests, span, root,
                                      target)
    if result.code is None:
        return lsp_write_tests(result)
    uri = target.as_uri()
    doc = ls.document(uri)
    existing = doc.source if doc is not None else (
        target.read_text(encoding="utf-8", errors="replace") if target.exists() else None)
    edit = lsp_append_or_create(uri, existing, result.code, doc.version if doc is not None else None)
    applied, reason = await ls.apply_edit(edit, "deepseek: write tests")
    return lsp_write_tests(result, uri, applied, reason)


async def chat(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    arg = _arg(args)
    message, session_id = arg.get("message"), arg.get("sessionId")
    if not isinstance(message, str) or not message.strip():
        raise JsonRpcInvalidParams("deepseek.chat needs {message: string, sessionId?, uri?, range?}")
    if session_id is not None and not isinstance(session_id, str):
        raise JsonRpcInvalidParams("deepseek.chat: sessionId must be a string")
    context = await chat_context(ls, arg, message)
    assistant = await _assistant(ls)
    reply = await _run(ls, assistant.chat, session_id, message, context, **_chat_stream(ls))
    return lsp_reply(reply, "reply")


async def chat_history(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    arg = _arg(args) if args else {}
    sid = arg.get("sessionId") or ls.assist.store.latest_session()
    if not isinstance(sid, (str, type(None))):
        raise JsonRpcInvalidParams("deepseek.chatHistory: sessionId must be a string")
    return lsp_chat_history(sid, ls.assist.store.messages(sid) if sid else [])


async def chat_reset(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    sid = _arg(args).get("sessionId")
    if not isinstance(sid, str) or not ls.assist.store.has_session(sid):
        raise JsonRpcInvalidParams("deepseek.chatReset needs the {sessionId} of an existing session")
    ls.assist.store.reset(sid)
    return lsp_chat_reset(sid)


async def hover(ls: DeepseekLanguageServer, params: types.HoverParams) -> types.Hover | None:
    """The definition's signature and docstring at once, plus a short model explanation
    (cached by content, capped at hover.timeMs). The file's definitions come from its parse
    (a worker thread, once per version); None for a document over completion.maxFileSizeKb."""
    card = await hover_target(ls, params.text_document.uri, to_json(params.position))
    if card is None:
        return None
    cap_s = ls.settings.hover_time_ms / 1000
    if cap_s > 0 and not ls.assist.busy:  # never queue behind a chat or a test run
        try:
            assistant = await asyncio.wait_for(_assistant(ls), timeout=cap_s)
            note = await asyncio.wait_for(_run(ls, assistant.hover, card.symbol, card.language, card.code, cap_s),
                                          timeout=cap_s + 0.5)
            card = dataclasses.replace(card, note=note or None)
        except (asyncio.TimeoutError, JsonRpcInternalError, JsonRpcInvalidParams) as e:
            log.info("hover without explanation: %s", e or "time cap")
    return lsp_hover(card)


async def hover_target(ls: DeepseekLanguageServer, uri: str, position: Any) -> HoverCard | None:
    """What hover shows for the name at ``position`` (``{line, character}``) of ``uri``, without
    the model's note: its definition in the document's parse, else in the index; None for no
    name, no definition found, or a document over completion.maxFileSizeKb."""
    doc, path = ls.document(uri), uri_to_path(uri)
    if doc is None or path is None or grammar_for(path.name) is None or not isinstance(position, dict):
        return None
    if (why := _unsuitable(ls, doc.source)) is not None:
        log.debug("no hover for %s: %s", uri, why)
        return None
    try:
        word = doc.word_at_position(types.Position(line=int(position["line"]), character=int(position["character"])))
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    if not is_symbol(word):
        return None
    language = grammar_for(path.name) or "text"
    parsed = await ls.parses.get(uri, doc.version, path.name, doc.source)
    chunks = await asyncio.get_running_loop().run_in_executor(None, parsed.chunks) if parsed is not None else []
    card = hover_card(word, language, path.name, found) if (found := definition_of(word, chunks)) else None
    if card is None and ls.runtime.index_ready:
        hit = definition_of(word, await ls.runtime.search(word, HOVER_SEARCH_RESULTS, "lexical"))
        if hit is not None:
            card = hover_card(word, grammar_for(hit.path) or language, hit.path, hit)
    return card


async def chat_context(ls: DeepseekLanguageServer, arg: dict[str, Any], question: str) -> list[ContextItem]:
    """A chat message's context (``arg``: ``{uri?, range?}``): what the editor shows
    (:func:`shown_context`) and, for a question asked without a selection, the workspace index's
    best chunks for ``question`` (the question as typed so far, when read ahead). A question about
    selected code is answered from that code: it gets no chunks, so nothing of its prompt but the
    question is left to read when it is asked (and the model is not led to another function).

    Raises:
        JsonRpcInvalidParams: as :func:`shown_context`.
    """
    context = await shown_context(ls, arg)
    if any(c.selected for c in context) or not question.strip():
        return context
    return context + await ls.runtime.retrieve(question, CHAT_SEARCH_RESULTS)


async def shown_context(ls: DeepseekLanguageServer, arg: dict[str, Any]) -> list[ContextItem]:
    """What the editor shows with a chat message (``{uri?, range?}``): the selection, then the
    current file (a file the index's rule keeps out of prompts gives nothing).

    Raises:
        JsonRpcInvalidParams: the range is outside the document or names no code (see :func:`_span`).
    """
    context: list[ContextItem] = []
    if isinstance(arg.get("uri"), str):
        path = uri_to_path(arg["uri"])
        doc = ls.document(arg["uri"])
        text = doc.source if doc else (path.read_text(errors="replace") if path and path.is_file() else "")
        if path is not None and text and not ls.runtime.readable(path, text):
            # A secret, git-ignored or excluded file never goes into a prompt (the index's rule).
            log.info("chat: %s is not readable by the rule of the index; not sent", path.name)
            text = ""
        if isinstance(arg.get("range"), dict) and text:
            span = await _span(ls, {"uri": arg["uri"], "range": arg["range"]})
            context.append(ContextItem(
                f"Selected code from {span.path.name} (lines {span.start_line + 1}-{span.end_line + 1})",
                span.code, Reference(span.path, span.start_line, span.end_line), selected=True))
        if text and path is not None:
            n = len(split_lines(text))
            context.append(ContextItem(f"The current file, {path.name}", text, Reference(path, 0, max(0, n - 1))))
    return context
