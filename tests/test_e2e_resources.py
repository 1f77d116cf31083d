"""End to end: settings and resource checks shown in the editor, over stdio.

The server is told (through workspace/configuration) that only 100 MB may be used,
so the default model must not load: a Warning diagnostic and a message say so with
the figures and the fix, and the server keeps answering everything else.
"""

from __future__ import annotations

import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import inline, open_doc, wait_for_code, wait_until_settled

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "server"]))
async def client(lsp_client: LanguageClient):
    lsp_client.set_configuration({"resources": {"ramLimitMb": 100}}, section="deepseek")
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        # An invalid value in initializationOptions: reported, replaced by the default.
        initialization_options={"completion": {"maxTokens": "lots"}, "model": {"nCtx": 4096}}))
    yield
    await lsp_client.shutdown_session()


async def test_model_too_large_is_shown_on_every_document_and_nothing_loads(client: LanguageClient, tmp_path):
    first = open_doc(client, tmp_path / "a.py", "import os\n")
    status = await wait_until_settled(client)
    assert status["model"]["state"] == "too-large" and status["model"]["loaded"] is False
    assert status["ram"]["availableMb"] == 100 and status["ram"]["neededMb"] > 400
    diag = await wait_for_code(client, first, "model-too-large")
    assert diag.severity == types.DiagnosticSeverity.Warning and diag.source == "deepseek"
    assert "needs about" in diag.message and "resources.ramLimitMb is 100 MB" in diag.message
    assert "Fix:" in diag.message and "model.nCtx" in diag.message
    warnings = [m for m in client.messages if m.type == types.MessageType.Warning]
    assert any("model-too-large" in m.message or "Model not loaded" in m.message for m in warnings), warnings
    # A document opened later gets the same diagnostic.
    later = open_doc(client, tmp_path / "b.py", "x = 1\n")
    await wait_for_code(client, later, "model-too-large")


async def test_server_keeps_answering_and_completions_are_empty(client: LanguageClient, tmp_path):
    uri = open_doc(client, tmp_path / "c.py", "def f():\n    return 1\n")
    assert await inline(client, uri, types.Position(line=1, character=4)) == []
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=4)))
    assert list(result.items) == []


async def test_invalid_setting_is_reported_and_replaced_by_its_default(client: LanguageClient):
    messages = " ".join(m.message for m in client.messages)
    assert "completion.maxTokens must be an integer" in messages and "using the default (128)" in messages


async def test_a_missing_model_file_is_an_error_with_the_fix(client: LanguageClient, tmp_path):
    uri = open_doc(client, tmp_path / "d.py", "y = 2\n")
    client.set_configuration({"model": {"path": str(tmp_path / "nowhere.gguf")}}, section="deepseek")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    diag = await wait_for_code(client, uri, "model-unavailable")
    assert diag.severity == types.DiagnosticSeverity.Error
    assert "does not exist. Fix: set model.path" in diag.message
    assert not [d for d in client.diagnostics[uri] if d.code == "model-too-large"]  # replaced, not piled up
    status = await wait_until_settled(client)
    assert status["model"]["state"] == "error" and status["model"]["loaded"] is False
