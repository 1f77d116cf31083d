"""What one ``deepseek-lsp serve`` process runs: the language server's runtime, with metrics and the page's jobs.

:class:`Workbench` holds the :class:`server.runtime.Runtime` the language server holds too,
configured from the same settings: the completion model and its pipeline (local, or remote
for ``backend.kind openai``), the assistant's host (chat model, prompt packs, the SQLite
store), the workspace index with its rule for prompts and its search. It adds what only
``serve`` needs: which model answers a request, retrieval by task (:data:`RETRIEVAL`), the
documents of requests without a path, the page's jobs. The HTTP layer
(:mod:`server.http.app`) only converts requests to calls on it. :class:`Metrics` keeps the
Prometheus figures.

Everything here runs on the asyncio event loop unless a docstring says otherwise.
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram

from .assist import Assistant, ContextItem
from .assist.host import AssistHost
from .completion import CompletionService
from .config import Settings
from .doctor import MachineReport
from .manager import ModelStatus
from .models import ModelError, resolve_model
from .runtime import Runtime

log = logging.getLogger(__name__)

# Workspace code retrieved for a request, by task (chunks of the hybrid search). Completion
# gets its cross-file context inside the FIM pipeline instead (completion.contextTokens).
RETRIEVAL = {"chat": 5, "rag-code": 8, "explain": 3, "refactor": 0, "tests": 0}
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)  # seconds


class Unavailable(Exception):
    """A model the request needs cannot be used; ``str(e)`` says why and how to fix it."""


class Metrics:
    """Prometheus figures of this process (its own registry; nothing leaves the machine unless scraped).

    ``deepseek_request_seconds{task,model}`` (histogram), ``deepseek_tokens_total{task,model,kind}``
    (kind ``prompt`` or ``completion``), ``deepseek_cache_hits_total{task}``,
    ``deepseek_requests_total{task,outcome}`` (outcome ``ok``, ``error`` or ``cancelled``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("deepseek_request_seconds", "Time to answer a request, by task and model.",
                                 ["task", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("deepseek_tokens", "Tokens read (prompt) and written (completion) by the model.",
                              ["task", "model", "kind"], registry=self.registry)
        self.cache_hits = Counter("deepseek_cache_hits", "Answers served from a cache without the model.",
                                  ["task"], registry=self.registry)
        self.requests = Counter("deepseek_requests", "Requests by task and outcome (ok, error, cancelled).",
                                ["task", "outcome"], registry=self.registry)

    def answered(self, task: str, model: str, seconds: float, prompt_tokens: int, output_tokens: int,
                 cache_hit: bool) -> None:
        self.latency.labels(task, model).observe(seconds)
        self.tokens.labels(task, model, "prompt").inc(prompt_tokens)
        self.tokens.labels(task, model, "completion").inc(output_tokens)
        if cache_hit:
            self.cache_hits.labels(task).inc()
        self.requests.labels(task, "ok").inc()

    def failed(self, task: str, outcome: str) -> None:
        self.requests.labels(task, outcome).inc()


@dataclass
class PullJob:
    """A model being installed from the page: bytes done of total, and how it ended."""

    name: str
    done: int = 0
    total: int = 0
    finished: bool = False
    error: str | None = None
    path: str | None = None


@dataclass
class MachineCheck:
    """doctor's checks run from the page: running, or their report."""

    running: bool = False
    report: MachineReport | None = None
    started: float = field(default_factory=time.time)


class Workbench:
    """The runtime of one serve process, with its metrics and the page's jobs.

    Args:
        settings: as ``--set`` gives them (the keys of the editor's settings).
        roots: workspace folders to index and retrieve from.
        store_host: the assistant's host (its store is the user's SQLite file).
    """

    def __init__(self, settings: Settings, roots: list[Path], store_host: AssistHost | None = None):
        self.settings = settings
        self.roots = [r.resolve() for r in roots]
        self.trusted = False  # serve --trust-workspace: the agent may run the workspace's code (in the sandbox)
        # The language server's runtime; files outside the roots never go into a prompt.
        self.runtime = Runtime(self.roots, settings, store_host)
        self.host = self.runtime.assist  # the assistant's host: chat model, threads, store
        self.completion = self.runtime.models  # the completion model's manager
        self.metrics = Metrics()
        self.pulls: dict[str, PullJob] = {}
        self.machine = MachineCheck()
        self._load: asyncio.Task | None = None
        self.index_error: str | None = None
        self._untitled: set[int] = set()  # numbers of the untitled documents of requests under way

    # -- start and stop ------------------------------------------------------------------
    def start(self) -> None:
        """Load the completion model and index the workspace, both in the background."""
        self._load = asyncio.ensure_future(self._load_completion())
        try:
            index = self.runtime.open_index(self.roots, self.settings)
            if index is not None:
                index.start(None, threading.Event())
        except Exception as e:  # an unreadable folder must not stop the endpoint
            log.exception("the workspace index did not start")
            self.index_error = str(e)

    async def _load_completion(self) -> ModelStatus | None:
        if self.settings.backend_kind == "openai":
            self.runtime.use_remote(self.settings)
            return None
        status = await self.runtime.load_completion(self.settings)
        log.info("completion model %s: %s", status.name, status.state.value)
        return status

    def close(self) -> None:
        self.runtime.close()

    # -- models ----------------------------------------------------------------------------
    def model_names(self) -> tuple[str, str]:
        """(completion model, chat model) names as the settings resolve them, without loading anything."""
        s = self.settings
        remote = s.backend_model or "remote"
        if s.backend_kind == "openai":
            completion = remote
        else:
            try:
                completion = resolve_model(s.model_path, s.model_name).name
            except ModelError:
                completion = s.model_path or s.model_name or "unavailable"
        if (s.backend_kind if s.chat_backend == "same" else s.chat_backend) == "openai":
            return completion, remote
        chat = s.chat_model or self.host.choice(s).name
        chat = Path(chat).name if chat and ("/" in chat or chat.endswith(".gguf")) else chat
        if not chat and s.backend_kind == "openai":  # chat here, on the model the settings name
            try:
                chat = resolve_model(s.model_path, s.model_name).name
            except ModelError:
                chat = s.model_path or s.model_name or "unavailable"
        return completion, chat or completion

    def context_windows(self) -> tuple[int | None, int | None]:
        """(completion, chat) models' context windows in tokens: the loaded model's, else the
        setting (``model.nCtx``, ``chat.nCtx``); None for a remote model, or for a chat model with
        ``chat.nCtx`` 0 (sized to the model and memory when it loads) that is not loaded yet."""
        s, local = self.settings, "local"
        completion = (self.completion.status.n_ctx if self.completion.status.loaded else s.model_n_ctx) \
            if s.backend_kind == local else None
        if (s.backend_kind if s.chat_backend == "same" else s.chat_backend) != local:
            return completion, None
        chat = self.host.models.status
        return completion, chat.n_ctx if chat.loaded else (s.chat_n_ctx or None)

    async def completion_service(self) -> CompletionService:
        """The FIM pipeline, waiting for the model load under way.

        Raises:
            Unavailable: the model did not load, or it has no fill-in-the-middle tokens.
        """
        if self._load is not None and not self._load.done():
            await asyncio.shield(self._load)
        service = self.runtime.service
        if service is None:
            status = self.completion.status
            if status.loaded:
                raise Unavailable(f"{status.name} has no fill-in-the-middle tokens, so it cannot complete code. Fix: "
                                  "choose a code model such as Qwen2.5-Coder or DeepSeek-Coder (--set model.name=...).")
            raise Unavailable(f"the completion model is not available: {status.error or status.state.value}")
        return service

    async def assistant(self) -> Assistant:
        """The assistant on the chat model (loaded on first use).

        Raises:
            server.assist.host.ModelUnavailable: the chat model cannot be used.
        """
        return await self.host.get(self.settings)

    @contextlib.contextmanager
    def untitled(self) -> Iterator[str]:
        """A document URI no other request under way has, for a completion request without a path.

        The completion pipeline treats requests for one URI as keystrokes in one document (a
        newer one supersedes the older), so two clients must not share one. The URI is
        ``untitled:deepseek-http-<n>`` with the lowest ``n`` free: one client's requests, one
        after the other, stay in one document (its prompt start, its KV cache), and the
        pipeline keeps state for at most as many documents as requests ever ran at once.
        """
        n = next(i for i in range(len(self._untitled) + 1) if i not in self._untitled)
        self._untitled.add(n)
        try:
            yield f"untitled:deepseek-http-{n}"
        finally:
            self._untitled.discard(n)

    # -- the workspace -------------------------------------------------------------------
    async def retrieve(self, task: str, query: str) -> list[ContextItem]:
        """Workspace code for a request of ``task`` (RETRIEVAL chunks), never secrets (see
        :meth:`server.runtime.Runtime.retrieve`); [] until the index is ready."""
        return await self.runtime.retrieve(query, RETRIEVAL.get(task, 0))

    def index_status(self) -> dict:
        index = self.runtime.index
        if index is None:
            return {"state": "off" if not self.settings.index_enabled else "unavailable", "files": 0, "chunks": 0,
                    **({"error": self.index_error} if self.index_error else {})}
        return index.status()
