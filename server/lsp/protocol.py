"""pygls's protocol, with an answer for every request whose params cannot be read.

pygls structures each incoming message into its lsprotocol type while parsing the
JSON; when the params do not fit (``"line": -5``, a string where a position belongs), it
logs "Unable to deserialize message" and drops the message, so the client waits forever
for the response JSON-RPC promises it. Here such a request becomes a
:class:`_Unreadable` message that is answered at once with ``InvalidParams`` (-32602)
and a message saying what did not fit. Notifications with unreadable params are dropped
as before (they get no response by definition). Runs on the event loop (the reader
thread only parses).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from cattrs import transform_error
from lsprotocol import types
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument, Workspace

from ..text import split_lines

log = logging.getLogger(__name__)

INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
MAX_DETAIL_CHARS = 500


@dataclass(frozen=True)
class _Unreadable:
    """A request whose params did not fit their type."""

    id: Any
    method: str
    reason: str
    code: int = INVALID_PARAMS


class DeepseekProtocol(LanguageServerProtocol):
    """:class:`LanguageServerProtocol` that answers unreadable requests with InvalidParams,
    and whose ``$/cancelRequest`` reaches the handlers of ``workspace/executeCommand``.

    pygls runs a command's coroutine as a task of its own, under an id of its own, behind
    its built-in executeCommand handler; a cancel for the request's id only cancels the
    outer future, and the command (a chat generating, pytest running) would run on. Here
    the inner task is remembered under the request's id and cancelled with it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inner_tasks: dict[Any, asyncio.Future] = {}

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        request = self.msg_id  # the client's request id, carried by the context
        task = self._request_futures.get(msg_id)
        if request is not None and request != msg_id and isinstance(task, asyncio.Future):
            self._inner_tasks[request] = task
            task.add_done_callback(lambda _: self._inner_tasks.pop(request, None))

    def _handle_cancel_notification(self, msg_id):
        task = self._inner_tasks.pop(msg_id, None)
        if task is not None:
            task.cancel()
        super()._handle_cancel_notification(msg_id)

    def structure_message(self, data: dict[str, Any]):
        if "jsonrpc" in data and "method" in data and not isinstance(data["method"], str):
            if "id" in data and isinstance(data["id"], (int, str)):
                return _Unreadable(data["id"], repr(data["method"])[:80], "the method must be a string",
                                   INVALID_REQUEST)
            return data  # a notification with no name: nothing to answer, nothing to run
        try:
            return super().structure_message(data)
        except Exception as exc:
            if "jsonrpc" in data and "method" in data and "id" in data and isinstance(data["id"], (int, str)):
                cause = exc.__cause__ or exc
                try:
                    detail = "; ".join(transform_error(cause))
                except Exception:  # not a cattrs validation error
                    detail = f"{type(cause).__name__}: {cause}"
                method = data["method"] if isinstance(data["method"], str) else repr(data["method"])
                return _Unreadable(data["id"], method, detail[:MAX_DETAIL_CHARS])
            if "jsonrpc" in data and "id" in data and "method" not in data and "error" not in data:
                # A response to one of our requests that does not fit its type: fail the waiting
                # request instead of leaving it pending forever.
                log.warning("unreadable response from the client to request %r: %s", data["id"], exc)
                return types.ResponseErrorMessage(id=data["id"], error=types.ResponseError(
                    code=INVALID_PARAMS, message=f"the client's response could not be read: {exc}"))
            raise

    def handle_message(self, message):
        if isinstance(message, dict):  # not a JSON-RPC message we can act on
            log.warning("ignored a message that is not JSON-RPC 2.0: %.200s", message)
            return
        if isinstance(message, _Unreadable):
            log.warning("invalid params for %s (request %r): %s", message.method, message.id, message.reason)
            text = (f"invalid params for {message.method}: {message.reason}" if message.code == INVALID_PARAMS
                    else f"invalid request: {message.reason}")
            self._send_response(message.id, None, types.ResponseError(code=message.code, message=text))
            return
        super().handle_message(message)


class LspTextDocument(TextDocument):
    """pygls's document with lines as LSP counts them (only CR LF, CR, LF end a line).

    pygls splits with ``str.splitlines``, which also breaks at form feed, U+2028 and the
    like, so an incremental edit below such a character would land on the wrong line.
    """

    @property
    def lines(self):
        return tuple(split_lines(self.source, keepends=True))


class LspWorkspace(Workspace):
    """pygls's workspace whose documents are :class:`LspTextDocument`."""

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=self._sync_kind, position_codec=self._position_codec)


def use_lsp_lines(workspace: Workspace) -> None:
    """Make ``workspace`` (created by pygls at ``initialize``) create :class:`LspTextDocument` s."""
    workspace.__class__ = LspWorkspace
