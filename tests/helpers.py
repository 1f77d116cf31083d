"""Helpers shared by the test modules: documents over LSP, waiting on the server, sample code.

Test modules import these from here, never from each other.
"""

from __future__ import annotations

import ast
import asyncio
import textwrap
import time
from pathlib import Path

import platformdirs
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient, client_capabilities
from tree_sitter_language_pack import get_parser

CONFIG_PY = textwrap.dedent('''\
    import os


    class ConfigReader:
        """Reads settings."""

        def read_config(self, path):
            result = {}
            with open(path) as handle:
                for line in handle:
                    key, _, value = line.partition("=")
                    result[key.strip()] = value.strip()
            return result


    def expand_home(name):
        return os.path.join(os.path.expanduser("~"), name)
    ''')


GEOMETRY_JS = textwrap.dedent('''\
    export function circleArea(radius) {
      return Math.PI * radius * radius;
    }

    export class Rectangle {
      constructor(width, height) { this.width = width; this.height = height; }
      area() {
        return this.width * this.height;
      }
    }
    ''')


SOURCE = Path(platformdirs.__file__).with_name("unix.py")


async def wait_until_settled(client: LanguageClient, timeout: float = 180.0) -> dict:
    """Poll deepseek.status until the model is loaded or has failed."""
    deadline = time.monotonic() + timeout
    while True:
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="deepseek.status"))
        if status["model"]["state"] in ("loaded", "too-large", "error", "crashed"):
            return status
        assert time.monotonic() < deadline, f"model did not settle: {status}"
        await asyncio.sleep(0.2)


async def start_as_vscode(client: LanguageClient, workspace: Path, options: dict, name: str = "ws") -> None:
    """Initialize ``client`` as VS Code does, with ``workspace`` as its one folder (named ``name``):
    VS Code's capabilities, registrations accepted, ``options`` as the initialization options."""
    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params):
        return None

    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=workspace.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name=name)],
        initialization_options=options))


def open_doc(client: LanguageClient, path: Path, text: str, language: str = "python") -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))
    return uri


def cut_hole(text: str, line_marker: str, cut_after: str) -> tuple[str, types.Position, str]:
    """Remove the rest of the line starting with ``line_marker`` after ``cut_after``.

    Returns (document with the hole, cursor position, the removed text).
    """
    start = text.index(line_marker)
    end = text.index("\n", start)
    cursor = text.index(cut_after, start) + len(cut_after)
    doc = text[:cursor] + text[end:]
    line = doc[:cursor].count("\n")
    return doc, types.Position(line=line, character=cursor - (doc.rfind("\n", 0, cursor) + 1)), text[cursor:end]


def insert_at(doc: str, pos: types.Position, text: str) -> str:
    lines = doc.split("\n")
    offset = sum(len(ln) + 1 for ln in lines[: pos.line]) + pos.character
    return doc[:offset] + text + doc[offset:]


def parses(source: str) -> bool:
    tree = get_parser("python").parse(source.encode())
    ast.parse(source)  # raises SyntaxError
    return not tree.root_node.has_error


async def inline(client: LanguageClient, uri: str, pos: types.Position,
                 kind=types.InlineCompletionTriggerKind.Invoked) -> list[types.InlineCompletionItem]:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
        context=types.InlineCompletionContext(trigger_kind=kind)))
    return list(result.items) if isinstance(result, types.InlineCompletionList) else list(result or [])


async def cancel_inline(client: LanguageClient, uri: str, pos: types.Position, msg_id: str, after_s: float) -> float:
    """Ask for a suggestion, send $/cancelRequest after ``after_s``; the request must fail as
    cancelled. Returns the seconds from the cancel to that answer."""
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)), msg_id=msg_id)
    await asyncio.sleep(after_s)
    client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    started = time.monotonic()
    with pytest.raises(JsonRpcException):
        await asyncio.wrap_future(fut)
    return time.monotonic() - started


