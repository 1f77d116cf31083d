"""The real server over stdio for the benchmarks: started, initialized, waited for until its model is loaded."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
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


INDEXING_PACKAGES = ("numpy", "pip", "pygments")


@contextlib.contextmanager
def fresh_workspace() -> Iterator[Path]:
    """A fresh copy of numpy's, pip's and pygments' sources (~1,300 Python files, never indexed),
    for a server to index while a benchmark types; the copy and its index are removed afterwards."""
    from index.workspace import store_dir
    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as tmp:
        workspace = Path(tmp) / "workspace"
        for package in INDEXING_PACKAGES:
            src = Path(importlib.util.find_spec(package).origin).parent
            shutil.copytree(src, workspace / package, ignore=shutil.ignore_patterns("*.so", "*.pyc", "tests"))
        try:
            yield workspace
        finally:
            shutil.rmtree(store_dir(workspace), ignore_errors=True)


def paired(on_ms: list[float], off_ms: list[float]) -> str:
    """Per request, the first arm's latency minus the second's (the same requests in the same order):
    the median and the 10th and 90th percentiles of the differences, and how often the first was
    slower by more than 100 ms."""
    diffs = sorted(a - b for a, b in zip(on_ms, off_ms, strict=True))
    if not diffs:
        return "no pairs"
    q = statistics.quantiles(diffs, n=10) if len(diffs) > 1 else [diffs[0]] * 9
    slower = sum(d > 100 for d in diffs)
    faster = sum(d < -100 for d in diffs)
    return (f"per request, on - off: median {statistics.median(diffs):+.0f} ms, p10 {q[0]:+.0f}, p90 {q[-1]:+.0f}; "
            f"on slower by > 100 ms at {slower} of {len(diffs)}, faster by > 100 ms at {faster}")
