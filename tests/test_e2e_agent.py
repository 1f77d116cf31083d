"""End to end: the agent with the real default chat model, over stdio and over HTTP (``serve``).

The workspace is a package whose ``add`` subtracts, with the test that shows it. Over stdio one
server answers every test (the chat model loads once): an untrusted workspace is refused; a
run fixes the bug, its steps arrive as they happen and the fix is applied only once its test
passed; a step budget ends a run; ``$/cancelRequest`` stops one and the server stays
responsive; every run can be exported as a trajectory. Over HTTP: the task ``agent`` is
refused without ``--trust-workspace`` and streams its steps with it.

The model is real, so what it writes is not fixed: each test checks the contract whatever the
model did (a run that does not verify is refused by ``deepseek.agentApply`` with its reason),
and the fix test requires the fix only when the run verified.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

from server.assist.sandbox import available as sandbox_available

from .helpers import ServeProcess, start_as_vscode
from .prereqs import APT_INSTALL

pytestmark = [pytest.mark.model,
              pytest.mark.skipif(not sandbox_available()[0],
                                 reason=f"the agent runs tests in bubblewrap: {sandbox_available()[1]}; {APT_INSTALL}")]

OPS = "def add(a, b):\n    return a - b\n"  # one function: a second one (a mul) drew the 1.5B to it
TEST_OPS = "from calc.ops import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
FAILING = "tests/test_ops.py::test_add"
ROOT = Path(tempfile.mkdtemp(prefix="deepseek-agent-"))
DATA = ROOT / "data"  # the server's XDG_DATA_HOME: the stored runs
CONFIG = ClientServerConfig(server_command=[sys.executable, "-m", "server"],
                            server_env={**os.environ, "XDG_DATA_HOME": str(DATA)})
over_stdio = pytest.mark.asyncio(loop_scope="module")  # the tests that share the stdio server
RUNS: list[str] = []  # ids of this module's runs over stdio, for the export test
CODE_IN_QUESTION = "The code in question, calc/ops.py lines 1-2:\n```python\ndef add(a, b):\n    return a - b\n```"
WITH_RANGE: list[str] = []  # the run that was given the lines it is about
CANCELLED: list[str] = []  # the run stopped by $/cancelRequest


def make_workspace(root: Path) -> Path:
    (root / "calc").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "calc" / "__init__.py").write_text("")
    (root / "calc" / "ops.py").write_text(OPS)
    (root / "tests" / "test_ops.py").write_text(TEST_OPS)
    return root


WORKSPACE = make_workspace(ROOT / "ws")


def pytest_output(root: Path) -> subprocess.CompletedProcess:
    """The failing test's output, as the user sees it (our own test file, run here)."""
    return subprocess.run([sys.executable, "-m", "pytest", FAILING, "-q", "-p", "no:cacheprovider"], cwd=root,
                          capture_output=True, text=True, timeout=120)


def problem(root: Path) -> str:
    out = pytest_output(root)
    assert out.returncode == 1, out.stdout + out.stderr
    return f"The test {FAILING} fails:\n\n```\n{out.stdout.strip()[-1500:]}\n```\n\nFind the bug and fix it."


@pytest_lsp.fixture(scope="module", config=CONFIG)
async def client(lsp_client: LanguageClient):
    lsp_client.steps, lsp_client.edits = [], []

    @lsp_client.feature("deepseek/agentStep")
    def agent_step(params):
        lsp_client.steps.append((time.monotonic(), params))

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):  # as an editor does: the test applies it below
        lsp_client.edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    # Not trusted at first; the tests that run the agent trust it (deepseek/workspaceTrust).
    await start_as_vscode(lsp_client, WORKSPACE, {"workspaceTrusted": False, "index": {"embeddings": False}})
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, arg: dict | None = None):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=name, arguments=[arg] if arg is not None else None))


async def trusted(client: LanguageClient) -> None:
    client.protocol.notify("deepseek/workspaceTrust", {"trusted": True})
    assert (await command(client, "deepseek.status"))["workspaceTrusted"] is True


