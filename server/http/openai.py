"""The OpenAI-compatible endpoint: ``/v1/models``, ``/v1/completions`` (FIM), ``/v1/chat/completions``.

Each request is routed by task: the header ``X-Task-Type`` (``completion``, ``chat``,
``explain``, ``refactor``, ``tests``, ``rag-code``, ``agent``: :mod:`.agent`), else a model alias
(``deepseek-<task>``), else the endpoint (``/v1/completions`` is ``completion``,
``/v1/chat/completions`` is ``chat``). The task picks the model (the completion model
and its FIM pipeline, or the chat model), the versioned prompt pack (its system message
comes first) and how much workspace code is retrieved (:data:`server.serving.RETRIEVAL`;
each piece labelled with its path and line range). Retrieved code that is secret never
goes into a prompt; credential-looking values in answers are masked. Replies name the
model (``model``) and the prompt version (``system_fingerprint`` and the header
``X-Deepseek-Prompt-Version``), carry ``usage``, and stream as server-sent events when
``stream`` is true. A client that disconnects cancels its generation (within one
token). Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
The contract is in docs/HTTP.md. This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..assist import AssistError, ContextItem, PromptPack, Reference, load_pack
from ..assist.host import ModelUnavailable
from ..completion import Snapshot, Unsuitable
from ..languages import language_id
from ..logs import redact
from ..serving import Unavailable, Workbench
from .streams import ClientGone, MaskedStream, PromptRead, answer_unless_gone, chat_chunk, stop_if_gone, text_deltas

log = logging.getLogger(__name__)

TASKS = ("completion", "chat", "explain", "refactor", "tests", "rag-code", "agent")
ALIAS_PREFIX = "deepseek-"
MAX_BODY_BYTES = 8 * 2**20       # a request body larger than this is refused (413); reading stops there
BODY_TIMEOUT_S = 60              # a request body not in whole after this many seconds is refused (408)
MAX_TOKENS_LIMIT = 8192          # the largest max_tokens accepted
CONTEXT_CHARS_PER_TOKEN = 4      # retrieved code is budgeted at chat.contextTokens x this many characters
STARTED = int(time.time())
CLOSE = {"Connection": "close"}  # on a refusal that leaves the request body unread


class ApiError(Exception):
    """A request refused with an HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.param, self.headers = status, type_, code, param, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, str(self), self.type, self.code, self.param, self.headers)


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status,
                        headers=headers)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, read no further than ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before anything is read; a body sent
    without one (chunked) is refused as soon as what came is over it. The rest is never
    read: the answer says ``Connection: close``, and the server closes the connection.

    Args:
        limit: the largest body accepted, in bytes.

    Raises:
        ApiError: over ``limit`` (413, code ``request_too_large``); not all there after
            :data:`BODY_TIMEOUT_S` seconds (408, code ``request_timeout``).
        ClientGone: the client disconnected before the body was in whole.
    """
    def too_large(size: str) -> ApiError:  # the connection closes after it: the rest of the body is not read
        return ApiError(413, f"the request body is {size} bytes, over the limit of {limit:,}", code="request_too_large",
                        headers=CLOSE)

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(f"{int(declared):,}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(f"more than {limit:,}")
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S} s", code="request_timeout",
                       headers=CLOSE) from None
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        ApiError: too large (413), too slow (408), not JSON or not an object (400).
    """
    raw = await read_body(request)
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _int_field(body: dict[str, Any], *names: str, low: int, high: int) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ApiError(400, f"{name} must be an integer from {low} to {high}, got {json.dumps(value)}",
                           param=name, code="invalid_value")
        return value
    return None


