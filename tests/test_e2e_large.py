"""End to end over stdio: a suggestion the user asks for is written by the assistant's larger model.

``completion.manualModel`` (docs/PROTOCOL.md): automatic suggestions come from the completion
model (the 0.5B); an Invoked request from the assistant's model (the 1.5B), filling in with a KV
cache of its own on the chat model's weights. The real server, the real models; the code is
idna's ``intranges.py`` (installed, third-party) with a line cut out.
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

from .helpers import cut_hole, inline, open_doc, start_as_vscode, wait_until_settled

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

DATA = tempfile.mkdtemp(prefix="deepseek-data-")
WORKSPACE = Path(tempfile.mkdtemp(prefix="deepseek-large-ws-"))
SOURCE = Path(idna.__file__).with_name("intranges.py")
TEXT = SOURCE.read_text()
DOC, POS, EXPECTED = cut_hole(TEXT, "    return (start << 32) | end", "    return (")
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": DATA})
WAIT_S = 900  # the 1.5B loading and reading ~1,000 prompt tokens on a slow 2-core CPU


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient):
    await start_as_vscode(lsp_client, WORKSPACE, {
        "workspaceTrusted": True, "index": {"enabled": False},
        "completion": {"manualModel": "large", "manualMaxTimeMs": 600_000, "alternatives": 2}})
    shutil.copy(SOURCE, WORKSPACE / "intranges.py")
    lsp_client.uri = open_doc(lsp_client, WORKSPACE / "intranges.py", DOC)
    assert (await wait_until_settled(lsp_client))["model"]["state"] == "loaded"
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))


async def configure(client: LanguageClient, completion: dict) -> None:
    client.set_configuration({"index": {"enabled": False}, "completion": {
        "manualMaxTimeMs": 600_000, "alternatives": 2, **completion}}, section="deepseek")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    await asyncio.sleep(0.5)


async def test_an_explicit_request_is_written_by_the_larger_model(client: LanguageClient):
    items = await inline(client, client.uri, POS)
    st = (await status(client))["completion"]
    assert st["lastModel"] == "large" and st["largeAnswers"] == 1, st
    assert items and items[0].insert_text.strip(), items
    assert len({i.insert_text for i in items}) == len(items) <= 2  # the alternatives, from it too
    assert st["largePromptTokensPerS"] and st["largeModel"], st
    chat = (await status(client))["chat"]
    assert chat["loaded"], chat  # loaded for the explicit request: the same weights serve the chat


async def test_typing_through_the_larger_models_suggestion_is_answered_from_the_cache(client: LanguageClient):
    first = (await inline(client, client.uri, POS))[0].insert_text
    before = (await status(client))["completion"]
    assert before["lastModel"] == "large"
    typed = first[:2]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=POS, end=POS), text=typed)]))
    at = types.Position(line=POS.line, character=POS.character + len(typed))
    rest = await inline(client, client.uri, at, kind=types.InlineCompletionTriggerKind.Automatic)
    after = (await status(client))["completion"]
    assert rest and typed + rest[0].insert_text == first, (first, rest)
    assert after["cacheAnswers"] > before["cacheAnswers"] and after["modelAnswers"] == before["modelAnswers"]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.uri, version=3),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=POS, end=at), text="")]))


async def test_automatic_suggestions_stay_with_the_completion_model(client: LanguageClient):
    line = DOC.splitlines()[POS.line - 1]
    at = types.Position(line=POS.line - 1, character=len(line))
    await inline(client, client.uri, at, kind=types.InlineCompletionTriggerKind.Automatic)
    st = (await status(client))["completion"]
    assert st["lastModel"] == "small" and st["largeAnswers"] >= 1, st


async def test_small_keeps_explicit_requests_on_the_completion_model(client: LanguageClient):
    await configure(client, {"manualModel": "small"})
    first_line = DOC.index("def ")
    at = types.Position(line=DOC[:first_line].count("\n") + 1, character=0)
    await inline(client, client.uri, at)
    st = (await status(client))["completion"]
    assert st["lastModel"] == "small", st


async def test_auto_reads_a_new_place_ahead_and_then_answers_there_with_the_larger_model(client: LanguageClient):
    """At a place the larger model has not read, on this slow machine, ``auto`` lets the completion model
    answer at once and reads the place into the larger model's cache; asked again there, it answers."""
    await configure(client, {"manualModel": "auto", "manualMaxTimeMs": 3000})
    lines = DOC.splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.startswith("def _decode_range"))
    at = types.Position(line=row + 1, character=len(lines[row + 1]))
    reads = (await status(client))["completion"]["largeReadAhead"]
    await inline(client, client.uri, at)
    st = (await status(client))["completion"]
    if st["lastModel"] == "small":
        t0 = time.monotonic()
        while st["largeReadAhead"] <= reads:
            assert time.monotonic() - t0 < WAIT_S, st
            await asyncio.sleep(1)
            st = (await status(client))["completion"]
        await inline(client, client.uri, at)
        st = (await status(client))["completion"]
    assert st["lastModel"] == "large", st