def steps_of(client: LanguageClient, run_id: str) -> list:
    return [p.step for _, p in client.steps if p.runId == run_id]


def assert_run_shape(reply: dict, max_steps: int) -> None:
    """The reply's contract (docs/PROTOCOL.md, deepseek.agent), whatever the model did."""
    assert reply["outcome"] in ("finished", "budget"), reply
    assert reply["model"] == "qwen2.5-coder-1.5b-instruct-q4_k_m" and reply["promptVersion"].startswith("agent@v")
    assert reply["promptVersion"].endswith("+agent-draft@v1") == any(s["draft"] for s in reply["steps"])
    assert 1 <= len(reply["steps"]) <= max_steps and [s["index"] for s in reply["steps"]] == \
        list(range(1, len(reply["steps"]) + 1))
    for s in reply["steps"]:
        assert set(s) == {"index", "thought", "tool", "arguments", "observation", "ok", "seconds", "tokens", "draft"}, s
        assert s["tool"] == "malformed" or isinstance(s["arguments"], dict), s
        assert s["observation"] and len(s["observation"]) <= 2600, s
    assert reply["malformed"] == sum(s["tool"] == "malformed" for s in reply["steps"])
    if reply["outcome"] == "finished":
        assert reply["steps"][-1]["tool"] == "finish" and reply["answer"] == reply["steps"][-1]["arguments"]["answer"]
    else:
        assert len(reply["steps"]) == max_steps and reply["answer"] == f"stopped after {max_steps} steps without " \
                                                                       "finishing", reply
    if reply["edits"]:
        assert reply["check"]["verdict"] in ("passed", "failed", "unverified") and reply["check"]["summary"], reply
        assert all(e["uri"].startswith(WORKSPACE.as_uri() + "/") for e in reply["edits"]), reply["edits"]
    else:
        assert reply["check"] is None and not reply["verified"]
    assert reply["verified"] == (reply["outcome"] == "finished" and bool(reply["edits"])
                                 and reply["check"]["verdict"] == "passed")
    assert (WORKSPACE / "calc" / "ops.py").read_text() == OPS  # the agent never writes


def apply_text_edit(text: str, edit: types.TextDocumentEdit) -> str:
    lines = text.splitlines(keepends=True)
    for e in sorted(edit.edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        start = sum(len(x) for x in lines[:e.range.start.line]) + e.range.start.character
        end = sum(len(x) for x in lines[:e.range.end.line]) + e.range.end.character
        text = text[:start] + e.new_text + text[end:]
        lines = text.splitlines(keepends=True)
    return text


@over_stdio
async def test_an_untrusted_workspace_is_refused_with_how_to_trust_it(client: LanguageClient):
    client.protocol.notify("deepseek/workspaceTrust", {"trusted": False})
    assert (await command(client, "deepseek.status"))["workspaceTrusted"] is False
    with pytest.raises(JsonRpcInvalidParams, match="not trusted") as refused:
        await command(client, "deepseek.agent", {"message": "Fix the failing test.", "tests": [FAILING]})
    assert "initializationOptions.workspaceTrusted" in str(refused.value) and "Workspace Trust" in str(refused.value)
    assert not client.steps
    # Bad arguments are refused before anything runs, trusted or not.
    await trusted(client)
    for arg, says in (({}, "needs {message"), ({"message": "x", "maxSteps": 0}, "maxSteps must be an integer"),
                      ({"message": "x", "tests": "tests/"}, "tests must be a list")):
        with pytest.raises(JsonRpcInvalidParams, match=says):
            await command(client, "deepseek.agent", arg)
    with pytest.raises(JsonRpcInvalidParams, match="runId"):
        await command(client, "deepseek.agentApply", {"runId": "no-such-run"})


@over_stdio
async def test_a_step_budget_ends_the_run(client: LanguageClient):
    await trusted(client)
    t0 = time.monotonic()
    # As the editor's "deepseek: Fix" sends it: the problem, and the lines it is about (their code goes with it).
    reply = await command(client, "deepseek.agent", {
        "message": problem(WORKSPACE), "tests": [FAILING], "maxSteps": 1,
        "uri": (WORKSPACE / "calc" / "ops.py").as_uri(),
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}})
    RUNS.append(reply["runId"])
    WITH_RANGE.append(reply["runId"])
    print(f"one step: {time.monotonic() - t0:.0f} s (model load and the first prompt included)")
    assert len(reply["steps"]) == 1, reply
    assert reply["outcome"] in ("budget", "finished"), reply  # finish may be the one step
    assert_run_shape(reply, 1)
    assert [s.index for s in steps_of(client, reply["runId"])] == [1]


