"""``deepseek-lsp serve``: the web page and the OpenAI-compatible endpoint in one process.

:func:`create_app` puts the routes (:mod:`server.http.openai`, :mod:`server.http.page`,
``/metrics``) behind the :class:`server.http.security.Guard`; :func:`serve` checks the
workspace and the token, binds the socket (127.0.0.1 unless ``--allow-remote``), prints
the URL and runs uvicorn with limits on connections and on the time a request's headers
may take (:class:`HeaderDeadline`, the one place that reaches into uvicorn's protocol
class). The models, assistant, store and index are the language server's own classes,
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
from urllib.parse import quote

import h11
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings
from ..serving import Workbench
from .openai import ROUTES as API_ROUTES
from .openai import ApiError, ClientGone, error_response
from .page import ROUTES as PAGE_ROUTES
from .page import STATIC
from .security import Guard, host_names

log = logging.getLogger(__name__)

TOKEN_ENV = "DEEPSEEK_LSP_TOKEN"  # a fixed token (for tools' configuration files) instead of a new one each start
MIN_TOKEN_CHARS = 16             # a DEEPSEEK_LSP_TOKEN shorter than this is refused at start
HEADER_TIMEOUT_S = 10            # a connection whose request headers are not in whole after this is closed (seconds)
KEEP_ALIVE_S = 5                 # an idle connection between two requests is closed after this (seconds)
MAX_CONNECTIONS = 64             # past this many open connections (or requests under way), a request gets 503


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (slowloris).

    uvicorn 0.54 times out only the idle time between two requests (``timeout_keep_alive``),
    and any byte received cancels that timer: a client that sends its headers one byte at a
    time, or connects and sends nothing, would hold a connection (and a place under
    ``limit_concurrency``) for ever. Here the headers of each request must be in whole within
    :data:`HEADER_TIMEOUT_S` of the connection's start or of the previous response's end;
    otherwise the connection is closed. The request body has its own limit
    (:data:`server.http.openai.BODY_TIMEOUT_S`).
    """

    _deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection from %s: its request headers took more than %d s",
                     "%s:%d" % self.client if self.client else "?", HEADER_TIMEOUT_S)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the app has the request
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's headers (a pipelined one may already be in)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


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


async def _gone(request: Request, exc: ClientGone) -> Response:
    """The client went away before its request was in whole: nobody reads the answer."""
    log.debug("%s %s: the client disconnected", request.method, request.url.path)
    return Response(status_code=499)


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
                    exception_handlers={ApiError: _api_error, ClientGone: _gone, HTTPException: _http_error,
                                        Exception: _crash},
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


def workspace_roots(workspace: list[str] | None, cwd: Path) -> list[Path]:
    """The folders ``serve`` indexes and answers from: ``--workspace`` as given, else ``cwd``.

    The home folder, a folder above it and ``/`` are never taken by default: serving them would
    index and offer ``~/.config``, shell history, SSH keys and docker credentials to whoever has
    the token. Named with ``--workspace``, any folder is taken.

    Raises:
        ValueError: a ``--workspace`` that is not a folder; no ``--workspace`` and ``cwd`` is
            the home folder, above it, or ``/`` (the message says how to proceed).
    """
    if workspace:
        roots = [Path(w).expanduser() for w in workspace]
        for r in roots:
            if not r.is_dir():
                raise ValueError(f"--workspace {r} is not a folder")
        return roots
    here, home = cwd.resolve(), Path.home().resolve()
    if home.is_relative_to(here) or here == Path(here.anchor):
        what = "your home folder" if here == home else "above your home folder" if home.is_relative_to(here) \
            else "the root of the file system"
        raise ValueError(f"the current folder {here} is {what}: serving it would index and offer everything under it "
                         "(~/.config, shell history, SSH keys, docker credentials). Start serve in a project folder, "
                         f"or name the folder you mean: --workspace /path/to/project (--workspace {here} if you "
                         "really want this one).")
    return [here]


