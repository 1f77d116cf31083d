"""``deepseek-lsp serve``: the OpenAI-compatible endpoint, checked with the ``openai`` client against the real
process on loopback and the real default model; and its guard (token, Host, Origin).

One server for the module (its model loads once). Requests use temperature 0 (the server is greedy anyway).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.assist import AssistStore

from .helpers import CONFIG_PY, GEOMETRY_JS, ServeProcess

pytestmark = pytest.mark.model

ASSISTANT_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"
SECRET = "sk-live-9f8e7d6c5b4a39281706"
BILLING_PY = textwrap.dedent(f'''\
    """Payment gateway billing client."""

    GATEWAY_API_KEY = "{SECRET}"


    def charge_invoice(invoice, amount):
        """Charge an invoice through the payment gateway."""
        return {{"invoice": invoice, "amount": amount, "key": GATEWAY_API_KEY}}
    ''')


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    ws = root / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "config.py").write_text(CONFIG_PY)
    (ws / "src" / "geometry.js").write_text(GEOMETRY_JS)
    (ws / "src" / "billing.py").write_text(BILLING_PY)       # code with a credential in it
    (ws / ".env").write_text(f"PAYMENT_GATEWAY_KEY={SECRET}\n")  # a secret file by its name
    # No time cap to speak of: on a busy shared machine a capped suggestion would be cut short.
    server = ServeProcess(ws, root / "data", "--set", "index.embeddings=false", "--set",
                          "completion.manualMaxTimeMs=120000")
    yield server, ws, root / "data"
    server.stop()


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    server, _, _ = served
    return openai.OpenAI(base_url=server.base + "/v1", api_key=server.token, timeout=300, max_retries=0)


def _auth(server: ServeProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def test_models_list_names_the_task_aliases_and_the_default_model(client):
    models = {m.id: m for m in client.models.list()}
    for task in ("completion", "chat", "explain", "refactor", "tests", "rag-code"):
        assert f"deepseek-{task}" in models
    assert "qwen2.5-coder-0.5b-instruct-q4_k_m" in models
    # chatModel is not set: the catalog's assistant model (the test extra installs it; this machine has the memory)
    assert models["deepseek-chat"].model_extra["model"] == ASSISTANT_MODEL
    # Context windows: the completion model's model.nCtx; the chat model's is sized when it loads (chat.nCtx 0).
    assert models["deepseek-completion"].model_extra["context_length"] == 4096
    assert models["deepseek-chat"].model_extra["context_length"] in (None, 32768)


def test_a_long_prompt_reports_its_reading_and_the_chat_context_is_sized_to_the_model(client, served):
    server, _, _ = served
    # ~1,250 tokens with the chunks retrieved: over a thousand, so the stream reports its progress as
    # server-sent comments (which OpenAI clients skip), then the answer comes as usual.
    code = "\n\n".join(f"def step_{i}(value):\n    return value * {i} + {i * 7} - step_{i - 1}(value // 2)"
                        for i in range(1, 41))
    body = {"model": "deepseek-chat", "max_tokens": 8, "stream": True, "messages": [
        {"role": "user", "content": f"{code}\n\nWhich function is defined last above? Answer with its name."}]}
    comments, data = [], []
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, headers=_auth(server),
                      timeout=600) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(": reading"):  # (sse-starlette's own comments are pings)
                comments.append(line)
            elif line.startswith("data: "):
                data.append(line[6:])
    assert comments, "no progress while the prompt was read"
    assert all(c.startswith(": reading the prompt: ") and c.endswith(" tokens") for c in comments), comments
    read, total = map(int, comments[-1].removeprefix(": reading the prompt: ").removesuffix(" tokens").split(" of "))
    assert 1024 <= total <= 2500 and 0 < read <= total
    assert data[-1] == "[DONE]" and json.loads(data[-2])["usage"]["prompt_tokens"] >= total
    # The chat model is loaded now: its context is what it was trained for (32k), the memory allowing.
    models = {m.id: m for m in client.models.list()}
    assert models["deepseek-chat"].model_extra["context_length"] == 32768
    assert models[ASSISTANT_MODEL].model_extra["context_length"] == 32768


def test_fim_completion_with_suffix_fills_the_hole(client):
    prefix = "def fib(n):\n    "
    suffix = "\n\n\nprint(fib(10))\n"
    r = client.completions.create(model="deepseek-completion", prompt=prefix, suffix=suffix, max_tokens=64,
                                  temperature=0, extra_body={"language": "python"})
    text = r.choices[0].text
    assert text.strip(), r
    ast.parse(prefix + text + suffix)            # the hole is filled with code that fits what is around it
    assert "fib(" in text or "return" in text, text
    assert r.model == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert r.system_fingerprint == "fim-qwen2.5-coder"
    assert r.usage.prompt_tokens > 10 and r.usage.completion_tokens > 0
    assert r.choices[0].finish_reason in ("stop", "length")
    # The same request streamed: the pipeline's type-through cache answers it, as a server-sent event.
    chunks = list(client.completions.create(model="deepseek-completion", prompt=prefix, suffix=suffix, max_tokens=64,
                                            stream=True, extra_body={"language": "python"}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_concurrent_completions_without_a_path_do_not_cancel_each_other(served):
    """Two clients, no ``path``: each request is its own document, so neither supersedes the other."""
    server, _, _ = served
    stamp = int(time.time())
    prompts = [f"def circle_area_{stamp}(radius):\n    ", f"def is_palindrome_{stamp}(text):\n    "]
    start = threading.Barrier(len(prompts))
    replies: dict[int, httpx.Response] = {}

    def ask(i: int) -> None:
        start.wait()
        replies[i] = httpx.post(server.base + "/v1/completions", headers=_auth(server), timeout=300, json={
            "prompt": prompts[i], "suffix": "\n", "max_tokens": 48, "language": "python"})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for i in range(len(prompts)):
        assert replies[i].status_code == 200, replies[i].text
        assert replies[i].json()["choices"][0]["text"].strip(), (prompts[i], replies[i].json())


def test_chat_answers_from_the_workspace_with_references(client, served):
    _, ws, _ = served
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-chat", temperature=0, max_tokens=120,
        messages=[{"role": "user", "content": "How does read_config parse each line of the file?"}])
    r = raw.parse()
    answer = r.choices[0].message.content
    assert "read_config" in answer or "partition" in answer, answer
    assert r.model == ASSISTANT_MODEL and r.system_fingerprint == "chat@v3"
    assert raw.headers["x-deepseek-prompt-version"] == "chat@v3" and raw.headers["x-deepseek-task"] == "chat"
    assert r.usage.prompt_tokens > 50 and r.usage.completion_tokens > 0
    refs = r.model_extra["references"]
    assert any(ref["path"] == str(ws / "src" / "config.py") and ref["start_line"] <= 7 <= ref["end_line"]
               for ref in refs), refs
    assert all(ref["uri"].startswith("file://") for ref in refs)


def test_streaming_explain_routed_by_header(client):
    stream = client.chat.completions.create(
        model="qwen2.5-coder-0.5b-instruct-q4_k_m", temperature=0, max_tokens=60, stream=True,
        messages=[{"role": "user", "content": "Explain what circleArea in geometry.js computes."}],
        extra_headers={"X-Task-Type": "explain"})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 3, "the answer came in one piece, not streamed"
    assert "area" in text.lower() or "circle" in text.lower(), text
    assert {c.system_fingerprint for c in chunks} == {"explain@v2"}
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.usage is not None and last.usage.completion_tokens > 0


def test_secrets_are_never_sent_and_masked_in_answers(client, served):
    _, ws, _ = served
    r = client.chat.completions.create(
        model="deepseek-rag-code", temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "What is GATEWAY_API_KEY, the payment gateway api key of billing?"}])
    refs = r.model_extra["references"]
    billing = [ref for ref in refs if ref["path"] == str(ws / "src" / "billing.py")]
    assert billing, refs  # the file's code without the credential is there (charge_invoice) ...
    assert not any(ref["start_line"] <= 3 <= ref["end_line"] for ref in billing), refs  # ... its line 3 is not
    assert str(ws / ".env") not in [ref["path"] for ref in refs]
    assert SECRET not in r.choices[0].message.content
    echo = client.chat.completions.create(
        model="deepseek-chat", temperature=0, max_tokens=40, messages=[
            {"role": "user", "content": "Repeat exactly this line and nothing else: password = hunter2hunter2xyz"}])
    content = echo.choices[0].message.content
    assert "hunter2hunter2xyz" not in content and "<redacted>" in content, content


def test_a_real_tool_the_llm_command_streams_an_answer(served, tmp_path):
    """Simon Willison's ``llm`` (PyPI), configured the way its docs say for an OpenAI-compatible server."""
    server, _, _ = served
    llm = shutil.which("llm", path=str(Path(sys.executable).parent))
    if llm is None:
        pytest.skip("needs the llm command: pip install llm==0.36 (in the test extra)")
    home = tmp_path / "llm"
    home.mkdir()
    (home / "extra-openai-models.yaml").write_text(
        f'- model_id: deepseek-lsp\n  model_name: deepseek-explain\n  api_base: "{server.base}/v1"\n'
        "  api_key_name: deepseek\n")
    (home / "keys.json").write_text(json.dumps({"deepseek": server.token}))
    out = subprocess.run([llm, "-m", "deepseek-lsp", "What does expand_home in config.py return?"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "LLM_USER_PATH": str(home)})
    assert out.returncode == 0, out.stderr
    assert "home" in out.stdout.lower(), out.stdout


