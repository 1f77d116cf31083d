"""End to end: the language server on a machine where llama.cpp crashes, over stdio.

Two real servers with the real default model, each in its own cache directory so the
probe really runs: in one, the probe child dies by SIGSEGV in llama.cpp's default
configuration (as on AMX Xeons); in the other, in every configuration.
"""

from __future__ import annotations

import os
import sys
import tempfile

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from server.engine.load_configs import ENV_PROBE_CRASH

from .helpers import inline, open_doc, wait_for_code, wait_until_settled

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

SOURCE = "def area(width, height):\n    return \n"


def _config(switch: str) -> ClientServerConfig:
    env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix=f"deepseek-probe-{switch}-"),
           ENV_PROBE_CRASH: switch}
    return ClientServerConfig(server_command=[sys.executable, "-m", "server"], server_env=env)


async def _start(client: LanguageClient, default_model_path) -> None:
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"model": {"path": str(default_model_path)},
                                "completion": {"manualMaxTimeMs": 60000}}))


@pytest_lsp.fixture(scope="module", config=_config("first"))
async def falls_back(lsp_client: LanguageClient, default_model_path):
    await _start(lsp_client, default_model_path)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(scope="module", config=_config("all"))
async def all_crash(lsp_client: LanguageClient, default_model_path):
    await _start(lsp_client, default_model_path)
    yield
    await lsp_client.shutdown_session()


async def test_the_default_configuration_crashing_is_survived_and_nothing_alarming_shown(
        falls_back: LanguageClient, tmp_path):
    uri = open_doc(falls_back, tmp_path / "area.py", SOURCE)
    status = await wait_until_settled(falls_back)
    model = status["model"]
    assert model["state"] == "loaded" and model["loadConfig"] == "no-repack", model
    assert [(t["config"], t["outcome"]) for t in model["probe"]["tried"]] == [
        ("default", "crashed (SIGSEGV)"), ("no-repack", "ok")]
    items = await inline(falls_back, uri, types.Position(line=1, character=11))
    # The first item is the pipeline's own suggestion (an explicit request may carry alternatives after it).
    assert items and "width" in items[0].insert_text and "height" in items[0].insert_text, items
    assert not [d for d in falls_back.diagnostics.get(uri, []) if d.source == "deepseek"]
    assert not [m for m in falls_back.messages if m.type in (types.MessageType.Error, types.MessageType.Warning)]


async def test_when_every_configuration_crashes_the_server_stays_up_and_says_so(all_crash: LanguageClient,
                                                                                tmp_path):
    uri = open_doc(all_crash, tmp_path / "area.py", SOURCE)
    status = await wait_until_settled(all_crash)
    assert status["model"]["state"] == "crashed" and status["model"]["loaded"] is False
    assert "every load configuration" in status["model"]["error"]
    assert len(status["model"]["probe"]["tried"]) == 3
    diag = await wait_for_code(all_crash, uri, "model-crashed")
    assert diag.severity == types.DiagnosticSeverity.Error and diag.source == "deepseek"
    assert "Fix:" in diag.message
    assert any(m.type == types.MessageType.Error and "crashes" in m.message for m in all_crash.messages)
    # Still answering: no suggestion, no hang, status again.
    assert await inline(all_crash, uri, types.Position(line=1, character=11)) == []
    again = await all_crash.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
    assert again["model"]["state"] == "crashed"