def check_token(token: str) -> str | None:
    """What is wrong with a ``DEEPSEEK_LSP_TOKEN`` value, or None when it can be used.

    It must have at least :data:`MIN_TOKEN_CHARS` characters and no blank or control
    characters (it travels in an HTTP header and in a URL).
    """
    if len(token) < MIN_TOKEN_CHARS:
        return (f"{TOKEN_ENV} has {len(token)} characters; it must have at least {MIN_TOKEN_CHARS}. Fix: "
                f"export {TOKEN_ENV}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))'), or unset it "
                "for a new random token at each start.")
    if any(not 33 <= ord(c) <= 126 for c in token):
        return f"{TOKEN_ENV} has a blank, control or non-ASCII character; use ASCII letters, digits and punctuation."
    return None


def serve(settings: Settings, host: str, port: int, workspace: list[str] | None, allow_remote: bool,
          allowed_hosts: list[str] | None = None, trusted: bool = False) -> int:
    """Run the page and the endpoint until interrupted (Ctrl-C, SIGTERM). Prints the URL with the token.

    Args:
        host: the interface to bind; anything but loopback needs ``allow_remote``.
        port: the port; 0 picks a free one (the URL printed says which).
        workspace: ``--workspace`` folders (indexed, retrieved from); None: the current folder,
            unless it is the home folder or ``/`` (see :func:`workspace_roots`).
        allowed_hosts: ``--allowed-host`` names accepted in the Host header besides the loopback
            ones (see :func:`server.http.security.host_names`).
        trusted: ``--trust-workspace``: the agent (task ``agent``) may run the workspace's code in the sandbox.

    Returns:
        The exit code: 0 after a clean stop, 2 when the arguments, the token or the address
        cannot be used (the message on stderr says why and the fix).
    """
    import uvicorn

    def fail(message: str) -> int:
        print(f"deepseek-lsp serve: {message}", file=sys.stderr)
        return 2

    if not is_loopback(host) and not allow_remote:
        return fail(f"{host} is not a loopback address. The page and the endpoint read your code; to offer them to "
                    "other machines anyway, add --allow-remote.")
    try:
        roots = workspace_roots(workspace, Path.cwd())
    except ValueError as e:
        return fail(str(e))
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    if problem := check_token(token):
        return fail(problem)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        return fail(f"cannot listen on {host}:{port}: {e.strerror}. Fix: another --port (0 picks a free one).")
    sock.listen(128)
    port = sock.getsockname()[1]
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    try:
        for name in allowed_hosts or []:
            hosts |= host_names(name, port)
    except ValueError as e:
        sock.close()
        return fail(f"--allowed-host {e}")
    if not is_loopback(host):
        hosts.add(f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
        log.warning("listening on %s:%d: other machines on this network can reach the page and the endpoint "
                    "(with the token)", host, port)
        print(f"WARNING: listening on {host}:{port}, not only on this machine (--allow-remote). Anyone on the "
              "network who has the token can read your code through it. The connection is plain HTTP: the token "
              "and your code cross the network unencrypted. Reach it through an SSH tunnel "
              f"(ssh -L {port}:127.0.0.1:{port} this-machine) or a TLS proxy instead where you can.", file=sys.stderr)
        if not allowed_hosts:
            print("  Other machines must name this server in their Host header: requests to it by name or address "
                  f"are refused (403 forbidden_host) until you add --allowed-host NAME for each (e.g. the machine's "
                  f"name {socket.gethostname()!r}).", file=sys.stderr)
    wb = Workbench(settings, roots)
    wb.trusted = trusted
    app = create_app(wb, token, hosts, port)
    print(f"deepseek-lsp serve: http://127.0.0.1:{port}/?token={quote(token, safe='')}", flush=True)
    print(f"  OpenAI-compatible endpoint: http://127.0.0.1:{port}/v1 (api key: the token); "
          f"workspace: {', '.join(map(str, wb.roots)) or 'none'}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3,
                            http=HeaderDeadline, timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=MAX_CONNECTIONS)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return 0