def route(wb: Workbench, request: Request, body: dict[str, Any], endpoint: str) -> str:
    """The task a request is for (see the module docstring).

    Raises:
        ApiError: an unknown task (400), a model no alias or loaded model has (404), a task
            the endpoint does not answer (400).
    """
    header = request.headers.get("x-task-type")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model")
    if header is not None and header not in TASKS:
        raise ApiError(400, f"X-Task-Type must be one of {', '.join(TASKS)}; got {header!r}", code="invalid_task")
    alias = model[len(ALIAS_PREFIX):] if model and model.startswith(ALIAS_PREFIX) else None
    alias = alias if alias in TASKS else None
    if model and alias is None and model not in wb.model_names():
        raise ApiError(404, f"The model {model!r} does not exist here. GET /v1/models lists the models and the "
                            f"task aliases ({', '.join(ALIAS_PREFIX + t for t in TASKS)}).", "not_found_error",
                       "model_not_found", "model")
    task = header or alias or ("completion" if endpoint == "completion" else "chat")
    if endpoint == "completion" and task != "completion":
        raise ApiError(400, f"the task {task!r} is answered at /v1/chat/completions", code="wrong_endpoint")
    if endpoint == "chat" and task == "completion":
        raise ApiError(400, "code completion (fill-in-the-middle) is answered at /v1/completions, with the code "
                            "before the cursor in prompt and the code after it in suffix", code="wrong_endpoint")
    return task


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of ``{"type": "text", "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts (only text is understood)",
                   param=where)


def parse_messages(raw: Any) -> list[dict[str, str]]:
    """``messages`` as ``[{"role", "content"}]`` with roles system, user, assistant.

    Raises:
        ApiError: not a non-empty list, an unknown role, non-text content, no user message.
    """
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object {{role, content}}", param=where)
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"{where}.role must be system, user or assistant; got {m.get('role')!r}", param=where)
        out.append({"role": role, "content": _text(m.get("content"), where)})
    if not any(m["role"] == "user" for m in out):
        raise ApiError(400, "messages must hold at least one user message", param="messages")
    return out


def build_prompt(pack: PromptPack, messages: list[dict[str, str]], context: list[ContextItem],
                 budget_chars: int) -> tuple[list[dict[str, str]], list[Reference]]:
    """The conversation sent to the model: the pack's system message first (the client's own
    system messages after it), the retrieved code in the last user message, within ``budget_chars``.

    Returns:
        (messages, the references of the code that went in).
    """
    system = "\n\n".join([pack.render()[0]["content"]] + [m["content"] for m in messages if m["role"] == "system"])
    turns = [dict(m) for m in messages if m["role"] != "system"]
    blocks, refs, used = [], [], 0
    for item in context:
        block = f"{item.label}:\n```\n{item.text.rstrip()}\n```\n"
        if used + len(block) > budget_chars:
            continue
        used += len(block)
        blocks.append(block)
        if item.reference is not None:
            refs.append(item.reference)
    last = max(i for i, m in enumerate(turns) if m["role"] == "user")
    if "{message}" in pack.user:
        found = "\n".join(blocks)  # chat@v3 puts the retrieved code in the question's message
        turns[last]["content"] = pack.render(context=found, retrieved=found,
                                             message=turns[last]["content"])[1]["content"]
    elif blocks:
        turns[last]["content"] = "Code from the workspace:\n\n" + "\n".join(blocks) + "\n" + turns[last]["content"]
    return [{"role": "system", "content": system}, *turns], refs


def references_json(refs: list[Reference]) -> list[dict[str, Any]]:
    """References as JSON: path, 1-based inclusive lines, and a file URI."""
    return [{"path": str(r.path), "start_line": r.start_line + 1, "end_line": r.end_line + 1,
             "uri": Path(r.path).as_uri() if Path(r.path).is_absolute() else str(r.path)} for r in refs]


