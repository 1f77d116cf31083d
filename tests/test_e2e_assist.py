"""End to end: code actions, explain, refactor, write tests, hover and chat, over stdio.

The code is idna's ``intranges.py`` (an installed third-party module this project did not
write), copied into a temporary workspace; the model is the real default one.
"""

from __future__ import annotations

import ast
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import idna
import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from server.assist.sandbox import available as sandbox_available

from .helpers import open_doc, start_as_vscode

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

DATA = tempfile.mkdtemp(prefix="deepseek-data-")  # conversations of this test run, shared by both servers
WORKSPACE = Path(tempfile.mkdtemp(prefix="deepseek-assist-ws-"))
SOURCE = Path(idna.__file__).with_name("intranges.py")
shutil.copy(SOURCE, WORKSPACE / "intranges.py")
ASSISTANT_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"  # the catalog's choice where it is installed and fits
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": DATA})


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n")


async def _start(lsp_client: LanguageClient):
    lsp_client.deltas, lsp_client.edits = [], []

    @lsp_client.feature("deepseek/chatDelta")
    def delta(params):
        lsp_client.deltas.append(params)

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):  # as an editor does
        lsp_client.edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    await start_as_vscode(lsp_client, WORKSPACE, {"workspaceTrusted": True, "chat": {"maxTokens": 200},
                                                    "tests": {"improveMaxTimeMs": 120000}})


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient):
    await _start(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, arg: dict):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[arg]))


def function_range(text: str, name: str) -> dict:
    line = line_of(text, f"def {name}(")
    return {"start": {"line": line + 1, "character": 4}, "end": {"line": line + 1, "character": 4}}


async def test_three_actions_are_offered_for_the_function_at_the_cursor(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    inside = line_of(text, "def intranges_contain(") + 3
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=inside, character=4), end=types.Position(line=inside, character=4)),
        context=types.CodeActionContext(diagnostics=[])), msg_id="code-actions")
    # Read the raw JSON: lsprotocol's client-side hook takes any object with a "command" key
    # for a Command, so it would mis-read a CodeAction that carries one (editors parse JSON).
    client.protocol._result_types["code-actions"] = None
    actions = await asyncio.wrap_future(fut)
    assert [a["title"] for a in actions] == ["deepseek: Explain", "deepseek: Refactor", "deepseek: Write tests"]
    assert [a["command"]["command"] for a in actions] == [
        "deepseek.explain", "deepseek.refactor", "deepseek.writeTests"]
    assert [a["kind"] for a in actions] == ["", "refactor.rewrite", "source"]
    arg = actions[0]["command"]["arguments"][0]
    assert arg["uri"] == uri and arg["range"]["start"]["line"] == line_of(text, "def intranges_contain(")


