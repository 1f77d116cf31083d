"""The sandbox and Write tests as a person at a desk runs them: not root, with 120 other processes.

Root is exempt from ``RLIMIT_NPROC``; a desktop user is not, and the kernel counts every
process and thread of theirs against it. A limit set before bubblewrap made it fail to create
its namespaces on any desktop ("Creating new namespace failed: Resource temporarily
unavailable") while every root run passed. Here the whole sandbox test module, and one Write
tests through the real server over stdio, run as an unprivileged user (tests/desktop.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.assist.sandbox import available

from .desktop import DESKTOP_PROCESSES, as_desktop_user, user_folder, why_not
from .helpers import RawLspClient
from .prereqs import APT_INSTALL

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.skipif(not available()[0], reason=f"needs bubblewrap: {available()[1]}; {APT_INSTALL}"),
              pytest.mark.skipif(why_not() is not None, reason=str(why_not()))]


def _user_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k in keep}
    return {**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"), "TMPDIR": "/tmp"}


def test_the_sandbox_tests_pass_for_a_desktop_user():
    home = user_folder("deepseek-desk-home-")
    cmd = as_desktop_user([sys.executable, "-m", "pytest", "tests/test_sandbox.py", "-q", "-p", "no:cacheprovider",
                           f"--basetemp={home / 'pytest'}"])
    probe = as_desktop_user([sys.executable, "-c", "import os, psutil; u = os.getuid(); "
                             "print(u, sum(p.info['uids'].real == u for p in psutil.process_iter(['uids'])))"])
    seen = subprocess.run(probe, cwd=ROOT, env=_user_env(home), capture_output=True, text=True, timeout=120)
    uid, processes = map(int, seen.stdout.split())
    assert uid != 0 and processes > DESKTOP_PROCESSES, seen.stdout + seen.stderr
    out = subprocess.run(cmd, cwd=ROOT, env=_user_env(home), capture_output=True, text=True, timeout=900)
    tail = out.stdout[-4000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    assert " passed" in out.stdout and "failed" not in out.stdout.splitlines()[-1], tail
    assert "skipped" not in out.stdout.splitlines()[-1], tail  # the sandbox really ran as that user


FUNCTION = '''def clamp(value, low, high):
    """value limited to the range [low, high]."""
    if value < low:
        return low
    if value > high:
        return high
    return value
'''


@pytest.mark.model
def test_write_tests_runs_the_tests_it_wrote_for_a_desktop_user(default_model_path):
    home = user_folder("deepseek-desk-home-")
    ws = user_folder("deepseek-desk-ws-")
    (ws / "clamping.py").write_text(FUNCTION)
    os.chmod(ws / "clamping.py", 0o644)
    uri = (ws / "clamping.py").as_uri()
    model = str(default_model_path)
    server_log = Path(f"/tmp/{home.name}-server.log")
    client = RawLspClient(as_desktop_user([sys.executable, "-m", "server"], visible=[default_model_path.parent]),
                          env=_user_env(home), cwd=str(ROOT), stderr=server_log)
    try:
        client.request(0, "initialize", {"processId": None, "rootUri": ws.as_uri(), "capabilities": {},
                                         "workspaceFolders": [{"uri": ws.as_uri(), "name": "ws"}],
                                         "initializationOptions": {"workspaceTrusted": True,
                                                                   "index": {"enabled": False},
                                                                   "model": {"path": model}, "chatModel": model,
                                                                   "chat": {"maxTokens": 300}}})
        assert client.wait_for([0], 120) == [], "no answer to initialize"
        client.notify("initialized", {})
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": FUNCTION}})
        client.request(1, "workspace/executeCommand", {"command": "deepseek.writeTests", "arguments": [
            {"uri": uri, "range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}}}]})
        t0 = time.monotonic()
        assert client.wait_for([1], 600) == [], "Write tests did not answer in 10 minutes"
        reply = client.responses[1]
    finally:
        client.close()
    log = server_log.read_text(errors="replace")
    assert "result" in reply, (reply, log[-3000:])
    result = reply["result"]
    # The tests the model wrote ran in the sandbox: bubblewrap started for this user.
    assert result.get("ran") is True, (json.dumps(result)[:2000], time.monotonic() - t0)
    assert result["passed"] or result["failed"], json.dumps(result)[:2000]  # test outcomes, not a failed start
    assert "namespace" not in json.dumps(result), result
    assert "Creating new namespace failed" not in log
