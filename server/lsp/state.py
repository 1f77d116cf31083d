"""The language server's state: settings and its named collaborators.

:class:`DeepseekLanguageServer` is pygls's server plus what the feature modules share:

- ``settings``: the parsed settings (:mod:`server.config`), re-read on
  ``workspace/didChangeConfiguration``;
- ``notices``: diagnostics and messages (:class:`server.lsp.notices.Notices`);
- ``runtime``: what ``deepseek-lsp serve`` holds too (:class:`server.runtime.Runtime`): the
  completion model and service, the workspace index with its rule for prompts and its
  search, the assistant's host (also ``assist``: chat model, threads, store);
- ``backend``: the choice of the source of suggestions, its loading progress and notices
  (:class:`server.lsp.backend.CompletionBackend`);
- ``index``: the workspace index's life cycle in the editor: progress, file watching,
  re-indexing (:class:`server.lsp.index.IndexController`);
- ``parses``: each open document's tree-sitter parse, once per version (:class:`server.parse_cache.ParseCache`);
- ``running_alternatives``: the cancel event of each document's alternatives under way.

Handlers are module-level functions in the feature modules, registered from the one table
:data:`server.lsp.routes.ROUTES`; everything they share is here. Everything here runs on
the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import uuid
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from .. import __version__
from ..config import Settings, parse_settings
from ..logs import set_level
from ..parse_cache import ParseCache
from ..runtime import Runtime
from .backend import CompletionBackend
from .convert import plain
from .index import IndexController
from .notices import Notices
from .protocol import DeepseekProtocol

log = logging.getLogger(__name__)

CONFIG_SECTION = "deepseek"
CLIENT_TIMEOUT_S = 5  # a request to the client (configuration, progress, registration) waits this long
APPLY_EDIT_TIMEOUT_S = 300  # workspace/applyEdit may wait on the user (a preview): longer


class DeepseekLanguageServer(LanguageServer):
    """pygls's server with the settings and the collaborators the features share."""

    def __init__(self) -> None:
        super().__init__("deepseek-lsp", __version__, protocol_cls=DeepseekProtocol)
        self.settings = Settings()
        self.init_options: Any = None
        # Whether the user trusts the workspace (initializationOptions.workspaceTrusted, then the
        # deepseek/workspaceTrust notification). A client that says nothing is not trusted to run code.
        self.trusted = False
        self.runtime = Runtime()  # models, completion service, index, assistant: the same as serve's
        self.assist = self.runtime.assist  # the chat model and the assist-* threads, loaded on first use
        self.notices = Notices(self, self.document)
        self.index = IndexController(self, self.runtime, self.document_text, self.begin_progress)
        self.backend = CompletionBackend(self, self.notices, self.runtime, self.begin_progress)
        self.parses = ParseCache()  # code actions, hover and the assistant commands read the parse
        self.agent_runs: collections.OrderedDict = collections.OrderedDict()  # server.lsp.agent's latest runs
        self.ahead_task: asyncio.Task | None = None  # the assistant's reading ahead, waiting for a rest
        self.ahead_cancel = threading.Event()  # stops the answer written ahead for the latest signal
        self.running_alternatives: dict[str, threading.Event] = {}  # document URI -> its alternatives' cancel event
        # How much of its file the last suggestion's prompt left out (deepseek.status's completion.context).
        self.last_context: dict[str, Any] | None = None
        self._refreshing: asyncio.Future | None = None  # a settings re-read under way
        self._closed = False

    # -- documents -------------------------------------------------------------------------
    def document(self, uri: str) -> TextDocument | None:
        """The open document for ``uri`` as any client spells it, or None.

        pygls keys documents by the unquoted URI (``file:///a b.py``); clients send it
        percent-encoded (``file:///a%20b.py``). This is the one lookup everything uses.
        """
        return self.workspace.text_documents.get(unquote(uri))

    def document_text(self, uri: str) -> str | None:
        doc = self.document(uri)
        return doc.source if doc is not None else None

    # -- settings --------------------------------------------------------------------------
    async def settings_now(self) -> Settings:
        """The settings, after a re-read that is under way (a request that follows
        ``workspace/didChangeConfiguration`` sees the new values)."""
        if self._refreshing is not None and not self._refreshing.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._refreshing), timeout=CLIENT_TIMEOUT_S)
            except Exception:  # the re-read reports its own problems; the request goes on
                pass
        return self.settings

    async def reread_settings(self) -> None:
        """:meth:`refresh_settings`, with requests arriving meanwhile waiting for it (see :meth:`settings_now`)."""
        self._refreshing = asyncio.ensure_future(self.refresh_settings())
        await self._refreshing

    async def refresh_settings(self) -> None:
        """Re-read settings: initializationOptions, then workspace/configuration (which wins)."""
        sources: list[Any] = [plain(self.init_options)]
        caps = self.client_capabilities.workspace
        if caps is not None and caps.configuration:
            try:
                result = await asyncio.wait_for(self.workspace_configuration_async(types.ConfigurationParams(
                    items=[types.ConfigurationItem(section=CONFIG_SECTION)])), timeout=CLIENT_TIMEOUT_S)
                sources.append(plain(result[0]) if result else None)
            except Exception as e:  # a client that fails here must not stop the server
                log.warning("workspace/configuration failed: %s", e)
        settings, problems = parse_settings(*sources)
        if problems:
            self.notices.show(types.MessageType.Warning, "deepseek-lsp settings: " + "; ".join(problems) + ".")
        set_level(settings.log_level)
        self.settings = settings

    # -- progress --------------------------------------------------------------------------
    async def begin_progress(self, kind: str, title: str, message: str, cancellable: bool) -> str | None:
        """Start work-done progress in the editor; the token, or None when the client has none."""
        caps = self.client_capabilities.window
        if caps is None or not caps.work_done_progress:
            return None
        token = f"deepseek-{kind}-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=CLIENT_TIMEOUT_S)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=title, message=message, percentage=0, cancellable=cancellable))
            return token
        except Exception as e:  # a client that fails here must not stop the work
            log.warning("work done progress unavailable: %s", e)
            return None

    # -- edits ---------------------------------------------------------------------------
    async def apply_edit(self, edit: types.WorkspaceEdit, label: str) -> tuple[bool, str]:
        """Ask the client to apply ``edit``: (applied, the client's reason when not).

        Never raises: a client that fails, answers something unreadable or does not answer
        within APPLY_EDIT_TIMEOUT_S (it may be showing the user a preview) means not applied.
        """
        try:
            result = await asyncio.wait_for(self.workspace_apply_edit_async(
                types.ApplyWorkspaceEditParams(edit=edit, label=label)), timeout=APPLY_EDIT_TIMEOUT_S)
        except asyncio.TimeoutError:
            return False, f"the editor did not answer within {APPLY_EDIT_TIMEOUT_S} s; nothing was changed"
        except Exception as e:
            log.warning("workspace/applyEdit failed: %s", e)
            return False, f"the editor did not apply the edit: {e}"
        return bool(result.applied), result.failure_reason or ""

    # -- shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop generations, the index and every model (the ``shutdown`` request). Once: later
        calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self.index.close()
        self.runtime.close()

    def shutdown(self) -> None:
        """pygls's end of the server, after ``exit`` or when the editor closed the pipe without
        them (an editor that quits at once): the models stop first, so no engine thread keeps
        a core busy, or the process alive, with an answer nobody will read."""
        self.close()
        super().shutdown()
