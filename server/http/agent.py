"""The agent over HTTP: the task ``agent`` at ``/v1/chat/completions`` (docs/HTTP.md).

The last user message is the task. The run's steps stream as server-sent events while it
works (each chunk's ``content`` is the step in Markdown, its ``deepseek_step`` the step as
JSON); the last chunk, or the whole reply without ``stream``, carries ``agent``: the run
(steps, proposed edits, their verification). Nothing is written over HTTP: the edits are
proposed, with the tests that cover them run in the sandbox. The agent runs the workspace's
code, so ``serve`` must be started with ``--trust-workspace``; otherwise the request is refused
(403). A client that goes away cancels the run. Every run is stored for
``deepseek-lsp export --format trajectories``. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..agent import Agent, AgentRun, Step, Toolbox
from ..agent.loop import MAX_STEPS
from ..agent.records import run_dict, step_dict
from ..assist.packs import load_pack
from ..logs import redact
from ..serving import Workbench
from .streams import chat_chunk, stop_if_gone

log = logging.getLogger(__name__)

MAX_STEPS_LIMIT = 30
SEARCH_RESULTS = 4
SEARCH_TIMEOUT_S = 30
AGENT_PACK = load_pack("agent").version  # the pack the loop uses (its newest)


def step_markdown(step: Step) -> str:
    """A step as the page shows it: the thought, the call, the observation folded."""
    call = f"`{step.tool}` {json.dumps(step.call.args)[:300]}" if step.call is not None else "(no valid tool call)"
    failed = "" if step.observation.ok else " (failed)"
    draft = "" if not step.draft else " (the server's finish, after the passing draft)" if step.tool == "finish" \
        else " (draft)"
    return (f"**Step {step.index}{draft}.** {step.thought}\n\n{call}\n\n<details><summary>Observation{failed}</summary>"
            f"\n\n```\n{step.observation.text}\n```\n</details>\n\n")


async def agent_completion(request: Request, wb: Workbench, body: dict[str, Any], messages: list[dict[str, str]],
                           errors: type[Exception]) -> Response:
    """Run the agent for a ``/v1/chat/completions`` request routed to the task ``agent``.

    Body extensions: ``tests`` (pytest node ids relative to the workspace, run in the
    verification too), ``max_steps`` (1-30, default 8).

    Raises:
        ``errors`` (the endpoint's ApiError): untrusted workspace (403), no workspace folder, bad fields (400),
        the chat model unavailable (503).
    """
    from ..assist.host import ModelUnavailable

    if not wb.trusted:
        raise errors(403, "the agent runs the workspace's code (tests, scripts, in the sandbox) and this workspace "
                          "is not trusted: start serve with --trust-workspace", "permission_error",
                     "untrusted_workspace")
    if not wb.roots:
        raise errors(400, "the agent works in a workspace folder: start serve with --workspace DIR",
                     code="no_workspace")
    tests, max_steps = body.get("tests") or [], body.get("max_steps", MAX_STEPS)
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise errors(400, "tests must be a list of pytest node ids", param="tests")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= MAX_STEPS_LIMIT:
        raise errors(400, f"max_steps must be an integer from 1 to {MAX_STEPS_LIMIT}", param="max_steps")
    problem = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    try:
        assistant = await wb.assistant()
    except ModelUnavailable as e:
        raise errors(503, str(e), "server_error", "model_unavailable") from None
    loop = asyncio.get_running_loop()
    root = wb.roots[0]
    steps: asyncio.Queue[Step | None] = asyncio.Queue()

    def search(query: str):  # assist thread -> the loop
        return asyncio.run_coroutine_threadsafe(wb.runtime.retrieve(query, SEARCH_RESULTS), loop).result(
            SEARCH_TIMEOUT_S)

    box = Toolbox(root, trusted=True, sandbox_mode=wb.settings.tests_sandbox, search=search,
                  readable=wb.runtime.readable)
    named = [t if Path(t.split("::")[0]).is_absolute() else str(root / t) for t in tests]
    cancel = threading.Event()

    def work(cancel: threading.Event) -> AgentRun:
        run = Agent(assistant, max_steps=max_steps).run(
            problem, box, named, cancel=cancel, on_step=lambda s: loop.call_soon_threadsafe(steps.put_nowait, s))
        _store(wb, run)  # here, not after the await: a run whose client went away is stored too
        return run
    job = asyncio.ensure_future(wb.host.run(work, cancel=cancel))
    job.add_done_callback(lambda _f: steps.put_nowait(None))
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": assistant.model_name,
            "system_fingerprint": AGENT_PACK}
    headers = {"X-Deepseek-Task": "agent", "X-Deepseek-Model": assistant.model_name,
               "X-Deepseek-Prompt-Version": AGENT_PACK}

    async def finished() -> tuple[AgentRun, dict[str, Any]]:
        run = await job
        wb.metrics.answered("agent", assistant.model_name, run.seconds, 0, sum(s.tokens for s in run.steps), False)
        return run, {"agent": run_dict(run), "usage": None}

    if not body.get("stream"):
        from .streams import ClientGone, answer_unless_gone
        try:
            await answer_unless_gone(request, job, cancel)
        except ClientGone:
            wb.metrics.failed("agent", "cancelled")
            return Response(status_code=499)
        run, extra = await finished()
        return JSONResponse({**base, "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": redact(run.answer)},
            "finish_reason": "stop" if run.outcome == "finished" else "length"}], **extra}, headers=headers)

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> dict[str, str]:
        return chat_chunk(base, delta, finish, **extra)

    def cancelled() -> None:
        wb.metrics.failed("agent", "cancelled")
        log.info("agent run cancelled: the client disconnected")

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            while (step := await steps.get()) is not None:
                yield chunk({"content": redact(step_markdown(step))}, deepseek_step=step_dict(step))
            run, extra = await finished()
            yield chunk({"content": redact(run.answer)})
            yield chunk({}, "stop" if run.outcome == "finished" else "length", **extra)
            yield {"data": "[DONE]"}
        finally:
            stop_if_gone(job, cancel, cancelled)
    return EventSourceResponse(events(), headers=headers)


def _store(wb: Workbench, run: AgentRun) -> None:
    try:
        wb.host.trajectories.save(run)
    except Exception as e:  # a full disk must not lose the reply
        log.warning("agent run %s not stored: %s", run.id, e)
