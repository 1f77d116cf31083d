"""All conversion between deepseek-lsp's domain objects and LSP types (or JSON replies) lives here.

Handlers (``server/lsp/*.py``) get LSP params, call these helpers to build domain
objects, call domain code, and convert the result back with the ``lsp_*`` functions
below. The domain never sees an LSP type; the wire never sees a domain object.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from lsprotocol import types
from lsprotocol.converters import get_converter

from ..assist import (
    MutationScore,
    RefactorResult,
    Reference,
    Reply,
    StoredMessage,
    TestRun,
    TestsResult,
    Verification,
)
from ..assist.symbols import HoverCard
from ..completion import CompletionStats, Snapshot, Suggestion
from ..config import Settings
from ..languages import language_id
from ..manager import ModelStatus
from ..text import split_lines

SOURCE = "deepseek"
_CONVERTER = get_converter()


def plain(value: Any) -> Any:
    """Params of custom commands may arrive as namedtuples or attrs objects: make them JSON-like dicts."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def uri_to_path(uri: str) -> Path | None:
    """A file:// URI (percent-encoded or not) as a path; None for other schemes."""
    from pygls.uris import to_fs_path
    if not uri.startswith("file:"):
        return None
    path = to_fs_path(uri)
    return Path(path) if path else None


def lines_range(start_line: int, end_line: int) -> types.Range:
    """Whole lines ``start_line..end_line`` (inclusive) as an LSP range (end exclusive, at column 0)."""
    return types.Range(start=types.Position(line=start_line, character=0),
                       end=types.Position(line=end_line + 1, character=0))


def to_json(value: Any) -> Any:
    """An lsprotocol object as the JSON the wire carries."""
    return _CONVERTER.unstructure(value)


class InvalidPosition(ValueError):
    """The position is outside the document."""


def snapshot(doc: Any, position: types.Position) -> Snapshot:
    """Take an immutable :class:`Snapshot` of a pygls ``TextDocument`` at ``position``.

    ``position.character`` is in the client's negotiated encoding (UTF-16 by default);
    pygls's ``offset_at_position`` converts it to a code-point offset.

    Raises:
        InvalidPosition: the line is past the end, or the character past the line's end.
    """
    text = doc.source
    lines = doc.lines
    n_lines = max(1, len(lines)) + (1 if text.endswith("\n") else 0)
    if position.line < 0 or position.character < 0 or position.line >= n_lines:
        raise InvalidPosition(f"line {position.line} is outside the document ({n_lines} lines)")
    line = lines[position.line] if position.line < len(lines) else ""
    width = doc.position_codec.client_num_units(line.rstrip("\r\n"))
    if position.character > width:
        raise InvalidPosition(
            f"character {position.character} is past the end of line {position.line} ({width} characters)")
    # One split of the document per keystroke: the same conversion as offset_at_position, on these lines.
    server_pos = doc.position_codec.position_from_client_units(lines, position)
    offset = sum(len(ln) for ln in lines[:server_pos.line]) + server_pos.character
    return Snapshot(uri=doc.uri, version=doc.version, text=text, offset=offset,
                    language_id=doc.language_id or language_id(doc.uri))


def lsp_inline_completion(texts: list[str], position: types.Position) -> types.InlineCompletionList:
    """One inline item per suggestion text (best first), each inserted at the cursor; empty texts are left out."""
    at = types.Range(start=position, end=position)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=t, range=at) for t in texts if t])


_WORD_END = re.compile(r"\w+\Z")  # letters, digits and underscores ending at the cursor


def word_before(doc: Any, position: types.Position) -> tuple[str, types.Position]:
    """The word being typed at ``position`` in a pygls ``TextDocument``, and where it starts.

    The word is the run of letters, digits and underscores (``\\w``) right before the
    cursor on its line, as completion clients take it to filter items.

    Returns:
        ``(word, start)``: ``start`` on the cursor's line, in the client's units (UTF-16 by
        default); ``("", position)`` when no word ends at the cursor or the position is
        outside the document (the request itself reports that).
    """
    lines = doc.lines
    if not 0 <= position.line < len(lines) or position.character < 0:
        return "", position
    line = lines[position.line].rstrip("\r\n")
    codec = doc.position_codec
    if position.character > codec.client_num_units(line):
        return "", position
    at = codec.position_from_client_units(lines, position).character
    found = _WORD_END.search(line[:at])
    if found is None:
        return "", position
    word = found.group()
    return word, types.Position(line=position.line, character=position.character - codec.client_num_units(word))


