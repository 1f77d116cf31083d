"""The wheel a user installs has every file the code reads at run time.

Built the way PyPI would get it (``pip wheel --no-deps .``), installed non-editable into
a fresh virtual environment (the dependencies already installed here are reused through
a .pth file, so nothing is downloaded), then used from outside the checkout as a user
would: README's main job (``deepseek-lsp complete``) and one assistant command
(``deepseek.explain`` over stdio) from that install's own ``deepseek-lsp``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.lsp.client import LanguageClient

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
CODE = '''def mean(values):
    """The arithmetic mean of a non-empty list of numbers."""
    total = 0
    for v in values:
        total += v
    return total / len(values)


def variance(values):
    m = mean(values)
    return \n'''


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the project installed from its wheel; returns the venv's bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A clean copy of the source, as in a fresh clone: a build/ or *.egg-info/ left by an
    # earlier build would add files the package declaration itself does not.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "node_modules", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "dist"), str(src)])
    [wheel] = (tmp / "dist").glob("deepseek_lsp-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    # Every data file the package reads, as it is in the checkout.
    for pattern in ("server/prompts/*.md", "server/data/*.json", "server/templates/*.html", "server/static/*"):
        expected = {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)}
        assert expected and expected <= names, f"the wheel lacks {sorted(expected - names)}"
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)])
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies installed here, without this checkout (a plain path: its editable finder stays off).
    (site / "_reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run([str(py), "-c", "import server; print(server.__file__)"], cwd=tmp).stdout.strip()
    assert Path(where).is_relative_to(venv), f"imported {where}, not the installed wheel"
    return venv / "bin"


def test_the_installed_wheel_completes_a_file(installed, tmp_path):
    file = tmp_path / "stats.py"
    file.write_text(CODE)
    proc = _run([str(installed / "deepseek-lsp"), "complete", str(file), "--line", "11", "--col", "12"],
                cwd=tmp_path)
    assert proc.stdout.strip(), proc.stderr
    assert "finish" in proc.stderr and "qwen2.5-coder" in proc.stderr


async def test_the_installed_wheel_explains_code_over_stdio(installed, tmp_path):
    file = tmp_path / "stats.py"
    file.write_text(CODE)
    client = LanguageClient("wheel-test", "1")
    deltas: list = []
    client.feature("deepseek/chatDelta")(lambda params: deltas.append(params))
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    await client.start_io(str(installed / "deepseek-lsp"), cwd=str(tmp_path), env=env)
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=tmp_path.as_uri(),
            initialization_options={"chat": {"maxTokens": 120}, "index": {"enabled": False}}))
        client.initialized(types.InitializedParams())
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=file.as_uri(), language_id="python", version=1, text=CODE)))
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": 6, "character": 0}}
        result = await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.explain", arguments=[{"uri": file.as_uri(), "range": rng}])), timeout=300)
        assert result["promptVersion"] == "explain@v2"  # the prompt pack came from the wheel
        assert len(result["markdown"]) > 40 and deltas
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
