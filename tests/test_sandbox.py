"""Generated tests run in a real sandbox (bubblewrap): what they try to do outside it fails, and they end in time.

Each case is a test module such as the model could write, run by the same function Write
tests uses (``run_pytest``), with the real bubblewrap and the real pytest. The module
asserts that the forbidden thing does not work, so a run that passes means it was contained.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path

import pytest

from server.assist import sandbox, testrun
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
    # pytest's summary line without the session's duration: the same code, the same output.
    assert re.search(r"^(=+ )?1 passed( =+)?$", r.output, re.M) and not re.search(r" in \d+\.\d+s", r.output), r.output


def test_the_same_failure_gives_the_same_output(workspace):
    """No duration, no object address (``<... object at 0x7f...>``): a model reading it gets the same prompt."""
    code = ("class Box:\n    pass\n\n\ndef test_box():\n    b = Box()\n    assert b is None, b\n")
    first, second = run(workspace, code), run(workspace, code)
    assert first.ran and first.failed == ["test_generated.py::test_box"], first.output
    assert "Box object" in first.output and " at 0x" not in first.output, first.output
    assert first.output == second.output


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
    monkeypatch.setattr(testrun, "_has_pytest", lambda: False)
    none = run(workspace, "def test_ok():\n    pass\n")
    assert not none.ran and "pytest is not installed" in none.reason and "pip install pytest" in none.reason


def _venv_with_pytest(workspace: Path) -> Path:
    """A real virtual environment in the workspace (``python -m venv``) with pytest's installed files
    (and its dependencies') copied in, as pip would have put them."""
    import importlib.metadata
    import shutil
    import subprocess
    import sys

    from packaging.requirements import Requirement
    venv = workspace / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = venv.glob("lib/python3*/site-packages")
    todo, done = ["pytest"], set()
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if dist.metadata["Name"].lower() in done:
            continue
        done.add(dist.metadata["Name"].lower())
        for file in dist.files or []:
            source = Path(dist.locate_file(file)).resolve()
            if source.is_file() and source.is_relative_to(Path(dist.locate_file("")).resolve()):
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, site / file)
        wanted = (Requirement(r) for r in dist.requires or [])
        todo += [r.name for r in wanted if r.marker is None or r.marker.evaluate({"extra": ""})]
    return venv


def test_the_workspace_interpreter_is_used_when_it_has_pytest(workspace):
    venv = _venv_with_pytest(workspace)
    python, why = testrun.find_python(workspace)
    assert python == str(venv / "bin" / "python") and not why
    code = ("import sys\nfrom geometry import area\n\ndef test_in_the_workspace_environment():\n"
            f"    assert sys.prefix == {str(venv)!r}\n    assert area(2, 3) == 6\n")
    r = run(workspace, code)
    assert r.ran and r.ok, r.output


def test_a_repository_s_own_interpreter_never_runs_outside_the_sandbox(workspace, tmp_path, monkeypatch):
    # A cloned repository commits .venv/bin/python: a script that would run as the user, with
    # HOME, SSH_AUTH_SOCK and tokens, at the first Write tests. It is chosen by its files
    # (pyvenv.cfg, a pytest folder) and started only inside the sandbox, where it sees nothing.
    ran = tmp_path / "outside" / "ran.txt"
    ran.parent.mkdir()
    venv = workspace / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {ran.parent}\ninclude-system-site-packages = false\n")
    (venv / "lib" / "python3.11" / "site-packages" / "pytest").mkdir(parents=True)
    (venv / "lib" / "python3.11" / "site-packages" / "pytest" / "__init__.py").write_text("")
    fake = venv / "bin" / "python"
    fake.write_text(f"#!/bin/sh\necho \"HOME=$HOME SSH_AUTH_SOCK=$SSH_AUTH_SOCK\" >> {ran}\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    python, _ = testrun.find_python(workspace)
    assert python == str(fake)
    assert sandbox.interpreter_paths(python) == []  # pyvenv.cfg's home is no Python installation: not mounted
    r = run(workspace, "def test_ok():\n    pass\n")
    assert not r.ok
    assert not ran.exists(), ran.read_text()


def test_a_sandbox_that_cannot_start_is_not_run_never_failing_tests(workspace, monkeypatch):
    # bubblewrap's own failure (here: a folder to mount that does not exist; on a desktop it was
    # the process limit) says why the tests did not run; it is never read as tests that fail.
    monkeypatch.setattr(sandbox, "interpreter_paths", lambda python: ["/nonexistent/deepseek-lsp-python"])
    r = run(workspace, "def test_ok():\n    pass\n")
    assert not r.ran and not r.failed, r
    assert "the sandbox did not start" in r.reason and "nonexistent" in r.reason, r.reason


def test_a_result_file_replaced_by_a_link_cannot_forge_a_pass(workspace, tmp_path):
    forged = tmp_path / "forged.json"
    forged.write_text('[{"label": "original", "tests": {"test_x.py::test_forged": "passed"}, "checks": [], '
                      '"output": "", "error": ""}]')
    code = ("import os, sys\n\ndef test_forge():\n    results = sys.argv[2]\n"
            "    if os.path.lexists(results):\n        os.remove(results)\n"
            f"    os.symlink({str(forged)!r}, results)\n    os._exit(0)\n")
    r = run(workspace, code)
    assert not r.ok and "test_x.py::test_forged" not in r.passed, r


def test_a_fifo_left_as_the_result_file_does_not_block_the_server(workspace):
    code = ("import os, sys\n\ndef test_fifo():\n    results = sys.argv[2]\n"
            "    if os.path.lexists(results):\n        os.remove(results)\n"
            "    os.mkfifo(results)\n    os._exit(0)\n")
    t0 = time.monotonic()
    r = run(workspace, code)
    assert not r.ok and time.monotonic() - t0 < 30, r


def test_files_left_behind_are_read_as_regular_files_only_and_capped(tmp_path):
    regular = tmp_path / "results.json"
    regular.write_text("[]")
    assert sandbox.read_left_file(regular, 100) == "[]"
    assert sandbox.read_left_file(regular, 1) is None  # over the cap: not read at all
    (tmp_path / "zero").symlink_to("/dev/zero")
    assert sandbox.read_left_file(tmp_path / "zero", 10**9) is None  # a link: not followed
    assert sandbox.read_left_file(Path("/dev/zero"), 10**9) is None  # not a regular file
    os.mkfifo(tmp_path / "fifo")
    assert sandbox.read_left_file(tmp_path / "fifo", 100) is None  # never blocks
    assert sandbox.read_left_file(tmp_path / "missing", 100) is None


def test_output_of_any_size_is_kept_as_a_bounded_head_and_tail(workspace, tmp_path):
    import sys
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = ("import os\nos.write(1, b'HEAD\\n')\nblock = b'x' * 2**20\n"
            "for _ in range(300):\n    os.write(1, block)\nos.write(1, b'\\nEND\\n')\n")
    result = sandbox.run([sys.executable, "-c", code], workspace=workspace, scratch=scratch,
                         python_paths=sandbox.interpreter_paths(sys.executable), env={"PATH": "/usr/bin:/bin"},
                         timeout_s=60)
    assert result.started and result.returncode == 0, result.output[-500:]
    assert result.output.startswith("HEAD\n") and result.output.endswith("\nEND\n")
    assert len(result.output) < sandbox.OUTPUT_HEAD + sandbox.OUTPUT_TAIL + 200
    assert "bytes of output left out" in result.output
