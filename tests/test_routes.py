"""The routing table is the language server's one list of entry points (server/lsp/routes.py).

Every handler is a module-level function named in ROUTES; nothing registers elsewhere; the
names are the ones docs/PROTOCOL.md documents; the server advertises what the table says.
"""

import ast
import re
from pathlib import Path

from lsprotocol import types

from server.lsp import routes
from server.lsp.app import create_server

ROOT = Path(__file__).resolve().parent.parent
PLACES = {routes.LOOP, routes.EXECUTOR, routes.ENGINE, routes.ASSIST}


def test_the_server_registers_exactly_the_table():
    server = create_server()
    fm = server.protocol.fm
    assert set(fm.features) == {r.name for r in routes.ROUTES if not r.command}
    assert set(fm.commands) == {r.name for r in routes.ROUTES if r.command}
    assert len({r.name for r in routes.ROUTES}) == len(routes.ROUTES)


def test_each_route_says_where_it_runs_and_has_a_module_level_handler():
    for route in routes.ROUTES:
        assert route.runs in PLACES, route.name
        handler = route.handler
        assert handler.__qualname__ == handler.__name__, f"{route.name}: {handler.__qualname__} is nested"
        assert handler.__module__.startswith("server.lsp."), route.name


def test_no_handler_is_registered_outside_the_table():
    decorated = []
    for path in sorted((ROOT / "server" / "lsp").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in node.decorator_list:
                    call = d.func if isinstance(d, ast.Call) else d
                    if isinstance(call, ast.Attribute) and call.attr in ("feature", "command", "thread"):
                        decorated.append(f"{path.name}:{node.name}")
    assert decorated == []


def test_every_custom_name_is_in_the_protocol_document():
    protocol = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    custom = [r.name for r in routes.ROUTES if r.command or r.name.startswith("deepseek/")]
    assert custom and [n for n in custom if not re.search(re.escape(n) + r"\b", protocol)] == []


def test_capabilities_with_options_are_advertised():
    options = {r.name: r.options for r in routes.ROUTES}
    assert isinstance(options[types.TEXT_DOCUMENT_INLINE_COMPLETION], types.InlineCompletionOptions)
    assert options[types.TEXT_DOCUMENT_CODE_ACTION].code_action_kinds == [
        types.CodeActionKind.Empty, types.CodeActionKind.RefactorRewrite, types.CodeActionKind.Source]
    fm = create_server().protocol.fm
    assert fm.feature_options[types.TEXT_DOCUMENT_COMPLETION].resolve_provider is False
