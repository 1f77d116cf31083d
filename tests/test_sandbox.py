"""Generated tests run in a real sandbox (bubblewrap): what they try to do outside it fails, and they end in time.

Each case is a test module such as the model could write, run by the same function Write
tests uses (``run_pytest``), with the real bubblewrap and the real pytest. The module
asserts that the forbidden thing does not work, so a run that passes means it was contained.
"""

from __future__ import annotations

import socket
import tempfile
import time

import pytest

from server.assist import testrun
from server.assist.sandbox import available

from .prereqs import APT_INSTALL

pytestmark = pytest.mark.skipif(not available()[0], reason=f"needs bubblewrap: {available()[1]}; {APT_INSTALL}")


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "geometry.py").write_text("def area(w, h):\n    return w * h\n")
    return ws


def run(ws, code: str, **kw):
    return testrun.run_pytest(ws, "test_generated.py", code, **kw)


def test_the_code_under_test_is_importable_and_its_tests_run(workspace):
    r = run(workspace, "from geometry import area\n\ndef test_area():\n    assert area(2, 3) == 6\n")
    assert r.ran and r.ok, r.output


def test_no_network_even_to_loopback(workspace):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = ("import socket, pytest\n\ndef test_no_network():\n    s = socket.socket()\n    s.settimeout(2)\n"
                f"    with pytest.raises(OSError):\n        s.connect(('127.0.0.1', {port}))\n")
        r = run(workspace, code)
    assert r.ok, r.output


def test_no_home_no_secrets_no_environment(workspace, tmp_path, monkeypatch):
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    monkeypatch.setenv("DEEPSEEK_FAKE_API_TOKEN", "sk-not-for-tests")
    code = ("import os\n\ndef test_nothing_of_the_user():\n"
            f"    assert not os.path.exists({str(secret)!r})\n"
            "    assert 'DEEPSEEK_FAKE_API_TOKEN' not in os.environ and 'SSH_AUTH_SOCK' not in os.environ\n"
            "    assert not os.path.exists(os.path.expanduser('~/.ssh'))\n"
            "    assert not os.path.exists('/var/run/docker.sock')\n")
    r = run(workspace, code)
    assert r.ok, r.output


def test_writes_only_to_its_own_temporary_folder(workspace):
    code = ("import os, pytest, tempfile\n\ndef test_writes():\n"
            f"    with pytest.raises(OSError):\n        open({str(workspace / 'evil.py')!r}, 'w')\n"
            "    with pytest.raises(OSError):\n        open('/etc/evil', 'w')\n"
            "    with open(os.path.join(tempfile.gettempdir(), 'ok.txt'), 'w') as f:\n        f.write('fine')\n")
    r = run(workspace, code)
    assert r.ok, r.output
    assert not (workspace / "evil.py").exists()


def test_a_fork_bomb_is_contained(workspace):
    code = ("import os, time\n\ndef test_fork_bomb():\n    children = 0\n    for _ in range(400):\n"
            "        try:\n            pid = os.fork()\n        except OSError:\n            break\n"
            "        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        children += 1\n"
            "    print('children', children)\n    assert children < 100\n")
    t0 = time.monotonic()
    r = run(workspace, code)
    assert r.ok, r.output[-2000:]
    assert time.monotonic() - t0 < 30  # the sleeping children die with the run


def test_a_test_that_never_ends_is_stopped_in_time(workspace, monkeypatch):
    monkeypatch.setattr(testrun, "TEST_TIMEOUT_S", 5)
    t0 = time.monotonic()
    r = run(workspace, "import time\n\ndef test_forever():\n    time.sleep(3600)\n")
    assert not r.ok and r.reason == "timeout" and time.monotonic() - t0 < 20


def test_a_cancel_stops_the_run_at_once(workspace):
    import threading
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    t0 = time.monotonic()
    r = run(workspace, "import time\n\ndef test_slow():\n    time.sleep(3600)\n", cancel=cancel)
    assert r.reason == "cancelled" and time.monotonic() - t0 < 10


def test_pytest_config_planted_in_a_parent_folder_is_not_read(workspace, tmp_path, monkeypatch):
    parent = tmp_path / "shared-tmp"
    parent.mkdir()
    (parent / "conftest.py").write_text("raise SystemExit('planted conftest ran')\n")
    (parent / "pytest.ini").write_text("[pytest]\naddopts = --planted-option\n")
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    r = run(workspace, "def test_ok():\n    assert True\n")
    assert r.ok, r.output


def test_off_and_no_pytest_say_why_tests_were_not_run(workspace, monkeypatch):
    off = run(workspace, "def test_ok():\n    pass\n", mode="off")
    assert not off.ran and "tests.sandbox is off" in off.reason
    monkeypatch.setattr(testrun, "_has_pytest", lambda python: False)
    none = run(workspace, "def test_ok():\n    pass\n")
    assert not none.ran and "pytest is not installed" in none.reason and "pip install pytest" in none.reason


def test_the_workspace_interpreter_is_used_when_it_has_pytest(workspace, monkeypatch):
    import os
    import sys
    venv_bin = workspace / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    os.symlink(sys.executable, venv_bin / "python")
    python, why = testrun.find_python(workspace)
    assert python == str(venv_bin / "python") and not why
