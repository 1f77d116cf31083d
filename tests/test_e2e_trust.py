"""End to end: edits land where the user saw them, and Stop stops. The real server and model over stdio.

The workspace lives under a path with a space and a non-ASCII letter, as many users'
folders do; documents are opened under their percent-encoded URIs, as VS Code and Neovim
send them.
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
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from .helpers import code_actions, open_doc, start_as_vscode

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

WORKSPACE = Path(tempfile.mkdtemp(prefix="deepseek-trust-")) / "My Projects" / "café"
WORKSPACE.mkdir(parents=True)
CODE = "".join([
    '"""Shapes."""\n\n\n',
    "def area(width, height):\n", '    """The area of a rectangle."""\n', "    return width * height\n\n\n",
    "def perimeter(width, height):\n", "    total = 0\n", "    total += width\n", "    total += width\n",
    "    total += height\n", "    total += height\n", "    return total\n"])
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": tempfile.mkdtemp(prefix="deepseek-trust-data-")})


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient):
    lsp_client.edits, lsp_client.deltas = [], []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        lsp_client.edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    @lsp_client.feature("deepseek/chatDelta")
    def delta(params):
        lsp_client.deltas.append((time.monotonic(), params))

    await start_as_vscode(lsp_client, WORKSPACE, {"workspaceTrusted": True, "chat": {"maxTokens": 160},
                                                  "hover": {"timeMs": 0}, "completion": {"manualMaxTimeMs": 60000}},
                          name="café")
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, arg: dict):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[arg]))


def lines(start: int, end: int) -> dict:
    return {"start": {"line": start, "character": 0}, "end": {"line": end, "character": 0}}


async def test_a_percent_encoded_uri_gets_completion_hover_and_actions(client: LanguageClient):
    path = WORKSPACE / "shapes.py"
    text = CODE.replace("    return total\n", "    return \n")  # the hole the user is filling
    path.write_text(text)
    uri = open_doc(client, path, text)
    assert "%20" in uri and "%C3%A9" in uri  # as editors send it
    items = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=14, character=11),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert items.items and "total" in items.items[0].insert_text, items
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=3, character=5)))
    assert hover is not None and "def area(width, height):" in hover.contents.value
    actions = await code_actions(client, uri, 5, 4)
    assert [a["title"] for a in actions] == ["deepseek: Explain", "deepseek: Refactor", "deepseek: Write tests"]


async def test_refactor_works_on_the_open_text_not_the_file_on_disk(client: LanguageClient):
    path = WORKSPACE / "disk_differs.py"
    path.write_text("# an older version on disk\n" * 30)
    uri = open_doc(client, path, CODE)
    result = await command(client, "deepseek.refactor", {"uri": uri, "range": lines(8, 15),
                                                         "instruction": "use a single return expression"})
    if result["applied"]:
        edit = client.edits[-1].document_changes[0]
        assert edit.text_document.version == 1  # the version the request saw
        assert edit.edits[0].range.start.line == 8 and "perimeter" in edit.edits[0].new_text
    else:
        assert result["edit"] is None and result["reason"]


async def test_a_document_edited_during_a_refactor_is_never_overwritten(client: LanguageClient):
    path = WORKSPACE / "moving.py"
    path.write_text(CODE)
    uri = open_doc(client, path, CODE)
    edits_before = len(client.edits)
    task = asyncio.ensure_future(command(client, "deepseek.refactor", {
        "uri": uri, "range": lines(8, 15), "instruction": "rename total to result"}))
    await asyncio.sleep(0.3)  # the user types while the model writes
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0)),
            text="import math\n")]))
    result = await task
    assert result["applied"] is False and result["edit"] is None
    assert len(client.edits) == edits_before  # nothing was sent to the editor
    if "document changed" not in result["reason"]:
        pytest.fail(f"refused for another reason: {result['reason']}")


async def test_lines_are_counted_as_lsp_counts_them(client: LanguageClient):
    """A form feed (GNU C, Emacs Lisp, Python's own stdlib) is not a line break for LSP."""
    text = "import os\n\x0c\n\ndef first():\n    return 1\n\x0c\ndef second():\n    return 2\n"
    path = WORKSPACE / "paged.py"
    path.write_text(text)
    uri = open_doc(client, path, text)

    async def definition_at(line: int) -> int:
        actions = await code_actions(client, uri, line, 1)
        return actions[0]["command"]["arguments"][0]["range"]["start"]["line"]

    assert await definition_at(7) == 6  # `return 2` belongs to `second`, on LSP line 6
    # An incremental edit below a form feed lands on the line the editor meant.
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=8, character=0), end=types.Position(line=8, character=0)),
            text="\ndef third():\n    return 3\n")]))
    assert await definition_at(10) == 9


async def _first_delta_after(client: LanguageClient, t: float, not_session: str | None = None) -> tuple[float, str]:
    """When the first chat delta after ``t`` (of another session than ``not_session``) arrived, and its session."""
    deadline = time.monotonic() + 120
    while True:
        found = [(at, d) for at, d in client.deltas if at > t and d.sessionId != not_session]
        if found:
            return found[0][0], found[0][1].sessionId
        assert time.monotonic() < deadline, "no delta"
        await asyncio.sleep(0.02)


async def test_stop_reaches_the_model_and_the_next_chat_answers_in_the_time_of_one(client: LanguageClient):
    # How long a chat takes to start answering when the chat model is free.
    t0 = time.monotonic()
    await command(client, "deepseek.chat", {"message": "Write a long story about a cat who learns Python."})
    free_start = (await _first_delta_after(client, t0))[0] - t0
    # A long answer, stopped after its first words.
    t1 = time.monotonic()
    fut = client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(
        command="deepseek.chat", arguments=[{"message": "Write a long story about a dog who learns Rust."}]),
        msg_id="chat-to-stop")
    _, stopped_session = await _first_delta_after(client, t1)
    client.protocol.notify("$/cancelRequest", types.CancelParams(id="chat-to-stop"))
    with pytest.raises(JsonRpcException):
        await asyncio.wrap_future(fut)
    # The next chat starts answering as soon as on a free model: the stopped one does not run on
    # (it had ~150 tokens, several seconds, left to write).
    t2 = time.monotonic()
    reply_task = asyncio.ensure_future(command(client, "deepseek.chat", {
        "message": "Write a long story about a bird who learns Go."}))
    next_start = (await _first_delta_after(client, t2, not_session=stopped_session))[0] - t2
    assert (await reply_task)["reply"]
    assert next_start < free_start + 1.5, (next_start, free_start)
    late = [d for at, d in client.deltas if at > t2 + next_start + 0.5 and d.sessionId == stopped_session]
    assert not late, "the stopped chat kept writing"


async def test_chat_never_sends_a_secret_file(client: LanguageClient):
    path = WORKSPACE / ".env"
    text = "API_KEY=sk-live-0123456789abcdef\n"
    path.write_text(text)
    uri = open_doc(client, path, text, "dotenv")
    reply = await command(client, "deepseek.chat", {"message": "What does this file configure?", "uri": uri,
                                                    "range": lines(0, 1)})
    assert reply["reply"] and not [r for r in reply["references"] if r["uri"].endswith("/.env")], reply
