"""End to end: stopping the server while work ahead is pending ends that work quietly.

The editor asks for code actions at every cursor move, and the server then reads the prompt
there into the KV cache 50 ms later (work ahead). A shutdown right after such moves must not
leave a task error in the log ("Task exception was never retrieved ... cannot schedule new
futures after shutdown"): the real server over stdio, its stderr read as the user's log.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import pytest

from .helpers import RawLspClient

pytestmark = pytest.mark.model

CODE = "import os\n\n\ndef config_path(name):\n    return os.path.join(os.path.expanduser('~'), name)\n"


def test_a_shutdown_while_reading_ahead_leaves_no_task_error(default_model_path, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "paths.py").write_text(CODE)
    uri = (ws / "paths.py").as_uri()
    log = tmp_path / "server.log"
    env = {**os.environ, "XDG_DATA_HOME": tempfile.mkdtemp(prefix="deepseek-shutdown-data-")}
    client = RawLspClient([sys.executable, "-m", "server"], env=env, cwd=str(tmp_path), stderr=log)
    try:
        client.request(0, "initialize", {"processId": None, "rootUri": ws.as_uri(), "capabilities": {},
                                         "initializationOptions": {"index": {"enabled": False}}})
        assert client.wait_for([0], 60) == []
        client.notify("initialized", {})
        deadline, n = time.monotonic() + 180, 1
        while time.monotonic() < deadline:  # until the model is loaded
            client.request(f"s{n}", "workspace/executeCommand", {"command": "deepseek.status"})
            assert client.wait_for([f"s{n}"], 30) == []
            if client.responses[f"s{n}"]["result"]["model"]["state"] == "loaded":
                break
            n += 1
            time.sleep(0.5)
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": CODE}})
        for i, line in enumerate((3, 4, 0, 4)):  # cursor moves: work ahead is scheduled at each
            pos = {"line": line, "character": 4}
            client.request(f"a{i}", "textDocument/codeAction", {"textDocument": {"uri": uri}, "range": {
                "start": pos, "end": pos}, "context": {"diagnostics": []}})
        client.request("shutdown", "shutdown", None)  # at once: the reads ahead are still pending
        assert client.wait_for(["shutdown"], 60) == []
        time.sleep(0.5)  # the pending 50 ms sleeps end after the shutdown
        client.notify("exit", None)
        assert client.proc.wait(timeout=60) == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
    text = log.read_text(errors="replace")
    assert "Task exception was never retrieved" not in text, text[-3000:]
    assert "cannot schedule new futures" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


def test_an_editor_that_closes_the_pipe_while_the_assistant_reads_ahead_leaves_no_server(default_model_path,
                                                                                          tmp_path):
    """Neovim's ``os.exit`` right after ``vim.lsp.stop_client`` (or a crashed editor) closes the
    server's stdin with no ``exit``: the prompt being read ahead for the chat (minutes of work
    here, no request waits for it) stops and the process ends, instead of reading on with a core
    busy and the process alive."""
    ws = tmp_path / "ws"
    ws.mkdir()
    code = "".join(f"def handler_{i}(request):\n    return respond(request, {i})\n\n" for i in range(400))
    (ws / "handlers.py").write_text(code)
    uri = (ws / "handlers.py").as_uri()
    env = {**os.environ, "XDG_DATA_HOME": tempfile.mkdtemp(prefix="deepseek-shutdown-data-")}
    client = RawLspClient([sys.executable, "-m", "server"], env=env, cwd=str(tmp_path), stderr=tmp_path / "server.log")
    try:
        client.request(0, "initialize", {"processId": None, "rootUri": ws.as_uri(), "capabilities": {},
                                         "initializationOptions": {
                                             "index": {"enabled": False},
                                             "chatModel": "qwen2.5-coder-0.5b-instruct-q4_k_m",
                                             "chat": {"contextTokens": 12000, "nCtx": 16384}}})
        assert client.wait_for([0], 60) == []
        client.notify("initialized", {})
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": code}})
        client.notify("deepseek/assistAhead", {"task": "chat", "uri": uri, "range": {
            "start": {"line": 0, "character": 0}, "end": {"line": 1200, "character": 0}}})
        deadline, n = time.monotonic() + 180, 1
        while True:  # until the chat model is loaded and reading
            client.request(f"s{n}", "workspace/executeCommand", {"command": "deepseek.status"})
            assert client.wait_for([f"s{n}"], 30) == []
            if client.responses[f"s{n}"]["result"]["chat"]["loaded"]:
                break
            assert time.monotonic() < deadline, "the chat model did not load"
            n += 1
            time.sleep(0.5)
        time.sleep(2)
        client.proc.stdin.close()  # the editor is gone: no shutdown, no exit
        # ~9,000 tokens to read are a minute or more; stopping takes one chunk
        assert client.proc.wait(timeout=30) is not None
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
