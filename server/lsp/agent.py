"""LSP wiring of the agent: ``deepseek.agent`` runs it, ``deepseek.agentApply`` applies its verified fix.

A run needs a trusted workspace (its tools run the workspace's code, in the sandbox). Each
step is sent as it ends (``deepseek/agentStep``) and shown in the work-done progress, whose
cancel button, like ``$/cancelRequest``, stops the run within one token or one tool run. The
reply holds the proposed edits and their verification; nothing is written until the user
accepts: ``deepseek.agentApply`` then sends them as a versioned workspace edit, and only when
the workspace's tests that cover them passed and the files are still as the agent read them.
Every run is stored (:class:`server.agent.trajectories.TrajectoryStore`). The contract is in
docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..agent import Agent, AgentRun, Toolbox
from ..agent.loop import MAX_STEPS
from ..agent.records import run_dict, step_dict
from ..assist.targets import workspace_root
from .assist import _arg, _assistant, _run_with_progress, _span
from .convert import lsp_file_edit, uri_to_path
from .state import DeepseekLanguageServer

log = logging.getLogger(__name__)

CMD_AGENT, CMD_AGENT_APPLY = "deepseek.agent", "deepseek.agentApply"
AGENT_STEP = "deepseek/agentStep"
MAX_STEPS_LIMIT = 30        # the largest maxSteps accepted
KEPT_RUNS = 16              # runs whose edits can still be applied (the newest)
SEARCH_TIMEOUT_S = 30
UNTRUSTED = ("this workspace is not trusted, and the agent runs code from it (tests, scripts): trust the workspace "
             "(VS Code: Manage Workspace Trust; Neovim: :DeepSeekTrust; another client: "
             "initializationOptions.workspaceTrusted) and run it again")



def _kept(ls: DeepseekLanguageServer) -> collections.OrderedDict:
    """The server's latest runs by id: (run, its toolbox, the open documents' versions when it started)."""
    return ls.agent_runs


async def agent(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    """``deepseek.agent {message, uri?, range?, tests?, maxSteps?}``: run the agent (see docs/PROTOCOL.md)."""
    arg = _arg(args)
    message, tests, max_steps = arg.get("message"), arg.get("tests") or [], arg.get("maxSteps", MAX_STEPS)
    if not isinstance(message, str) or not message.strip():
        raise JsonRpcInvalidParams("deepseek.agent needs {message: string, uri?, range?, tests?: [node id], "
                                   "maxSteps?}")
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise JsonRpcInvalidParams("deepseek.agent: tests must be a list of pytest node ids")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= MAX_STEPS_LIMIT:
        raise JsonRpcInvalidParams(f"deepseek.agent: maxSteps must be an integer from 1 to {MAX_STEPS_LIMIT}")
    if not ls.trusted:
        raise JsonRpcInvalidParams(UNTRUSTED)
    roots = ls.index.roots()
    path = uri_to_path(arg["uri"]) if isinstance(arg.get("uri"), str) else None
    root = workspace_root(roots, path) if path is not None else (roots[0] if roots else None)
    if root is None:
        raise JsonRpcInvalidParams("the agent works in a workspace folder: open one")
    problem = message.strip()
    if path is not None and isinstance(arg.get("range"), dict):
        span = await _span(ls, {"uri": arg["uri"], "range": arg["range"]})
        rel = _relative(root, span.path)
        problem += f"\n\nThe code in question, {rel} lines {span.start_line + 1}-{span.end_line + 1}:\n" \
                   f"```{span.language}\n{span.code}```"
    assistant = await _assistant(ls)
    loop = asyncio.get_running_loop()
    run_id = uuid.uuid4().hex[:16]
    versions = {doc.uri: doc.version for doc in ls.workspace.text_documents.values()}

    def search(query: str):  # assist thread -> the loop's index search
        return asyncio.run_coroutine_threadsafe(ls.runtime.retrieve(query, 4), loop).result(SEARCH_TIMEOUT_S)

    def on_step(step) -> None:  # assist thread -> loop
        loop.call_soon_threadsafe(ls.protocol.notify, AGENT_STEP, {"runId": run_id, "step": step_dict(step)})

    box = Toolbox(Path(root), trusted=True, sandbox_mode=ls.settings.tests_sandbox, search=search,
                  readable=ls.runtime.readable)
    run = await _agent_run(ls, assistant, max_steps, problem, box, tests, root, on_step, run_id)
    kept = _kept(ls)
    kept[run.id] = (run, box, versions)
    while len(kept) > KEPT_RUNS:
        kept.popitem(last=False)
    reply = run_dict(run)
    for e in reply["edits"]:
        e["uri"] = Path(e.pop("path")).as_uri()
    return reply


async def _agent_run(ls: DeepseekLanguageServer, assistant: Any, max_steps: int, problem: str, box: Toolbox,
                     tests: list[str], root: Path, on_step: Any, run_id: str) -> AgentRun:
    """The run on the assist threads, with work-done progress (its cancel button stops the run)."""
    named = [t if Path(t.split("::")[0]).is_absolute() else str(Path(root) / t) for t in tests]

    def work(cancel=None, on_progress=None) -> AgentRun:
        run = Agent(assistant, max_steps=max_steps).run(problem, box, named, on_step=on_step, cancel=cancel,
                                                       on_progress=on_progress, run_id=run_id)
        _store(ls, run)  # here, not after the await: a run $/cancelRequest stopped is stored too
        return run
    return await _run_with_progress(ls, "deepseek: Agent", work)


def _store(ls: DeepseekLanguageServer, run: AgentRun) -> None:
    try:
        ls.assist.trajectories.save(run)
    except Exception as e:  # a full disk must not lose the reply
        log.warning("agent run %s not stored: %s", run.id, e)


def _relative(root: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return path.name


async def agent_apply(ls: DeepseekLanguageServer, *args: Any) -> dict[str, Any]:
    """``deepseek.agentApply {runId}``: apply a run's verified edits as one versioned workspace edit."""
    run_id = _arg(args).get("runId")
    kept = _kept(ls)
    if not isinstance(run_id, str) or run_id not in kept:
        raise JsonRpcInvalidParams("deepseek.agentApply needs the {runId} of one of this session's latest agent runs")
    run, box, versions = kept[run_id]
    if not run.edits:
        return {"applied": False, "reason": "the run proposed no edit"}
    if not run.verified:
        if run.check is not None and run.check.verdict == "passed":  # the tests pass, but the model did not finish
            return {"applied": False, "reason": f"not applied: the run did not finish ({run.answer}); its edit "
                                                f"passes the tests ({run.check.summary}): run the agent again"}
        why = run.check.summary if run.check is not None else run.answer
        return {"applied": False, "reason": f"not applied: the edit is not verified ({why})"}
    changes = []
    for path in dict.fromkeys(e.path for e in run.edits):
        uri = path.as_uri()
        doc = ls.document(uri)
        now = doc.source if doc is not None else path.read_text(encoding="utf-8", errors="replace")
        if now != box.original(path) or (doc is not None and versions.get(uri, doc.version) != doc.version):
            return {"applied": False, "reason": f"{path.name} changed since the agent read it; nothing was changed "
                                                "(run the agent again)"}
        changes.append(lsp_file_edit(uri, doc.version if doc is not None else None, now, box.text(path)))
    applied, reason = await ls.apply_edit(types.WorkspaceEdit(document_changes=changes), "deepseek: agent fix")
    if applied:
        kept.pop(run_id, None)
    return {"applied": applied, "reason": reason}
