"""End to end: the workspace index through the real server over stdio."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import CONFIG_PY, GEOMETRY_JS, inline, open_doc

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-ws")
    (root / "src").mkdir()
    (root / "src" / "config.py").write_text(CONFIG_PY)
    (root / "src" / "geometry.js").write_text(GEOMETRY_JS)
    (root / ".env").write_text("API_KEY=very-secret\n")
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "server"]))
async def client(lsp_client: LanguageClient, workspace):
    lsp_client.registrations = []

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams):  # as an editor does
        lsp_client.registrations.extend(params.registrations)

    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=workspace.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="e2e-ws")],
        initialization_options={"completion": {"alternatives": 1}}))  # the pipeline's one suggestion
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))


async def search(client: LanguageClient, query: str, k: int = 5) -> list[dict]:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="deepseek.search", arguments=[{"query": query, "k": k}]))


async def eventually(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_indexing_reports_progress_and_becomes_ready(client: LanguageClient):
    index = (await eventually(lambda: _ready(client)))["index"]
    assert index["files"] == 2 and index["chunks"] >= 5  # .env is never indexed
    titles = [reports[0].title for reports in client.progress_reports.values()
              if reports and reports[0].kind == "begin"]
    assert "deepseek: indexing workspace" in titles
    index_reports = next(r for r in client.progress_reports.values() if r[0].title == "deepseek: indexing workspace")
    assert index_reports[-1].kind == "end" and index_reports[0].cancellable
    # The server asked to hear about files changed on disk.
    watch = [r for r in client.registrations if r.method == "workspace/didChangeWatchedFiles"]
    assert watch and watch[0].register_options["watchers"][0]["globPattern"] == "**/*"


async def _ready(client):
    s = await status(client)
    return s if s["index"]["state"] == "ready" else None


async def test_search_returns_ranked_results_with_ranges(client: LanguageClient, workspace):
    await eventually(lambda: _ready(client))
    results = await search(client, "read config", 3)
    top = results[0]
    assert top["uri"] == (workspace / "src" / "config.py").as_uri()
    assert top["symbol"] == "read_config" and "def read_config" in top["text"]
    assert top["range"] == {"start": {"line": 6, "character": 0}, "end": {"line": 13, "character": 0}}
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    # Semantic search once the embeddings are in (the embedder runs in the background).
    await eventually(lambda: _embedded(client), timeout=120)
    meaning = await search(client, "surface of a round shape")
    assert meaning[0]["symbol"] == "circleArea"


async def _embedded(client):
    s = (await status(client))["index"]
    return s["embedded"] == s["chunks"] and s["chunks"] > 0


async def test_saved_and_deleted_files_update_the_index(client: LanguageClient, workspace):
    await eventually(lambda: _ready(client))
    path = workspace / "src" / "config.py"
    path.write_text(CONFIG_PY + "\n\ndef parse_duration(text):\n    return int(text.rstrip('s'))\n")
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=path.as_uri())))

    async def found():
        return [r for r in await search(client, "parse duration") if r["symbol"] == "parse_duration"]
    await eventually(found, timeout=20)
    (workspace / "src" / "geometry.js").unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[types.FileEvent(
        uri=(workspace / "src" / "geometry.js").as_uri(), type=types.FileChangeType.Deleted)]))

    async def gone():
        return all("geometry.js" not in r["uri"] for r in await search(client, "circle area rectangle", 10))
    await eventually(gone, timeout=20)


async def test_edits_in_an_open_document_are_indexed_after_a_pause(client: LanguageClient, workspace):
    await eventually(lambda: _ready(client))
    path = workspace / "src" / "notes.py"
    path.write_text("x = 1\n")
    uri = open_doc(client, path, "x = 1\n")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(
            text="def summarize_invoices(items):\n    return sum(i.total for i in items)\n")]))

    async def found():
        return [r for r in await search(client, "summarize invoices") if r["symbol"] == "summarize_invoices"]
    await eventually(found, timeout=20)


async def test_completion_works_with_the_index_on(client: LanguageClient, workspace):
    await eventually(lambda: _ready(client))
    doc = "from src.config import ConfigReader\n\nreader = ConfigReader()\nsettings = reader."
    uri = open_doc(client, workspace / "main.py", doc)
    items = await inline(client, uri, types.Position(line=3, character=len("settings = reader.")))
    assert items and items[0].insert_text.startswith("read_config(")  # learned from the other file


async def test_bad_search_arguments_are_an_error(client: LanguageClient):
    with pytest.raises(JsonRpcException, match="needs"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.search", arguments=[{"k": 3}]))
    with pytest.raises(JsonRpcException, match="k must be"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.search", arguments=[{"query": "x", "k": 0}]))