@over_stdio
async def test_a_fix_is_found_verified_and_applied_only_once_its_test_passes(client: LanguageClient):
    await trusted(client)
    t0 = time.monotonic()
    reply = await command(client, "deepseek.agent", {"message": problem(WORKSPACE), "tests": [FAILING],
                                                     "maxSteps": 6})
    RUNS.append(reply["runId"])
    for s in reply["steps"]:
        print(f"step {s['index']} ({s['seconds']} s): {s['thought']!r} {s['tool']} {s['arguments']} -> "
              f"{s['observation'][:200]!r}")
    print(f"fix run: {time.monotonic() - t0:.0f} s, {len(reply['steps'])} steps: "
          f"{[s['tool'] for s in reply['steps']]}, outcome {reply['outcome']}, check {reply['check']}")
    assert_run_shape(reply, 6)
    # Every step was sent as it ended, in order, the same as in the reply.
    streamed = steps_of(client, reply["runId"])
    assert [s.index for s in streamed] == [s["index"] for s in reply["steps"]]
    assert [(s.tool, s.ok, s.observation) for s in streamed] == \
        [(s["tool"], s["ok"], s["observation"]) for s in reply["steps"]]
    tools = [s["tool"] for s in reply["steps"]]
    assert tools[0] != "malformed" or len(tools) > 1, reply
    reports = [r for r in client.progress_reports.values() if r[0].title == "deepseek: Agent"][-1]
    said = [r.message for r in reports if r.kind == "report"]
    # The task shows the function the failing test calls, so the run starts with a draft of its fix.
    assert said[0] == "step 1: drafting a fix" and reply["steps"][0]["draft"], (said, reply["steps"][0])
    steps = reply["steps"]
    if reply["outcome"] == "finished" and len(steps) > 1 and steps[-2]["draft"]:
        # A passing draft: the server finished the run, its answer naming the change made (then the model's words).
        assert steps[-1]["draft"] and steps[-1]["tokens"] == 0 and f"step {len(steps)}: finishing" in said, said
        assert reply["answer"].startswith("In calc/ops.py: `"), reply["answer"]
    if reply["edits"]:
        # The check runs when a proposal passes the failing test (or at the end): it is reported.
        assert "running the tests that cover the proposed edit" in said, said
        # The failing test is run: by its node id, or in its whole file (the file of a covering test).
        assert any(t.endswith((FAILING, FAILING.split("::")[0])) for t in reply["check"]["tests"]), reply["check"]

    edits = len(client.edits)
    applied = await command(client, "deepseek.agentApply", {"runId": reply["runId"]})
    if not reply["verified"]:  # the model did not get there: nothing is applied, and the reply says why
        assert applied["applied"] is False and applied["reason"], applied
        if not reply["edits"]:
            assert applied["reason"] == "the run proposed no edit", applied
        elif reply["check"]["verdict"] == "passed":  # the edit passes, but the model did not call finish
            assert applied["reason"].startswith(f"not applied: the run did not finish ({reply['answer']})"), applied
        else:
            assert applied["reason"] == f"not applied: the edit is not verified ({reply['check']['summary']})"
        assert len(client.edits) == edits
        pytest.xfail(f"the model's run did not verify: {reply['outcome']}, {tools}, check {reply['check']}")
    assert reply["check"]["verdict"] == "passed" and not reply["check"]["failed"], reply["check"]
    assert applied == {"applied": True, "reason": ""}, applied
    [edit] = client.edits[edits:]
    [change] = edit.document_changes
    assert change.text_document.uri == (WORKSPACE / "calc" / "ops.py").as_uri()
    assert change.text_document.version is None  # not open in the editor
    fixed = apply_text_edit(OPS, change)
    assert fixed != OPS
    try:  # the editor's part: the file written; the user's test passes now
        (WORKSPACE / "calc" / "ops.py").write_text(fixed)
        after = pytest_output(WORKSPACE)
        assert after.returncode == 0, (fixed, after.stdout)
    finally:
        (WORKSPACE / "calc" / "ops.py").write_text(OPS)
    # Applied once: the run is no longer kept.
    with pytest.raises(JsonRpcInvalidParams, match="runId"):
        await command(client, "deepseek.agentApply", {"runId": reply["runId"]})


