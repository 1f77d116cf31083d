"""The guard in front of every HTTP request of ``deepseek-lsp serve`` (an ASGI middleware).

The page and the endpoint read the user's code, so every request must show:

- **the token** made at start (printed with the URL): ``Authorization: Bearer <token>``
  (the OpenAI clients' ``api_key``), the page's cookie, or ``?token=<token>`` in a page's
  URL (Jupyter's way: answered with the cookie and a redirect to the URL without it);
- **a Host header naming this server** (``127.0.0.1:<port>``, ``localhost:<port>``,
  ``[::1]:<port>``, the interface given with ``--allow-remote``, or a name given with
  ``--allowed-host``): a page on another site cannot reach it through DNS rebinding;
- **no foreign Origin**: a request a browser sends from any other origin is refused, and
  no CORS header is ever sent, so other sites' scripts can neither call nor read it.

Refusals are 401/403 with OpenAI's error shape (an HTML page for a browser's navigation).
Every response, refusals included, carries ``X-Content-Type-Options: nosniff`` and a
``Content-Security-Policy`` with ``frame-ancestors 'none'`` (no other site may frame the
page). The redirect that takes a token out of a URL only ever goes to a path of this server.
"""

from __future__ import annotations

import hmac
import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

COOKIE_PREFIX = "deepseek_token_"  # + the port: two servers on one machine keep their own cookies
FRAME_ANCESTORS = "frame-ancestors 'none'"  # merged into every response's Content-Security-Policy
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # characters a redirect's path keeps as they are (RFC 3986 pchar and "/")


def host_names(name: str, port: int) -> set[str]:
    """The Host header values ``--allowed-host NAME`` accepts on ``port`` (lowercase).

    ``NAME`` without a port accepts ``NAME`` (a proxy on the scheme's default port) and
    ``NAME:<port>``; ``NAME:PORT`` accepts exactly that. An IPv6 address may come with or
    without brackets.

    Raises:
        ValueError: an empty name, a wildcard, or characters a host name cannot have.
    """
    name = name.strip().lower()
    if ":" in name and not name.startswith("[") and name.count(":") > 1:  # a bare IPv6 address
        name = f"[{name}]"
    match = re.fullmatch(r"(\[[0-9a-f:.%]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?)(?::(\d{1,5}))?", name)
    if match is None or not 0 < int(match.group(2) or 80) < 65536:
        raise ValueError(f"{name!r} is not a host name: give a name such as devbox.lan, an address such as "
                         "192.168.1.20, or either with a port (devbox.lan:8443)")
    if match.group(2) is not None:
        return {name}
    return {name, f"{name}:{port}"}


class Guard:
    """ASGI middleware: token, Host and Origin checks (see the module docstring).

    Args:
        app: the application behind it.
        token: the secret every request must show.
        hosts: accepted Host header values (lowercase, with the port).
        port: the port listened on (names the cookie).
    """

    def __init__(self, app: Any, token: str, hosts: set[str], port: int):
        self.app, self.token, self.hosts = app, token, {h.lower() for h in hosts}
        self.origins = {f"{scheme}://{h}" for h in self.hosts for scheme in ("http", "https")}  # https: a TLS proxy
        self.cookie = f"{COOKIE_PREFIX}{port}"

    def _valid(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # nothing here speaks WebSocket
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = Headers(scope=scope)
        browser = "text/html" in headers.get("accept", "")
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            await _refuse(403, f"Host {host or '(none)'} is not this server: use http://127.0.0.1:<port>/",
                          "forbidden_host", browser)(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            await _refuse(403, f"requests from {origin} are not allowed (no cross-origin access)", "forbidden_origin",
                          browser)(scope, receive, send)
            return
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is just no cookie
            pass
        cookie = cookies[self.cookie].value if self.cookie in cookies else None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), None)
        if self._valid(bearer) or self._valid(cookie):
            await self.app(scope, receive, send)
            return
        if self._valid(from_query) and scope["method"] == "GET":
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            response = RedirectResponse(local_path(scope["path"]) + (f"?{rest}" if rest else ""), 303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
            await response(scope, receive, send)
            return
        await _refuse(401, "a token is required: open the URL deepseek-lsp serve printed (it ends in ?token=...), "
                           "or send the header Authorization: Bearer <token>", "missing_token", browser,
                      {"WWW-Authenticate": "Bearer"})(scope, receive, send)


def local_path(path: str) -> str:
    """``path`` (decoded, as in the ASGI scope) as a redirect target that stays on this server.

    Percent-encoded again and with one leading slash: ``//evil.example/x`` (which a browser
    reads as another host) becomes ``/evil.example/x``; a backslash or a tab, which browsers
    also fold into ``//``, is encoded (``%5C``, ``%09``).
    """
    return "/" + quote(path, safe=PATH_SAFE).lstrip("/")


def _with_security_headers(send: Any) -> Any:
    """``send`` that adds ``X-Content-Type-Options: nosniff`` and ``frame-ancestors 'none'``
    (merged into the response's own Content-Security-Policy, if it has one) to the response start."""
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
            headers.append((b"x-content-type-options", b"nosniff"))
            csp = [i for i, (k, _) in enumerate(headers) if k.lower() == b"content-security-policy"]
            for i in csp:  # a frame-ancestors directive of its own is replaced: no framing, whatever it said
                kept = [d.strip() for d in headers[i][1].decode("latin-1").split(";")
                        if d.strip() and d.split()[0].lower() != "frame-ancestors"]
                headers[i] = (headers[i][0], "; ".join([*kept, FRAME_ANCESTORS]).encode("latin-1"))
            if not csp:
                headers.append((b"content-security-policy", FRAME_ANCESTORS.encode()))
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


def _refuse(status: int, message: str, code: str, browser: bool, headers: dict[str, str] | None = None):
    if browser:
        return HTMLResponse(f"<!doctype html><title>deepseek-lsp</title><h1>{status}</h1><p>{_escape(message)}</p>",
                            status, headers=headers)
    kind = "authentication_error" if status == 401 else "permission_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status,
                        headers=headers)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