async def wait_for_code(client: LanguageClient, uri: str, code: str, timeout: float = 60) -> types.Diagnostic:
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in client.diagnostics.get(uri, []) if d.code == code]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {code} diagnostic on {uri}: {client.diagnostics.get(uri)}"
        await asyncio.sleep(0.1)


class RawLspClient:
    """A JSON-RPC client over a real server's stdio that sends bytes as given: for hostile input.

    Messages are framed with Content-Length; a reader thread collects responses by id and
    counts everything else. Unlike pygls's client it never validates what it sends.
    """

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                 stderr: Path | None = None):
        import subprocess
        import threading
        self._stderr = open(stderr, "wb") if stderr is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env, cwd=cwd)
        self.responses: dict = {}
        self.notifications = 0
        self.bodies: list[bytes] = []  # every message received, raw
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # the reader thread answers the server's requests too
        self._reader = threading.Thread(target=self._read, name="raw-lsp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import json
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = out.read(length or 0)
            self.bodies.append(body)
            try:
                msg = json.loads(body)
            except ValueError:
                continue
            with self._cond:
                if "id" in msg and "method" not in msg:
                    self.responses[msg["id"]] = msg
                else:
                    self.notifications += 1
                    if "id" in msg and "method" in msg:  # a request from the server: answer null
                        self.send_raw(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": None}))
                self._cond.notify_all()

    def send_raw(self, body: str | bytes) -> None:
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        with self._write_lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
            self.proc.stdin.flush()

    def request(self, msg_id, method: str, params) -> None:
        import json
        self.send_raw(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}))

    def notify(self, method: str, params) -> None:
        import json
        self.send_raw(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}))

    def wait_for(self, ids, timeout: float) -> list:
        """Wait until every id in ``ids`` has a response; returns the ids still without one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = [i for i in ids if i not in self.responses]
                left = deadline - time.monotonic()
                if not missing or left <= 0 or self.proc.poll() is not None:
                    return missing
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        try:
            self.request("shutdown", "shutdown", None)
            self.wait_for(["shutdown"], 30)
            self.notify("exit", None)
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


async def code_actions(client: LanguageClient, uri: str, line: int, character: int) -> list[dict]:
    """The code actions at a position, as the raw JSON an editor parses.

    lsprotocol's client-side hook takes any object with a "command" key for a Command, so
    it would mis-read a CodeAction that carries one.
    """
    msg_id = f"code-actions-{time.monotonic_ns()}"
    at = types.Position(line=line, character=character)
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start=at, end=at),
        context=types.CodeActionContext(diagnostics=[])), msg_id=msg_id)
    client.protocol._result_types[msg_id] = None
    return await asyncio.wrap_future(fut)


class ServeProcess:
    """``python -m server serve`` as a child on a free loopback port, with its URL and token as it prints them.

    Args:
        workspace: the folder it indexes and answers from.
        data_home: its XDG_DATA_HOME (the SQLite store of conversations and metrics); its log
            (stderr) is written there as ``serve.log``.
        args: more command-line arguments (``--set key=value``...).
    """

    def __init__(self, workspace: Path, data_home: Path, *args: str):
        import os
        import subprocess
        import sys
        data_home.mkdir(parents=True, exist_ok=True)
        self.log = data_home / "serve.log"
        env = {k: v for k, v in os.environ.items() if k != "DEEPSEEK_LSP_TOKEN"}
        env["XDG_DATA_HOME"] = str(data_home)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", "0", "--workspace", str(workspace), *args],
            cwd=Path(__file__).resolve().parent.parent, env=env, stdout=subprocess.PIPE,
            stderr=open(self.log, "w"), text=True)
        line = self.proc.stdout.readline()
        if "?token=" not in line:
            self.stop()
            raise AssertionError(f"serve did not print its URL: {line!r}\n{self.log.read_text()}")
        self.url = line.split()[-1]
        self.base, self.token = self.url.split("/?token=")
        self.port = int(self.base.rsplit(":", 1)[1])

    def stop(self) -> None:
        import subprocess
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
