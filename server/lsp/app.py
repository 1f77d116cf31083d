"""The language server, assembled: create it and register each feature module's handlers.

    server = create_server()
    server.start_io()

Nothing registers as a side effect of an import: :func:`create_server` builds a
:class:`server.lsp.state.DeepseekLanguageServer` and calls each feature module's
``register(server)``. The LSP contract is documented in docs/PROTOCOL.md.
"""

from __future__ import annotations

from . import assist, completion, workspace
from .state import DeepseekLanguageServer

FEATURES = (workspace, completion, assist)


def create_server() -> DeepseekLanguageServer:
    """A new server with every feature's handlers registered."""
    server = DeepseekLanguageServer()
    for feature in FEATURES:
        feature.register(server)
    return server
