"""The web page of ``deepseek-lsp serve``: chat, history, the index, models, metrics, the machine check.

Server-rendered Jinja2 templates (``server/templates``) with htmx (vendored in
``server/static``: the page works offline). Every view calls the same code as the
language server: the chat is :meth:`server.assist.Assistant.chat` with the index's
retrieval (its answers and history live in the user's SQLite store), models come from
the catalog (:mod:`server.models`, :func:`server.doctor.model_rows`), the machine check
is ``doctor``'s (:func:`server.doctor.machine_report`). The chat streams as server-sent
events read by ``static/app.js``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, quote

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..assist import AssistError, Reference
from ..assist.host import ModelUnavailable
from ..assist.store import data_dir
from ..doctor import machine_report, model_rows, plain_words
from ..hub import pull
from ..logs import redact
from ..models import ModelError, load_catalog, set_user_default_model
from ..serving import PullJob, Workbench
from .charts import bar_chart, line_chart
from .openai import read_body
from .streams import PromptRead, stop_if_gone, text_deltas

log = logging.getLogger(__name__)

HERE = Path(__file__).parent.parent  # server/: templates/ and static/
STATIC = HERE / "static"
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
SEARCH_RESULTS = 10      # index search results shown
HISTORY_ROWS = 100       # conversations listed
STATS_DAYS = 7           # the charts show this many days of local metrics
CHECK_MARKER = "machine-check.json"
MAX_FORM_BYTES = 2**20   # a form body larger than this is refused (413); reading stops there


def link(ref: Reference) -> dict[str, Any]:
    """A reference as the page shows it: label, a ``vscode://`` link (opens the editor) and a ``file://`` one."""
    path = Path(ref.path)
    return {"label": f"{path.name}:{ref.start_line + 1}-{ref.end_line + 1}", "path": str(path),
            "vscode": f"vscode://file{quote(str(path))}:{ref.start_line + 1}",
            "file": path.as_uri() if path.is_absolute() else str(path)}


