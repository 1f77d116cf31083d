"""All conversion between deepseek-lsp's domain objects and LSP types lives here.

Handlers in :mod:`server.lsp_server` get LSP params, call these helpers to build
domain objects, call domain code, and convert the result back with the ``lsp_*``
functions below.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from .completion import Snapshot, Suggestion
from .manager import ModelStatus

SOURCE = "deepseek"


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
                    language_id=doc.language_id or language_from_uri(doc.uri))


_EXTENSIONS = {
    "py": "python", "pyi": "python", "js": "javascript", "mjs": "javascript", "cjs": "javascript",
    "jsx": "javascriptreact", "ts": "typescript", "tsx": "typescriptreact", "go": "go", "rs": "rust",
    "java": "java", "c": "c", "h": "c", "cc": "cpp", "cpp": "cpp", "cxx": "cpp", "hpp": "cpp", "hh": "cpp",
    "cs": "csharp", "rb": "ruby", "php": "php", "kt": "kotlin", "swift": "swift", "scala": "scala",
    "lua": "lua", "sh": "shellscript",
}


def language_from_uri(uri_or_path: str) -> str:
    """Best-effort LSP language id from a file extension (``plaintext`` when unknown)."""
    ext = uri_or_path.rsplit(".", 1)[-1].lower() if "." in uri_or_path.rsplit("/", 1)[-1] else ""
    return _EXTENSIONS.get(ext, "plaintext")


def lsp_inline_completion(suggestion: Suggestion | None, position: types.Position) -> types.InlineCompletionList:
    """One inline item inserted at the cursor, or an empty list."""
    if suggestion is None or not suggestion.text:
        return types.InlineCompletionList(items=[])
    at = types.Range(start=position, end=position)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=suggestion.text, range=at)])


def lsp_completion(suggestion: Suggestion | None, position: types.Position) -> types.CompletionList:
    """The same suggestion as a single completion item, for clients without inline completion.

    The edit range is empty at the cursor so the client does not filter the item away,
    and the list is incomplete so the client asks again as the user types.
    """
    if suggestion is None or not suggestion.text:
        return types.CompletionList(is_incomplete=True, items=[])
    first = suggestion.text.strip().split("\n", 1)[0]
    label = first if len(first) <= 60 else first[:57] + "…"
    item = types.CompletionItem(
        label=label or suggestion.text.strip()[:60],
        kind=types.CompletionItemKind.Snippet if "\n" in suggestion.text else types.CompletionItemKind.Text,
        detail=f"{SOURCE} ({suggestion.policy.mode.value})",
        documentation=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                          value=f"```\n{suggestion.text}\n```"),
        text_edit=types.TextEdit(range=types.Range(start=position, end=position), new_text=suggestion.text),
        insert_text_format=types.InsertTextFormat.PlainText,
        filter_text="",
        sort_text="0",
        preselect=True,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def lsp_diagnostic(code: str, message: str, severity: types.DiagnosticSeverity, line: int = 0) -> types.Diagnostic:
    """A whole-line diagnostic from deepseek-lsp (source ``deepseek``)."""
    rng = types.Range(start=types.Position(line=line, character=0), end=types.Position(line=line + 1, character=0))
    return types.Diagnostic(range=rng, message=message, severity=severity, source=SOURCE, code=code)


def lsp_status(status: ModelStatus, backend_kind: str, index: dict[str, Any]) -> dict[str, Any]:
    """The ``deepseek.status`` reply (see docs/PROTOCOL.md)."""
    mem = status.memory
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
        "backend": {"kind": backend_kind},
        "ram": {
            "availableMb": round(mem.available_mb) if mem else None,
            "neededMb": round(mem.needed_mb) if mem else None,
            "limitSource": mem.limit_source if mem else None,
        },
        "index": index,
    }


def lsp_search_result(r: Any) -> dict[str, Any]:
    """One ``deepseek.search`` result: ``{uri, range, score, symbol, text}`` (range end exclusive)."""
    return {
        "uri": r.file.as_uri(),
        "range": {"start": {"line": r.start_line, "character": 0},
                  "end": {"line": r.end_line + 1, "character": 0}},
        "score": round(r.score, 6),
        "symbol": r.symbol,
        "kind": r.kind,
        "text": r.text,
    }