def server_process() -> psutil.Process:
    [proc] = [p for p in psutil.Process().children() if p.cmdline()[1:3] == ["-m", "server"]]
    return proc


@over_stdio
async def test_cancel_stops_the_run_and_the_server_stays_responsive(client: LanguageClient):
    await trusted(client)
    seen = len(client.steps)
    # No failing test (a draft that passes ends a run at its first step): tool turns, written by the model.
    message = "Read calc/ops.py, then check with execute_python what add(2, 3) and neg(4) return, then finish."
    fut = client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(
        command="deepseek.agent", arguments=[{"message": message, "maxSteps": 6}]),
        msg_id="agent-to-cancel")
    deadline = time.monotonic() + 240
    while len(client.steps) == seen:
        assert time.monotonic() < deadline, "no step within 240 s"
        assert not fut.done(), fut.result()
        await asyncio.sleep(0.1)
    run_id = client.steps[seen][1].runId
    assert client.steps[seen][1].step.seconds > 1  # written by the model, not taken from the response cache
    CANCELLED.append(run_id)
    client.protocol.notify("$/cancelRequest", types.CancelParams(id="agent-to-cancel"))
    sent = len(steps_of(client, run_id))
    t0 = time.monotonic()
    try:
        reply = await asyncio.wait_for(asyncio.wrap_future(fut), 30)
        assert reply["outcome"] == "cancelled" and reply["runId"] == run_id, reply
    except JsonRpcRequestCancelled:
        pass
    print(f"cancel answered in {time.monotonic() - t0:.1f} s")
    t1 = time.monotonic()
    assert (await command(client, "deepseek.status"))["workspaceTrusted"] is True
    assert time.monotonic() - t1 < 5
    # The run itself stopped (within a token, a prompt chunk or a tool run): the server soon rests.
    proc, rests = server_process(), None
    while rests is None and time.monotonic() - t0 < 30:
        cpu0 = sum(proc.cpu_times()[:2])
        await asyncio.sleep(1)
        if sum(proc.cpu_times()[:2]) - cpu0 < 0.15:
            rests = time.monotonic() - t0
    assert rests is not None, "the server still works 30 s after the cancel"
    print(f"the server rests {rests:.1f} s after the cancel")
    await asyncio.sleep(2)  # no later step comes
    assert len(steps_of(client, run_id)) <= sent + 1  # at most the step whose tool the cancel stopped


