"""The language server: wires LSP messages to the domain code. Handlers stay thin.

The asyncio loop only routes messages and takes snapshots; the model runs on its
engine thread (:mod:`server.engine`). The LSP contract is documented in
docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from . import __version__
from .completion import RemoteCompletionService, Suggestion, Unsuitable, check_document
from .remote import BackendUnavailable, OpenAIBackend, RemoteRunner
from .config import Settings, parse_settings
from .logs import set_level
from .lsp_convert import (
    InvalidPosition, lsp_completion, lsp_diagnostic, lsp_inline_completion, lsp_search_result, lsp_status, snapshot)
from .manager import ModelManager, ModelState, ModelStatus
from .resources import available_mb
from index.workspace import IndexOptions, WorkspaceIndex

log = logging.getLogger(__name__)

CONFIG_SECTION = "deepseek"
CMD_STATUS = "deepseek.status"
CMD_SEARCH = "deepseek.search"
EDIT_REINDEX_DELAY_S = 2.0  # an edited open document is re-indexed this long after the last change
# Codes of the diagnostics this server publishes (source "deepseek").
CODE_MODEL_TOO_LARGE = "model-too-large"
CODE_MODEL_UNAVAILABLE = "model-unavailable"
CODE_MODEL_NO_FIM = "model-no-fim"
CODE_MODEL_CRASHED = "model-crashed"
CODE_SLOW_RESPONSE = "slow-response"
CODE_BACKEND_UNREACHABLE = "backend-unreachable"
CODE_CONTEXT_TRUNCATED = "context-truncated"
_MODEL_CODES = (CODE_MODEL_TOO_LARGE, CODE_MODEL_UNAVAILABLE, CODE_MODEL_NO_FIM, CODE_MODEL_CRASHED)
SLOW_MIN_ANSWERS = 5  # answers from the model before the slow-response warning may fire


class DeepseekLanguageServer(LanguageServer):
    """pygls server holding the settings, the model manager and the published notices."""

    def __init__(self) -> None:
        super().__init__("deepseek-lsp", __version__)
        self.settings = Settings()
        self.init_options: Any = None
        self.models = ModelManager()
        self.notices: dict[str, types.Diagnostic] = {}   # by code; shown on every open document
        self.doc_notices: dict[str, types.Diagnostic] = {}  # by URI; one per document (context-truncated)
        self.load_task: asyncio.Task | None = None
        self.index: WorkspaceIndex | None = None
        self.shutdown_hooks: list = []  # called at shutdown (other modules' resources)
        self.remote: RemoteCompletionService | None = None  # backend.kind openai
        self.started = asyncio.Event()  # set once `initialized` has read the settings and chosen the backend
        self._reindex: dict[str, asyncio.TimerHandle] = {}

    # -- settings ------------------------------------------------------------------------
    async def refresh_settings(self) -> None:
        """Re-read settings: initializationOptions, then workspace/configuration (which wins)."""
        sources: list[Any] = [_plain(self.init_options)]
        caps = self.client_capabilities.workspace
        if caps is not None and caps.configuration:
            try:
                result = await asyncio.wait_for(self.workspace_configuration_async(types.ConfigurationParams(
                    items=[types.ConfigurationItem(section=CONFIG_SECTION)])), timeout=5)
                sources.append(_plain(result[0]) if result else None)
            except Exception as e:  # a client that fails here must not stop the server
                log.warning("workspace/configuration failed: %s", e)
        settings, problems = parse_settings(*sources)
        if problems:
            self.show(types.MessageType.Warning, "deepseek-lsp settings: " + "; ".join(problems) + ".")
        set_level(settings.log_level)
        self.settings = settings

    # -- model ---------------------------------------------------------------------------
    def start_backend(self) -> None:
        """Use the backend the settings name: the local model, or an OpenAI-compatible server."""
        settings = self.settings
        if self.remote is not None:
            self.remote.cancel_all()
            self.remote.engine.shutdown()
            self.remote = None
        if settings.backend_kind == "openai":
            self.notices.pop(CODE_BACKEND_UNREACHABLE, None)
            if not settings.backend_url:
                self._backend_notice("backend.kind is openai but backend.url is not set. Fix: set backend.url "
                                     "(e.g. http://gpu-box:8000) or backend.kind local.")
                return
            from .prompting import FAMILIES
            family = next(f for f in FAMILIES if f.name == settings.backend_family)
            backend = OpenAIBackend(settings.backend_url, settings.backend_api_key, settings.backend_model)
            self.remote = RemoteCompletionService(RemoteRunner(backend), family)
            log.info("completions from %s (%s)", backend.base, family.name)
            self.publish_all()
            return
        self.start_model_load()

    def _backend_notice(self, text: str | None) -> None:
        """Show (text) or clear (None) the backend-unreachable warning; shown once per outage."""
        if text is None:
            if self.notices.pop(CODE_BACKEND_UNREACHABLE, None) is not None:
                self.publish_all()
            return
        if CODE_BACKEND_UNREACHABLE not in self.notices:
            self.notices[CODE_BACKEND_UNREACHABLE] = lsp_diagnostic(
                CODE_BACKEND_UNREACHABLE, text, types.DiagnosticSeverity.Warning)
            self.show(types.MessageType.Warning, "deepseek-lsp: " + text)
            self.publish_all()

    def start_model_load(self) -> None:
        self.load_task = asyncio.ensure_future(self._load_model(self.settings))

    async def begin_progress(self, kind: str, title: str, message: str, cancellable: bool) -> str | None:
        """Start work-done progress in the editor; the token, or None when the client has none."""
        caps = self.client_capabilities.window
        if caps is None or not caps.work_done_progress:
            return None
        token = f"deepseek-{kind}-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=title, message=message, percentage=0, cancellable=cancellable))
            return token
        except Exception as e:  # a client that fails here must not stop the work
            log.warning("work done progress unavailable: %s", e)
            return None

    async def _load_model(self, settings: Settings) -> ModelStatus:
        loop = asyncio.get_running_loop()
        token = await self.begin_progress("model", "deepseek: loading model",
                                          settings.model_path or settings.model_name or "default", False)
        progress = token is not None
        last = [0.0]

        def report(message: str, percentage: int | None = None) -> None:
            if progress:
                self.work_done_progress.report(token, types.WorkDoneProgressReport(
                    message=message, percentage=percentage))

        def on_bytes(done: int, total: int) -> None:  # engine thread -> loop
            now = time.monotonic()
            if now - last[0] >= 0.2 or done >= total:
                last[0] = now
                pct = int(100 * done / max(1, total))
                loop.call_soon_threadsafe(report, f"assembling model {done / 2**20:,.0f}/{total / 2**20:,.0f} MB", pct)

        def on_state(status: ModelStatus) -> None:
            loop.call_soon_threadsafe(report, f"{status.state.value} {status.name or ''}".strip())

        status = await loop.run_in_executor(None, self.models.load, settings, on_bytes, on_state)
        if progress:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(
                message=f"{status.name}: {status.state.value}"))
        self._model_notices(status)
        return status

    def _model_notices(self, status: ModelStatus) -> None:
        """Turn the model's status into diagnostics on every open document and a message."""
        for code in _MODEL_CODES:
            self.notices.pop(code, None)
        if status.state is ModelState.TOO_LARGE:
            self.notices[CODE_MODEL_TOO_LARGE] = lsp_diagnostic(
                CODE_MODEL_TOO_LARGE, status.error or "model too large", types.DiagnosticSeverity.Warning)
            self.show(types.MessageType.Warning, "deepseek-lsp: " + (status.error or ""))
        elif status.state is ModelState.CRASHED:
            self.crashed_notice(status.error or "llama.cpp crashes with this model")
        elif status.state is ModelState.ERROR:
            self.notices[CODE_MODEL_UNAVAILABLE] = lsp_diagnostic(
                CODE_MODEL_UNAVAILABLE, status.error or "model unavailable", types.DiagnosticSeverity.Error)
            self.show(types.MessageType.Error, "deepseek-lsp: " + (status.error or ""))
        elif status.loaded and self.models.fim is None:
            text = (f"{status.name} has no fill-in-the-middle tokens, so it cannot complete code. "
                    "Fix: choose a code model such as Qwen2.5-Coder or DeepSeek-Coder (setting model.name or model.path).")
            self.notices[CODE_MODEL_NO_FIM] = lsp_diagnostic(CODE_MODEL_NO_FIM, text, types.DiagnosticSeverity.Warning)
            self.show(types.MessageType.Warning, "deepseek-lsp: " + text)
        elif status.loaded:
            log.info("model ready: %s (%s), %.0f MB", status.name, status.family, status.size_mb or 0)
        self.publish_all()

    def crashed_notice(self, text: str) -> None:
        """The Error diagnostic ``model-crashed`` on every open document, and a message (any model)."""
        self.notices[CODE_MODEL_CRASHED] = lsp_diagnostic(CODE_MODEL_CRASHED, text, types.DiagnosticSeverity.Error)
        self.show(types.MessageType.Error, "deepseek-lsp: " + text)
        self.publish_all()

    async def completion_service(self):
        """The service that makes suggestions (waiting for a model load in progress), or None."""
        try:
            await asyncio.wait_for(self.started.wait(), timeout=30)
        except asyncio.TimeoutError:
            return None
        if self.remote is not None:
            return self.remote
        if self.load_task is not None and not self.load_task.done():
            await asyncio.shield(self.load_task)
        return self.models.service if self.models.status.loaded else None

    # -- the workspace index ---------------------------------------------------------------
    def workspace_roots(self) -> list[Path]:
        folders = [f.uri for f in self.workspace.folders.values()] or (
            [self.workspace.root_uri] if self.workspace.root_uri else [])
        roots = []
        for uri in folders:
            path = uri_to_path(uri)
            if path is not None and path.is_dir():
                roots.append(path)
        return roots

    async def start_index(self) -> None:
        """Index the workspace folders in the background, with cancellable work-done progress."""
        settings = self.settings
        roots = self.workspace_roots()
        if not settings.index_enabled or not roots:
            return
        self.index = index = WorkspaceIndex(roots, IndexOptions(
            include=settings.index_include, exclude=settings.index_exclude,
            max_file_size_kb=settings.index_max_file_size_kb, embeddings=settings.index_embeddings,
            load_config=settings.model_load_config))
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        token = await self.begin_progress("index", "deepseek: indexing workspace", ", ".join(r.name for r in roots), True)
        progress = token is not None
        if progress:  # the client's cancel button stops the first pass
            self.work_done_progress.tokens[token].add_done_callback(lambda f: cancel.set())

        def report(message: str, percent: int) -> None:  # writer thread -> loop
            if progress:
                loop.call_soon_threadsafe(lambda: self.work_done_progress.report(
                    token, types.WorkDoneProgressReport(message=message, percentage=percent)))

        await self._watch_files()
        try:
            await asyncio.wrap_future(index.start(report, cancel))
        finally:
            if progress:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(
                    message="cancelled" if cancel.is_set() else f"{index.status()['files']} files indexed"))

    async def _watch_files(self) -> None:
        """Ask the client to report file changes on disk (it only reports registered globs)."""
        caps = self.client_capabilities.workspace
        watched = caps.did_change_watched_files if caps is not None else None
        if watched is None or not watched.dynamic_registration:
            return
        try:
            await asyncio.wait_for(self.client_register_capability_async(types.RegistrationParams(registrations=[
                types.Registration(id=f"deepseek-watch-{uuid.uuid4()}", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                                   register_options=types.DidChangeWatchedFilesRegistrationOptions(
                                       watchers=[types.FileSystemWatcher(glob_pattern="**/*")]))])), timeout=5)
        except Exception as e:
            log.warning("could not register file watching: %s", e)

    def completion_context(self, uri: str, query: str, budget_chars: int) -> list[tuple[str, str]]:
        """Best chunks of *other* files for ``query``, as (path, text), within ``budget_chars``.

        Lexical search only: it must not wait for the embedder, and it is cached by the caller.
        """
        index = self.index
        if index is None or index.state != "ready":
            return []
        here = uri_to_path(uri)
        out, used = [], 0
        for r in index.search(query, k=8, mode="lexical"):
            if here is not None and r.file == here:
                continue
            if used + len(r.text) > budget_chars:
                continue
            out.append((r.path, r.text))
            used += len(r.text)
        return out

    def reindex_later(self, uri: str) -> None:
        """Re-index an edited open document once typing pauses."""
        if self.index is None:
            return
        if (handle := self._reindex.pop(uri, None)) is not None:
            handle.cancel()

        def run() -> None:
            self._reindex.pop(uri, None)
            doc = self.workspace.text_documents.get(uri)
            path = uri_to_path(uri)
            if doc is not None and path is not None and self.index is not None:
                self.index.update_file(path, doc.source)
        self._reindex[uri] = asyncio.get_running_loop().call_later(EDIT_REINDEX_DELAY_S, run)

    # -- diagnostics and messages --------------------------------------------------------
    def publish(self, uri: str) -> None:
        doc = self.workspace.text_documents.get(uri)
        diagnostics = list(self.notices.values())
        if uri in self.doc_notices:
            diagnostics.append(self.doc_notices[uri])
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, diagnostics=diagnostics, version=doc.version if doc else None))

    def publish_all(self) -> None:
        for uri in list(self.workspace.text_documents):
            self.publish(uri)

    def show(self, kind: types.MessageType, message: str) -> None:
        log.log(logging.WARNING if kind <= types.MessageType.Warning else logging.INFO, "%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    # -- completions ---------------------------------------------------------------------
    async def suggest(self, uri: str, position: types.Position, manual: bool) -> Suggestion | None:
        """The suggestion at ``position`` in the open document ``uri``; None when there is none.

        Raises:
            JsonRpcInvalidParams: the position is outside the document.
        """
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            log.warning("completion for %s, which is not open: no suggestion", uri)
            return None
        service = await self.completion_service()
        if service is None:
            return None
        settings = self.settings
        if self.index is not None:
            self.index.pause_embedding()  # typing first: the embedder rests
            service.context = self.completion_context
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
            self._backend_notice(str(e))
            return None
        if service is self.remote:
            self._backend_notice(None)
        if suggestion is not None:
            log.info("suggestion for %s v%s: %s, %d chars, %.0f ms", uri, snap.version, suggestion.source,
                     len(suggestion.text), suggestion.latency_ms)
            self._context_notice(uri, position.line, suggestion, settings)
            self._slow_notice(settings)
        return suggestion

    def _context_notice(self, uri: str, line: int, s: Suggestion, settings: Settings) -> None:
        """An Information diagnostic on the cursor's line when the budget left context out."""
        parts = []
        if s.prefix_dropped_tokens:
            parts.append(f"{s.prefix_dropped_tokens:,} tokens before the cursor (completion.prefixTokens "
                         f"is {settings.completion_prefix_tokens})")
        if s.suffix_dropped_tokens:
            parts.append(f"{s.suffix_dropped_tokens:,} tokens after it (completion.suffixTokens "
                         f"is {settings.completion_suffix_tokens})")
        old = self.doc_notices.get(uri)
        if not parts:
            if old is not None:
                del self.doc_notices[uri]
                self.publish(uri)
            return
        message = ("Suggestions here do not see all of this file: the context budget left out "
                   + " and ".join(parts) + ". Raise those settings for more context (slower on a CPU).")
        if old is not None and old.message == message and old.range.start.line == line:
            return
        self.doc_notices[uri] = lsp_diagnostic(CODE_CONTEXT_TRUNCATED, message,
                                               types.DiagnosticSeverity.Information, line)
        self.publish(uri)

    def _slow_notice(self, settings: Settings) -> None:
        """Warn once when the moving average latency passes resources.slowResponseMs; clear on recovery."""
        service = self.models.service
        if service is None or service.latency_ms is None or service.model_answers < SLOW_MIN_ANSWERS:
            return
        limit, avg = settings.resources_slow_response_ms, service.latency_ms
        if avg > limit and CODE_SLOW_RESPONSE not in self.notices:
            text = (f"Suggestions are slow: {avg:,.0f} ms on average (resources.slowResponseMs is {limit:,}). "
                    f"Fix: a smaller model (model.name), less context (completion.prefixTokens "
                    f"{settings.completion_prefix_tokens}, completion.suffixTokens "
                    f"{settings.completion_suffix_tokens}), or more threads (threads).")
            self.notices[CODE_SLOW_RESPONSE] = lsp_diagnostic(CODE_SLOW_RESPONSE, text, types.DiagnosticSeverity.Warning)
            self.show(types.MessageType.Warning, "deepseek-lsp: " + text)
            self.publish_all()
        elif avg < 0.8 * limit and CODE_SLOW_RESPONSE in self.notices:
            del self.notices[CODE_SLOW_RESPONSE]
            self.publish_all()


def uri_to_path(uri: str) -> Path | None:
    """A file:// URI as a path; None for other schemes."""
    from pygls.uris import to_fs_path
    if not uri.startswith("file:"):
        return None
    path = to_fs_path(uri)
    return Path(path) if path else None


def _plain(value: Any) -> Any:
    """Settings may arrive as namedtuples or attrs objects; make them dicts."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


server = DeepseekLanguageServer()


@server.feature(types.INITIALIZE)
def initialize(ls: DeepseekLanguageServer, params: types.InitializeParams) -> None:
    ls.init_options = params.initialization_options
    ls.settings, _ = parse_settings(_plain(params.initialization_options))


@server.feature(types.INITIALIZED)
async def initialized(ls: DeepseekLanguageServer, params: types.InitializedParams) -> None:
    await ls.refresh_settings()
    ls.start_backend()
    ls.started.set()
    await ls.start_index()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def workspace_did_change_configuration(ls: DeepseekLanguageServer,
                                             params: types.DidChangeConfigurationParams) -> None:
    old = ls.settings
    await ls.refresh_settings()
    new = ls.settings
    backend = lambda s: (s.backend_kind, s.backend_url, s.backend_api_key, s.backend_model, s.backend_family)  # noqa: E731
    if backend(new) != backend(old) or (new.backend_kind == "local" and (
            new.model_key() != old.model_key() or new.resources_ram_limit_mb != old.resources_ram_limit_mb)):
        ls.start_backend()


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def text_document_did_open(ls: DeepseekLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    if ls.notices:
        ls.publish(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def text_document_did_change(ls: DeepseekLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.reindex_later(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def text_document_did_save(ls: DeepseekLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    path = uri_to_path(params.text_document.uri)
    if ls.index is not None and path is not None:
        if (handle := ls._reindex.pop(params.text_document.uri, None)) is not None:
            handle.cancel()
        ls.index.update_file(path)


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def workspace_did_change_watched_files(ls: DeepseekLanguageServer,
                                       params: types.DidChangeWatchedFilesParams) -> None:
    if ls.index is None:
        return
    for change in params.changes:
        path = uri_to_path(change.uri)
        if path is not None:
            ls.index.update_file(path)  # a deleted file leaves the index


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def text_document_did_close(ls: DeepseekLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.doc_notices.pop(uri, None)
    for service in (ls.models.service, ls.remote):
        if service is not None:
            service.forget(uri)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: DeepseekLanguageServer,
                            params: types.InlineCompletionParams) -> types.InlineCompletionList:
    manual = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    suggestion = await ls.suggest(params.text_document.uri, params.position, manual)
    return lsp_inline_completion(suggestion, params.position)


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
async def completion(ls: DeepseekLanguageServer, params: types.CompletionParams) -> types.CompletionList:
    manual = params.context is not None and params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    suggestion = await ls.suggest(params.text_document.uri, params.position, manual)
    return lsp_completion(suggestion, params.position)


@server.command(CMD_STATUS)
async def status(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    index = ls.index.status() if ls.index is not None else {"state": "unavailable", "files": 0, "chunks": 0}
    reply = lsp_status(ls.models.status, ls.settings.backend_kind, index)
    if ls.settings.backend_kind == "openai":
        reply["backend"].update({"url": ls.settings.backend_url, "model": ls.settings.backend_model,
                                 "family": ls.settings.backend_family,
                                 "reachable": CODE_BACKEND_UNREACHABLE not in ls.notices})
    # "available" is now, not when the model was checked.
    limit = ls.settings.resources_ram_limit_mb
    reply["ram"]["availableMb"] = round(limit if limit is not None else available_mb())
    service = ls.remote or ls.models.service
    reply["completion"] = service.stats() if service is not None else None
    return reply


@server.command(CMD_SEARCH)
async def search(ls: DeepseekLanguageServer, *args: Any) -> list[dict[str, Any]]:
    """``deepseek.search {query, k}``: hybrid search of the workspace, best first."""
    arg = _plain(args[0]) if args else {}
    query = arg.get("query") if isinstance(arg, dict) else arg
    k = arg.get("k", 10) if isinstance(arg, dict) else (args[1] if len(args) > 1 else 10)
    if not isinstance(query, str) or not query.strip():
        raise JsonRpcInvalidParams("deepseek.search needs {query: string, k?: number}")
    if not isinstance(k, int) or not 1 <= k <= 200:
        raise JsonRpcInvalidParams("deepseek.search: k must be an integer from 1 to 200")
    if ls.index is None:
        return []
    results = await asyncio.get_running_loop().run_in_executor(None, ls.index.search, query, k)
    return [lsp_search_result(r) for r in results]


@server.feature(types.SHUTDOWN)
def shutdown(ls: DeepseekLanguageServer, params: Any) -> None:
    if ls.models.service is not None:
        ls.models.service.cancel_all()
    if ls.remote is not None:
        ls.remote.cancel_all()
        ls.remote.engine.shutdown()
    if ls.index is not None:
        ls.index.close()
    for hook in ls.shutdown_hooks:
        hook()
    ls.models.shutdown()


# The assistant's handlers (code actions, hover, chat commands) register on the same server.
from . import lsp_assist  # noqa: E402,F401