async def test_explain_streams_and_names_the_code(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    result = await command(client, "deepseek.explain", {"uri": uri, "range": function_range(text, "intranges_contain")})
    assert "intranges_contain" in result["markdown"] and len(result["markdown"]) > 80
    assert result["promptVersion"] == "explain@v2"
    # An empty range inside the function: the reference is the whole definition that was explained.
    [ref] = result["references"]
    assert ref["uri"] == uri
    assert ref["range"]["start"] == {"line": line_of(text, "def intranges_contain("), "character": 0}
    assert ref["range"]["end"]["line"] > function_range(text, "intranges_contain")["start"]["line"] + 2
    streamed = "".join(d.delta for d in client.deltas if d.sessionId == result["sessionId"])
    assert streamed and streamed.strip() in result["markdown"]


async def test_refactor_arrives_as_an_edit_that_parses_and_was_run(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    # Whatever the model writes for this one, nothing is applied unverified: either an edit whose
    # behaviour the sandbox checked, or a refusal with its reason and no edit.
    first = await command(client, "deepseek.refactor",
                          {"uri": uri, "range": function_range(text, "intranges_contain")})
    if first["applied"]:
        assert first["verification"]["verdict"] == "kept" and first["edit"] is not None
        client.edits.clear()
    else:
        assert first["reason"] and first["edit"] is None and not client.edits
    result = await command(client, "deepseek.refactor",
                           {"uri": uri, "range": function_range(text, "intranges_from_list")})
    v = result["verification"]
    if v is None:  # the model proposed nothing to run (no change, no code block): refused with its reason
        assert not result["applied"] and result["reason"] and result["edit"] is None, result
        return
    if not sandbox_available()[0]:
        assert v["verdict"] == "unverified" and "bubblewrap" in v["summary"], v
    elif not result["applied"]:  # the model's rewrite changed what the function returns: refused, and why
        assert v["verdict"] == "changed" and v["differences"] and result["reason"].startswith("not applied: "), result
        assert result["edit"] is None and not client.edits
        return
    else:  # no tests in this workspace: checks derived from the function (generated calls) agreed
        assert v["verdict"] == "kept" and v["checks"] >= 3 and v["summary"].endswith("checks agree"), v
    assert result["applied"], result
    edit = client.edits[-1].document_changes[0]
    new = edit.edits[0].new_text
    lines = text.splitlines(keepends=True)
    start, end = edit.edits[0].range.start.line, edit.edits[0].range.end.line
    ast.parse("".join(lines[:start]) + new + "".join(lines[end:]))
    assert "def intranges_from_list(" in new and "def _encode_range" not in new
    assert result["edit"]["documentChanges"][0]["edits"][0]["newText"] == new
    reports = [r for r in client.progress_reports.values() if r[0].title == "deepseek: Refactor"][-1]
    assert [r.message for r in reports if r.kind == "report"] == ["writing the rewrite",
                                                                 "running the code: original and rewrite"]


async def test_a_refactor_that_changes_behaviour_is_not_applied(client: LanguageClient):
    if not sandbox_available()[0]:
        pytest.skip(f"needs bubblewrap: {sandbox_available()[1]}")
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    edits = len(client.edits)
    result = await command(client, "deepseek.refactor", {
        "uri": uri, "range": function_range(text, "intranges_contain"),
        "instruction": "Change it so that it always returns False."})
    v = result["verification"]
    assert not result["applied"] and len(client.edits) == edits, result
    if v is not None:  # the model wrote the change: running the code showed it
        assert v["verdict"] == "changed" and "intranges_contain(" in v["summary"], v


async def test_write_tests_keeps_only_tests_that_pass_and_catch_a_mutant(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    edits = len(client.edits)
    result = await command(client, "deepseek.writeTests",
                           {"uri": uri, "range": function_range(text, "intranges_from_list")})
    assert 1 <= result["rounds"] <= 3
    reports = [r for r in client.progress_reports.values() if r[0].title == "deepseek: Write tests"][-1]
    steps = [r.message for r in reports if r.kind == "report"]
    assert steps[0] == "round 1 of 3: writing tests" and steps[-1].startswith(f"round {result['rounds']} of 3: "), steps
    if sandbox_available()[0] and result.get("ran"):
        assert f"round {result['rounds']} of 3: running the tests" in steps, steps
    if not sandbox_available()[0]:  # written, not run, and the reply says how to enable the sandbox
        assert result["applied"] and not result["ran"] and "bubblewrap" in result["notRun"], result
        return
    m = result["mutants"]
    if not result["applied"]:  # refused after the repair rounds: the reply says what was wrong
        assert result["reason"] in ("the tests fail on the code as it is; not written",
                                    "the model did not produce tests that parse") or \
            result["reason"].startswith("the tests pass but catch none of the "), result
        assert len(client.edits) == edits
        return
    assert result["uri"] == (WORKSPACE / "tests" / "test_intranges.py").as_uri()
    changes = client.edits[-1].document_changes
    assert isinstance(changes[0], types.CreateFile) and changes[0].uri == result["uri"]
    code = changes[1].edits[0].new_text
    ast.parse(code)
    assert "intranges_from_list" in code and "def test" in code
    assert result["ran"] and result["ok"] and result["passed"] and not result["failed"], result
    # Expected values taken from the code are listed and marked in the file the user gets.
    assert isinstance(result["expectedFromCode"], list), result
    for change in result["expectedFromCode"]:
        assert " -> " not in change or "# value from running the code as it is" in code, (change, code)
    assert m["tried"] >= 3 and 1 <= m["caught"] <= m["tried"] and len(m["survivors"]) == m["tried"] - m["caught"]
    share = m["caught"] / m["tried"]
    assert m["score"] == round(share, 3) and m["weak"] == (share < 0.5), m
    assert m["summary"].startswith(f"{len(result['passed'])} passed, 0 failed, caught {m['caught']} of {m['tried']} "
                                   f"mutants ({share:.0%})") and ("weak tests" in m["summary"]) == m["weak"], m


async def test_hover_shows_the_definition_and_an_explanation(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    call = line_of(text, "def intranges_contain(")
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=call, character=len("def intranges_con"))))
    value = hover.contents.value
    assert value.startswith("```python\ndef intranges_contain(")
    assert "intranges.py, line" in value


async def test_chat_replies_with_references_and_repeats_from_the_cache(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    arg = {"message": "What does intranges_contain return for an empty list of ranges?", "uri": uri,
           "range": function_range(text, "intranges_contain")}
    first = await command(client, "deepseek.chat", arg)
    assert first["reply"] and first["sessionId"] and not first["cacheHit"]
    assert any(r["uri"] == uri for r in first["references"])
    # A question about selected code is answered from that code: no chunks of other files.
    assert all(r["uri"] == uri for r in first["references"]), first["references"]
    # The references come first, before the model reads the prompt; then the text, which adds up to the reply.
    mine = [d for d in client.deltas if d.sessionId == first["sessionId"]]
    assert mine[0].delta == "" and [(r.uri, r.range.start.line) for r in mine[0].references] == \
        [(r["uri"], r["range"]["start"]["line"]) for r in first["references"]]
    streamed = "".join(d.delta for d in mine).strip()
    assert streamed and streamed in first["reply"]
    follow = await command(client, "deepseek.chat", {"sessionId": first["sessionId"], "message": "And for [(1, 5)]?"})
    assert follow["sessionId"] == first["sessionId"]
    again = await command(client, "deepseek.chat", arg)  # a new session, the same request
    assert again["cacheHit"] and again["reply"] == first["reply"]
    # chatModel is not set: the test extra installs the 1.5B model's parts and this machine has the memory.
    chat = (await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status")))
    chat = chat["chat"]
    assert chat["model"] == ASSISTANT_MODEL and chat["loaded"] and chat["error"] is None
    assert chat["reason"].startswith(f"{ASSISTANT_MODEL}: the catalog's assistant model, installed, and it fits")
    client.first_session = first["sessionId"]


async def test_bad_requests_get_clear_errors(client: LanguageClient):
    text = (WORKSPACE / "intranges.py").read_text()
    uri = open_doc(client, WORKSPACE / "intranges.py", text)
    with pytest.raises(JsonRpcException, match="outside the document"):
        await command(client, "deepseek.explain", {"uri": uri, "range": {"start": {"line": 999, "character": 0},
                                                                         "end": {"line": 999, "character": 0}}})
    (WORKSPACE / "notes.txt").write_text("just words\n")
    with pytest.raises(JsonRpcException, match="is not code"):
        await command(client, "deepseek.refactor", {"uri": (WORKSPACE / "notes.txt").as_uri(),
                                                    "range": {"start": {"line": 0, "character": 0},
                                                              "end": {"line": 1, "character": 0}}})
    with pytest.raises(JsonRpcException, match="over the chat budget"):
        await command(client, "deepseek.chat", {"message": "explain " * 6000})
    with pytest.raises(JsonRpcException, match="existing session"):
        await command(client, "deepseek.chatReset", {"sessionId": "nope"})


async def test_a_second_server_process_returns_the_earlier_conversation(client: LanguageClient):
    second = await CONFIG.start()
    try:
        await _start(second)
        history = await command(second, "deepseek.chatHistory", {"sessionId": client.first_session})
        texts = [m["text"] for m in history["messages"]]
        assert texts[0].startswith("What does intranges_contain return")
        assert [m["role"] for m in history["messages"]][:2] == ["user", "assistant"]
        assert history["messages"][1]["model"] == ASSISTANT_MODEL
        assert history["messages"][1]["promptVersion"] == "chat@v3"
        assert await command(second, "deepseek.chatReset", {"sessionId": client.first_session}) == {
            "sessionId": client.first_session, "reset": True}
        assert (await command(second, "deepseek.chatHistory", {"sessionId": client.first_session}))["messages"] == []
        await second.shutdown_session()
    finally:
        await second.stop()
