"""What the server tells the user: diagnostics (source ``deepseek``) and messages.

Diagnostics are for what needs the user's action: server-wide notices by code (a model
that does not fit, a backend that is down, slow responses), shown on line 0 of every open
document. Facts that need none (a long file's context cut to the budget) go to
``deepseek.status`` and the log instead. Everything here runs on the event loop.
"""

from __future__ import annotations

import logging
from typing import Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from .convert import lsp_diagnostic

log = logging.getLogger(__name__)

# Codes of the diagnostics this server publishes (source "deepseek"); see docs/PROTOCOL.md.
CODE_MODEL_TOO_LARGE = "model-too-large"
CODE_MODEL_UNAVAILABLE = "model-unavailable"
CODE_MODEL_NO_FIM = "model-no-fim"
CODE_MODEL_CRASHED = "model-crashed"
CODE_SLOW_RESPONSE = "slow-response"
CODE_BACKEND_UNREACHABLE = "backend-unreachable"
MODEL_CODES = (CODE_MODEL_TOO_LARGE, CODE_MODEL_UNAVAILABLE, CODE_MODEL_NO_FIM, CODE_MODEL_CRASHED)
_SEVERITY = {types.DiagnosticSeverity.Error: types.MessageType.Error,
             types.DiagnosticSeverity.Warning: types.MessageType.Warning}


class Notices:
    """The published diagnostics and messages of one server.

    Args:
        server: sends ``publishDiagnostics`` and ``showMessage``.
        document: resolves a URI to the open document (or None).
    """

    def __init__(self, server: LanguageServer, document: Callable[[str], object | None]):
        self._server = server
        self._document = document
        self.by_code: dict[str, types.Diagnostic] = {}  # shown on every open document

    def __contains__(self, code: str) -> bool:
        return code in self.by_code

    def set(self, code: str, text: str, severity: types.DiagnosticSeverity, show: bool = True) -> None:
        """Show a server-wide notice (replacing one of the same code), with a message for Warning and Error."""
        self.by_code[code] = lsp_diagnostic(code, text, severity)
        if show and severity in _SEVERITY:
            self.show(_SEVERITY[severity], "deepseek-lsp: " + text)
        self.publish_all()

    def clear(self, *codes: str) -> bool:
        """Remove notices; True (and published) when one was shown."""
        removed = [c for c in codes if self.by_code.pop(c, None) is not None]
        if removed:
            self.publish_all()
        return bool(removed)

    def forget(self, uri: str) -> None:
        """The document closed: its diagnostics go."""
        self._server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    def publish(self, uri: str) -> None:
        doc = self._document(uri)
        diagnostics = list(self.by_code.values())
        self._server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, diagnostics=diagnostics, version=getattr(doc, "version", None)))

    def publish_all(self) -> None:
        for doc in list(self._server.workspace.text_documents.values()):
            self.publish(doc.uri)  # the URI as the client sent it (pygls keys documents by its unquoted form)

    def show(self, kind: types.MessageType, message: str) -> None:
        log.log(logging.WARNING if kind <= types.MessageType.Warning else logging.INFO, "%s", message)
        self._server.window_show_message(types.ShowMessageParams(type=kind, message=message))
