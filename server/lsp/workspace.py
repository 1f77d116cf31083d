"""LSP life cycle, settings, documents and files, and the ``deepseek.status`` / ``deepseek.search`` commands.

Module-level handlers, registered from :data:`server.lsp.routes.ROUTES`; each is thin: read params, call the state's
collaborators, convert with :mod:`server.lsp.convert`. All run on the event loop.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..config import parse_settings
from ..resources import available_mb
from .convert import lsp_search_result, lsp_status, plain
from .notices import CODE_BACKEND_UNREACHABLE
from .protocol import use_lsp_lines
from .state import DeepseekLanguageServer

CMD_STATUS = "deepseek.status"
CMD_SEARCH = "deepseek.search"
WORKSPACE_TRUST = "deepseek/workspaceTrust"
SEARCH_MAX_K = 200


def initialize(ls: DeepseekLanguageServer, params: types.InitializeParams) -> None:
    use_lsp_lines(ls.workspace)  # before any document is opened
    options = plain(params.initialization_options)
    if isinstance(options, dict) and "workspaceTrusted" in options:
        ls.trusted = options.pop("workspaceTrusted") is True
    ls.init_options = options
    ls.settings, _ = parse_settings(options)


def workspace_trust(ls: DeepseekLanguageServer, params: Any) -> None:
    """``deepseek/workspaceTrust {trusted}``: the user changed the workspace's trust."""
    trusted = getattr(params, "trusted", None)
    if isinstance(trusted, bool):
        ls.trusted = trusted


async def initialized(ls: DeepseekLanguageServer, params: types.InitializedParams) -> None:
    await ls.refresh_settings()
    ls.backend.start(ls.settings)
    ls.backend.started.set()
    await ls.index.start(ls.settings)


async def workspace_did_change_configuration(ls: DeepseekLanguageServer,
                                             params: types.DidChangeConfigurationParams) -> None:
    old = ls.settings
    await ls.reread_settings()
    new = ls.settings
    if new.backend_key() != old.backend_key() or (new.backend_kind == "local" and (
            new.model_key() != old.model_key() or new.resources_ram_limit_mb != old.resources_ram_limit_mb)):
        ls.backend.start(new)


def text_document_did_open(ls: DeepseekLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    if ls.notices.by_code:
        ls.notices.publish(params.text_document.uri)


def text_document_did_change(ls: DeepseekLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.index.changed(params.text_document.uri)


def text_document_did_save(ls: DeepseekLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.index.saved_or_changed_on_disk(params.text_document.uri)


def workspace_did_change_watched_files(ls: DeepseekLanguageServer,
                                       params: types.DidChangeWatchedFilesParams) -> None:
    for change in params.changes:
        ls.index.saved_or_changed_on_disk(change.uri)


def text_document_did_close(ls: DeepseekLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.runtime.forget(uri)
    ls.notices.forget(uri)


async def status(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    """``deepseek.status``: model, backend, memory, index and completion figures (see PROTOCOL.md)."""
    s = ls.settings
    service = ls.backend.active()
    limit = s.resources_ram_limit_mb
    return lsp_status(ls.runtime.models.status, s, ls.index.status(),
                      service.stats() if service is not None else None,
                      reachable=CODE_BACKEND_UNREACHABLE not in ls.notices,
                      available_mb=limit if limit is not None else available_mb(), context=ls.last_context,
                      chat=ls.assist.status(s), trusted=ls.trusted)


async def search(ls: DeepseekLanguageServer, *args: Any) -> list[dict[str, Any]]:
    """``deepseek.search {query, k}``: hybrid search of the workspace, best first."""
    arg = plain(args[0]) if args else {}
    query = arg.get("query") if isinstance(arg, dict) else arg
    k = arg.get("k", 10) if isinstance(arg, dict) else (args[1] if len(args) > 1 else 10)
    if not isinstance(query, str) or not query.strip():
        raise JsonRpcInvalidParams("deepseek.search needs {query: string, k?: number}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= SEARCH_MAX_K:
        raise JsonRpcInvalidParams(f"deepseek.search: k must be an integer from 1 to {SEARCH_MAX_K}")
    return [lsp_search_result(r) for r in await ls.runtime.search(query, k)]


def shutdown(ls: DeepseekLanguageServer, params: Any) -> None:
    ls.close()
