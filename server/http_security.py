"""The guard in front of every HTTP request of ``deepseek-lsp serve`` (an ASGI middleware).

The page and the endpoint read the user's code, so every request must show:

- **the token** made at start (printed with the URL): ``Authorization: Bearer <token>``
  (the OpenAI clients' ``api_key``), the page's cookie, or ``?token=<token>`` in a page's
  URL (Jupyter's way: answered with the cookie and a redirect to the URL without it);
- **a Host header naming this server** (``127.0.0.1:<port>``, ``localhost:<port>``,
  ``[::1]:<port>``, or the interface given with ``--allow-remote``): a page on another
  site cannot reach it through DNS rebinding;
- **no foreign Origin**: a request a browser sends from any other origin is refused, and
  no CORS header is ever sent, so other sites' scripts can neither call nor read it.

Refusals are 401/403 with OpenAI's error shape (an HTML page for a browser's navigation).
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

COOKIE_PREFIX = "deepseek_token_"  # + the port: two servers on one machine keep their own cookies


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
        self.origins = {f"http://{h}" for h in self.hosts}
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
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), 303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
            await response(scope, receive, send)
            return
        await _refuse(401, "a token is required: open the URL deepseek-lsp serve printed (it ends in ?token=...), "
                           "or send the header Authorization: Bearer <token>", "missing_token", browser,
                      {"WWW-Authenticate": "Bearer"})(scope, receive, send)


def _refuse(status: int, message: str, code: str, browser: bool, headers: dict[str, str] | None = None):
    if browser:
        return HTMLResponse(f"<!doctype html><title>deepseek-lsp</title><h1>{status}</h1><p>{_escape(message)}</p>",
                            status, headers=headers)
    kind = "authentication_error" if status == 401 else "permission_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status,
                        headers=headers)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