def exported(data_home: Path) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    """``deepseek-lsp export --format trajectories`` of the runs a server stored under ``data_home``, by id."""
    out = subprocess.run([sys.executable, "-m", "server", "export", "--format", "trajectories"],
                         env={**os.environ, "XDG_DATA_HOME": str(data_home)}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return {line["id"]: line for line in map(json.loads, out.stdout.splitlines())}, out


@over_stdio
async def test_every_run_is_exported_as_a_trajectory(client: LanguageClient):
    if not RUNS:  # run alone: one short run to export
        await trusted(client)
        RUNS.append((await command(client, "deepseek.agent", {"message": problem(WORKSPACE), "maxSteps": 1}))["runId"])
    lines, out = exported(DATA)
    for run_id in RUNS:
        line = lines[run_id]
        assert line["problem"].startswith(f"The test {FAILING} fails") and line["steps"], line
        assert line["training"] == line["verified"] and line["prompt_version"].startswith("agent@v")
        for step in line["steps"]:
            kinds = [s["kind"] for s in step["spans"]]
            assert kinds[-1] == "observation" and step["text"][step["spans"][-1]["start"]:].startswith("Observation: ")
            if line["tokenizer"] is not None:
                assert all(s["token_end"] >= s["token_start"] for s in step["spans"]), step
    assert f"exported {len(lines)} agent runs" in out.stderr
    for run_id in CANCELLED:  # every run is stored, a cancelled one too (with the steps it took)
        assert lines[run_id]["outcome"] == "cancelled" and lines[run_id]["steps"], lines.get(run_id)
    for run_id in WITH_RANGE:  # the lines the editor named went with the problem
        assert CODE_IN_QUESTION in lines[run_id]["problem"], lines[run_id]["problem"]


# -- over HTTP -----------------------------------------------------------------------------------------
def _post(server: ServeProcess, body: dict, **kw) -> httpx.Response:
    return httpx.post(server.base + "/v1/chat/completions", json=body, timeout=600, **kw,
                      headers={"Authorization": f"Bearer {server.token}", "X-Task-Type": "agent"})


def test_http_agent_is_refused_without_trust_workspace(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    server = ServeProcess(ws, tmp_path / "data", "--set", "index.enabled=false")
    try:
        r = _post(server, {"messages": [{"role": "user", "content": f"Fix {FAILING}."}]})
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "untrusted_workspace" and "--trust-workspace" in error["message"], error
    finally:
        server.stop()


def test_http_agent_streams_its_steps_and_ends_with_the_run(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    server = ServeProcess(ws, tmp_path / "data", "--trust-workspace", "--set", "index.embeddings=false")
    t0 = time.monotonic()
    try:
        bad = _post(server, {"messages": [{"role": "user", "content": "x"}], "max_steps": 99})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_steps", bad.text
        chunks = []
        body = {"model": "deepseek-chat", "stream": True, "max_steps": 2, "tests": [FAILING],
                "messages": [{"role": "user", "content": problem(ws)}]}
        with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=600,
                          headers={"Authorization": f"Bearer {server.token}", "X-Task-Type": "agent"}) as r:
            assert r.status_code == 200 and r.headers["x-deepseek-task"] == "agent", r.read()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    chunks.append(line[6:])
    finally:
        server.stop()
    print(f"HTTP run: {time.monotonic() - t0:.0f} s")
    assert chunks[-1] == "[DONE]"
    events = [json.loads(c) for c in chunks[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    steps = [e["deepseek_step"] for e in events if "deepseek_step" in e]
    run = events[-1]["agent"]
    assert run is not None and [e for e in events if "agent" in e] == [events[-1]]
    assert 1 <= len(steps) <= 2 and steps == run["steps"], (steps, run)
    for e in events:
        if "deepseek_step" in e:  # the step in Markdown for a plain OpenAI client
            step = e["deepseek_step"]
            label = "" if not step["draft"] else " (the server's finish, after the passing draft)" \
                if step["tool"] == "finish" else " (draft)"
            assert e["choices"][0]["delta"]["content"].startswith(f"**Step {step['index']}{label}.**")
    assert run["outcome"] in ("finished", "budget") and run["runId"], run
    assert events[-1]["choices"][0]["finish_reason"] == ("stop" if run["outcome"] == "finished" else "length")
    assert all(Path(e["path"]).is_relative_to(ws) for e in run["edits"]), run["edits"]
    if run["edits"]:
        assert run["check"]["verdict"] in ("passed", "failed", "unverified") and run["check"]["summary"], run
    assert (ws / "calc" / "ops.py").read_text() == OPS  # nothing is written over HTTP
    stored = exported(tmp_path / "data")[0][run["runId"]]
    assert stored["outcome"] == run["outcome"] and len(stored["steps"]) == len(run["steps"]), stored
