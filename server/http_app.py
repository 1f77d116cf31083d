"""``deepseek-lsp serve``: the web page and the OpenAI-compatible endpoint in one process.

:func:`create_app` puts the routes (:mod:`server.http_openai`, :mod:`server.http_page`,
``/metrics``) behind the :class:`server.http_security.Guard`; :func:`serve` binds the
socket (127.0.0.1 unless ``--allow-remote``), makes the token, prints the URL and runs
uvicorn. The models, assistant, store and index are the language server's own classes,
held by :class:`server.serving.Workbench`. Routes are documented in docs/HTTP.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .config import Settings
from .http_openai import ROUTES as API_ROUTES
from .http_openai import ApiError, error_response
from .http_page import ROUTES as PAGE_ROUTES
from .http_page import STATIC
from .http_security import Guard
from .serving import Workbench

log = logging.getLogger(__name__)

TOKEN_ENV = "DEEPSEEK_LSP_TOKEN"  # a fixed token (for tools' configuration files) instead of a new one each start


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format (task, model, latency, tokens, cache hits)."""
    wb: Workbench = request.app.state.wb
    return Response(generate_latest(wb.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind,
                          headers=getattr(exc, "headers", None))


async def _crash(request: Request, exc: Exception) -> Response:
    """One bad request never stops the server: it gets a 500 in OpenAI's shape and a log line."""
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", "internal_error")


def create_app(wb: Workbench, token: str, hosts: set[str], port: int) -> Guard:
    """The ASGI application: every route behind the guard.

    Args:
        wb: the models, assistant, store and index (started and closed with the app).
        token: the secret every request must show.
        hosts: accepted Host header values (with the port).
        port: the port (names the page's cookie).
    """
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        wb.start()
        try:
            yield
        finally:
            wb.close()

    app = Starlette(routes=[*API_ROUTES, Route("/metrics", metrics, methods=["GET"]), *PAGE_ROUTES,
                            Mount("/static", StaticFiles(directory=STATIC), name="static")],
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _crash},
                    lifespan=lifespan)
    app.state.wb = wb
    return Guard(app, token, hosts, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: Settings, host: str, port: int, roots: list[Path], allow_remote: bool) -> int:
    """Run the page and the endpoint until interrupted (Ctrl-C, SIGTERM). Prints the URL with the token.

    Args:
        host: the interface to bind; anything but loopback needs ``allow_remote``.
        port: the port; 0 picks a free one (the URL printed says which).
        roots: workspace folders (indexed, retrieved from).

    Returns:
        The exit code: 0 after a clean stop, 2 when the address cannot be used.
    """
    import uvicorn

    if not is_loopback(host) and not allow_remote:
        print(f"deepseek-lsp serve: {host} is not a loopback address. The page and the endpoint read your code; "
              "to offer them to other machines anyway, add --allow-remote.", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        print(f"deepseek-lsp serve: cannot listen on {host}:{port}: {e.strerror}. Fix: another --port "
              "(0 picks a free one).", file=sys.stderr)
        return 2
    sock.listen(128)
    port = sock.getsockname()[1]
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    if not is_loopback(host):
        hosts.add(f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
        log.warning("listening on %s:%d: other machines on this network can reach the page and the endpoint "
                    "(with the token)", host, port)
        print(f"WARNING: listening on {host}:{port}, not only on this machine (--allow-remote). Anyone on the "
              "network who has the token can read your code through it.", file=sys.stderr)
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    wb = Workbench(settings, roots)
    app = create_app(wb, token, hosts, port)
    print(f"deepseek-lsp serve: http://127.0.0.1:{port}/?token={token}", flush=True)
    print(f"  OpenAI-compatible endpoint: http://127.0.0.1:{port}/v1 (api key: the token); "
          f"workspace: {', '.join(map(str, wb.roots)) or 'none'}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return 0