def test_errors_have_openai_shape(client, served):
    server, _, _ = served
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found" and e.value.type == "not_found_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="deepseek-chat", messages=[{"role": "robot", "content": "hi"}])
    assert e.value.param == "messages[0]"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="deepseek-completion", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "wrong_endpoint"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="deepseek-completion", prompt="x = ", max_tokens=100000)
    assert e.value.param == "max_tokens"
    for body, headers in ((b"{not json", {}), (b"[1, 2]", {}), (b'{"messages": []}', {}),
                          (b'{"messages": [{"role": "user", "content": "hi"}]}', {"X-Task-Type": "poetry"})):
        resp = httpx.post(server.base + "/v1/chat/completions", content=body, headers={**_auth(server), **headers})
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    resp = httpx.get(server.base + "/v1/nothing-here", headers=_auth(server))
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"


def _metric(server: ServeProcess, name: str, **labels: str) -> float:
    text = httpx.get(server.base + "/metrics", headers=_auth(server)).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_client_that_disconnects_cancels_its_generation(client, served):
    server, _, data = served
    log_start = len(server.log.read_text())
    before = _metric(server, "deepseek_requests_total", task="chat", outcome="cancelled")
    asked = time.time()
    stream = client.chat.completions.create(
        model="deepseek-chat", max_tokens=700, stream=True,
        messages=[{"role": "user", "content": "Explain read_config line by line, then write twenty pytest tests "
                                              f"for it with their full code ({asked})."}])
    got = 0
    for chunk in stream:
        got += bool(chunk.choices and chunk.choices[0].delta.content)
        if got >= 3:
            break
    stream.close()
    store = AssistStore(data / "deepseek-lsp" / "assistant.sqlite")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [r for r in store.metric_rows(asked) if r.task == "chat" and not r.cache_hit]
        if rows and _metric(server, "deepseek_requests_total", task="chat", outcome="cancelled") > before:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the disconnect did not cancel the generation")
    assert rows[-1].output_tokens < 700, rows  # it stopped early: the engine is free again
    # A non-streaming request whose client gives up is cancelled too.
    before = _metric(server, "deepseek_requests_total", task="chat", outcome="cancelled")
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.base + "/v1/chat/completions", headers=_auth(server), timeout=2.0, json={
            "model": "deepseek-chat", "max_tokens": 700,
            "messages": [{"role": "user", "content": "Write thirty pytest tests for read_config, one per edge case, "
                                                     f"each with its full code and a comment ({asked})."}]})
    deadline = time.monotonic() + 30
    while _metric(server, "deepseek_requests_total", task="chat", outcome="cancelled") <= before:
        assert time.monotonic() < deadline, "the non-streaming request was not cancelled"
        time.sleep(0.3)
    # A disconnect is no error: one quiet line each, no traceback.
    logged = server.log.read_text()[log_start:]
    assert logged.count("chat request cancelled: the client disconnected") == 2, logged
    assert "Traceback" not in logged and " ERROR " not in logged, logged


