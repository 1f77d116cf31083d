"""Streams of text from the engine thread to an HTTP client: pieces released with secrets
masked (:class:`MaskedStream`), with the progress of reading a long prompt between them
(:class:`PromptRead`), read off their queue by :func:`text_deltas`; a job awaited unless its
client goes away (:func:`answer_unless_gone`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request

from ..logs import redact

DISCONNECT_POLL_S = 0.25         # how often a non-streaming request looks for a client that went away


@dataclasses.dataclass(frozen=True)
class PromptRead:
    """Progress of reading a long prompt, between the text pieces of a stream (tokens)."""

    done: int
    total: int

    def comment(self) -> dict[str, str]:
        """As a server-sent comment, which OpenAI clients skip (and which keeps proxies from timing out)."""
        return {"comment": f"reading the prompt: {self.done} of {self.total} tokens"}


class MaskedStream:
    """Text deltas from the engine thread, released to the client with secrets masked.

    Text is released up to its last blank, so a credential is masked whole before any of it
    leaves (:func:`server.logs.redact` on everything so far; what was released is never changed).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue, self.text, self.sent = loop, asyncio.Queue(), "", ""

    def on_text(self, delta: str) -> None:  # engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)

    def on_prompt(self, done: int, total: int) -> None:  # engine thread: a long prompt being read
        self.loop.call_soon_threadsafe(self.queue.put_nowait, PromptRead(done, total))

    def release(self, final: bool = False) -> str:
        cut = len(self.text) if final else max(self.text.rfind(c) for c in " \n\t") + 1
        masked = redact(self.text[:cut])
        if not masked.startswith(self.sent):
            return ""
        delta, self.sent = masked[len(self.sent):], masked
        return delta


async def text_deltas(queue: asyncio.Queue, job: asyncio.Future) -> AsyncIterator[str | PromptRead]:
    """The pieces of text (and :class:`PromptRead` progress) put on ``queue`` (from the engine
    thread) while ``job`` runs, then those left.

    Ends when ``job`` is done and ``queue`` is empty. Closed or cancelled early (the client
    went away), it leaves no task waiting on the queue behind (asyncio would log each one
    as an error when it is garbage-collected).
    """
    get: asyncio.Future | None = None
    try:
        while not job.done() or not queue.empty():
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({get, job}, return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                yield get.result()
            else:
                get.cancel()  # the job ended first: what it put on the queue comes on the next turns
    finally:
        if get is not None and not get.done():
            get.cancel()


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def answer_unless_gone(request: Request, job: asyncio.Future, cancel: threading.Event) -> Any:
    """``await job``, cancelling it (and its generation) when the client disconnects.

    Raises:
        ClientGone: the client went away; the job was cancelled.
    """
    while True:
        done, _ = await asyncio.wait({job}, timeout=DISCONNECT_POLL_S)
        if done:
            return job.result()
        if await request.is_disconnected():
            cancel.set()
            job.cancel()
            raise ClientGone()


def chat_chunk(base: dict[str, Any], delta: dict[str, str], finish: str | None = None,
               **extra: Any) -> dict[str, str]:
    """One server-sent ``chat.completion.chunk`` event: ``base`` (id, created, model, fingerprint), the
    delta, the finish reason (None until the last), and any extra top-level fields."""
    return {"data": json.dumps({**base, "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}], **extra})}


def stop_if_gone(job: asyncio.Future, cancel: threading.Event, on_cancelled: Callable[[], None]) -> None:
    """At the end of a stream: a job not done means the client went away; stop it (its generation
    within one token) and call ``on_cancelled`` (metrics, the log)."""
    if not job.done():
        cancel.set()
        job.cancel()
        on_cancelled()
