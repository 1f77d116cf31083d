"""End to end: in a workspace the user does not trust, Write tests is refused until trust is granted.

This client says nothing about trust at start, as Emacs eglot, Helix or any generic client:
that is not trust (only ``workspaceTrusted: true`` is). VS Code sends ``workspaceTrusted`` in
initializationOptions and ``deepseek/workspaceTrust``
when the user grants trust (docs/PROTOCOL.md); the settings that send code elsewhere, load
a file or run code are restricted by VS Code itself (tests/test_vscode.py checks the list).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import open_doc

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

WORKSPACE = Path(tempfile.mkdtemp(prefix="deepseek-untrusted-"))


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "server"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=WORKSPACE.as_uri(),
        initialization_options={"index": {"enabled": False},
                                "model": {"path": str(WORKSPACE / "no-model.gguf")}}))
    yield
    await lsp_client.shutdown_session()


async def write_tests(client: LanguageClient, uri: str):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="deepseek.writeTests", arguments=[{"uri": uri, "range": {
            "start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}}]))


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))


async def test_write_tests_is_refused_until_the_user_trusts_the_workspace(client: LanguageClient):
    unsaved = WORKSPACE / "never_saved.py"  # open in the editor only: refused for that reason once trusted
    uri = open_doc(client, unsaved, "def f():\n    return 1\n")
    assert (await status(client))["workspaceTrusted"] is False  # a client that said nothing
    with pytest.raises(JsonRpcException, match="not trusted"):
        await write_tests(client, uri)
    client.protocol.notify("deepseek/workspaceTrust", {"trusted": True})
    assert (await status(client))["workspaceTrusted"] is True
    with pytest.raises(JsonRpcException, match="not saved on disk"):
        await write_tests(client, uri)
    # workspaceTrusted is not a setting: no "unknown setting" warning.
    assert not [m for m in client.messages if "workspaceTrusted" in m.message]


async def test_write_tests_never_writes_through_a_link_out_of_the_workspace(client: LanguageClient, tmp_path):
    # A cloned repository whose tests/ is a symbolic link elsewhere (~/.bashrc's folder, say).
    client.protocol.notify("deepseek/workspaceTrust", {"trusted": True})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (WORKSPACE / "tests").symlink_to(elsewhere, target_is_directory=True)
    saved = WORKSPACE / "shapes.py"
    saved.write_text("def area(w, h):\n    return w * h\n")
    uri = open_doc(client, saved, saved.read_text())
    with pytest.raises(JsonRpcException, match="leads outside the workspace"):
        await write_tests(client, uri)
    assert list(elsewhere.iterdir()) == []
