"""The assistant's host: the chat model, the :class:`~.tasks.Assistant` and the threads tasks run on.

Shared by the language server (:mod:`server.lsp.assist`) and ``deepseek-lsp serve``
(:mod:`server.serving`): both get the assistant for their settings with :meth:`AssistHost.get`
and run its blocking tasks with :meth:`AssistHost.run`. Also here: turning index search
results into chat context under the index's rule for what may go into a prompt.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..config import Settings
from ..manager import ModelManager, ModelStatus
from ..models import AssistantChoice, ModelError, cache_dir, choose_assistant_model, user_default_model
from ..remote import OpenAIBackend
from .ahead import PromptReader, SystemStates
from .records import AssistError, ContextItem, Reference
from .store import AssistStore
from .tasks import Assistant

log = logging.getLogger(__name__)
T = TypeVar("T")

ASSIST_THREADS = 2        # tasks in flight at once (each mostly waits on the chat engine or pytest)


class ModelUnavailable(AssistError):
    """The chat model cannot be used; ``status`` says why (None for a remote server that is not set up)."""

    def __init__(self, message: str, status: ModelStatus | None = None):
        super().__init__(message)
        self.status = status


class AssistHost:
    """The chat model, the assistant and the threads its tasks run on; created on first use.

    Loading obeys the memory check and the load probe like the completion model.
    ``run`` and ``get`` are used from one asyncio event loop.
    """

    def __init__(self, store: AssistStore | None = None) -> None:
        self.models = ModelManager("chat")
        self.assistant: Assistant | None = None
        self.reader: PromptReader | None = None  # reads the local assistant's prompts ahead
        self._key: tuple | None = None
        self._ready: tuple | None = None  # what the chat engine was last set up for (see get)
        self._choice: tuple[tuple, AssistantChoice] | None = None
        self._lock = asyncio.Lock()
        self._store = store
        self._trajectories = None
        self._pool = ThreadPoolExecutor(max_workers=ASSIST_THREADS, thread_name_prefix="assist")
        self._running = 0

    @property
    def store(self) -> AssistStore:
        if self._store is None:
            self._store = AssistStore()
        return self._store

    @property
    def trajectories(self):
        """The agent's runs (:class:`server.agent.trajectories.TrajectoryStore`), in the store's SQLite file."""
        if self._trajectories is None:
            from ..agent.trajectories import TrajectoryStore
            self._trajectories = TrajectoryStore(self.store.path)
        return self._trajectories

    @property
    def busy(self) -> bool:
        """Every ``assist-*`` thread is taken (a new task would wait in the queue)."""
        return self._running >= ASSIST_THREADS

    async def run(self, fn: Callable[..., T], *args: Any, cancel: threading.Event | None = None, **kwargs: Any) -> T:
        """Run a (blocking) task on the ``assist-*`` threads, passing it ``cancel=`` an Event.

        When the awaiting task is cancelled (an editor's ``$/cancelRequest``, an HTTP client
        that went away), the Event is set: generation stops within one token and a running
        pytest is killed with its whole process tree.

        Raises:
            AssistError: the task refused the request (the message says why).
            asyncio.CancelledError: the caller was cancelled.
        """
        cancel = cancel or threading.Event()
        self._running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(fn, *args, cancel=cancel, **kwargs))
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            self._running -= 1

    def choice(self, s: Settings) -> AssistantChoice:
        """The local chat model for ``s``: ``chatModel`` when set, else
        :func:`server.models.choose_assistant_model`. Decided once per model settings, so the
        memory a loaded model takes never makes the choice flip back and forth."""
        key = self._choice_key(s)
        if self._choice is None or self._choice[0] != key:
            choice = assistant_choice(s)
            log.info("assistant model: %s", choice.reason)
            self._choice = (key, choice)
        return self._choice[1]

    @staticmethod
    def _choice_key(s: Settings) -> tuple:
        return (s.chat_model, s.model_path, s.model_name or user_default_model(), s.model_n_ctx,
                s.resources_ram_limit_mb)

    def _load(self, s: Settings) -> ModelStatus:
        """Load the chosen chat model (blocking). When the server chose it (``chatModel`` not set)
        and it cannot be loaded (assembling its file failed, too large, crashed), the completion
        model takes its place, and the choice's reason says why."""
        choice = self.choice(s)
        status = self.models.load(chat_settings(s, choice))
        if not status.loaded and choice.name is not None and not s.chat_model:
            fallback = AssistantChoice(None, f"the completion model: {choice.name} did not load ({status.error})")
            log.warning("assistant model: %s", fallback.reason)
            self._choice = (self._choice_key(s), fallback)
            status = self.models.load(chat_settings(s, fallback))
        return status

    def status(self, s: Settings) -> dict[str, Any]:
        """``deepseek.status``'s ``chat``: ``{model, reason, loaded, error, readAhead}`` (see docs/PROTOCOL.md)."""
        if (s.backend_kind if s.chat_backend == "same" else s.chat_backend) == "openai":
            return {"model": s.backend_model or "remote", "reason": "an OpenAI-compatible server (backend.url)",
                    "loaded": None, "error": None}
        choice = self.choice(s)
        name = choice.name or "the completion model"
        if choice.name and ("/" in choice.name or choice.name.endswith(".gguf")):
            name = Path(choice.name).name
        st = self.models.status  # the model loaded last: this one only if the names agree
        mine = st.name == name if choice.name else st.name is not None
        reader = self.reader
        ahead = {"on": s.chat_read_ahead, "reads": reader.reads if reader else 0,
                 "tokens": reader.evaluated if reader else 0, "answers": reader.answers if reader else 0}
        return {"model": name, "reason": choice.reason, "loaded": bool(st.loaded and mine),
                "error": st.error if mine else None, "readAhead": ahead}

    async def get(self, s: Settings) -> Assistant:
        """The assistant for the settings ``s``: the chat model loaded (or a remote server).

        Raises:
            ModelUnavailable: the chat model cannot be used (the message says why; ``status``
                is CRASHED when llama.cpp crashes with it).
        """
        async with self._lock:
            target = s.backend_kind if s.chat_backend == "same" else s.chat_backend
            if target == "openai":
                if not s.backend_url:
                    raise ModelUnavailable("chat goes to an OpenAI-compatible server but backend.url is not set")
                key = ("openai", s.backend_url, s.backend_api_key, s.backend_model)
                if self.assistant is None or self._key != key:
                    self.assistant = Assistant(None, s.backend_model or "remote", self.store,
                                               remote=OpenAIBackend(s.backend_url, s.backend_api_key, s.backend_model))
                    self._key = key
            else:
                status = await asyncio.get_running_loop().run_in_executor(None, self._load, s)
                if not status.loaded:
                    raise ModelUnavailable(f"the chat model is not available: {status.error}", status)
                key = ("local", status.name)
                if self.assistant is None or self._key != key:
                    self.assistant = Assistant(self.models.engine, status.name or "model", self.store)
                    from ..agent.tools import tool_list  # the agent's system text lists its tools
                    if self.reader is not None:
                        self.reader.close()
                    self.reader = PromptReader(self.assistant, SystemStates(cache_dir() / "kv-states",
                                                                            {"agent": {"tools": tool_list()}}))
                    self._key = key
                # Once per model and settings: the saved states' budget, and the packs' system states.
                ready = (key, id(self.models.engine.model), s.chat_kv_snapshots_mb, s.chat_read_ahead)
                if self._ready != ready:
                    self._ready = ready
                    budget = s.chat_kv_snapshots_mb * 2**20
                    self.models.engine.submit(lambda model: model.snapshots.resize(budget))
                    if s.chat_read_ahead and self.reader is not None:
                        self.reader.warm()
            self.assistant.max_tokens = s.chat_max_tokens
            self.assistant.context_tokens = s.chat_context_tokens
            self.assistant.sandbox = s.tests_sandbox
            self.assistant.improve_ms = s.tests_improve_max_time_ms
            return self.assistant

    def ahead(self, s: Settings) -> PromptReader | None:
        """The reader of the local assistant when it is loaded and ``chat.readAhead`` is on, else
        None. Never loads a model (reading ahead at every cursor move must not load one)."""
        if not s.chat_read_ahead or self.reader is None or self.assistant is None or \
                self.assistant.engine is None or not self.models.status.loaded:
            return None
        return self.reader

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.reader is not None:
            self.reader.close()
        self.models.shutdown()


