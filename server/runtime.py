"""The runtime both front ends hold: the completion model and service, the workspace index, the assistant.

The language server (:mod:`server.lsp`) and ``deepseek-lsp serve`` (:mod:`server.serving`) each
hold one :class:`Runtime` and add only what their protocol needs (the LSP: progress,
diagnostics, file watching; serve: metrics, the page's jobs). Here, once for both:

- the backend choice: suggestions from the local model (:meth:`Runtime.load_completion`:
  :class:`server.completion.CompletionService` on the loaded model) or from an
  OpenAI-compatible server (:meth:`Runtime.use_remote`:
  :class:`server.completion.RemoteCompletionService`), as ``backend.kind`` says;
- the cross-file context adapter: the completion generator asks the index directly, on the
  engine's owner thread (:func:`index.workspace.context_provider`);
- the index's rule for what may go into a prompt (:meth:`Runtime.readable`), its search off
  the event loop (:meth:`Runtime.search`) and retrieved chat context (:meth:`Runtime.retrieve`);
- the assistant's host (:class:`server.assist.host.AssistHost`: chat model, threads, store).

Methods run on the asyncio event loop unless their docstring says otherwise. This module
imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Callable

from index.workspace import IndexOptions, IndexRules, SearchResult, WorkspaceIndex, context_provider

from .assist import ContextItem
from .assist.host import AssistHost, retrieved_context
from .completion import CompletionService, LocalGenerator, RemoteCompletionService
from .completion.large import LargerModel
from .config import Settings
from .manager import ModelManager, ModelStatus
from .prompting import FAMILIES
from .remote import OpenAIBackend

log = logging.getLogger(__name__)

OnBytes = Callable[[int, int], None]  # (bytes done, bytes in all), from the loader thread
OnState = Callable[[ModelStatus], None]  # each loading step's status, from the loader thread


def index_options(s: Settings) -> IndexOptions:
    """The index's options from the settings (``index.*``, ``model.loadConfig``)."""
    return IndexOptions(include=s.index_include, exclude=s.index_exclude, max_file_size_kb=s.index_max_file_size_kb,
                        embeddings=s.index_embeddings, load_config=s.model_load_config)


