"""End to end: the remote backend against a real OpenAI-compatible server on loopback.

The test starts llama-cpp-python's own server (``python -m llama_cpp.server``) with the
default model, points deepseek-lsp at it with ``backend.kind: openai``, and stops it at
the end. A second server is pointed at a port where nothing listens.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import SOURCE, cancel_inline, cut_hole, inline, insert_at, open_doc

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
DATA = tempfile.mkdtemp(prefix="deepseek-remote-data-")
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": DATA})


@pytest.fixture(scope="module")
def llama_server(default_model_path):
    proc = subprocess.Popen([sys.executable, "-m", "tests.llama_server", "--model", str(default_model_path),
                             "--host", "127.0.0.1", "--port", str(PORT), "--n_ctx", "4096", "--n_threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/models", timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None, "llama_cpp.server exited"
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{PORT}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient, llama_server):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"backend": {"kind": "openai", "url": llama_server, "model": "qwen"},
                                "chat": {"maxTokens": 64}}))
    yield
    await lsp_client.shutdown_session()


async def test_no_local_model_is_loaded_and_status_says_openai(client: LanguageClient, llama_server):
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
    assert status["backend"]["kind"] == "openai" and status["backend"]["url"] == llama_server
    assert status["model"]["loaded"] is False and status["model"]["state"] == "not-loaded"


async def test_completions_come_from_the_server(client: LanguageClient, tmp_path):
    doc, pos, _ = cut_hole(SOURCE.read_text(), "        return self._user_media_dir(\"XDG_MUSIC_DIR\"", "return ")
    uri = open_doc(client, tmp_path / "unix_remote.py", doc)
    items = await inline(client, uri, pos)
    assert items and items[0].insert_text.startswith("self._user_media_dir(")
    ast.parse(insert_at(doc, pos, items[0].insert_text))
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
    assert status["completion"]["modelAnswers"] >= 1 and status["backend"]["reachable"]


async def test_a_cancelled_request_closes_the_stream_and_the_server_goes_on(client: LanguageClient, tmp_path):
    doc, pos, _ = cut_hole(SOURCE.read_text(), "        return self._user_media_dir(\"XDG_VIDEOS_DIR\"", "return ")
    uri = open_doc(client, tmp_path / "unix_cancel.py", doc)
    await cancel_inline(client, uri, pos, "remote-cancel", after_s=0.2)
    assert await inline(client, uri, pos)  # the backend still answers


async def test_chat_goes_to_the_server_too(client: LanguageClient):
    reply = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="deepseek.chat", arguments=[{"message": "In one sentence: what is a Python list?"}]))
    assert reply["reply"] and "list" in reply["reply"].lower()
    history = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="deepseek.chatHistory", arguments=[{"sessionId": reply["sessionId"]}]))
    assert history["messages"][1]["model"] == "qwen"


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def unreachable(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"backend": {"kind": "openai", "url": f"http://127.0.0.1:{free_port()}"}}))
    yield
    await lsp_client.shutdown_session()


async def test_an_unreachable_backend_is_reported_and_the_server_keeps_running(unreachable: LanguageClient,
                                                                               tmp_path):
    uri = open_doc(unreachable, tmp_path / "x.py", "def f():\n    return 1\n")
    assert await inline(unreachable, uri, types.Position(line=1, character=11)) == []
    note = next(d for d in unreachable.diagnostics[uri] if d.code == "backend-unreachable")
    assert note.severity == types.DiagnosticSeverity.Warning and "cannot reach the backend" in note.message
    assert any("cannot reach the backend" in m.message for m in unreachable.messages)
    status = await unreachable.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
    assert status["backend"]["reachable"] is False