def _page(request: Request, name: str, **values: Any) -> Response:
    wb: Workbench = request.app.state.wb
    completion, chat = wb.model_names()
    return TEMPLATES.TemplateResponse(request, name, {"completion_model": completion, "chat_model": chat,
                                                      "roots": wb.roots, **values})


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (what htmx and the page's script send) as its first values.

    Raises:
        server.http.openai.ApiError: a body over :data:`MAX_FORM_BYTES` (413) or too slow (408).
    """
    raw = (await read_body(request, MAX_FORM_BYTES)).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


# -- chat ----------------------------------------------------------------------------------
async def chat_page(request: Request) -> Response:
    if not (data_dir() / CHECK_MARKER).exists():
        return RedirectResponse("/machine?first=1", 303)
    wb: Workbench = request.app.state.wb
    sid = request.query_params.get("session")
    messages = wb.host.store.messages(sid) if sid and wb.host.store.has_session(sid) else []
    return _page(request, "chat.html", session=sid if messages else "", messages=[
        {"role": m.role, "text": redact(m.text), "refs": [link(r) for r in m.references]} for m in messages])


async def chat_send(request: Request) -> Response:
    """``POST /ui/chat`` (form: message, session): the answer as server-sent events
    ``session`` (id), ``progress`` (JSON ``{read, total}``: a long prompt being read, tokens),
    ``delta`` (JSON text), ``done`` (JSON: references, model, promptVersion), ``error``."""
    wb: Workbench = request.app.state.wb
    form = await _form(request)
    message, sid = form.get("message", "").strip(), form.get("session") or None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    async def events() -> AsyncIterator[dict[str, str]]:
        if not message:
            yield {"event": "error", "data": json.dumps("Type a question first.")}
            return
        try:
            assistant = await wb.assistant()
        except ModelUnavailable as e:
            yield {"event": "error", "data": json.dumps(str(e))}
            return
        context = await wb.retrieve("chat", message)
        t0 = time.monotonic()
        job = asyncio.ensure_future(wb.host.run(
            assistant.chat, sid, message, context,
            lambda s, delta: loop.call_soon_threadsafe(queue.put_nowait, delta), cancel=cancel,
            on_prompt=lambda done, total: loop.call_soon_threadsafe(queue.put_nowait, PromptRead(done, total))))
        text, sent = "", ""
        try:
            async for piece in text_deltas(queue, job):
                if isinstance(piece, PromptRead):
                    yield {"event": "progress", "data": json.dumps({"read": piece.done, "total": piece.total})}
                    continue
                text += piece
                cut = max(text.rfind(c) for c in " \n\t") + 1  # release whole words: secrets are masked whole
                masked = redact(text[:cut])
                if masked.startswith(sent) and len(masked) > len(sent):
                    yield {"event": "delta", "data": json.dumps(masked[len(sent):])}
                    sent = masked
            try:
                reply = job.result()
            except AssistError as e:
                yield {"event": "error", "data": json.dumps(str(e))}
                return
            wb.metrics.answered("chat", assistant.model_name, time.monotonic() - t0, reply.prompt_tokens,
                                reply.output_tokens, reply.cache_hit)
            yield {"event": "done", "data": json.dumps({
                "session": reply.session_id, "text": redact(reply.text), "model": assistant.model_name,
                "promptVersion": reply.prompt_version, "references": [link(r) for r in reply.references]})}
        finally:
            stop_if_gone(job, cancel, lambda: (wb.metrics.failed("chat", "cancelled"),
                                               log.info("page chat cancelled: the client disconnected")))
    return EventSourceResponse(events(), sep="\n")


# -- history -------------------------------------------------------------------------------
def _sessions(wb: Workbench, query: str) -> list[dict[str, Any]]:
    return [{"id": r.id, "title": r.title, "messages": r.messages,
             "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))}
            for r in wb.host.store.sessions(query, HISTORY_ROWS)]


async def history_page(request: Request) -> Response:
    q = request.query_params.get("q", "")
    return _page(request, "history.html", q=q, sessions=_sessions(request.app.state.wb, q))


async def history_list(request: Request) -> Response:
    q = request.query_params.get("q", "")
    return _page(request, "_sessions.html", q=q, sessions=_sessions(request.app.state.wb, q))


# -- the index -----------------------------------------------------------------------------
async def workspace_page(request: Request) -> Response:
    wb: Workbench = request.app.state.wb
    return _page(request, "workspace.html", status=wb.index_status())


async def workspace_status(request: Request) -> Response:
    return _page(request, "_index_status.html", status=request.app.state.wb.index_status())


async def workspace_search(request: Request) -> Response:
    wb: Workbench = request.app.state.wb
    q = request.query_params.get("q", "").strip()
    results = await wb.runtime.search(q, SEARCH_RESULTS) if q else []
    rows = [{**link(Reference(r.file, r.start_line, r.end_line)), "rel": r.path, "symbol": r.symbol,
             "text": redact(r.text)[:1200], "score": r.score} for r in results if wb.runtime.readable(r.file)]
    return _page(request, "_search.html", q=q, results=rows, ready=wb.index_status().get("state") == "ready")


# -- models --------------------------------------------------------------------------------
def _models_view(request: Request, message: str = "") -> Response:
    wb: Workbench = request.app.state.wb
    rows, avail = model_rows()
    return _page(request, "_models.html", rows=rows, available_mb=avail, pulls=wb.pulls, message=message)


async def models_page(request: Request) -> Response:
    rows, avail = model_rows()
    return _page(request, "models.html", rows=rows, available_mb=avail, pulls=request.app.state.wb.pulls, message="")


async def model_pull(request: Request) -> Response:
    """Start installing a catalog model in the background; the progress fragment polls itself."""
    wb: Workbench = request.app.state.wb
    name = request.path_params["name"]
    if name not in load_catalog()[1]:
        return _models_view(request, f"unknown model {name}")
    job = wb.pulls.get(name)
    if job is None or job.finished:
        job = wb.pulls[name] = PullJob(name)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def run() -> None:
            try:
                job.path = str(pull(name, progress))
            except ModelError as e:
                job.error = str(e)
            except Exception as e:  # a download that breaks must show, not vanish
                log.exception("pull %s", name)
                job.error = f"{type(e).__name__}: {e}"
            finally:
                job.finished = True
        threading.Thread(target=run, name=f"pull-{name}", daemon=True).start()
    return _page(request, "_pull.html", job=job)


async def model_progress(request: Request) -> Response:
    job = request.app.state.wb.pulls.get(request.path_params["name"])
    if job is None:
        return Response("", 204)
    return _page(request, "_pull.html", job=job)


async def model_use(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in load_catalog()[1]:
        return _models_view(request, f"unknown model {name}")
    set_user_default_model(name)
    return _models_view(request, f"{name} is now the default model: it is used from the next start of the editor's "
                                 "server and of deepseek-lsp serve.")


# -- metrics -------------------------------------------------------------------------------
async def stats_page(request: Request) -> Response:
    wb: Workbench = request.app.state.wb
    rows = wb.host.store.metric_rows(time.time() - STATS_DAYS * 86400)
    latency: dict[str, list[tuple[float, float]]] = {}
    hits: dict[str, dict[str, float]] = {}
    tokens: dict[str, dict[str, float]] = {}
    for r in rows:
        if not r.cache_hit:
            latency.setdefault(r.task, []).append((r.ts, r.latency_ms))
        h = hits.setdefault(r.task, {"requests": 0, "cache hits": 0})
        h["requests"] += 1
        h["cache hits"] += r.cache_hit
        t = tokens.setdefault(r.task, {"prompt": 0, "output": 0})
        t["prompt"] += r.prompt_tokens
        t["output"] += r.output_tokens
    table = wb.host.store.latency_table()
    return _page(request, "stats.html", days=STATS_DAYS, requests=len(rows), table=table,
                 latency_svg=line_chart(latency, "ms", "Latency per task"),
                 hits_svg=bar_chart(hits, "requests", "Cache hits per task"),
                 tokens_svg=bar_chart(tokens, "tokens", "Tokens per task"))


# -- the machine ---------------------------------------------------------------------------
async def machine_page(request: Request) -> Response:
    wb: Workbench = request.app.state.wb
    return _page(request, "machine.html", first=bool(request.query_params.get("first")), check=wb.machine)


async def machine_report_view(request: Request) -> Response:
    """Run doctor's checks (seconds: the load probe) once per process, then show them."""
    wb: Workbench = request.app.state.wb
    check = wb.machine
    if check.report is None and not check.running:
        check.running = True
        try:
            check.report = await asyncio.get_running_loop().run_in_executor(None, machine_report, wb.settings)
            marker = data_dir() / CHECK_MARKER
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"ok": check.report.ok, "verdict": check.report.verdict, "ts": time.time()}))
        finally:
            check.running = False
    if check.report is None:
        return _page(request, "_machine_wait.html")
    return _page(request, "_machine.html", report=check.report, words=plain_words(check.report))


ROUTES = [
    Route("/", chat_page, methods=["GET"]),
    Route("/ui/chat", chat_send, methods=["POST"]),
    Route("/history", history_page, methods=["GET"]),
    Route("/history/list", history_list, methods=["GET"]),
    Route("/workspace", workspace_page, methods=["GET"]),
    Route("/workspace/status", workspace_status, methods=["GET"]),
    Route("/workspace/search", workspace_search, methods=["GET"]),
    Route("/models", models_page, methods=["GET"]),
    Route("/models/{name}/pull", model_pull, methods=["POST"]),
    Route("/models/{name}/progress", model_progress, methods=["GET"]),
    Route("/models/{name}/use", model_use, methods=["POST"]),
    Route("/stats", stats_page, methods=["GET"]),
    Route("/machine", machine_page, methods=["GET"]),
    Route("/machine/report", machine_report_view, methods=["GET"]),
]
