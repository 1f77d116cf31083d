"""``deepseek-lsp serve`` hardened: request limits, response headers, the token redirect, allowed host
names, the workspace and token checks at start. The real process on loopback, with no model loaded
(``backend.kind openai`` without a URL: the routes used here need none), spoken to over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from server.http.app import HEADER_TIMEOUT_S, MAX_CONNECTIONS, TOKEN_ENV
from server.http.openai import MAX_BODY_BYTES
from server.http.page import MAX_FORM_BYTES
from server.http.security import Guard
from server.http.streams import text_deltas

from .helpers import ServeProcess

NO_MODEL = ("--set", "backend.kind=openai", "--set", "index.enabled=false")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-security")
    (root / "ws").mkdir()
    (root / "ws" / "main.py").write_text("print('hello')\n")
    proc = ServeProcess(root / "ws", root / "data", *NO_MODEL)
    yield proc
    proc.stop()


def _auth(server: ServeProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _head(server: ServeProcess, method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Authorization: Bearer {server.token}",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer_while_sending(server: ServeProcess, head: bytes, chunks, wait_s: float = 20) -> bytes:
    """Send ``head`` and then ``chunks`` until the server answers; the status line and headers it sent
    (b"" when none came within ``wait_s``). A reader thread takes the answer as soon as it comes, so a
    server that stops reading (and resets the connection) cannot hide it."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(1.0)
    got, answered = bytearray(), threading.Event()

    def read() -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and b"\r\n\r\n" not in got:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            got.extend(data)
        answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        sock.sendall(head)
        for chunk in chunks:
            if answered.is_set():
                break
            try:
                sock.sendall(chunk)
            except socket.timeout:  # the server stopped reading: wait for its answer
                break
    except OSError:  # the server answered and closed the connection
        pass
    answered.wait(wait_s)
    sock.close()
    return bytes(got)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(server):
    # 100 MB announced, 1 KiB sent: the answer must not wait for the rest.
    for path, limit in (("/v1/chat/completions", MAX_BODY_BYTES), ("/v1/completions", MAX_BODY_BYTES),
                        ("/ui/chat", MAX_FORM_BYTES)):
        t0 = time.monotonic()
        answer = _answer_while_sending(server, _head(server, "POST", path, "Content-Length: 100000000",
                                                     "Content-Type: application/json"), [b"x" * 1024])
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:200])
        assert time.monotonic() - t0 < 10, path
    # The limit of a page form is its own (1 MiB): a 2 MiB form is refused too.
    answer = _answer_while_sending(server, _head(server, "POST", "/ui/chat", f"Content-Length: {2 * 2**20}",
                                                 "Content-Type: application/x-www-form-urlencoded"), [b"m" * 1024])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(server.base + "/v1/models", headers=_auth(server)).status_code == 200  # still serving


def test_a_chunked_body_is_refused_once_past_the_limit(server):
    """No Content-Length: reading stops once the body is over the limit, while the client still sends."""
    mib = b"%x\r\n%s\r\n" % (2**20, b"a" * 2**20)
    for path, limit in (("/v1/chat/completions", MAX_BODY_BYTES), ("/ui/chat", MAX_FORM_BYTES)):
        never_ending = (mib for _ in range(limit // 2**20 + 50))  # 50 MiB more than the limit, never terminated
        answer = _answer_while_sending(server, _head(server, "POST", path, "Transfer-Encoding: chunked"),
                                       never_ending)
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:200])
    assert httpx.get(server.base + "/v1/models", headers=_auth(server)).status_code == 200


def test_slow_request_headers_are_cut_off(server):
    """Slowloris: headers sent a byte at a time are cut off after HEADER_TIMEOUT_S, on a new
    connection and on a kept-alive one after its first request alike."""
    fresh = socket.create_connection(("127.0.0.1", server.port))
    kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    kept.request("GET", "/v1/models", headers=_auth(server))
    assert kept.getresponse().read()
    drip = _head(server, "GET", "/v1/models")
    t0 = time.monotonic()
    closed: dict[str, float] = {}
    socks = {"fresh": fresh, "kept-alive": kept.sock}
    for s in socks.values():
        s.settimeout(0.05)
    i = 0
    while len(closed) < len(socks) and time.monotonic() - t0 < HEADER_TIMEOUT_S + 8:
        for name, s in socks.items():
            if name in closed:
                continue
            try:
                s.sendall(drip[i % len(drip):i % len(drip) + 1])
                if s.recv(100) == b"":
                    closed[name] = time.monotonic() - t0
            except socket.timeout:
                pass
            except OSError:
                closed[name] = time.monotonic() - t0
        i += 1
        time.sleep(0.5)
    fresh.close()
    kept.close()
    assert set(closed) == set(socks), f"still open after {time.monotonic() - t0:.0f} s: {set(socks) - set(closed)}"
    assert all(HEADER_TIMEOUT_S - 1 <= t <= HEADER_TIMEOUT_S + 5 for t in closed.values()), closed