def assistant_choice(s: Settings) -> AssistantChoice:
    """The local chat model for ``s`` (blocking: reads the catalog and installed packages):
    ``chatModel`` when set, else :func:`server.models.choose_assistant_model`."""
    if s.chat_model:
        return AssistantChoice(s.chat_model, "chatModel is set")
    try:
        return choose_assistant_model(s.model_path, s.model_name, s.model_n_ctx, s.resources_ram_limit_mb)
    except ModelError as e:  # an unknown model.name: loading it says so
        return AssistantChoice(None, f"the completion model ({e})")


def chat_settings(s: Settings, choice: AssistantChoice | None = None) -> Settings:
    """The settings with the chat model as the model to load: ``chatModel`` (a catalog name or a
    GGUF path), else ``choice`` (:meth:`AssistHost.choice`), else the completion model; with the
    chat model's context window (``chat.nCtx``) as ``model.nCtx``."""
    chat = s.chat_model or (choice.name if choice is not None else None)
    s = dataclasses.replace(s, model_n_ctx=s.chat_n_ctx)  # 0: as large as the model and memory allow
    if not chat:
        return s
    if chat.endswith(".gguf") or "/" in chat:
        return dataclasses.replace(s, model_path=chat, model_name=None)
    return dataclasses.replace(s, model_name=chat, model_path=None)


def retrieved_context(results: Iterable[Any], readable: Callable[[Path], bool]) -> list[ContextItem]:
    """Index search results as chat context, keeping only what may go into a prompt.

    A result is dropped when its file no longer passes the index's rule (``readable``:
    :meth:`index.workspace.WorkspaceIndex.indexable`: secret names, git-ignored, excluded...),
    or when its chunk holds a credential (``secret``, marked by the index from the whole file).

    Args:
        results: :class:`index.workspace.SearchResult` items (``path`` relative, ``file``
            absolute, 0-based inclusive lines, ``text``, ``secret``).
        readable: the index's rule for a path.

    Returns:
        One item per result kept, labelled with its path, 1-based line range and symbol (the
        function or class the chunk is, when it is one).
    """
    out = []
    for r in results:
        if r.secret or not readable(r.file):
            log.info("retrieved %s:%d-%d not sent: secret or not readable", r.path, r.start_line + 1, r.end_line + 1)
            continue
        where = f"lines {r.start_line + 1}-{r.end_line + 1}" + (f", `{r.symbol}`" if r.symbol else "")
        out.append(ContextItem(f"From {r.path} ({where})", r.text,
                               Reference(r.file, r.start_line, r.end_line), retrieved=True))
    return out


__all__ = ["ASSIST_THREADS", "AssistHost", "ModelUnavailable", "assistant_choice", "chat_settings",
           "retrieved_context"]
