"""The workspace index as the language server runs it: start, progress, file watching, re-indexing.

:class:`IndexController` starts the :class:`index.workspace.WorkspaceIndex` of the
workspace folders, which the :class:`server.runtime.Runtime` holds (its rule for prompts
and its search are the runtime's, shared with ``serve``). Its methods run on the event loop;
the index itself works on its own threads (``index-writer``, ``index-embedder``) and answers
searches from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from index.workspace import WorkspaceIndex

from ..config import Settings
from ..runtime import Runtime
from .convert import uri_to_path

log = logging.getLogger(__name__)

EDIT_REINDEX_DELAY_S = 2.0  # an edited open document is re-indexed this long after the last change

Progress = Callable[[str, str, str, bool], Awaitable[str | None]]


class IndexController:
    """Creates, feeds and queries the workspace index.

    Args:
        server: for file-watch registration and work-done progress.
        runtime: holds the index.
        document_text: the open document's text for a URI, or None.
        begin_progress: starts work-done progress; returns its token or None.
    """

    def __init__(self, server: LanguageServer, runtime: Runtime, document_text: Callable[[str], str | None],
                 begin_progress: Progress):
        self._server = server
        self._runtime = runtime
        self._document_text = document_text
        self._begin_progress = begin_progress
        self._reindex: dict[str, asyncio.TimerHandle] = {}

    @property
    def index(self) -> WorkspaceIndex | None:
        return self._runtime.index

    def roots(self) -> list[Path]:
        """The workspace folders (or the root URI) that exist on disk."""
        ws = self._server.workspace
        folders = [f.uri for f in ws.folders.values()] or ([ws.root_uri] if ws.root_uri else [])
        return [p for uri in folders if (p := uri_to_path(uri)) is not None and p.is_dir()]

    async def start(self, settings: Settings) -> None:
        """Index the workspace folders in the background, with cancellable work-done progress.

        A first pass that fails leaves the index in the ``error`` state (``deepseek.status``
        shows why), ends the progress with ``failed: <reason>`` and shows a warning.
        """
        roots = self.roots()
        index = self._runtime.open_index(roots, settings)
        if index is None:
            return
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        token = await self._begin_progress("index", "deepseek: indexing workspace", ", ".join(r.name for r in roots),
                                           True)
        progress = self._server.work_done_progress
        if token is not None:  # the client's cancel button stops the first pass
            progress.tokens[token].add_done_callback(lambda f: cancel.set())

        def report(message: str, percent: int) -> None:  # index-writer thread -> loop
            if token is not None:
                loop.call_soon_threadsafe(lambda: progress.report(
                    token, types.WorkDoneProgressReport(message=message, percentage=percent)))

        await self._watch_files()
        outcome = None
        try:
            await asyncio.wrap_future(index.start(report, cancel))
            outcome = "cancelled" if cancel.is_set() else f"{index.status()['files']} files indexed"
        except Exception:  # index.state is "error", index.error says why (and the log has the trace)
            outcome = f"failed: {index.error}"
            self._server.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Warning,
                message=f"deepseek-lsp: the workspace index could not be built ({index.error}); "
                        "suggestions and chat work without workspace context"))
        finally:
            if token is not None:
                progress.end(token, types.WorkDoneProgressEnd(message=outcome or "stopped"))

    async def _watch_files(self) -> None:
        """Ask the client to report file changes on disk (it only reports registered globs)."""
        caps = self._server.client_capabilities.workspace
        watched = caps.did_change_watched_files if caps is not None else None
        if watched is None or not watched.dynamic_registration:
            return
        try:
            await asyncio.wait_for(self._server.client_register_capability_async(types.RegistrationParams(
                registrations=[types.Registration(
                    id=f"deepseek-watch-{uuid.uuid4()}", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                    register_options=types.DidChangeWatchedFilesRegistrationOptions(
                        watchers=[types.FileSystemWatcher(glob_pattern="**/*")]))])), timeout=5)
        except Exception as e:
            log.warning("could not register file watching: %s", e)

    def typing(self) -> None:
        """A suggestion is being asked for: the embedder rests for a moment (CPU for typing)."""
        if self.index is not None:
            self.index.pause_embedding()

    def changed(self, uri: str) -> None:
        """An open document changed: re-index it once typing pauses (EDIT_REINDEX_DELAY_S)."""
        if self.index is None:
            return
        if (handle := self._reindex.pop(uri, None)) is not None:
            handle.cancel()

        def run() -> None:
            self._reindex.pop(uri, None)
            text, path = self._document_text(uri), uri_to_path(uri)
            if text is not None and path is not None and self.index is not None:
                self.index.update_file(path, text)
        self._reindex[uri] = asyncio.get_running_loop().call_later(EDIT_REINDEX_DELAY_S, run)

    def saved_or_changed_on_disk(self, uri: str) -> None:
        """A file was saved or changed on disk (or deleted: it leaves the index)."""
        path = uri_to_path(uri)
        if self.index is None or path is None:
            return
        if (handle := self._reindex.pop(uri, None)) is not None:
            handle.cancel()
        self.index.update_file(path)

    def status(self) -> dict[str, Any]:
        return self.index.status() if self.index is not None else {"state": "unavailable", "files": 0, "chunks": 0}

    def close(self) -> None:
        """Stop re-indexing timers (the runtime closes the index)."""
        for handle in self._reindex.values():
            handle.cancel()