class Runtime:
    """The models, the completion service, the index and the assistant of one process.

    Args:
        roots: the folders the rule for prompts reads from while there is no index (serve: its
            ``--root`` folders); none (the language server): each file's own folder.
        settings: the index's options until :meth:`open_index` (default options without them).
        assist: the assistant's host (a new one without it).
    """

    def __init__(self, roots: list[Path] | None = None, settings: Settings | None = None,
                 assist: AssistHost | None = None):
        self.roots = list(roots or [])
        self.models = ModelManager("completion")
        self.local: CompletionService | None = None
        self.remote: RemoteCompletionService | None = None
        self.index: WorkspaceIndex | None = None
        self.assist = assist or AssistHost()
        self._loading_chat: asyncio.Future | None = None  # the chat model loading for explicit requests
        self._large_key: tuple | None = None  # what the larger model's generator was made for
        # Cross-file context goes from the completion generator to the index directly (engine thread).
        self.context = context_provider(lambda: self.index)
        self._options = index_options(settings) if settings is not None else IndexOptions()
        self._rules = IndexRules(self.roots, self._options) if self.roots else None

    # -- suggestions ---------------------------------------------------------------------
    @property
    def service(self) -> CompletionService | None:
        """The service answering now: the remote one, else the local one (None: neither)."""
        return self.remote or self.local

    def use_remote(self, s: Settings) -> RemoteCompletionService | None:
        """Suggestions from the OpenAI-compatible server ``s`` names (``backend.url``, ``backend.family``);
        None (and no remote service) when ``backend.url`` is not set. Stops the previous remote service."""
        self.stop_remote()
        if not s.backend_url:
            return None
        family = next(f for f in FAMILIES if f.name == s.backend_family)
        backend = OpenAIBackend(s.backend_url, s.backend_api_key, s.backend_model)
        self.remote = RemoteCompletionService(backend, family, self.context)
        log.info("completions from %s (%s)", backend.base, family.name)
        return self.remote

    def stop_remote(self) -> None:
        if self.remote is not None:
            self.remote.shutdown()
            self.remote = None

    async def load_completion(self, s: Settings, on_bytes: OnBytes | None = None,
                              on_state: OnState | None = None) -> ModelStatus:
        """Load the completion model ``s`` names (memory check, probe, load: on a default-executor
        thread) and build its :class:`CompletionService`; no local service meanwhile, nor after a
        load that failed or of a model without fill-in-the-middle tokens."""
        self.local = None
        status = await asyncio.get_running_loop().run_in_executor(None, self.models.load, s, on_bytes, on_state)
        if status.loaded and self.models.fim is not None and self.models.counter is not None:
            self.local = CompletionService(self.models.engine, self.models.fim, self.models.counter, self.context)
        return status

    async def attach_large(self, s: Settings, wait: bool = False) -> bool:
        """Let the assistant's larger model write explicit requests' suggestions (``completion.manualModel``).

        It needs the local chat model loaded, with fill-in-the-middle tokens, and another file
        than the completion model's. It then gets a second context on the chat model's weights
        (:meth:`server.engine.Engine.open_second`, ``n_ctx`` as the completion model's) and a
        :class:`server.completion.LocalGenerator` of its own, attached to the local service as
        ``large``. While the chat model is not loaded, loading it is started (``wait``: awaited;
        else the completion model answers meanwhile). ``small``, a remote backend or chat from a
        remote server detach it.

        Returns:
            True when the larger model is attached.
        """
        service = self.local
        if service is None or self.remote is not None:
            return False
        chat = s.backend_kind if s.chat_backend == "same" else s.chat_backend
        if s.completion_manual_model == "small" or chat != "local":
            service.larger = None
            return False
        host, mine = self.assist, self.models.status
        engine = host.models.engine
        if not host.models.status.loaded or engine.model is None:
            # Only for a model of its own: the assistant on the completion model (no larger one
            # installed, or it does not fit) would load the same weights again for nothing.
            choice = await asyncio.get_running_loop().run_in_executor(None, host.choice, s)
            if choice.name is None:
                service.larger = None
                return False
            if self._loading_chat is None or self._loading_chat.done():
                self._loading_chat = asyncio.ensure_future(self._load_chat(s))
            if not wait:
                return False
            await asyncio.shield(self._loading_chat)
        theirs = host.models.status
        if not theirs.loaded or host.models.fim is None or host.models.counter is None or theirs.path == mine.path \
                or engine.model is None:
            service.larger = None
            return False
        key = (id(engine.model), mine.n_ctx)
        if service.large is None or self._large_key != key:
            try:
                await asyncio.wrap_future(engine.open_second(mine.n_ctx or 4096))
            except (RuntimeError, ValueError) as e:
                log.warning("the larger model cannot fill in: %s", e)
                service.larger = None
                return False
            service.larger = LargerModel(LocalGenerator(engine.lane(), host.models.fim, host.models.counter,
                                                        self.context), theirs.name or "the chat model")
            self._large_key = key
            log.info("explicit requests: %s fills in (completion.manualModel %s)", theirs.name,
                     s.completion_manual_model)
        return True

    async def _load_chat(self, s: Settings) -> None:
        try:
            await self.assist.get(s)
        except Exception as e:  # the chat model's own requests report why
            log.info("the larger model for explicit requests is not loaded: %s", e)

    def forget(self, uri: str) -> None:
        """The document closed: the services drop what they keep for it."""
        for service in (self.local, self.remote):
            if service is not None:
                service.forget(uri)

    # -- the workspace -------------------------------------------------------------------
    def open_index(self, roots: list[Path], s: Settings) -> WorkspaceIndex | None:
        """The index of ``roots`` under the settings ``s``, not started (None: ``index.enabled`` is
        off or there is no folder). Its options become the rule for prompts either way.

        Raises:
            OSError: a folder cannot be read.
        """
        self._options = index_options(s)
        self._rules = IndexRules(self.roots, self._options) if self.roots else None
        if not s.index_enabled or not roots:
            return None
        self.index = WorkspaceIndex(roots, self._options)
        return self.index

    @property
    def index_ready(self) -> bool:
        return self.index is not None and self.index.state == "ready"

    def readable(self, path: Path, text: str | None = None) -> bool:
        """May this file's code go into a prompt? The index's one rule (:class:`index.workspace.IndexRules`):
        inside a workspace folder, not git-ignored or excluded, not a secret, not binary, not too big.

        A file outside every workspace folder (a library's file opened by "go to definition", a
        file opened alone) and any file without workspace folders gets the same rule with its own
        folder as the root: the user opened it, so only what the rule keeps out of every prompt
        (a secret, a binary or huge file, a git-ignored name beside it) is refused. Any thread (a
        few ``stat`` calls).
        """
        rules = self.index.rules if self.index is not None else self._rules
        # Under a workspace folder by its name or by its real path: the workspace's rule (a
        # symlink out of the workspace stays refused as the index refuses it).
        if rules is not None and (rules.locations(path) or any(
                Path(os.path.abspath(path)).is_relative_to(root) for root in self.roots)):
            return rules.indexable(path, text)
        return IndexRules([path.parent], self._options).indexable(path, text)

    async def search(self, query: str, k: int, mode: str = "hybrid") -> list[SearchResult]:
        """The index's search (``hybrid``, ``lexical`` or ``semantic``), best first, off the event
        loop (the default executor); [] without an index or for a blank query."""
        if self.index is None or not query.strip():
            return []
        return await asyncio.get_running_loop().run_in_executor(None, self.index.search, query, k, mode)

    async def retrieve(self, query: str, k: int) -> list[ContextItem]:
        """Up to ``k`` chunks of workspace code for a prompt, never secrets nor unreadable files
        (:func:`server.assist.host.retrieved_context`); [] until the index is ready."""
        if k <= 0 or not self.index_ready:
            return []
        return retrieved_context(await self.search(query, k), self.readable)

    # -- stop ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop generations, the index and every model."""
        if self.local is not None:
            self.local.cancel_all()
        self.stop_remote()
        if self.index is not None:
            self.index.close()
        self.assist.shutdown()
        self.models.shutdown()
