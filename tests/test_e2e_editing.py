"""End to end, the editing experience of issue #16: partial accepts, alternatives, a quiet editor.

The real server over stdio with the real default model, on platformdirs' ``unix.py``
(code this project did not write). The request sequences are the ones VS Code 1.100
sends (seen in the server's log under clients/vscode/tests/editing-vscode.mjs): after
``editor.action.inlineSuggest.acceptNextWord`` / ``acceptNextLine`` it applies the
accepted part as an ordinary ``didChange`` and asks again at the new cursor, with trigger
kind Invoked when the suggestion was asked for (Alt+\\, Alt+]) and Automatic when it came
as you typed; Alt+] asks with trigger kind Invoked.
"""

from __future__ import annotations

import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from .helpers import SOURCE, inline, insert_at, open_doc, parses, wait_until_settled

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

AUTO = types.InlineCompletionTriggerKind.Automatic


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "server"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"completion": {"manualMaxTimeMs": 60000}}))
    status = await wait_until_settled(lsp_client)
    assert status["model"]["loaded"], status
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))


def method_body_hole(name: str) -> tuple[str, types.Position]:
    """unix.py with the body of method ``name`` removed; the cursor at the end of its ``def`` line."""
    text = SOURCE.read_text()
    start = text.index(f"    def {name}(self) -> str:")
    eol = text.index("\n", start)
    body_end = text.index("\n\n", eol)
    doc = text[:eol] + text[body_end:]
    return doc, types.Position(line=doc[:eol].count("\n"), character=eol - (doc.rfind("\n", 0, eol) + 1))


def advance(pos: types.Position, text: str) -> types.Position:
    """The cursor after inserting ``text`` at ``pos``."""
    lines = text.split("\n")
    if len(lines) == 1:
        return types.Position(line=pos.line, character=pos.character + len(text))
    return types.Position(line=pos.line + len(lines) - 1, character=len(lines[-1]))


def type_in(client: LanguageClient, uri: str, version: int, pos: types.Position, text: str) -> None:
    """An edit as VS Code sends it when a part of a suggestion is accepted: an insert at the cursor."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)]))


async def test_partial_accepts_keep_the_rest_of_the_suggestion_without_a_model_call(client, tmp_path):
    doc, pos = method_body_hole("user_music_dir")
    uri = open_doc(client, tmp_path / "partial.py", doc)
    items = await inline(client, uri, pos)  # Alt+\ (or deepseek: Suggest here): the alternatives too
    shown = items[0].insert_text  # the one VS Code shows first
    assert shown.startswith("\n        ") and shown.count("\n") >= 1, shown
    before = (await status(client))["completion"]
    # Accept next word: VS Code's word rule takes the leading whitespace first ("\n        "), crossing the line.
    word = shown[: len(shown) - len(shown.lstrip())]
    type_in(client, uri, 2, pos, word)
    pos = advance(pos, word)
    rest = shown[len(word):]
    items = await inline(client, uri, pos)  # Invoked, as VS Code asks after a partial accept of an asked-for one
    assert [i.insert_text for i in items] == [rest]  # the rest alone: no alternatives computed for it
    # Then a word on the new line ("return"), where the length policy alone would now say "single line".
    word = rest[: len(rest) - len(rest.lstrip())] + rest.lstrip().split("(")[0].split(" ")[0]
    type_in(client, uri, 3, pos, word)
    pos = advance(pos, word)
    rest = rest[len(word):]
    items = await inline(client, uri, pos, AUTO)
    assert [i.insert_text for i in items] == [rest]
    # Accept next line of what is left, when there is a line break in it.
    if "\n" in rest:
        line = rest[: rest.index("\n") + 1]
        type_in(client, uri, 4, pos, line)
        pos = advance(pos, line)
        rest = rest[len(line):]
        items = await inline(client, uri, pos, AUTO)
        assert [i.insert_text for i in items] == ([rest] if rest else [])
    after = (await status(client))["completion"]
    assert after["modelAnswers"] == before["modelAnswers"]  # every rest came from the type-through cache
    assert after["cacheAnswers"] >= before["cacheAnswers"] + 2


async def test_an_explicit_request_offers_distinct_alternatives_ranked_and_parsing(client, tmp_path):
    doc, pos = method_body_hole("user_videos_dir")
    uri = open_doc(client, tmp_path / "alternatives.py", doc)
    items = await inline(client, uri, pos)  # Invoked: Alt+] in VS Code
    texts = [i.insert_text for i in items]
    assert 2 <= len(texts) <= 3, texts
    assert len(set(texts)) == len(texts)
    for t in texts:  # each continues this method (a comment may come first) and ends at the dedent
        lines = t.split("\n")
        assert len(lines) >= 2 and all(not ln.strip() or ln.startswith("        ") for ln in lines[1:]), t
        assert "def " not in t and parses(insert_at(doc, pos, t)), t
    assert all(i.range == types.Range(start=pos, end=pos) for i in items)
    # Typing on: automatic requests get one suggestion (the rest of the first, from the cache).
    type_in(client, uri, 2, pos, texts[0][:1])
    items = await inline(client, uri, advance(pos, texts[0][:1]), AUTO)
    assert [i.insert_text for i in items] == [texts[0][1:]]


async def test_a_long_file_gets_no_diagnostic_for_its_cut_context_the_status_has_it(client, tmp_path):
    doc, pos = method_body_hole("user_pictures_dir")
    uri = open_doc(client, tmp_path / "long.py", doc)
    items = await inline(client, uri, pos)
    assert items
    assert not [d for d in client.diagnostics.get(uri, []) if d.source == "deepseek"]
    context = (await status(client))["completion"]["context"]
    assert context["uri"] == uri and context["prefixDroppedTokens"] > 0 and context["suffixDroppedTokens"] > 0
