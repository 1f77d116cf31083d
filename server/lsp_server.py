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
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from . import __version__
from .completion import Suggestion, Unsuitable, check_document, complete
from .config import Settings, parse_settings
from .logs import set_level
from .lsp_convert import (
    InvalidPosition, lsp_completion, lsp_diagnostic, lsp_inline_completion, lsp_status, snapshot)
from .manager import ModelManager, ModelState, ModelStatus
from .resources import available_mb

log = logging.getLogger(__name__)

CONFIG_SECTION = "deepseek"
CMD_STATUS = "deepseek.status"
# Codes of the diagnostics this server publishes (source "deepseek").
CODE_MODEL_TOO_LARGE = "model-too-large"
CODE_MODEL_UNAVAILABLE = "model-unavailable"
CODE_MODEL_NO_FIM = "model-no-fim"
_MODEL_CODES = (CODE_MODEL_TOO_LARGE, CODE_MODEL_UNAVAILABLE, CODE_MODEL_NO_FIM)


@dataclass
class InFlight:
    """The suggestion being computed for one document.

    Requests for the same snapshot (an inline and a plain completion request at the
    same keystroke) share it; a request for a newer snapshot cancels it.
    """

    key: tuple
    future: asyncio.Future
    cancel: threading.Event
    waiters: int = 0


class DeepseekLanguageServer(LanguageServer):
    """pygls server holding the settings, the model manager and the published notices."""

    def __init__(self) -> None:
        super().__init__("deepseek-lsp", __version__)
        self.settings = Settings()
        self.init_options: Any = None
        self.models = ModelManager()
        self.notices: dict[str, types.Diagnostic] = {}   # by code; shown on every open document
        self.inflight: dict[str, InFlight] = {}            # by document URI
        self.load_task: asyncio.Task | None = None

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
    def start_model_load(self) -> None:
        self.load_task = asyncio.ensure_future(self._load_model(self.settings))

    async def _load_model(self, settings: Settings) -> ModelStatus:
        loop = asyncio.get_running_loop()
        token = f"deepseek-model-{uuid.uuid4()}"
        caps = self.client_capabilities.window
        progress = caps is not None and bool(caps.work_done_progress)
        if progress:
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                    title="deepseek: loading model", message=settings.model_path or settings.model_name or "default",
                    percentage=0, cancellable=False))
            except Exception as e:
                log.warning("work done progress unavailable: %s", e)
                progress = False
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

    async def ready_model(self) -> bool:
        """Wait for a load in progress; True when a FIM model is loaded."""
        if self.load_task is not None and not self.load_task.done():
            await asyncio.shield(self.load_task)
        return self.models.status.loaded and self.models.fim is not None

    # -- diagnostics and messages --------------------------------------------------------
    def publish(self, uri: str) -> None:
        doc = self.workspace.text_documents.get(uri)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, diagnostics=list(self.notices.values()), version=doc.version if doc else None))

    def publish_all(self) -> None:
        for uri in list(self.workspace.text_documents):
            self.publish(uri)

    def show(self, kind: types.MessageType, message: str) -> None:
        log.log(logging.WARNING if kind <= types.MessageType.Warning else logging.INFO, "%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    # -- completions ---------------------------------------------------------------------
    async def suggest(self, uri: str, position: types.Position) -> Suggestion | None:
        """The suggestion at ``position`` in the open document ``uri``; None when there is none.

        Raises:
            JsonRpcInvalidParams: the position is outside the document.
        """
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            log.warning("completion for %s, which is not open: no suggestion", uri)
            return None
        if not await self.ready_model():
            return None
        settings, models = self.settings, self.models
        try:
            check_document(doc.source, settings.completion_max_file_size_kb)
            snap = snapshot(doc, position)
        except Unsuitable as e:
            log.info("no suggestion for %s: %s", uri, e)
            return None
        except InvalidPosition as e:
            raise JsonRpcInvalidParams(str(e)) from None
        fim, counter = models.fim, models.counter
        key = (snap.version, snap.offset, len(snap.text), hash(snap.text))
        flight = self.inflight.get(uri)
        if flight is None or flight.key != key or flight.future.done() or flight.cancel.is_set():
            if flight is not None:
                flight.cancel.set()  # superseded: the older generation stops within one token
            cancel = threading.Event()
            job = models.engine.submit(lambda model: complete(model, fim, counter, snap, settings, cancel))
            flight = self.inflight[uri] = InFlight(key, asyncio.wrap_future(job), cancel)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.future)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0:
                flight.cancel.set()  # $/cancelRequest from every waiter: stop generating
            raise
        except Unsuitable as e:
            log.info("no suggestion for %s: %s", uri, e)
            return None
        finally:
            if self.inflight.get(uri) is flight and flight.future.done():
                del self.inflight[uri]


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
    ls.start_model_load()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def workspace_did_change_configuration(ls: DeepseekLanguageServer,
                                             params: types.DidChangeConfigurationParams) -> None:
    old = ls.settings
    await ls.refresh_settings()
    if ls.settings.model_key() != old.model_key() or \
            ls.settings.resources_ram_limit_mb != old.resources_ram_limit_mb:
        ls.start_model_load()


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def text_document_did_open(ls: DeepseekLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    if ls.notices:
        ls.publish(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def text_document_did_close(ls: DeepseekLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    if (flight := ls.inflight.pop(uri, None)) is not None:
        flight.cancel.set()
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: DeepseekLanguageServer,
                            params: types.InlineCompletionParams) -> types.InlineCompletionList:
    suggestion = await ls.suggest(params.text_document.uri, params.position)
    return lsp_inline_completion(suggestion, params.position)


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
async def completion(ls: DeepseekLanguageServer, params: types.CompletionParams) -> types.CompletionList:
    suggestion = await ls.suggest(params.text_document.uri, params.position)
    return lsp_completion(suggestion, params.position)


@server.command(CMD_STATUS)
async def status(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    # The workspace index arrives with issue #4; until then it is reported as unavailable.
    reply = lsp_status(ls.models.status, "local", {"state": "unavailable", "files": 0, "chunks": 0})
    # "available" is now, not when the model was checked.
    limit = ls.settings.resources_ram_limit_mb
    reply["ram"]["availableMb"] = round(limit if limit is not None else available_mb())
    return reply


@server.feature(types.SHUTDOWN)
def shutdown(ls: DeepseekLanguageServer, params: Any) -> None:
    for flight in ls.inflight.values():
        flight.cancel.set()
    ls.models.shutdown()
