"""`deepseek-lsp models pull` against a model hub on loopback that this test starts.

The server speaks the hub's file protocol as huggingface_hub uses it (HEAD with
X-Repo-Commit / X-Linked-Etag / X-Linked-Size, GET with Range) and serves a small GGUF
file made here. huggingface_hub is pointed at it with HF_ENDPOINT, in a subprocess so the
variable is read fresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

# Larger than huggingface_hub's 10 MB read chunk, so a break halfway leaves a whole chunk to resume from.
CONTENT = b"GGUF" + np.random.default_rng(1).bytes(24 * 1024 * 1024)
SHA = hashlib.sha256(CONTENT).hexdigest()


class Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = {"/acme/tiny-GGUF/resolve/main/tiny.gguf": CONTENT}
        self.interrupt_next = False
        self.log: list[tuple[str, str, str | None]] = []


class Handler(BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, *args):  # quiet
        pass

    def _headers(self, content: bytes, status: int = 200, start: int = 0) -> None:
        self.send_response(status)
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("ETag", f'"{SHA}"')
        self.send_header("X-Linked-Etag", f'"{SHA}"')
        self.send_header("X-Linked-Size", str(len(content)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(content) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        self.end_headers()

    def do_HEAD(self):
        content = self.server.files.get(self.path.split("?")[0])
        self.server.log.append(("HEAD", self.path, None))
        if content is None:
            self.send_error(404)
            return
        self._headers(content)

    def do_GET(self):
        content = self.server.files.get(self.path.split("?")[0])
        rng = self.headers.get("Range")
        self.server.log.append(("GET", self.path, rng))
        if content is None:
            self.send_error(404)
            return
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        self._headers(content, 206 if start else 200, start)
        body = content[start:]
        if self.server.interrupt_next:  # the connection breaks halfway through
            self.server.interrupt_next = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def hub():
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def run(tmp_path: Path, hub: Hub | None, *args: str, sha: str | None = None) -> subprocess.CompletedProcess:
    catalog = {"default": "tiny", "models": [{
        "name": "tiny", "title": "tiny test model", "file": "tiny.gguf", "sha256": sha, "family": "qwen2.5-coder",
        "hub": {"repo": "acme/tiny-GGUF", "file": "tiny.gguf", "revision": "main"}}]}
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    port = hub.server_address[1] if hub else 9  # port 9: nothing listens (offline)
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "DEEPSEEK_LSP_CATALOG": str(tmp_path / "catalog.json"),
           "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    return subprocess.run([sys.executable, "-m", "server", "models", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def model_file(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "deepseek-lsp" / "models" / "tiny.gguf"


def test_pull_downloads_checks_the_hash_and_installs_atomically(tmp_path, hub):
    out = run(tmp_path, hub, "pull", "tiny", sha=SHA)
    assert out.returncode == 0, out.stderr
    assert model_file(tmp_path).read_bytes() == CONTENT
    assert json.loads(model_file(tmp_path).with_name("tiny.gguf.verified").read_text())["sha256"] == SHA
    assert [p for p in model_file(tmp_path).parent.iterdir() if p.name.startswith(".pull-")] == []
    # No telemetry: the hub saw requests for the file and nothing else.
    assert {path for _, path, _ in hub.log} == {"/acme/tiny-GGUF/resolve/main/tiny.gguf"}
    listing = run(tmp_path, hub, "list")
    assert re.search(r"\*tiny\s+\d+\s+\?\s+qwen2.5-coder\s+yes", listing.stdout), listing.stdout
    # Pulling again downloads nothing.
    gets = len([r for r in hub.log if r[0] == "GET"])
    assert run(tmp_path, hub, "pull", "tiny", sha=SHA).returncode == 0
    assert len([r for r in hub.log if r[0] == "GET"]) == gets


def test_an_interrupted_transfer_resumes_where_it_stopped(tmp_path, hub):
    hub.interrupt_next = True
    out = run(tmp_path, hub, "pull", "tiny")  # no sha in the catalog: the hub's LFS etag is checked
    assert out.returncode == 0, out.stderr
    assert model_file(tmp_path).read_bytes() == CONTENT
    ranges = [r[2] for r in hub.log if r[0] == "GET"]
    assert len(ranges) == 2 and ranges[0] is None
    assert re.fullmatch(r"bytes=\d+-", ranges[1]) and int(ranges[1][6:-1]) > 0  # only the rest was asked for


def test_a_hash_mismatch_keeps_nothing(tmp_path, hub):
    out = run(tmp_path, hub, "pull", "tiny", sha="0" * 64)
    assert out.returncode == 1
    assert "damaged or not the expected file" in out.stderr and "Nothing was kept" in out.stderr
    assert not model_file(tmp_path).exists()
    assert list(model_file(tmp_path).parent.iterdir()) == []


def test_offline_says_how_to_fix_it(tmp_path):
    out = run(tmp_path, None, "pull", "tiny")
    assert out.returncode == 1 and "cannot reach the model hub" in out.stderr and "Fix:" in out.stderr


def test_use_and_remove(tmp_path, hub):
    assert run(tmp_path, hub, "pull", "tiny", sha=SHA).returncode == 0
    used = run(tmp_path, hub, "use", "tiny")
    assert "tiny is now the default model" in used.stdout
    config = json.loads((tmp_path / "config" / "deepseek-lsp" / "config.json").read_text())
    assert config == {"defaultModel": "tiny"}
    assert "removed" in run(tmp_path, hub, "remove", "tiny").stdout
    assert not model_file(tmp_path).exists()
    assert json.loads((tmp_path / "config" / "deepseek-lsp" / "config.json").read_text()) == {}
    assert run(tmp_path, hub, "use", "nope").returncode == 2
