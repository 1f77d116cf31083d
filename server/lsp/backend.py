"""The completion backend in the editor: the runtime's choice, with progress and notices.

:class:`CompletionBackend` asks the :class:`server.runtime.Runtime` for what the settings
name (the local model, loaded off the event loop with work-done progress, or an
OpenAI-compatible server) and turns their state into notices: a model that does not fit
or crashes, a backend that is down, slow answers.
Its methods run on the event loop; the model loads on a default-executor thread and
runs on its engine's owner thread (``engine-completion``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from ..completion import CompletionService
from ..config import Settings
from ..manager import ModelState, ModelStatus
from ..runtime import Runtime
from .notices import (
    CODE_BACKEND_UNREACHABLE,
    CODE_MODEL_CRASHED,
    CODE_MODEL_NO_FIM,
    CODE_MODEL_TOO_LARGE,
    CODE_MODEL_UNAVAILABLE,
    CODE_SLOW_RESPONSE,
    MODEL_CODES,
    Notices,
)

log = logging.getLogger(__name__)

SLOW_MIN_ANSWERS = 5    # answers from the model before the slow-response warning may fire
START_TIMEOUT_S = 30    # a request waits this long for `initialized` to choose the backend

Progress = Callable[[str, str, str, bool], Awaitable[str | None]]


class CompletionBackend:
    """The active source of suggestions and the local model's life cycle.

    Args:
        server: for work-done progress.
        notices: where model and backend problems are shown.
        runtime: holds the models and the services (shared with ``serve``'s code).
        begin_progress: starts work-done progress; returns its token or None.
    """

    def __init__(self, server: LanguageServer, notices: Notices, runtime: Runtime, begin_progress: Progress):
        self._server, self._notices, self._runtime, self._begin_progress = server, notices, runtime, begin_progress
        self.started = asyncio.Event()  # set once `initialized` has chosen the backend
        self._load_task: asyncio.Task | None = None

    @property
    def is_remote(self) -> bool:
        return self._runtime.remote is not None

    def active(self) -> CompletionService | None:
        """The service answering now (no waiting), or None."""
        return self._runtime.service

    def start(self, settings: Settings) -> None:
        """Use the backend ``settings`` name: the local model (loaded in the background) or a remote server."""
        self._runtime.stop_remote()
        if settings.backend_kind == "openai":
            self._notices.clear(CODE_BACKEND_UNREACHABLE)
            if self._runtime.use_remote(settings) is None:
                self.unreachable("backend.kind is openai but backend.url is not set. Fix: set backend.url "
                                 "(e.g. http://gpu-box:8000) or backend.kind local.")
                return
            self._notices.publish_all()
            return
        self._load_task = asyncio.ensure_future(self._load(settings))

    async def service(self) -> CompletionService | None:
        """The service that makes suggestions, waiting for a model load in progress; None when none."""
        try:
            await asyncio.wait_for(self.started.wait(), timeout=START_TIMEOUT_S)
        except asyncio.TimeoutError:
            return None
        if self._runtime.remote is not None:
            return self._runtime.remote
        if self._load_task is not None and not self._load_task.done():
            await asyncio.shield(self._load_task)
        return self._runtime.local if self._runtime.models.status.loaded else None

    async def _load(self, settings: Settings) -> ModelStatus:
        loop = asyncio.get_running_loop()
        token = await self._begin_progress("model", "deepseek: loading model",
                                           settings.model_path or settings.model_name or "default", False)
        progress = self._server.work_done_progress
        last = [0.0]

        def report(message: str, percentage: int | None = None) -> None:
            if token is not None:
                progress.report(token, types.WorkDoneProgressReport(message=message, percentage=percentage))

        def on_bytes(done: int, total: int) -> None:  # loader thread -> loop
            now = time.monotonic()
            if now - last[0] >= 0.2 or done >= total:
                last[0] = now
                pct = int(100 * done / max(1, total))
                loop.call_soon_threadsafe(report, f"assembling model {done / 2**20:,.0f}/{total / 2**20:,.0f} MB", pct)

        def on_state(status: ModelStatus) -> None:  # loader thread -> loop
            loop.call_soon_threadsafe(report, f"{status.state.value} {status.name or ''}".strip())

        status = await self._runtime.load_completion(settings, on_bytes, on_state)
        if token is not None:
            progress.end(token, types.WorkDoneProgressEnd(message=f"{status.name}: {status.state.value}"))
        self._model_notices(status)
        return status

    def _model_notices(self, status: ModelStatus) -> None:
        """Turn the model's status into a diagnostic on every open document and a message."""
        for code in MODEL_CODES:
            self._notices.by_code.pop(code, None)
        if status.state is ModelState.TOO_LARGE:
            self._notices.set(CODE_MODEL_TOO_LARGE, status.error or "model too large", types.DiagnosticSeverity.Warning)
        elif status.state is ModelState.CRASHED:
            self.crashed(status.error or "llama.cpp crashes with this model")
        elif status.state is ModelState.ERROR:
            self._notices.set(CODE_MODEL_UNAVAILABLE, status.error or "model unavailable",
                              types.DiagnosticSeverity.Error)
        elif status.loaded and self._runtime.models.fim is None:
            self._notices.set(CODE_MODEL_NO_FIM, (
                f"{status.name} has no fill-in-the-middle tokens, so it cannot complete code. Fix: choose a code "
                "model such as Qwen2.5-Coder or DeepSeek-Coder (setting model.name or model.path)."),
                types.DiagnosticSeverity.Warning)
        else:
            if status.loaded:
                log.info("model ready: %s (%s), %.0f MB", status.name, status.family, status.size_mb or 0)
            self._notices.publish_all()

    def crashed(self, text: str) -> None:
        """The Error diagnostic ``model-crashed`` (any model: completion, chat)."""
        self._notices.set(CODE_MODEL_CRASHED, text, types.DiagnosticSeverity.Error)

    def unreachable(self, text: str | None) -> None:
        """Show (text) or clear (None) the backend-unreachable warning; shown once per outage."""
        if text is None:
            self._notices.clear(CODE_BACKEND_UNREACHABLE)
        elif CODE_BACKEND_UNREACHABLE not in self._notices:
            self._notices.set(CODE_BACKEND_UNREACHABLE, text, types.DiagnosticSeverity.Warning)

    def check_latency(self, settings: Settings) -> None:
        """Warn once when the moving average latency passes resources.slowResponseMs; clear on recovery.

        Local and remote alike: the figure is the active service's.
        """
        service = self.active()
        if service is None or service.latency_ms is None or service.model_answers < SLOW_MIN_ANSWERS:
            return
        limit, avg = settings.resources_slow_response_ms, service.latency_ms
        if avg > limit and CODE_SLOW_RESPONSE not in self._notices:
            self._notices.set(CODE_SLOW_RESPONSE, (
                f"Suggestions are slow: {avg:,.0f} ms on average (resources.slowResponseMs is {limit:,}). "
                f"Fix: a smaller model (model.name), less context (completion.prefixTokens "
                f"{settings.completion_prefix_tokens}, completion.suffixTokens {settings.completion_suffix_tokens}), "
                "or more threads (threads)."), types.DiagnosticSeverity.Warning)
        elif avg < 0.8 * limit:
            self._notices.clear(CODE_SLOW_RESPONSE)