def test_connections_over_the_limit_get_503(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        deadline = time.monotonic() + HEADER_TIMEOUT_S - 2  # before the idle ones are cut off
        status = None
        while time.monotonic() < deadline:
            status = httpx.get(server.base + "/v1/models", headers=_auth(server)).status_code
            if status == 503:
                break
            time.sleep(0.2)
        assert status == 503
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while httpx.get(server.base + "/v1/models", headers=_auth(server)).status_code != 200:
        assert time.monotonic() < deadline, "the limit did not let go once the connections closed"
        time.sleep(0.2)


def test_the_token_redirect_never_leaves_this_server(server):
    for path, location in ((f"//evil.example/x?token={server.token}", "/evil.example/x"),
                           (f"/%2F%2Fevil.example/x?token={server.token}&q=1", "/evil.example/x?q=1"),
                           (f"/%5Cevil.example/x?token={server.token}", "/%5Cevil.example/x"),
                           (f"/%09/evil.example?token={server.token}", "/%09/evil.example"),
                           (f"/history?token={server.token}&q=x", "/history?q=x")):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        conn.close()
        assert r.status == 303, path
        assert r.getheader("location") == location, (path, r.getheader("location"))


def test_every_response_forbids_framing_and_sniffing(server):
    with httpx.Client(base_url=server.base, timeout=30) as c:
        replies = {
            "200": c.get("/v1/models", headers=_auth(server)),
            "static": c.get("/static/app.js", headers=_auth(server)),
            "303": c.get(f"/history?token={server.token}"),
            "401": c.get("/v1/models"),
            "403": c.get("/v1/models", headers={**_auth(server), "Host": "evil.example"}),
            "404": c.get("/nothing-here", headers=_auth(server)),
            "503": c.post("/v1/completions", headers=_auth(server), json={"prompt": "x = "}),
        }
    for name, r in replies.items():
        assert r.headers.get("x-content-type-options") == "nosniff", (name, r.headers)
        assert r.headers.get("content-security-policy") == "frame-ancestors 'none'", (name, r.headers)
    assert replies["503"].status_code == 503  # no model here: the route answered, with the headers
    too_large = _answer_while_sending(server, _head(server, "POST", "/v1/completions", "Content-Length: 100000000"),
                                      [b"x"]).decode().lower()
    assert too_large.startswith("http/1.1 413") and "\r\nconnection: close\r\n" in too_large, too_large
    assert "\r\nx-content-type-options: nosniff\r\n" in too_large
    assert "\r\ncontent-security-policy: frame-ancestors 'none'\r\n" in too_large


def test_a_policy_of_its_own_keeps_its_directives_and_loses_framing():
    """frame-ancestors 'none' is merged into a Content-Security-Policy a route sets (the guard around a real app)."""
    async def page(request):
        return PlainTextResponse("x", headers={"Content-Security-Policy": "default-src 'self'; frame-ancestors *;",
                                               "X-Content-Type-Options": "whatever"})

    async def plain(request):
        return PlainTextResponse("x")

    app = Guard(Starlette(routes=[Route("/page", page), Route("/plain", plain)]), "t" * 20, {"127.0.0.1:1"}, 1)
    with TestClient(app, base_url="http://127.0.0.1:1", headers={"Authorization": "Bearer " + "t" * 20}) as c:
        r = c.get("/page")
        assert r.headers.get_list("content-security-policy") == ["default-src 'self'; frame-ancestors 'none'"]
        assert r.headers.get_list("x-content-type-options") == ["nosniff"]
        assert c.get("/plain").headers["content-security-policy"] == "frame-ancestors 'none'"


def test_allowed_host_names_are_accepted(tmp_path):
    """A proxy (or another machine) that names the server: --allowed-host NAME and NAME:PORT."""
    (tmp_path / "ws").mkdir()
    proc = ServeProcess(tmp_path / "ws", tmp_path / "data", "--allowed-host", "devbox.lan",
                        "--allowed-host", "Proxy.Example:8443", *NO_MODEL)
    try:
        def status(host: str, origin: str | None = None) -> int:
            extra = {"Origin": origin} if origin else {}
            return httpx.get(proc.base + "/v1/models", headers={**_auth(proc), "Host": host, **extra}).status_code

        assert status(f"devbox.lan:{proc.port}") == 200
        assert status("devbox.lan") == 200                    # a proxy on the scheme's default port
        assert status("proxy.example:8443") == 200
        assert status("proxy.example:8443", "https://proxy.example:8443") == 200  # a page behind a TLS proxy
        assert status(f"devbox.lan:{proc.port}", f"http://devbox.lan:{proc.port}") == 200
        assert status(f"proxy.example:{proc.port}") == 403    # NAME:PORT names that port only
        assert status(f"other.lan:{proc.port}") == 403
        assert status("devbox.lan", "http://evil.example") == 403
    finally:
        proc.stop()
    for bad in ("*", "evil.example/x", "a b", "host:99999"):
        out = subprocess.run([sys.executable, "-m", "server", "serve", "--port", "0", "--workspace", str(tmp_path),
                              "--allowed-host", bad, *NO_MODEL], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "--allowed-host" in out.stderr and "not a host name" in out.stderr, \
            (bad, out.stderr)


def _serve_exits(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``serve`` that must refuse to start: it exits at once (a timeout here means it served)."""
    env = {**{k: v for k, v in os.environ.items() if k != TOKEN_ENV}, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "server", "serve", "--port", "0", *NO_MODEL, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_home_and_root_are_served_only_when_named(tmp_path):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".bash_history").write_text("export AWS_SECRET_ACCESS_KEY=abc\n")
    env = {"HOME": str(home), "XDG_DATA_HOME": str(tmp_path / "data")}
    for cwd in (home, Path("/"), tmp_path):  # the home folder, /, and a folder above the home folder
        out = _serve_exits(cwd, env)
        assert out.returncode == 2, (cwd, out.stdout, out.stderr)
        assert "--workspace" in out.stderr and str(cwd.resolve()) in out.stderr, out.stderr
        assert "?token=" not in out.stdout
    out = _serve_exits(home, env, "--workspace", str(home / "missing"))
    assert out.returncode == 2 and "is not a folder" in out.stderr
    # Named explicitly, the home folder is served.
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        proc = ServeProcess(home, tmp_path / "data", *NO_MODEL)
    finally:
        os.environ["HOME"] = old if old is not None else ""
    try:
        assert httpx.get(proc.base + "/v1/models", headers=_auth(proc)).status_code == 200
    finally:
        proc.stop()


def test_a_short_token_is_refused_at_start(tmp_path):
    for token, why in (("short", "at least 16"), ("a" * 15, "at least 16"), ("a" * 16 + " b", "blank")):
        out = _serve_exits(tmp_path, {TOKEN_ENV: token}, "--workspace", str(tmp_path))
        assert out.returncode == 2 and TOKEN_ENV in out.stderr and why in out.stderr, (token, out.stderr)
        assert token not in out.stderr  # the message never shows the token
    # A long enough one is used, and printed in the URL.
    good = "fixed-token-for-tools-0123"
    env = {**{k: v for k, v in os.environ.items() if k != TOKEN_ENV}, TOKEN_ENV: good,
           "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", "0", "--workspace", str(tmp_path),
                             *NO_MODEL], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.rstrip().endswith(f"/?token={good}"), line
        base = line.split()[-1].split("/?token=")[0]
        assert httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        proc.stdout.close()


def test_a_stream_closed_early_leaves_no_task_behind(caplog):
    """A client that goes away mid-stream: the streaming code is cancelled while it waits for the
    engine's next piece of text (as sse-starlette does on a disconnect). Nothing may be left waiting
    on the queue: asyncio logs each such task as an ERROR ("Task was destroyed but it is pending!")
    when it is collected."""
    async def scenario() -> tuple[list[str], list[str], set]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = loop.create_future()  # the generation, still running
        got: list[str] = []

        async def stream() -> None:
            async for piece in text_deltas(queue, job):
                got.append(piece)

        queue.put_nowait("def ")
        streaming = asyncio.ensure_future(stream())
        await asyncio.sleep(0.05)  # it took "def " and waits for more
        streaming.cancel()         # the client disconnected
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        await asyncio.sleep(0)
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        # A whole stream, for comparison: every piece, in order, then the end.
        queue2: asyncio.Queue = asyncio.Queue()
        job2 = loop.create_future()
        for piece in ("a", "b", "c"):
            loop.call_soon(queue2.put_nowait, piece)
        loop.call_soon(job2.set_result, None)
        whole = [piece async for piece in text_deltas(queue2, job2)]
        job.cancel()
        return got, whole, left

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        got, whole, left = asyncio.run(scenario())
        gc.collect()
    assert got == ["def "] and whole == ["a", "b", "c"]
    assert not left, left
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]
