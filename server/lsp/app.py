"""The language server, assembled: create it and register every handler from the routing table.

    server = create_server()
    server.start_io()

Nothing registers as a side effect of an import: :func:`create_server` builds a
:class:`server.lsp.state.DeepseekLanguageServer` (the state every handler shares) and
registers :data:`server.lsp.routes.ROUTES` (every method and command, its handler, where it
runs). The LSP contract is documented in docs/PROTOCOL.md.
"""

from __future__ import annotations

from . import routes
from .state import DeepseekLanguageServer


def create_server() -> DeepseekLanguageServer:
    """A new server with every route's handler registered."""
    server = DeepseekLanguageServer()
    routes.register(server)
    return server
