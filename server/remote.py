"""A remote backend: an OpenAI-compatible server (llama.cpp's server, llama-cpp-python's
server, vLLM, Ollama) instead of a model in this process.

Completions go to ``/v1/completions`` with the FIM prompt built here (as text: these
servers parse the FIM special tokens in a text prompt); chat goes to
``/v1/chat/completions``. Both stream (server-sent events), so a cancelled or
superseded request closes the HTTP stream at once and the server stops generating.

Connection failures before the first byte are retried a bounded number of times with
backoff; every request has a connect and a read timeout. Errors raise
:class:`BackendUnavailable` with a message that says what to check.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

log = logging.getLogger(__name__)

RETRIES = 3               # attempts to connect before giving up
BACKOFF_S = 0.25          # first retry delay; doubles each time
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0     # longest silence between two streamed pieces


class BackendUnavailable(Exception):
    """The remote backend cannot be reached or answered with an error; ``str(e)`` says what to check."""


@dataclass
class RemoteResult:
    text: str
    finish: str           # stop, length, complete, cancelled, timeout
    latency_ms: float


class OpenAIBackend:
    """Client of one OpenAI-compatible server.

    Args:
        url: base URL, e.g. ``http://gpu-box:8000`` (``/v1`` is added when missing).
        api_key: sent as a bearer token when given (never logged).
        model: the ``model`` field of requests (the server's model name; some servers ignore it).
    """

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None):
        import httpx

        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.model = model or "default"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def _stream(self, path: str, body: dict, cancel: threading.Event) -> Iterator[dict]:
        """POST ``body`` with ``stream: true`` and yield each event's JSON; retries connecting."""
        import httpx

        delay, last = BACKOFF_S, None
        for attempt in range(RETRIES):
            if cancel.is_set():
                return
            try:
                with self.client.stream("POST", self.base + path, json={**body, "stream": True}) as response:
                    if response.status_code >= 400:
                        detail = response.read().decode("utf-8", "replace")[:300]
                        raise BackendUnavailable(f"{self.base}{path} answered {response.status_code}: {detail}")
                    for line in response.iter_lines():
                        if cancel.is_set():
                            return  # leaving the with-block closes the connection: the server stops
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        yield json.loads(data)
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e
                log.warning("backend %s: %s (attempt %d of %d)", self.base, e, attempt + 1, RETRIES)
                time.sleep(delay)
                delay *= 2
            except httpx.HTTPError as e:
                raise BackendUnavailable(f"the backend at {self.base} failed: {type(e).__name__}: {e}") from None
        raise BackendUnavailable(f"cannot reach the backend at {self.base} ({type(last).__name__}: {last}). "
                                 "Fix: check that the server runs and backend.url is right, "
                                 "or set backend.kind to local.")

    def _collect(self, path: str, body: dict, cancel: threading.Event, cap_s: float,
                 piece: Callable[[dict], str], judge: Callable[[str], bool] | None) -> RemoteResult:
        """Stream ``path`` and gather the text; stop at the judge's word, the time cap
        (counted from the first streamed piece, like the local model's: prompt processing is
        not part of it), the server's finish, or a cancel."""
        t0, text, finish, deadline = time.monotonic(), "", "", None
        for event in self._stream(path, body, cancel):
            deadline = deadline or time.monotonic() + cap_s
            choice = (event.get("choices") or [{}])[0]
            text += piece(choice)
            if judge is not None and judge(text):
                finish = "complete"
                break
            if time.monotonic() > deadline:
                finish = "timeout"
                break
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if cancel.is_set():
            finish = "cancelled"
        return RemoteResult(text, finish or "stop", (time.monotonic() - t0) * 1000)

    def complete(self, prompt: str, *, max_tokens: int, stop: list[str], cancel: threading.Event, cap_s: float,
                 judge: Callable[[str], bool] | None = None) -> RemoteResult:
        """A FIM (or plain) completion of ``prompt``, greedy, streamed; ``judge`` says when it is complete."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stop": stop,
                "cache_prompt": True}
        return self._collect("/completions", body, cancel, cap_s, lambda c: c.get("text") or "", judge)

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int, cancel: threading.Event, cap_s: float,
             on_text: Callable[[str], bool] | None = None) -> RemoteResult:
        """A chat completion, streamed; ``on_text`` gets the text so far after each piece."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        return self._collect("/chat/completions", body, cancel, cap_s,
                             lambda c: (c.get("delta") or {}).get("content") or "", on_text)

    def close(self) -> None:
        self.client.close()


class ApproxVocabulary:
    """Token counts without the remote model's tokenizer: about 3.5 characters a token for code.

    Used only to cut the context to the budget; the remote server counts for real.
    """

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        return [0] * (0 if not text else int(len(text) / 3.5) + 1)

    def detokenize(self, tokens) -> str:  # pragma: no cover - never needed for counting
        return ""

    def is_special(self, token: int) -> bool:
        return False