def lsp_completion(suggestion: Suggestion | None, position: types.Position, word: str = "",
                   start: types.Position | None = None) -> types.CompletionList:
    """The same suggestion as a single completion item, for clients without inline completion.

    Those clients (Emacs eglot, Helix, Zed) filter items against the word before the
    cursor, as they do every server's items: the item replaces that word. Its ``textEdit``
    runs from ``start`` to ``position`` and inserts ``word`` followed by the suggestion;
    ``label`` and ``filterText`` are the first line of that text, so they begin with the
    word (when there is no word and the suggestion starts with a line break: its first
    non-blank line, without indentation). A multi-line suggestion is still one item. The
    list is incomplete so the client asks again as the user types.

    Args:
        suggestion: what to insert at the cursor; None or an empty or blank text gives an empty list.
        position: the cursor.
        word: the word being typed, ending at the cursor (:func:`word_before`); "" for none.
        start: where ``word`` starts, in the client's units; None for the cursor (only with no word).

    Raises:
        ValueError: a word is given without its start.
    """
    if word and start is None:
        raise ValueError(f"the start of the word {word!r} is needed")
    text = word + (suggestion.text if suggestion is not None else "")
    if suggestion is None or not text.strip():
        return types.CompletionList(is_incomplete=True, items=[])
    first = text.split("\n", 1)[0].rstrip()
    label = first or next(ln.strip() for ln in text.split("\n") if ln.strip())
    item = types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Snippet if "\n" in suggestion.text else types.CompletionItemKind.Text,
        detail=f"{SOURCE} ({suggestion.policy.mode.value})",
        documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{text}\n```"),
        text_edit=types.TextEdit(range=types.Range(start=start or position, end=position), new_text=text),
        insert_text_format=types.InsertTextFormat.PlainText,
        filter_text=label,
        sort_text="0",
        preselect=True,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def lsp_diagnostic(code: str, message: str, severity: types.DiagnosticSeverity, line: int = 0) -> types.Diagnostic:
    """A whole-line diagnostic from deepseek-lsp (source ``deepseek``)."""
    return types.Diagnostic(range=lines_range(line, line), message=message, severity=severity, source=SOURCE, code=code)


def lsp_completion_stats(stats: CompletionStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {"modelAnswers": stats.model_answers, "cacheAnswers": stats.cache_answers,
            "avgLatencyMs": stats.avg_latency_ms, "promptTokens": stats.prompt_tokens,
            "reusedTokens": stats.reused_tokens, "shiftedTokens": stats.shifted_tokens,
            "restoredStates": stats.restored_states, "preparedAhead": stats.prepared_ahead,
            "readAhead": stats.read_ahead, "shortWindows": stats.short_windows,
            "promptTokensPerS": stats.prompt_rate,
            "largeAnswers": stats.large_answers, "largePromptTokensPerS": stats.large_rate,
            "largeModel": stats.large_model, "largeReadAhead": stats.large_read_ahead, "lastModel": stats.last_model,
            "lastConfidence": dataclasses.asdict(stats.last_confidence) if stats.last_confidence else None,
            "quietAnswers": stats.quiet_answers,
            "kvStates": {"count": stats.kv_states, "mb": stats.kv_states_mb, "budgetMb": stats.kv_budget_mb}}


def lsp_status(status: ModelStatus, settings: Settings, index: dict[str, Any], stats: CompletionStats | None,
               reachable: bool, available_mb: float, context: dict[str, Any] | None = None,
               chat: dict[str, Any] | None = None, trusted: bool = False) -> dict[str, Any]:
    """The ``deepseek.status`` reply (see docs/PROTOCOL.md).

    Args:
        available_mb: memory available now (or the configured limit), MB.
        reachable: the remote backend answered last time (``backend.kind`` openai).
        context: ``{uri, prefixDroppedTokens, suffixDroppedTokens}`` of the last suggestion, or None.
        chat: the assistant's model, ``{model, reason, loaded, error}`` (:meth:`AssistHost.status`).
        trusted: whether the client said the user trusts the workspace (code from it may run).
    """
    completion = lsp_completion_stats(stats)
    if completion is not None:
        completion["context"] = context
    mem = status.memory
    backend: dict[str, Any] = {"kind": settings.backend_kind}
    if settings.backend_kind == "openai":
        backend.update({"url": settings.backend_url, "model": settings.backend_model,
                        "family": settings.backend_family, "reachable": reachable})
    return {
        "model": {
            "name": status.name,
            "path": status.path,
            "family": status.family,
            "sizeMb": round(status.size_mb, 1) if status.size_mb is not None else None,
            "loaded": status.loaded,
            "state": status.state.value,
            "nCtx": status.n_ctx,
            "threads": status.n_threads,
            "error": status.error,
            "loadConfig": status.load_config,
            "probe": status.verdict.to_json() if status.verdict is not None else None,
        },
        "backend": backend,
        "chat": chat,
        "workspaceTrusted": trusted,
        "ram": {
            "availableMb": round(available_mb),
            "neededMb": round(mem.needed_mb) if mem else None,
            "limitSource": mem.limit_source if mem else None,
        },
        "index": index,
        "completion": completion,
    }


def lsp_search_result(r: Any) -> dict[str, Any]:
    """One ``deepseek.search`` result: ``{uri, range, score, symbol, text}`` (range end exclusive)."""
    return {
        "uri": r.file.as_uri(),
        "range": to_json(lines_range(r.start_line, r.end_line)),
        "score": round(r.score, 6),
        "symbol": r.symbol,
        "kind": r.kind,
        "text": r.text,
    }


# -- the assistant -----------------------------------------------------------------------------
def lsp_references(references: list[Reference]) -> list[dict[str, Any]]:
    """``[{uri, range}]`` of whole lines (end exclusive) for the code a reply is about."""
    return [{"uri": r.path.resolve().as_uri(), "range": to_json(lines_range(r.start_line, r.end_line))}
            for r in references]


def lsp_code_actions(uri: str, rng: types.Range, actions: list[tuple[str, str, types.CodeActionKind]]
                     ) -> list[types.CodeAction]:
    """One code action per (title, command id, kind), each carrying ``{uri, range}``."""
    arg = {"uri": uri, "range": to_json(rng)}
    return [types.CodeAction(title=f"deepseek: {title}", kind=kind,
                             command=types.Command(title=title, command=cmd, arguments=[arg]))
            for title, cmd, kind in actions]


def lsp_reply(reply: Reply, text_key: str) -> dict[str, Any]:
    """An explain (``markdown``) or chat (``reply``) result."""
    return {text_key: reply.text, "sessionId": reply.session_id, "cacheHit": reply.cache_hit,
            "promptVersion": reply.prompt_version, "references": lsp_references(reply.references),
            "promptTokens": reply.prompt_tokens, "promptTokensRead": reply.read_tokens,
            "firstTokenMs": round(reply.first_token_ms)}


def lsp_replace_lines(uri: str, version: int | None, start_line: int, end_line: int, text: str) -> types.WorkspaceEdit:
    """Replace whole lines of a document, at the version the new text was computed against."""
    return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
        edits=[types.TextEdit(range=lines_range(start_line, end_line), new_text=text)])])


def lsp_file_edit(uri: str, version: int | None, before: str, after: str) -> types.TextDocumentEdit:
    """The smallest whole-line replacement turning ``before`` into ``after``, at ``version``."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    stop = len(old) - tail
    if stop < len(old) or not old or old[-1].endswith(("\n", "\r")):
        end = types.Position(line=stop, character=0)
    else:  # to the end of a last line without a line break
        end = types.Position(line=len(old) - 1, character=len(old[-1].encode("utf-16-le")) // 2)
    return types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
        edits=[types.TextEdit(range=types.Range(start=types.Position(line=head, character=0), end=end),
                              new_text="".join(new[head:len(new) - tail]))])


def lsp_append_or_create(uri: str, existing: str | None, code: str, version: int | None) -> types.WorkspaceEdit:
    """Append ``code`` to a file (at its end, after a blank line), or create it with ``code``."""
    at = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
    changes: list[Any] = []
    if existing is not None:
        n = len(split_lines(existing)) if existing else 0
        at = types.Range(start=types.Position(line=n, character=0), end=types.Position(line=n, character=0))
        code = ("\n\n" if existing.strip() else "") + code
    else:
        changes.append(types.CreateFile(uri=uri, options=types.CreateFileOptions(ignore_if_exists=True)))
    changes.append(types.TextDocumentEdit(text_document=types.OptionalVersionedTextDocumentIdentifier(
        uri=uri, version=version), edits=[types.TextEdit(range=at, new_text=code)]))
    return types.WorkspaceEdit(document_changes=changes)


def lsp_test_run(run: TestRun | None) -> dict[str, Any]:
    return {"ran": bool(run and run.ran), "ok": bool(run and run.ok), "passed": run.passed if run else [],
            "failed": run.failed if run else [], "output": run.output[-3000:] if run else "",
            "notRun": run.reason if run is not None and not run.ran else ""}


def lsp_verification(v: Verification | None) -> dict[str, Any] | None:
    """``deepseek.refactor``'s ``verification``: what running the code said about the rewrite (None: not run)."""
    if v is None:
        return None
    return {"verdict": v.verdict, "summary": v.summary, "tests": v.tests, "checks": v.checks,
            "differences": v.differences}


def lsp_mutants(score: MutationScore | None) -> dict[str, Any] | None:
    """``deepseek.writeTests``'s ``mutants``: deliberately broken copies tried and caught (None: tests not run)."""
    if score is None:
        return None
    ran = f"{len(score.passed)} passed, {len(score.failed)} failed"
    if not score.tried:
        return {"tried": 0, "caught": 0, "survivors": [], "notTried": score.reason, "score": None, "weak": False,
                "summary": f"{ran}, no mutants tried ({score.reason})"}
    return {"tried": score.tried, "caught": score.caught, "survivors": [m.description for m in score.survivors],
            "notTried": score.reason, "score": round(score.share, 3), "weak": score.weak,
            "summary": f"{ran}, caught {score.caught} of {score.tried} mutants ({score.share:.0%})"
                       + (": weak tests, most deliberately broken copies of the code still pass them"
                          if score.weak else "")}


def lsp_messages(messages: list[StoredMessage]) -> list[dict[str, Any]]:
    """``deepseek.chatHistory`` messages."""
    return [{"role": m.role, "text": m.text, "timestamp": m.timestamp, "model": m.model,
             "promptVersion": m.prompt_version, "references": lsp_references(m.references)} for m in messages]


def lsp_chat_history(session_id: str | None, messages: list[StoredMessage]) -> dict[str, Any]:
    """``deepseek.chatHistory``'s result: ``{sessionId, messages}`` (no session: ``null`` and ``[]``)."""
    return {"sessionId": session_id, "messages": lsp_messages(messages)}


def lsp_chat_reset(session_id: str) -> dict[str, Any]:
    """``deepseek.chatReset``'s result."""
    return {"sessionId": session_id, "reset": True}


def lsp_refactor(result: RefactorResult, edit: types.WorkspaceEdit | None = None, applied: bool = False,
                 reason: str | None = None) -> dict[str, Any]:
    """``deepseek.refactor``'s result: ``{applied, reason, edit, verification}``, and ``cacheHit`` when
    an ``edit`` was offered to the editor.

    Args:
        result: the refactor task's result (its ``reason`` is the reply's unless ``reason`` is given).
        edit: the edit offered to the editor, or None (no rewrite, or the document moved on).
        applied: whether the editor applied ``edit``.
        reason: why nothing was applied (the editor's reason, or why no edit was offered).
    """
    if edit is None:
        return {"applied": False, "reason": result.reason if reason is None else reason, "edit": None,
                "verification": lsp_verification(result.verification)}
    return {"applied": applied, "reason": reason or "", "edit": to_json(edit), "cacheHit": result.reply.cache_hit,
            "verification": lsp_verification(result.verification)}


def lsp_write_tests(result: TestsResult, uri: str | None = None, applied: bool = False,
                    reason: str = "") -> dict[str, Any]:
    """``deepseek.writeTests``'s result (docs/PROTOCOL.md).

    Args:
        result: the task's result; without code, the reply says why (``result.reason``) and what ran.
        uri: the test file the edit was offered for, or None when no tests were written.
        applied, reason: whether the editor applied the edit, and its reason when not.
    """
    if uri is None:
        return {"applied": False, "reason": result.reason, "rounds": result.rounds,
                **(lsp_test_run(result.run) if result.run is not None else {}), "mutants": lsp_mutants(result.score)}
    return {"applied": applied, "uri": uri, "rounds": result.rounds, **lsp_test_run(result.run),
            "mutants": lsp_mutants(result.score), "expectedFromCode": result.corrected, "reason": reason}


def lsp_hover(card: HoverCard) -> types.Hover:
    """Markdown: the signature in a code block, the place, the docstring, and the note after a rule."""
    parts = [f"```{card.language}\n{card.signature}\n```", f"*{card.where}, line {card.line + 1}*"]
    if card.docstring:
        parts.append(card.docstring)
    if card.note:
        parts.append(f"---\n{card.note}")
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value="\n\n".join(parts)))
