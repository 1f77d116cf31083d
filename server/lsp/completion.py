"""Suggestions: ``textDocument/inlineCompletion`` and ``textDocument/completion``.

Two module-level handlers, registered from :data:`server.lsp.routes.ROUTES`. A request takes a snapshot of the document
on the event loop, awaits the backend's :class:`server.completion.CompletionService`
(which runs the model on its engine's owner thread) and converts the answer. An inline
request the user made (Invoked) also gets the alternatives of :mod:`server.alternatives`. The path
of one keystroke, with the thread of each hop, is written down in docs/HOW-IT-WORKS.md
("Threads").
"""

from __future__ import annotations

import logging
import threading
import time

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..alternatives import alternatives
from ..completion import CompletionRequest, Suggestion, Unsuitable, check_document
from ..config import Settings
from ..remote import BackendUnavailable
from .convert import InvalidPosition, lsp_completion, lsp_inline_completion, snapshot, word_before
from .state import DeepseekLanguageServer

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
    settings = await ls.settings_now()
    if manual:  # the larger model writes what the user asks for (completion.manualModel)
        await ls.runtime.attach_large(settings, wait=settings.completion_manual_model == "large")
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
        log.info("suggestion for %s v%s: %s, %d chars, %.0f ms, by the %s model", uri, snap.version,
                 suggestion.source, len(suggestion.text), suggestion.latency_ms,
                 "larger" if suggestion.large else "completion")
        _note_context(ls, uri, suggestion, settings)
        ls.backend.check_latency(settings)
        service.prefetch_after(snap, suggestion.text, settings)  # Tab, then the next suggestion: ready
    return suggestion


def _note_context(ls: DeepseekLanguageServer, uri: str, s: Suggestion, settings: Settings) -> None:
    """Remember (for ``deepseek.status``) and log how much of the file the last suggestion's prompt left out.

    Leaving context out is normal in a long file, not a problem to mark in the text: the
    fact goes to the status (the VS Code status bar's tooltip) and, when a document starts
    or stops being cut, to the log.
    """
    note = {"uri": uri, "prefixDroppedTokens": s.prefix_dropped_tokens, "suffixDroppedTokens": s.suffix_dropped_tokens}
    cut = bool(s.prefix_dropped_tokens or s.suffix_dropped_tokens)
    was = ls.last_context
    if was is None or was["uri"] != uri or bool(was["prefixDroppedTokens"] or was["suffixDroppedTokens"]) != cut:
        if cut:
            log.info("context for %s: the budget left out %d tokens before the cursor (completion.prefixTokens is %d) "
                     "and %d after it (completion.suffixTokens is %d)", uri, s.prefix_dropped_tokens,
                     settings.completion_prefix_tokens, s.suffix_dropped_tokens, settings.completion_suffix_tokens)
        else:
            log.info("context for %s: the whole file fits the budget", uri)
    ls.last_context = note


def ranked_texts(shown: str, found: list[str], n: int) -> list[str]:
    """The items of an explicit request, at most ``n``: ``shown`` first, then ``found`` (best first).

    ``shown`` is the pipeline's suggestion (cached, possibly continued: what the editor
    may already show), the one every length, repeat and syntax rule has passed, so it
    stays first (the quality benchmark, bench/completion_quality.py, scores it); ``found``
    are the alternatives, distinct and ranked by likelihood.
    """
    return ([shown] if shown else []) + [t for t in found if t != shown][: n - (1 if shown else 0)]


async def inline_completion(ls: DeepseekLanguageServer,
                            params: types.InlineCompletionParams) -> types.InlineCompletionList:
    started = time.monotonic()
    uri = params.text_document.uri
    if (older := ls.running_alternatives.pop(uri, None)) is not None:
        older.set()  # a newer request for the document: the older one's alternatives stop
    manual = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    doc = ls.document(uri)
    version = doc.version if doc is not None else None
    suggestion = await suggest(ls, uri, params.position, manual)
    texts = [suggestion.text] if suggestion is not None and suggestion.text else []
    service = ls.backend.active()
    doc = ls.document(uri)
    # The alternatives, when the user asks at a new place: not for the rest of a suggestion partly
    # accepted (VS Code asks again, Invoked, after each partial accept of one it was asked for).
    if manual and texts and not suggestion.through and ls.settings.completion_alternatives > 1 \
            and service is not None and doc is not None and doc.version == version:
        # The request the suggestion answered, worked out once (cursor text, policy, cache key).
        req = suggestion.request or CompletionRequest.of(snapshot(doc, params.position), ls.settings, manual=True,
                                                         check=False)
        large = suggestion.large
        if (kept := service.cache.remembered(req, large)) is not None:
            return lsp_inline_completion(ranked_texts(texts[0], kept, ls.settings.completion_alternatives),
                                         params.position)
        cancel = ls.running_alternatives[uri] = threading.Event()
        try:
            found, complete = await alternatives(service, req, ls.settings, started, cancel, large)
        finally:
            if ls.running_alternatives.get(uri) is cancel:
                del ls.running_alternatives[uri]
        texts = ranked_texts(texts[0], [a.text for a in found], ls.settings.completion_alternatives)
        # A part of any of them accepted: the rest is cached; asked again here: only a complete list is reused.
        service.cache.remember(req, texts, complete=complete, large=large)
    return lsp_inline_completion(texts, params.position)


async def completion(ls: DeepseekLanguageServer, params: types.CompletionParams) -> types.CompletionList:
    manual = params.context is not None and params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    doc = ls.document(params.text_document.uri)
    # The word before the cursor now, as the client sees it: the item replaces it (clients filter by it).
    word, start = word_before(doc, params.position) if doc is not None else ("", params.position)
    suggestion = await suggest(ls, params.text_document.uri, params.position, manual)
    return lsp_completion(suggestion, params.position, word, start)
