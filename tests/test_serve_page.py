"""The page of ``deepseek-lsp serve`` in a real browser: headless Chromium driven by playwright-core (Node).

clients/vscode/tests/serve-page.mjs opens the URL the server printed, goes through the
first-run check, asks a question (the answer streams in, with a reference to the code),
opens the history and searches it, searches the index, and looks at models and metrics,
taking screenshots into docs/images/serve-*.png. Skipped, with the install command, when
Node.js or Chromium is missing (tests/prereqs.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from .helpers import CONFIG_PY, GEOMETRY_JS, ServeProcess
from .prereqs import require_chromium

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "clients" / "vscode"


def test_the_page_in_a_real_browser(tmp_path):
    require_chromium()
    if not (EXT / "node_modules" / "playwright-core").exists():
        out = subprocess.run([shutil.which("npm"), "ci", "--no-audit", "--no-fund"], cwd=EXT, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "config.py").write_text(CONFIG_PY)
    (ws / "src" / "geometry.js").write_text(GEOMETRY_JS)
    server = ServeProcess(ws, tmp_path / "data", "--set", "index.embeddings=false", "--set", "chat.maxTokens=160")
    try:
        # Completions through the endpoint first (the third is an exact repeat: a cache hit), so the
        # metrics page has more than the chat to draw.
        for prefix in ("def area(r):\n    ", "def perimeter(w, h):\n    ", "def perimeter(w, h):\n    "):
            r = httpx.post(server.base + "/v1/completions", headers={"Authorization": f"Bearer {server.token}"},
                           json={"prompt": prefix, "suffix": "\n", "max_tokens": 32, "language": "python"}, timeout=300)
            assert r.status_code == 200, r.text
        out = subprocess.run(
            ["node", str(EXT / "tests" / "serve-page.mjs"), "--url", server.url, "--out", str(ROOT / "docs" / "images"),
             "--question", "How does read_config parse each line of the configuration file?",
             "--history-word", "read_config", "--index-query", "circleArea", "--index-file", "geometry.js",
             "--ref-file", "config.py"], capture_output=True, text=True, timeout=900)
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:] + server.log.read_text()[-3000:]
    lines = out.stdout
    assert "first-run: This machine can run qwen2.5-coder-0.5b-instruct-q4_k_m" in lines
    assert "chat reference: config.py:" in lines and "chat status: qwen2.5-coder-1.5b-instruct-q4_k_m, prompt chat@v3" \
        in lines
    assert 'history search "read_config": 1 conversation(s)' in lines
    assert "history search with no match: No conversation mentions" in lines
    assert "serve page: ok" in lines
    for name in ("first-run", "chat", "history", "index", "models", "metrics"):
        assert (ROOT / "docs" / "images" / f"serve-{name}.png").stat().st_size > 10_000
