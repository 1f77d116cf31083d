"""End to end over stdio: the assistant's prompts read ahead from the editor's signals.

A person selects a function and opens the chat panel (``deepseek/assistAhead`` chat), rests the
cursor in a function (``textDocument/codeAction``, as VS Code asks at every move) and on a name
(``deepseek/assistAhead`` hover). When they then ask, only what is new is read. The code is
idna's ``intranges.py`` (installed, third-party); the assistant is the catalog's model.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import idna
import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from .helpers import open_doc, start_as_vscode

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

DATA = tempfile.mkdtemp(prefix="deepseek-data-")
WORKSPACE = Path(tempfile.mkdtemp(prefix="deepseek-ahead-ws-"))
SOURCE = Path(idna.__file__).with_name("intranges.py")
shutil.copy(SOURCE, WORKSPACE / "intranges.py")
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": DATA})
WAIT_S = 900  # reading ~1,000 prompt tokens with the 1.5B on a slow 2-core CPU (~30 tokens/s) takes ~40 s


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient):
    lsp_client.deltas = []

    @lsp_client.feature("deepseek/chatDelta")
    def delta(params):
        lsp_client.deltas.append(params)

    await start_as_vscode(lsp_client, WORKSPACE, {"workspaceTrusted": True, "chat": {"maxTokens": 24},
                                                  "index": {"enabled": False}})
    lsp_client.uri = open_doc(lsp_client, WORKSPACE / "intranges.py", SOURCE.read_text())
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, arg: dict):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[arg]))


async def read_ahead_after(client: LanguageClient, reads: int) -> dict:
    """Wait until the server has read more than ``reads`` prompts ahead; its chat status."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < WAIT_S:
        chat = (await command(client, "deepseek.status", {}))["chat"]
        if chat["readAhead"]["reads"] > reads:
            return chat
        await asyncio.sleep(0.5)
    raise AssertionError(f"nothing read ahead in {WAIT_S} s: {chat}")


def lines_of(text: str, name: str) -> tuple[int, int]:
    start = text[: text.index(f"def {name}(")].count("\n")
    end = start + 1
    lines = text.splitlines()
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    return start, end - 1


async def test_a_question_in_the_open_panel_reads_only_itself(client: LanguageClient):
    uri, text = client.uri, SOURCE.read_text()
    start, end = lines_of(text, "intranges_contain")
    selection = {"start": {"line": start, "character": 0}, "end": {"line": end + 1, "character": 0}}
    client.protocol.notify("deepseek/assistAhead", {"task": "chat", "uri": uri, "range": selection})
    chat = await read_ahead_after(client, 0)
    assert chat["readAhead"]["tokens"] > 200 and chat["readAhead"]["on"] is True
    reply = await command(client, "deepseek.chat", {"message": "What does this function return for an empty list?",
                                                    "uri": uri, "range": selection})
    assert reply["reply"] and reply["promptTokens"] > 200
    assert reply["promptTokensRead"] <= 40, reply  # the question and the template around it

    # The panel reads the follow-up's prompt after the answer: the conversation so far is in the cache.
    client.protocol.notify("deepseek/assistAhead", {"task": "chat", "uri": uri, "range": selection,
                                                    "sessionId": reply["sessionId"]})
    await read_ahead_after(client, chat["readAhead"]["reads"])
    follow = await command(client, "deepseek.chat", {"message": "And for a single range?", "uri": uri,
                                                     "range": selection, "sessionId": reply["sessionId"]})
    assert follow["promptTokensRead"] <= 40 and follow["promptTokens"] > reply["promptTokens"], follow


async def loaded(client: LanguageClient) -> None:
    """The chat model loaded: the panel opened (reading ahead at a cursor never loads a model)."""
    reads = (await command(client, "deepseek.status", {}))["chat"]["readAhead"]["reads"]
    client.protocol.notify("deepseek/assistAhead", {"task": "chat", "uri": client.uri})
    await read_ahead_after(client, reads)


async def test_explain_from_the_menu_reads_one_token_and_names_the_code_first(client: LanguageClient):
    uri, text = client.uri, SOURCE.read_text()
    await loaded(client)
    line = text[: text.index("def _encode_range(")].count("\n") + 1
    before = (await command(client, "deepseek.status", {}))["chat"]["readAhead"]["reads"]
    cursor = types.Range(start=types.Position(line=line, character=4), end=types.Position(line=line, character=4))
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=cursor,
        context=types.CodeActionContext(diagnostics=[])), msg_id="ahead-code-actions")
    client.protocol._result_types["ahead-code-actions"] = None  # raw JSON (see test_e2e_assist.py)
    actions = await asyncio.wrap_future(fut)
    explain = next(a["command"] for a in actions if a["command"]["command"] == "deepseek.explain")
    await read_ahead_after(client, before)
    client.deltas.clear()
    result = await command(client, "deepseek.explain", explain["arguments"][0])
    assert result["promptTokensRead"] <= 2, result
    assert client.deltas[0].delta.startswith("**`_encode_range`** in `intranges.py`")


async def test_a_hover_where_the_cursor_rested_shows_its_explanation_at_once(client: LanguageClient):
    uri, text = client.uri, SOURCE.read_text()
    await loaded(client)
    line = text[: text.index("def _decode_range(")].count("\n")
    position = {"line": line, "character": 6}
    before = (await command(client, "deepseek.status", {}))["chat"]["readAhead"]["answers"]
    client.protocol.notify("deepseek/assistAhead", {"task": "hover", "uri": uri, "position": position})
    t0 = time.monotonic()
    while (await command(client, "deepseek.status", {}))["chat"]["readAhead"]["answers"] == before:
        assert time.monotonic() - t0 < WAIT_S, "no hover answer written ahead"
        await asyncio.sleep(0.5)
    t1 = time.monotonic()
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(**position)))
    assert hover is not None and "---" in hover.contents.value, hover  # the explanation, on the first hover
    assert time.monotonic() - t1 < 1.5  # from the response cache