def test_metrics_in_prometheus_format(client, served):
    server, _, _ = served
    assert _metric(server, "deepseek_request_seconds_count", task="completion",
                   model="qwen2.5-coder-0.5b-instruct-q4_k_m") >= 1
    assert _metric(server, "deepseek_tokens_total", task="chat", kind="completion") > 0
    assert _metric(server, "deepseek_requests_total", task="chat", outcome="ok") >= 2


# -- the guard -----------------------------------------------------------------------------
def test_requests_without_the_token_are_refused(served):
    server, _, _ = served
    for path in ("/v1/models", "/metrics", "/", "/history", "/static/htmx.min.js"):
        r = httpx.get(server.base + path)
        assert r.status_code == 401, (path, r.status_code)
    r = httpx.get(server.base + "/v1/models", headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_token"
    r = httpx.post(server.base + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401


def test_a_forged_host_is_refused(served):
    server, _, _ = served
    for host in ("evil.example:80", f"evil.example:{server.port}", "127.0.0.1", f"127.0.0.2:{server.port}"):
        r = httpx.get(server.base + "/v1/models", headers={**_auth(server), "Host": host})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host", host
    assert httpx.get(f"http://localhost:{server.port}/v1/models", headers=_auth(server)).status_code == 200


def test_another_origin_is_refused_and_no_cors_is_offered(served):
    server, _, _ = served
    for origin in ("http://evil.example", f"http://evil.example:{server.port}", "null"):
        r = httpx.get(server.base + "/v1/models", headers={**_auth(server), "Origin": origin})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin", origin
        pre = httpx.options(server.base + "/v1/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    ok = httpx.get(server.base + "/v1/models", headers={**_auth(server), "Origin": server.base})
    assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers


def test_the_token_in_the_url_becomes_a_cookie(served):
    server, _, _ = served
    with httpx.Client(base_url=server.base) as browser:
        r = browser.get(f"/history?token={server.token}&q=x")
        assert r.status_code == 303 and r.headers["location"] == "/history?q=x"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/history").status_code == 200  # the cookie now
    assert httpx.get(server.base + f"/v1/models?token={server.token}").status_code == 303


def test_another_interface_needs_an_explicit_flag(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "server", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--workspace", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr
    server = ServeProcess(tmp_path, tmp_path / "data", "--host", "0.0.0.0", "--allow-remote",
                          "--set", "index.enabled=false")
    try:
        deadline = time.monotonic() + 30
        while "WARNING" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        warning = server.log.read_text()
        assert "unencrypted" in warning and "SSH tunnel" in warning and "TLS proxy" in warning, warning
        assert "--allowed-host" in warning, warning  # other machines' Host header needs it
        assert httpx.get(server.base + "/v1/models", headers=_auth(server)).status_code == 200
    finally:
        server.stop()
