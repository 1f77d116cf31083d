"""The real server over stdio for the benchmarks: started, initialized, waited for until its model is loaded."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient


async def start_server(name: str, settings: dict, workspace: Path | None = None) -> LanguageClient:
    """``python -m server`` as a child over stdio, initialized with ``settings`` (and ``workspace`` as
    its one workspace folder, when given, trusted: the benchmarks run the code they generate), its model loaded.

    Raises:
        AssertionError: the model did not load (its ``deepseek.status`` is in the message).
    """
    client = LanguageClient(name, "1")
    await client.start_io(sys.executable, "-m", "server")
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options={**settings, "workspaceTrusted": True},
        root_uri=workspace.as_uri() if workspace else None,
        workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name=workspace.name)] if workspace else None))
    client.initialized(types.InitializedParams())
    while True:  # wait for the model
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
        if status["model"]["state"] in ("loaded", "too-large", "error", "crashed"):
            break
        await asyncio.sleep(0.2)
    assert status["model"]["loaded"], status
    return client


async def stop_server(client: LanguageClient) -> None:
    """Shut the server down the way an editor does (shutdown, exit) and wait for it."""
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
