"""Suggestions: ``textDocument/inlineCompletion`` and ``textDocument/completion``.

``register(server)`` adds the two handlers. A request takes a snapshot of the document
on the event loop, awaits the backend's :class:`server.completion.CompletionService`
(which runs the model on its engine's owner thread) and converts the answer. The path
of one keystroke, with the thread of each hop, is written down in docs/HOW-IT-WORKS.md
("Threads").
"""

from __future__ import annotations

import logging

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from .completion import Suggestion, Unsuitable, check_document
from .config import Settings
from .lsp_convert import InvalidPosition, lsp_completion, lsp_diagnostic, lsp_inline_completion, snapshot
from .lsp_notices import CODE_CONTEXT_TRUNCATED
from .lsp_state import DeepseekLanguageServer
from .remote import BackendUnavailable

log = logging.getLogger(__name__)


async def suggest(ls: DeepseekLanguageServer, uri: str, position: types.Position, manual: bool) -> Suggestion | None:
    """The suggestion at ``position`` in the open document ``uri``; None when there is none.

    Raises:
        JsonRpcInvalidParams: the position is outside the document.
    """
    doc = ls.document(uri)
    if doc is None:
        log.warning("completion for %s, which is not open: no suggestion", uri)
        return None
    service = await ls.backend.service()
    if service is None:
        return None
    settings = ls.settings
    ls.index.typing()
    try:
        check_document(doc.source, settings.completion_max_file_size_kb)
        snap = snapshot(doc, position)
        suggestion = await service.suggest(snap, settings, manual)
    except Unsuitable as e:
        log.info("no suggestion for %s: %s", uri, e)
        return None
    except InvalidPosition as e:
        raise JsonRpcInvalidParams(str(e)) from None
    except BackendUnavailable as e:
        ls.backend.unreachable(str(e))
        return None
    if ls.backend.is_remote:
        ls.backend.unreachable(None)
    if suggestion is not None:
        log.info("suggestion for %s v%s: %s, %d chars, %.0f ms", uri, snap.version, suggestion.source,
                 len(suggestion.text), suggestion.latency_ms)
        _context_notice(ls, uri, position.line, suggestion, settings)
        ls.backend.check_latency(settings)
    return suggestion


def _context_notice(ls: DeepseekLanguageServer, uri: str, line: int, s: Suggestion, settings: Settings) -> None:
    """An Information diagnostic on the cursor's line when the budget left context out."""
    parts = []
    if s.prefix_dropped_tokens:
        parts.append(f"{s.prefix_dropped_tokens:,} tokens before the cursor (completion.prefixTokens "
                     f"is {settings.completion_prefix_tokens})")
    if s.suffix_dropped_tokens:
        parts.append(f"{s.suffix_dropped_tokens:,} tokens after it (completion.suffixTokens "
                     f"is {settings.completion_suffix_tokens})")
    if not parts:
        ls.notices.set_for_document(uri, None)
        return
    message = ("Suggestions here do not see all of this file: the context budget left out "
               + " and ".join(parts) + ". Raise those settings for more context (slower on a CPU).")
    ls.notices.set_for_document(uri, lsp_diagnostic(CODE_CONTEXT_TRUNCATED, message,
                                                    types.DiagnosticSeverity.Information, line))


def register(server: DeepseekLanguageServer) -> None:
    """Add the inline and plain completion handlers to ``server``."""

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: DeepseekLanguageServer,
                                params: types.InlineCompletionParams) -> types.InlineCompletionList:
        manual = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        suggestion = await suggest(ls, params.text_document.uri, params.position, manual)
        return lsp_inline_completion(suggestion, params.position)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: DeepseekLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        manual = params.context is not None and params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        suggestion = await suggest(ls, params.text_document.uri, params.position, manual)
        return lsp_completion(suggestion, params.position)
