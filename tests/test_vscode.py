"""The VS Code extension (clients/vscode): its own tests, then a real VS Code.

`npm ci && npm test` in clients/vscode compiles the TypeScript and runs its tests, which
start the real server and model (see clients/vscode/src/test/). Then
clients/vscode/tests/real-vscode.sh installs the packaged .vsix into code-server 4.100.3
(real VS Code 1.100.3) in headless Chromium and checks ghost text, Tab to accept, the
status bar and Explain in the chat panel, then issue #16's editing experience
(clients/vscode/tests/editing-vscode.mjs). What each needs from outside pip is checked
first (tests/prereqs.py): a test skips with the install command when it is missing.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import vscode_configuration_properties

from .prereqs import require_node, require_real_vscode

EXT = Path(__file__).parent.parent / "clients" / "vscode"
BIN = str(Path(sys.executable).parent)


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": os.pathsep.join([BIN, os.environ.get("PATH", "")]),
            "DEEPSEEK_LSP": str(Path(BIN) / "deepseek-lsp")}


def test_package_json_settings_mirror_the_server_settings():
    props = json.loads((EXT / "package.json").read_text())["contributes"]["configuration"]["properties"]
    server = {k: v for k, v in props.items() if k not in ("deepseek.serverPath", "deepseek.serverArgs")}
    assert server == vscode_configuration_properties(), \
        "regenerate clients/vscode/package.json's settings from `python -m server.config --vscode`"


def _npm(*args: str, timeout: int) -> subprocess.CompletedProcess:
    require_node()
    npm = shutil.which("npm")
    return subprocess.run([npm, *args], cwd=EXT, capture_output=True, text=True, env=_env(), timeout=timeout)


@pytest.mark.model
def test_vscode_extension_npm_test():
    if not (EXT / "node_modules" / ".package-lock.json").exists():
        out = _npm("ci", "--no-audit", "--no-fund", timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    out = _npm("test", timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout and "# pass 0" not in out.stdout


@pytest.mark.model
def test_vscode_extension_in_a_real_vscode():
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    installed = cache / "deepseek-lsp-tests" / "code-server-4.100.3" / ".installed"
    require_real_vscode(code_server_installed=installed.exists())
    if not (EXT / "node_modules" / ".package-lock.json").exists():
        assert _npm("ci", "--no-audit", "--no-fund", timeout=600).returncode == 0
    out = subprocess.run([str(EXT / "tests" / "real-vscode.sh")], capture_output=True, text=True, env=_env(),
                         timeout=2400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ghost text: self._user_media_dir(" in out.stdout
    assert "explain: " in out.stdout and "· loaded" in out.stdout
    # Issue #16 (tests/editing-vscode.mjs): no squiggle, alternatives, partial accepts from the cache,
    # a setting applied by the same server, chat code applied through the refactor preview.
    assert "issue16 editing: ok" in out.stdout
    # The untrusted workspace: its settings could not send anything away nor run its tests.
    assert "untrusted requests to the workspace's server: 0" in out.stdout
    assert "untrusted write tests: deepseek: this workspace is not trusted" in out.stdout
    # The palette's agent command opens the chat panel in agent mode, which shows the server's refusal.
    assert "untrusted agent (panel in agent mode): deepseek: this workspace is not trusted" in out.stdout


def test_settings_that_send_code_load_files_or_run_code_are_restricted_in_untrusted_workspaces():
    from server.config import vscode_restricted_configurations
    package = json.loads((EXT / "package.json").read_text())
    untrusted = package["capabilities"]["untrustedWorkspaces"]
    assert untrusted["supported"] == "limited"
    assert untrusted["restrictedConfigurations"] == vscode_restricted_configurations()
    for key in ("deepseek.backend.url", "deepseek.backend.kind", "deepseek.backend.apiKey", "deepseek.model.path",
                "deepseek.chatModel", "deepseek.tests.sandbox", "deepseek.chat.backend"):
        assert key in untrusted["restrictedConfigurations"]
