"""pygls's private API is reached from one module only, and every name it uses exists in the pinned pygls.

server/lsp/protocol.py overrides and calls private methods of pygls's protocol and
workspace (answering requests whose params cannot be read, cancelling threaded handlers,
documents with LSP's line breaks). An upgrade of pygls that renames one of them breaks
there, and this test says which name is gone.
"""

import ast
import inspect
from pathlib import Path

from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument, Workspace

ROOT = Path(__file__).resolve().parent.parent
SEAM = ROOT / "server" / "lsp" / "protocol.py"
# The private names the seam uses, by the pygls class that defines them.
PROTOCOL_NAMES = ("_execute_handler", "_handle_cancel_notification", "_request_futures", "_send_response",
                  "structure_message", "handle_message")
WORKSPACE_NAMES = ("_create_text_document", "_sync_kind", "_position_codec")
OWN = {"_inner_tasks"}  # the seam's own attributes


def _private_attributes(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
             and not n.attr.startswith("__")}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("_")
              and not n.name.startswith("__")}
    return names


def test_every_private_name_the_seam_uses_exists_in_the_pinned_pygls():
    server = LanguageServer("seam-check", "0")
    protocol = server.protocol
    assert isinstance(protocol, LanguageServerProtocol)
    for name in PROTOCOL_NAMES:
        assert hasattr(protocol, name), f"pygls's protocol has no {name}"
    workspace = Workspace(None)
    for name in WORKSPACE_NAMES:
        assert hasattr(workspace, name), f"pygls's Workspace has no {name}"
    params = inspect.signature(TextDocument.__init__).parameters
    assert {"sync_kind", "position_codec", "language_id", "version", "source"} <= set(params)
    used = _private_attributes(SEAM) - OWN - {"_Unreadable"}
    assert used <= set(PROTOCOL_NAMES) | set(WORKSPACE_NAMES), used - set(PROTOCOL_NAMES) - set(WORKSPACE_NAMES)


def test_no_other_module_reaches_into_pygls():
    pygls_private = set(PROTOCOL_NAMES + WORKSPACE_NAMES) - {"structure_message", "handle_message"}
    for path in sorted((ROOT / "server").rglob("*.py")) + sorted((ROOT / "index").rglob("*.py")):
        if path == SEAM:
            continue
        touched = _private_attributes(path) & pygls_private
        text = path.read_text(encoding="utf-8")
        assert not touched, f"{path.relative_to(ROOT)} uses pygls's {touched}"
        assert "__class__ =" not in text, f"{path.relative_to(ROOT)} swaps a class"
