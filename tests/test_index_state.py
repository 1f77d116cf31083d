"""An index that cannot be built says so: state ``error`` with the reason, never ``indexing`` forever.

The failure is a real one: the folder the index lives in cannot be created (a file is in its way).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from index.workspace import IndexOptions, WorkspaceIndex


def block_index_folder(cache) -> None:
    """A regular file where the index folders go: ``<cache>/deepseek-lsp/index``."""
    (cache / "deepseek-lsp").mkdir(parents=True)
    (cache / "deepseek-lsp" / "index").write_text("not a folder\n")


def test_a_failed_first_pass_is_the_error_state_with_its_reason(cache, workspace):
    block_index_folder(cache)
    index = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    with pytest.raises(OSError):
        index.start().result(timeout=60)
    status = index.status()
    assert status["state"] == "error", status
    assert "deepseek-lsp/index" in status["error"] and "Errno" in status["error"], status
    assert index.search("read config", mode="lexical") == []  # searching a failed index is not an error
    assert index.completion_context(None, "read config", 1000) == []
    index.close()


HOME = Path(tempfile.mkdtemp(prefix="deepseek-index-state-"))  # the server's own cache, data and state


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-m", "server"],
    server_env={**os.environ, "XDG_CACHE_HOME": str(HOME / "cache"), "XDG_DATA_HOME": str(HOME / "data"),
                "XDG_STATE_HOME": str(HOME / "state")}))
async def client(lsp_client: LanguageClient):
    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams):  # as an editor does (file watching)
        pass

    block_index_folder(HOME / "cache")
    ws = HOME / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "config.py").write_text("def read_config(path):\n    return open(path).read()\n")
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        # No model is needed to index: a remote backend without a URL loads none.
        initialization_options={"backend": {"kind": "openai"}}))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_server_reports_the_index_error_in_status_progress_and_a_message(client: LanguageClient):
    deadline = time.monotonic() + 60
    while True:
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
        if status["index"]["state"] in ("ready", "error"):  # "unavailable" until the index starts
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)
    index = status["index"]
    assert index["state"] == "error" and "deepseek-lsp/index" in index["error"], index
    reports = next(r for r in client.progress_reports.values() if r[0].title == "deepseek: indexing workspace")
    assert reports[-1].kind == "end" and reports[-1].message.startswith("failed:"), reports[-1]
    warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
    assert any("index" in m and "deepseek-lsp/index" in m for m in warnings), warnings