def _finish(reason: str) -> str:
    return "length" if reason in ("max_tokens", "timeout") else "stop"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _headers(task: str, model: str, version: str) -> dict[str, str]:
    return {"X-Deepseek-Task": task, "X-Deepseek-Model": model, "X-Deepseek-Prompt-Version": version}


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the task aliases and the models behind them."""
    wb: Workbench = request.app.state.wb
    completion, chat = wb.model_names()
    windows = dict(zip(("completion", "chat"), wb.context_windows()))
    data = [{"id": ALIAS_PREFIX + t, "object": "model", "created": STARTED, "owned_by": "deepseek-lsp",
             "task": t, "model": completion if t == "completion" else chat,
             "context_length": windows["completion" if t == "completion" else "chat"]} for t in TASKS]
    for name, task in ((completion, "completion"), (chat, "chat")):
        if not any(d["id"] == name for d in data):
            data.append({"id": name, "object": "model", "created": STARTED, "owned_by": "deepseek-lsp", "task": task,
                         "model": name, "context_length": windows[task]})
    return JSONResponse({"object": "list", "data": data})


async def completions(request: Request) -> Response:
    """``POST /v1/completions``: code completion through the editor's FIM pipeline.

    Body: ``prompt`` (the code before the cursor; a string or a list of one), ``suffix``
    (the code after it), ``max_tokens``, ``stream``; extensions: ``language`` (an LSP
    language id) or ``path`` (the file, for its language and its place in the index).
    """
    wb: Workbench = request.app.state.wb
    body = await json_body(request)
    task = route(wb, request, body, "completion")
    prompt, suffix = body.get("prompt"), body.get("suffix") or ""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (or a list of one string)", param="prompt")
    if not isinstance(suffix, str):
        raise ApiError(400, "suffix must be a string", param="suffix")
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1: one completion per request", param="n")
    max_tokens = _int_field(body, "max_tokens", low=1, high=MAX_TOKENS_LIMIT)
    path = body.get("path")
    if path is not None and (not isinstance(path, str) or not Path(path).is_absolute()):
        raise ApiError(400, "path must be an absolute file path", param="path")
    language = body.get("language") or (language_id(path) if path else "plaintext")
    if not isinstance(language, str):
        raise ApiError(400, "language must be an LSP language id such as python", param="language")
    try:
        service = await wb.completion_service()
    except Unavailable as e:
        raise ApiError(503, str(e), "server_error", "model_unavailable") from None
    model = wb.completion.status.name or wb.model_names()[0]
    version = f"fim-{wb.completion.status.family or wb.settings.backend_family}"
    settings = wb.settings if max_tokens is None else dataclasses.replace(wb.settings, completion_max_tokens=max_tokens)
    t0 = time.monotonic()
    cancel = threading.Event()
    # Requests for one path supersede each other like keystrokes; without a path, each has its own document.
    with contextlib.nullcontext(Path(path).as_uri()) if path else wb.untitled() as uri:
        job = asyncio.ensure_future(service.suggest(Snapshot(uri, None, prompt + suffix, len(prompt), language),
                                                    settings, manual=True))
        try:
            s = await answer_unless_gone(request, job, cancel)
        except ClientGone:
            wb.metrics.failed(task, "cancelled")
            log.info("completion request cancelled: the client disconnected")
            return Response(status_code=499)
        except Unsuitable as e:
            wb.metrics.failed(task, "error")
            raise ApiError(400, f"no completion for this text: {e}", code="unsuitable") from None
    seconds = time.monotonic() - t0
    gen = s.generation if s is not None else None
    text = redact(s.text) if s is not None else ""
    n_prompt, n_out = (gen.prompt_tokens, gen.generated_tokens) if gen else (0, 0)
    cache_hit = s is not None and s.source == "cache"
    wb.metrics.answered(task, model, seconds, n_prompt, n_out, cache_hit)
    wb.host.store.metric(task, model, seconds * 1000, n_prompt, n_out, cache_hit)
    reply = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
             "model": model, "system_fingerprint": version,
             "choices": [{"text": text, "index": 0, "logprobs": None,
                          "finish_reason": _finish(gen.finish) if gen else "stop"}],
             "usage": _usage(n_prompt, n_out)}
    headers = _headers(task, model, version)
    if not body.get("stream"):
        return JSONResponse(reply, headers=headers)

    async def events() -> AsyncIterator[dict[str, str]]:
        yield {"data": json.dumps(reply)}
        yield {"data": "[DONE]"}
    return EventSourceResponse(events(), headers=headers)


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: chat, explain, refactor, tests or rag-code on the chat model.

    Body: ``messages``, ``max_tokens`` (or ``max_completion_tokens``), ``stream``. Answers are
    greedy (``temperature`` and sampling fields are accepted and not used).
    """
    wb: Workbench = request.app.state.wb
    body = await json_body(request)
    task = route(wb, request, body, "chat")
    messages = parse_messages(body.get("messages"))
    max_tokens = _int_field(body, "max_completion_tokens", "max_tokens", low=1, high=MAX_TOKENS_LIMIT)
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1: one answer per request", param="n")
    if task == "agent":
        from .agent import agent_completion
        return await agent_completion(request, wb, body, messages, ApiError)
    try:
        assistant = await wb.assistant()
    except ModelUnavailable as e:
        raise ApiError(503, str(e), "server_error", "model_unavailable") from None
    pack = load_pack("chat" if task == "chat" else task)
    query = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    context = await wb.retrieve(task, query)
    prompt, refs = build_prompt(pack, messages, context, wb.settings.chat_context_tokens * CONTEXT_CHARS_PER_TOKEN)
    model, version = assistant.model_name, pack.version
    headers = _headers(task, model, version)
    loop = asyncio.get_running_loop()
    stream = MaskedStream(loop)
    cancel = threading.Event()
    t0 = time.monotonic()
    job = asyncio.ensure_future(wb.host.run(assistant.answer, task, prompt, pack, stream.on_text, max_tokens,
                                            on_prompt=stream.on_prompt, cancel=cancel))
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model,
            "system_fingerprint": version}

    def done(reply) -> dict[str, Any]:
        wb.metrics.answered(task, model, time.monotonic() - t0, reply.prompt_tokens, reply.output_tokens,
                            reply.cache_hit)
        return {"usage": _usage(reply.prompt_tokens, reply.output_tokens), "references": references_json(refs),
                "prompt_version": version, "cache_hit": reply.cache_hit}

    if not body.get("stream"):
        try:
            reply = await answer_unless_gone(request, job, cancel)
        except ClientGone:
            wb.metrics.failed(task, "cancelled")
            log.info("%s request cancelled: the client disconnected", task)
            return Response(status_code=499)
        except AssistError as e:
            wb.metrics.failed(task, "error")
            raise ApiError(400, str(e), code="unanswerable") from None
        return JSONResponse({**base, "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": redact(reply.text)},
            "finish_reason": _finish(reply.finish)}], **done(reply)}, headers=headers)

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> dict[str, str]:
        return chat_chunk(base, delta, finish, **extra)

    def cancelled() -> None:
        wb.metrics.failed(task, "cancelled")
        log.info("%s request cancelled: the client disconnected", task)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for piece in text_deltas(stream.queue, job):
                if isinstance(piece, PromptRead):
                    yield piece.comment()
                    continue
                stream.text += piece
                if delta := stream.release():
                    yield chunk({"content": delta})
            try:
                reply = job.result()
            except AssistError as e:
                wb.metrics.failed(task, "error")
                yield {"data": json.dumps({"error": {"message": str(e), "type": "invalid_request_error",
                                                     "param": None, "code": "unanswerable"}})}
                return
            if delta := stream.release(final=True):
                yield chunk({"content": delta})
            yield chunk({}, _finish(reply.finish), **done(reply))
            yield {"data": "[DONE]"}
        finally:
            stop_if_gone(job, cancel, cancelled)
    return EventSourceResponse(events(), headers=headers)


ROUTES = [Route("/v1/models", list_models, methods=["GET"]),
          Route("/v1/completions", completions, methods=["POST"]),
          Route("/v1/chat/completions", chat_completions, methods=["POST"])]
