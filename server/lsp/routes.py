"""Every entry point of the language server, in one table: method or command, handler, where it runs.

A line per LSP method (``feature``) and per ``workspace/executeCommand`` command id
(``command``), as ruff's server routes in ``api.rs``: a reader sees every entry point and its
thread on one screen. Handlers are module-level functions of the feature modules
(:mod:`.workspace`, :mod:`.completion`, :mod:`.assist`); what they share lives on the server
(:mod:`.state`). Every handler is called on the event loop; ``runs`` says where its work goes:

- ``LOOP``: on the event loop itself (quick: settings, documents, notices, SQLite reads);
- ``EXECUTOR``: the event loop, with searches and parses on the default executor's threads;
- ``ENGINE``: the completion model's owner thread (``engine-completion``), awaited from the loop;
- ``ASSIST``: the ``assist-*`` threads (pytest, verification), with model work on ``engine-chat``.

Method names, command ids and reply shapes are the contract of docs/PROTOCOL.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lsprotocol import types

from . import agent, ahead, assist, completion, workspace
from .state import DeepseekLanguageServer

LOOP = "event loop"
EXECUTOR = "event loop; searches and parses on the default executor"
ENGINE = "engine-completion thread"
ASSIST = "assist-* threads; the model on engine-chat"


@dataclass(frozen=True)
class Route:
    """One entry point.

    Attributes:
        name: the LSP method (``textDocument/hover``) or the command id (``deepseek.explain``).
        handler: ``handler(ls, params)`` for a method, ``handler(ls, *args)`` for a command.
        runs: where its work runs (one of the constants above).
        command: a ``workspace/executeCommand`` command rather than a method.
        options: the capability's options (without them pygls does not advertise some capabilities).
    """

    name: str
    handler: Callable[..., Any]
    runs: str
    command: bool = False
    options: Any = None


def feature(name: str, handler: Callable[..., Any], runs: str, options: Any = None) -> Route:
    return Route(name, handler, runs, False, options)


def command(name: str, handler: Callable[..., Any], runs: str) -> Route:
    return Route(name, handler, runs, True)


ROUTES: tuple[Route, ...] = (
    # life cycle and settings (server/lsp/workspace.py)
    feature(types.INITIALIZE, workspace.initialize, LOOP),
    feature(types.INITIALIZED, workspace.initialized, LOOP),  # starts the model load and the index
    feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION, workspace.workspace_did_change_configuration, LOOP),
    feature(workspace.WORKSPACE_TRUST, workspace.workspace_trust, LOOP),
    feature(types.SHUTDOWN, workspace.shutdown, LOOP),
    # documents and files (server/lsp/workspace.py)
    feature(types.TEXT_DOCUMENT_DID_OPEN, workspace.text_document_did_open, LOOP),
    feature(types.TEXT_DOCUMENT_DID_CHANGE, workspace.text_document_did_change, LOOP),
    feature(types.TEXT_DOCUMENT_DID_SAVE, workspace.text_document_did_save, LOOP),
    feature(types.TEXT_DOCUMENT_DID_CLOSE, workspace.text_document_did_close, LOOP),
    feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES, workspace.workspace_did_change_watched_files, LOOP),
    command(workspace.CMD_STATUS, workspace.status, LOOP),
    command(workspace.CMD_SEARCH, workspace.search, EXECUTOR),
    # suggestions (server/lsp/completion.py)
    feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, completion.inline_completion, ENGINE,
            types.InlineCompletionOptions()),
    feature(types.TEXT_DOCUMENT_COMPLETION, completion.completion, ENGINE,
            types.CompletionOptions(resolve_provider=False)),
    # the assistant (server/lsp/assist.py)
    feature(types.TEXT_DOCUMENT_CODE_ACTION, ahead.code_action, EXECUTOR, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.Empty, types.CodeActionKind.RefactorRewrite,
                           types.CodeActionKind.Source])),  # also reads ahead: the FIM prompt (ENGINE), Explain's
    feature(types.TEXT_DOCUMENT_HOVER, assist.hover, ASSIST),  # signature at once; the note capped
    command(assist.CMD_EXPLAIN, assist.explain, ASSIST),
    command(assist.CMD_REFACTOR, assist.refactor, ASSIST),
    command(assist.CMD_WRITE_TESTS, assist.write_tests, ASSIST),
    command(assist.CMD_CHAT, assist.chat, ASSIST),
    command(assist.CMD_CHAT_HISTORY, assist.chat_history, LOOP),
    command(assist.CMD_CHAT_RESET, assist.chat_reset, LOOP),
    feature(ahead.ASSIST_AHEAD, ahead.assist_ahead, ASSIST),  # reads the next prompt ahead on engine-chat
    # the agent (server/lsp/agent.py)
    command(agent.CMD_AGENT, agent.agent, ASSIST),  # tools in the sandbox on assist-*; streams deepseek/agentStep
    command(agent.CMD_AGENT_APPLY, agent.agent_apply, LOOP),
)


def register(server: DeepseekLanguageServer, routes: tuple[Route, ...] = ROUTES) -> None:
    """Register each route's handler with ``server`` (pygls's ``feature`` / ``command``).

    Raises:
        pygls.exceptions.FeatureAlreadyRegisteredError, CommandAlreadyRegisteredError: a name twice.
    """
    for route in routes:
        if route.command:
            server.command(route.name)(route.handler)
        else:
            server.feature(route.name, route.options)(route.handler)
