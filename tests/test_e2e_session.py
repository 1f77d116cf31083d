"""End to end, over stdio with the real default model: a jump, a switch and back, an accept.

Each move is answered with the KV-cache reuse of server/engine/ (kv_cache.py) visible in the figures
the server reports (``deepseek.status``, the same counters it logs per request): a jump
within a file keeps runs of the old prompt beyond the common prefix (shifted into
place); coming back from another file restores the state saved when leaving; after a
shown suggestion, the one that follows accepting it is prepared while the user is idle,
so the request after Tab needs no model work. The figures for a whole session, on and
off, are bench/editing_session.py's.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import textwrap

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import SOURCE, cut_hole, inline, open_doc, wait_until_settled

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

AUTO = types.InlineCompletionTriggerKind.Automatic


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "server"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        # Every automatic suggestion shown (minConfidence 0): this module checks what the KV cache
        # reuses, and the user here types text no suggestion had, which the model is unsure of.
        # Explicit requests on the completion model too (manualModel small): under auto, the first one
        # goes to the completion model while the assistant's model is still loading and the next to the
        # larger model, whose own KV cache starts empty (the larger model's reuse: test_e2e_large.py).
        initialization_options={"completion": {"manualMaxTimeMs": 60000, "alternatives": 1, "minConfidence": 0,
                                               "manualModel": "small"},
                                "index": {"enabled": False}}))
    status = await wait_until_settled(lsp_client)
    assert status["model"]["loaded"], status
    yield
    await lsp_client.shutdown_session()


async def figures(client: LanguageClient) -> dict:
    return (await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="deepseek.status")))["completion"]


def change(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def test_jump_switch_and_accept_reuse_the_kv_cache(client, tmp_path):
    text = SOURCE.read_text()
    # A place in platformdirs' unix.py, then a jump 12 lines down to another method.
    here, pos, _ = cut_hole(text, '        return self._append_app_name_and_version(expand_user("~/.cache")',
                            "return self._append_app_name_and_version(")
    uri = open_doc(client, tmp_path / "unix.py", here)
    other = open_doc(client, tmp_path / "wrap.py", inspect.getsource(textwrap))
    await inline(client, uri, pos)

    there, pos2, _ = cut_hole(text, '        return self._append_app_name_and_version("/var/lib"',
                              "return self._append_app_name_and_version(")
    assert 0 < pos2.line - pos.line < 20
    change(client, uri, 2, there)
    before = await figures(client)
    await inline(client, uri, pos2)
    after = await figures(client)
    assert after["shiftedTokens"] > before["shiftedTokens"]  # runs of the old prompt kept past the change

    # Another file, then back to the same place, where the user types what no suggestion had
    # (so the answer needs the model): the state saved on leaving comes back.
    await inline(client, other, types.Position(line=120, character=8))
    lines = there.split("\n")
    lines[pos2.line] = lines[pos2.line][:pos2.character] + "x" + lines[pos2.line][pos2.character:]
    there = "\n".join(lines)
    change(client, uri, 3, there)
    pos2 = types.Position(line=pos2.line, character=pos2.character + 1)
    before = await figures(client)
    await inline(client, uri, pos2, kind=AUTO)
    after = await figures(client)
    assert after["restoredStates"] == before["restoredStates"] + 1
    evaluated = (after["promptTokens"] - before["promptTokens"]) - (after["reusedTokens"] - before["reusedTokens"])
    assert evaluated < 16, (before, after)  # the prompt's last token and the typed text at most
    assert after["kvStates"]["count"] >= 1 and after["kvStates"]["budgetMb"] == 128
    assert after["promptTokensPerS"] > 0 and after["shortWindows"] >= 0  # measured on this machine

    # Tab and Enter: the suggestion after them was prepared while the user read this one.
    prepared = (await figures(client))["preparedAhead"]
    shown = (await inline(client, uri, pos2, kind=AUTO))[0].insert_text
    assert shown and "\n" not in shown
    for _ in range(600):  # the user reads the suggestion: idle time, the work ahead runs
        if (await figures(client))["preparedAhead"] > prepared:
            break
        await asyncio.sleep(0.1)
    before = await figures(client)
    assert before["preparedAhead"] == prepared + 1
    lines = there.split("\n")
    indent = lines[pos2.line][:len(lines[pos2.line]) - len(lines[pos2.line].lstrip())]
    lines[pos2.line] = lines[pos2.line][:pos2.character] + shown + "\n" + indent + lines[pos2.line][pos2.character:]
    change(client, uri, 4, "\n".join(lines))  # Tab, then Enter
    await inline(client, uri, types.Position(line=pos2.line + 1, character=len(indent)), kind=AUTO)
    after = await figures(client)
    assert after["modelAnswers"] == before["modelAnswers"] and after["cacheAnswers"] == before["cacheAnswers"] + 1

