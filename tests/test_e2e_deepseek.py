"""End to end: the DeepSeek-Coder family through the real server, without its weights.

A tiny random-weight model around the real DeepSeek-Coder tokenizer (tests/tiny_deepseek.py)
is loaded with ``model.path``: the family is detected from its vocabulary, the FIM prompt is
built with DeepSeek's tokens, and a completion and a chat reply run through llama.cpp. The
text is noise; the plumbing is what is proven.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import inline, open_doc, wait_until_settled
from .tiny_deepseek import build

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

FOLDER = Path(tempfile.mkdtemp(prefix="deepseek-tiny-"))
MODEL = build(FOLDER / "deepseek-coder-tiny.gguf")
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": str(FOLDER / "data")})


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"model": {"path": str(MODEL), "nCtx": 1024}, "chat": {"maxTokens": 16}}))
    yield
    await lsp_client.shutdown_session()


async def test_the_family_is_detected_from_the_vocabulary(client: LanguageClient):
    status = await wait_until_settled(client)
    assert status["model"]["loaded"] and status["model"]["family"] == "deepseek-coder"
    assert status["model"]["name"] == "deepseek-coder-tiny.gguf"


async def test_a_completion_runs_through_llama_cpp(client: LanguageClient, tmp_path):
    await wait_until_settled(client)
    uri = open_doc(client, tmp_path / "fib.py", "def fib(n):\n    return \n")
    items = await inline(client, uri, types.Position(line=1, character=11))
    assert isinstance(items, list)  # noise from random weights: it may be trimmed to nothing
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
    completion = status["completion"]
    assert completion["modelAnswers"] + completion["cacheAnswers"] >= 1 and completion["promptTokens"] > 10


async def test_a_chat_reply_runs_through_the_chat_template(client: LanguageClient):
    await wait_until_settled(client)
    reply = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="deepseek.chat", arguments=[{"message": "What is a Fibonacci number?"}]))
    assert reply["sessionId"] and isinstance(reply["reply"], str) and reply["promptVersion"] == "chat@v3"
    history = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="deepseek.chatHistory", arguments=[{"sessionId": reply["sessionId"]}]))
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert history["messages"][1]["model"] == "deepseek-coder-tiny.gguf"
