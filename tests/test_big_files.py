"""Big and deeply nested files: code actions and hover never hold up the server (issue 27, item 8).

Unit tests on :mod:`index.syntax` (iterative walks, a long parse that lets other threads run)
and :mod:`server.parse_cache` (one parse per document version); end to end, the real server
over stdio with no model: a document over ``completion.maxFileSizeKb`` gets no code actions
and no hover, and while a big document under the cap is parsed, other requests are answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from tree_sitter_language_pack import get_parser

from index.chunking import chunk_file
from index.syntax import Definition, definition_at, enclosing_definition, node_name, parse, syntax_errors
from server.languages import DEFINITIONS
from server.parse_cache import ParseCache, ParsedDocument

from .helpers import CONFIG_PY, GEOMETRY_JS, code_actions, open_doc

ROOT = Path(__file__).resolve().parent.parent
NESTED = "def f():\n    x = " + "(" * 3000 + "1" + ")" * 3000 + "\n    return x\n"
BIG_COPIES = 11_000  # copies of CONFIG_PY (385 bytes): a 4 MiB Python file
BIG_PY = CONFIG_PY * BIG_COPIES
READ_CONFIG_LINE = len(CONFIG_PY.splitlines()) * (BIG_COPIES - 1) + 8  # inside the last read_config


# -- index.syntax -----------------------------------------------------------------------------

def test_enclosing_definition_in_3000_nested_brackets():
    assert enclosing_definition("deep.py", NESTED, 1) == Definition(0, 2, "f", "function")
    assert syntax_errors("python", NESTED) == 0
    assert [c.symbol for c in chunk_file("deep.py", NESTED)] == ["f"]


def _reference_definition(grammar: str, tree, line: int) -> Definition | None:
    """The plain recursive walk over every child (what definition_at computes with a cursor)."""
    kinds, best = DEFINITIONS[grammar], None

    def visit(node) -> None:
        nonlocal best
        for child in node.children:
            if child.start_point[0] <= line <= child.end_point[0]:
                if child.type in kinds:
                    best = Definition(child.start_point[0], child.end_point[0], node_name(child), kinds[child.type])
                visit(child)
    visit(tree.root_node)
    return best


GO = "package p\n\ntype T struct{}\n\nfunc (t T) M() int {\n\treturn 1\n}\n\nfunc F() { }\n"
RUST = "struct S;\n\nimpl S {\n    fn m(&self) -> u8 {\n        1\n    }\n}\n\nfn f() {}\n"
C = "struct p { int x; };\n\nint add(int a, int b) {\n    return a + b;\n}\n"


@pytest.mark.parametrize("name,text", [("config.py", CONFIG_PY), ("geometry.js", GEOMETRY_JS),
                                       ("lsp_assist.py", (ROOT / "server" / "lsp" / "assist.py").read_text()),
                                       ("m.go", GO), ("m.rs", RUST), ("m.c", C)])
def test_definition_at_agrees_with_a_walk_over_every_child(name, text):
    grammar = {"py": "python", "js": "javascript", "go": "go", "rs": "rust", "c": "c"}[name.rsplit(".", 1)[1]]
    tree = parse(grammar, text)
    found = [definition_at(grammar, tree, line) for line in range(text.count("\n") + 1)]
    assert found == [_reference_definition(grammar, tree, line) for line in range(text.count("\n") + 1)]
    assert sum(d is not None for d in found) > len(found) / 3


def test_a_long_text_parses_in_pieces_to_the_same_tree():
    tree = parse("python", BIG_PY)
    whole = get_parser("python").parse(BIG_PY.encode()).root_node
    assert tree.root_node.descendant_count == whole.descendant_count and not tree.root_node.has_error
    last = tree.root_node.children[-1]
    assert last.text == whole.children[-1].text and last.text.startswith(b"def expand_home")


def test_a_long_parse_on_a_worker_thread_lets_other_threads_run():
    """tree-sitter holds the GIL while it parses: fed in one piece, no other thread (the event
    loop) runs until it is done. The main thread must run during the middle half of the parse."""
    span: list[float] = []

    def work() -> None:
        span.append(time.perf_counter())
        parse("python", BIG_PY)
        span.append(time.perf_counter())

    worker = threading.Thread(target=work)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    start, end = span
    quarter = (end - start) / 4
    assert any(start + quarter < t < end - quarter for t in ticks), "the parse held every other thread"


# -- server.parse_cache -----------------------------------------------------------------------

async def test_one_parse_per_document_version():
    cache = ParseCache(documents=2)
    first = await cache.get("file:///a.py", 1, "a.py", CONFIG_PY)
    assert isinstance(first, ParsedDocument) and first.definition_at(8).name == "read_config"
    assert await cache.get("file:///a.py", 1, "a.py", CONFIG_PY) is first  # the cursor moved: no new parse
    edited = CONFIG_PY.replace("expand_home", "home_of")
    second = await cache.get("file:///a.py", 2, "a.py", edited)
    assert second is not first and "home_of" in {c.symbol for c in second.chunks()}
    # Closed and opened again with other text: version 1 again, the text decides.
    assert (await cache.get("file:///a.py", 1, "a.py", CONFIG_PY)) is not first
    assert await cache.get("file:///notes.txt", 1, "notes.txt", "hello") is None
    kept = await cache.get("file:///a.py", 1, "a.py", CONFIG_PY)
    await cache.get("file:///b.py", 1, "b.py", CONFIG_PY)
    await cache.get("file:///c.py", 1, "c.py", CONFIG_PY)  # two documents kept: a.py is the oldest, out
    assert await cache.get("file:///a.py", 1, "a.py", CONFIG_PY) is not kept


async def test_requests_during_a_parse_share_it_and_a_cancelled_one_leaves_it():
    cache = ParseCache()
    asked = asyncio.ensure_future(cache.get("file:///big.py", 1, "big.py", BIG_PY))
    await asyncio.sleep(0)
    asked.cancel()  # the editor cancels the code action: the cursor moved on
    with pytest.raises(asyncio.CancelledError):
        await asked
    a, b = await asyncio.gather(*(cache.get("file:///big.py", 1, "big.py", BIG_PY) for _ in range(2)))
    assert a is b and a.definition_at(READ_CONFIG_LINE).name == "read_config"


# -- end to end ---------------------------------------------------------------------------------

WORKSPACE = Path(tempfile.mkdtemp(prefix="deepseek-big-"))
ENV = {**os.environ, "XDG_DATA_HOME": tempfile.mkdtemp(prefix="deepseek-big-data-")}
SERVER = [sys.executable, "-m", "server"]


async def _start(client: LanguageClient, **options) -> None:
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=WORKSPACE.as_uri(),
        initialization_options={"index": {"enabled": False}, "hover": {"timeMs": 0},
                                "model": {"path": str(WORKSPACE / "no-model.gguf")}, **options}))


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER, server_env=ENV))
async def client(lsp_client: LanguageClient):
    await _start(lsp_client)  # completion.maxFileSizeKb: the default, 1024
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER, server_env=ENV))
async def roomy(lsp_client: LanguageClient):
    await _start(lsp_client, completion={"maxFileSizeKb": 16384})
    yield
    await lsp_client.shutdown_session()


def _hover(client: LanguageClient, uri: str, line: int, character: int):
    return client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))


def _status(client: LanguageClient):
    return client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))


async def test_over_the_size_cap_no_code_actions_and_no_hover(client: LanguageClient):
    small = open_doc(client, WORKSPACE / "small.py", CONFIG_PY)
    big = open_doc(client, WORKSPACE / "big.py", BIG_PY)
    assert len(await code_actions(client, small, 8, 12)) == 3  # the same code, small: actions and hover
    assert await _hover(client, small, 15, 8) is not None
    assert await code_actions(client, big, READ_CONFIG_LINE, 12) is None
    assert await _hover(client, big, 15, 8) is None
    cursor = {"line": READ_CONFIG_LINE, "character": 4}
    with pytest.raises(JsonRpcException, match=r"over completion.maxFileSizeKb \(1024\): select the code"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.explain", arguments=[{"uri": big, "range": {"start": cursor, "end": cursor}}]))


async def test_other_requests_are_answered_while_a_big_document_is_parsed(roomy: LanguageClient):
    big = open_doc(roomy, WORKSPACE / "big.py", BIG_PY)
    actions = asyncio.ensure_future(code_actions(roomy, big, READ_CONFIG_LINE, 12))
    hover = asyncio.ensure_future(_hover(roomy, big, 15, 8))
    await asyncio.sleep(0)  # both tasks run up to their first await: both requests are sent
    status = await _status(roomy)  # sent after both, answered while the document is being parsed
    assert status["model"]["state"] and not actions.done() and not hover.done()
    found = await actions
    assert [a["title"] for a in found] == ["deepseek: Explain", "deepseek: Refactor", "deepseek: Write tests"]
    first = READ_CONFIG_LINE - 2  # def read_config(self, path): ... return result
    assert found[0]["command"]["arguments"][0]["range"]["start"]["line"] == first
    assert found[0]["command"]["arguments"][0]["range"]["end"]["line"] == first + 7  # through "return result"
    shown = await hover
    assert shown is not None and "def expand_home(name):" in shown.contents.value
