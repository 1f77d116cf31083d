"""Agent trajectories: stored in a real SQLite file, exported as JSONL with character and token spans
(DeepSeek-Coder's real vocabulary), and the ``export --format trajectories`` command. No model."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server.agent.records import AgentRun, EditCheck, Observation, ProposedEdit, Step, ToolCall
from server.agent.trajectories import SpanTokenizer, TrajectoryStore, export_trajectories, find_tokenizer
from server.models import ModelError

from .tiny_deepseek import vocab_path

FIX = "def mean(xs):\n    return sum(xs) / len(xs)\n"


def _call(name: str, **args) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


def verified_run() -> AgentRun:
    steps = [
        Step(1, "Thought: the test says mean([]) fails; read the function.\n" + _call("read_file", path="stats.py"),
             "the test says mean([]) fails; read the function.", ToolCall("read_file", {"path": "stats.py"}),
             Observation("1 def mean(xs):\n2     return sum(xs) / len(xs)"), seconds=2.5, tokens=31),
        Step(2, "Thought: I will fix it.\n<tool_call>{not json</tool_call>", "I will fix it.", None,
             Observation("malformed tool call: expected a JSON object", ok=False), seconds=1.0, tokens=12),
        Step(3, _call("propose_edit", path="stats.py", old="return sum", new="return sum(xs) / len(xs) if xs else 0"),
             "", ToolCall("propose_edit", {"path": "stats.py", "old": "return sum", "new": "..."}),
             Observation("edit recorded"), seconds=1.5, tokens=40),
        Step(4, "Thought: done — verified ✓\n" + _call("finish", answer="mean of [] is 0 now"), "done — verified ✓",
             ToolCall("finish", {"answer": "mean of [] is 0 now"}), Observation("finished")),
    ]
    return AgentRun("run-ok", "tests/test_stats.py::test_empty fails: ZeroDivisionError", "qwen-1.5b", "agent@v1",
                    steps, "finished", "mean of [] is 0 now", [ProposedEdit(Path("/ws/stats.py"), "return sum", FIX)],
                    EditCheck("passed", "1 test passed", ["tests/test_stats.py::test_empty"]), seconds=5.0)


def failed_run() -> AgentRun:
    # Text a tokenizer splits awkwardly: a multi-byte run, an emoji, 70 spaces (DeepSeek-Coder has a
    # 64-space token, a piece Llama.detokenize silently drops), a tab.
    text = "Thought: héllo 你好 🎉" + " " * 70 + "\tend\n" + _call("run_tests", selector="tests/")
    steps = [Step(1, text, "héllo", ToolCall("run_tests", {"selector": "tests/"}),
                  Observation("Traceback ... ZeroDivisionError 🎉", ok=False), seconds=9.0, tokens=50)]
    return AgentRun("run-budget", "make it faster", "qwen-0.5b", "agent@v1", steps, "budget", "the step budget ran out",
                    seconds=9.0)


@pytest.fixture
def store(tmp_path):
    s = TrajectoryStore(tmp_path / "db" / "assistant.sqlite")
    s.save(verified_run())
    s.save(failed_run())
    yield s
    s.close()


@pytest.fixture(scope="module")
def tokenizer():
    tk = SpanTokenizer(vocab_path())
    yield tk
    tk.close()


def test_runs_are_stored_and_read_back_oldest_first(store, tmp_path):
    assert store.count() == 2
    ok, failed = store.runs()
    assert (ok["id"], failed["id"]) == ("run-ok", "run-budget")
    assert ok["verified"] is True and failed["verified"] is False and failed["check"] is None
    assert ok["check"] == {"verdict": "passed", "summary": "1 test passed",
                           "tests": ["tests/test_stats.py::test_empty"], "failed": []}
    assert ok["edits"] == [{"path": "/ws/stats.py", "old": "return sum", "new": FIX}]
    assert [s["tool"] for s in ok["steps"]] == ["read_file", "malformed", "propose_edit", "finish"]
    assert ok["steps"][1]["args"] is None and ok["steps"][1]["ok"] is False and ok["steps"][0]["tokens"] == 31
    assert (ok["model"], ok["prompt_version"], ok["outcome"]) == ("qwen-1.5b", "agent@v1", "finished")
    assert ok["seconds"] == 5.0
    assert [r["id"] for r in store.runs(only_verified=True)] == ["run-ok"]
    # Saved again (a run that went on): replaced in place, still the oldest, its first time kept.
    again = verified_run()
    again.answer = "changed"
    store.save(again)
    assert store.count() == 2
    first = store.runs()[0]
    assert (first["id"], first["answer"], first["created"]) == ("run-ok", "changed", ok["created"])
    # Another connection (another server process) sees them.
    other = TrajectoryStore(store.path)
    assert other.count() == 2
    other.close()


def test_the_default_file_is_the_assistants_private_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = TrajectoryStore()
    s.save(failed_run())
    assert s.path == tmp_path / "deepseek-lsp" / "assistant.sqlite"
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600 and stat.S_IMODE(s.path.parent.stat().st_mode) == 0o700
    s.close()


def _export(store, tokenizer, **kw) -> list[dict]:
    out = store.path.parent / "out.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        n = export_trajectories(store, f, tokenizer, **kw)
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert n == len(lines)
    return lines


def test_export_marks_only_verified_runs_for_training_with_exact_character_spans(store):
    ok, failed = _export(store, None)
    assert set(ok) == {"id", "problem", "model", "prompt_version", "outcome", "verified", "training", "answer",
                       "tokenizer", "steps", "edits", "check"}
    assert (ok["training"], ok["verified"], failed["training"], failed["verified"]) == (True, True, False, False)
    assert ok["tokenizer"] is None and ok["edits"][0]["new"] == FIX
    runs = {"run-ok": verified_run(), "run-budget": failed_run()}
    for line in (ok, failed):
        for step, source in zip(line["steps"], runs[line["id"]].steps, strict=True):
            text = step["text"]
            assert (step["index"], step["tool"], step["ok"]) == (source.index, source.tool, source.observation.ok)
            spans = {s["kind"]: text[s["start"]:s["end"]] for s in step["spans"]}
            assert all("token_start" not in s for s in step["spans"])
            assert spans["observation"] == "Observation: " + source.observation.text
            assert text.endswith(spans["observation"])
            cut = source.text.find("<tool_call>")
            assert spans["action"] == source.text[cut:].strip() and spans["action"].endswith("</tool_call>")
            thought = source.text[:cut].strip()
            assert spans.get("reason", "") == thought  # step 3 has no thought: no reason span
    assert [s["kind"] for s in ok["steps"][2]["spans"]] == ["action", "observation"]
    assert [line["id"] for line in _export(store, None, only_verified=True)] == ["run-ok"]


def _decode(tokenizer, tokens) -> str:
    return b"".join(tokenizer.native.piece(t) for t in tokens).decode("utf-8", "ignore")


def test_token_offsets_in_deepseek_coder_cover_each_span_and_no_more(store, tokenizer):
    lines = _export(store, tokenizer)
    assert lines[0]["tokenizer"] == "ggml-vocab-deepseek-coder.gguf"
    for line in lines:
        for step in line["steps"]:
            text = step["text"]
            tokens = tokenizer.tokens(text)
            assert _decode(tokenizer, tokens) == text  # long pieces (64 spaces) included
            for s in step["spans"]:
                piece, ts, te = text[s["start"]:s["end"]], s["token_start"], s["token_end"]
                assert 0 <= ts < te <= len(tokens)
                assert piece in _decode(tokenizer, tokens[ts:te])
                assert piece not in _decode(tokenizer, tokens[ts + 1:te])  # the first token is needed
                assert piece not in _decode(tokenizer, tokens[ts:te - 1])  # so is the last
            kinds = [s["kind"] for s in step["spans"]]
            assert kinds[-1] == "observation" and step["spans"][-1]["token_end"] == len(tokens)


def test_character_offsets_of_tokens_that_split_a_character(tokenizer):
    text = "a🎉b é\n"
    tokens, offsets = tokenizer.token_offsets(text)
    assert len(tokens) == len(offsets) and offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(a <= b for a, b in offsets) and all(p[0] <= q[0] and p[1] <= q[1] for p, q in zip(offsets, offsets[1:]))
    # Every character is covered; the emoji's bytes may be spread over several tokens, each covering it.
    covered = set().union(*(range(a, b) for a, b in offsets))
    assert covered == set(range(len(text)))
    emoji = [i for i, (a, b) in enumerate(offsets) if a <= 1 < b]
    assert _decode(tokenizer, [tokens[i] for i in emoji]).find("🎉") >= 0
    _, ts, te = tokenizer.token_spans(text, [("empty", 3, 3)])[0]
    assert ts == te and offsets[ts][1] > 3  # an empty range, at the token after the position
    kind, ts, te = tokenizer.token_spans(text, [("reason", 1, 2)])[0]
    assert (kind, ts, te) == ("reason", emoji[0], emoji[-1] + 1)
    assert tokenizer.n_tokens(text) == len(tokens)


def test_find_tokenizer_takes_a_gguf_file_and_refuses_what_is_not(tmp_path, monkeypatch):
    path, note = find_tokenizer(str(vocab_path()))
    assert path == vocab_path() and "ggml-vocab-deepseek-coder.gguf" in note
    (tmp_path / "notes.gguf").write_text("hello")
    with pytest.raises(ModelError, match="not a GGUF model"):
        find_tokenizer(str(tmp_path / "notes.gguf"))
    with pytest.raises(ModelError, match="neither a GGUF file nor a catalog model"):
        find_tokenizer("no-such-model")
    monkeypatch.setenv("DEEPSEEK_LSP_CATALOG", str(_catalog(tmp_path)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_tokenizer(None)[0] is None
    with pytest.raises(ModelError, match="not installed"):
        find_tokenizer("tiny")


def _catalog(tmp_path) -> Path:
    """A catalog of one model that is not installed here (no pip parts, not in the cache)."""
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"default": "tiny", "models": [{"name": "tiny", "title": "Tiny", "file": "tiny.gguf",
                                                                "sizeBytes": 1000, "sha256": "0" * 64}]}))
    return path


def _cli(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "DEEPSEEK_LSP_CATALOG": str(_catalog(tmp_path))}
    return subprocess.run([sys.executable, "-m", "server", "export", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_export_command_writes_trajectories(tmp_path):
    store = TrajectoryStore(tmp_path / "deepseek-lsp" / "assistant.sqlite")  # where XDG_DATA_HOME puts it
    store.save(verified_run())
    store.save(failed_run())
    store.close()
    done = _cli(tmp_path, "--format", "trajectories", "--tokenizer", str(vocab_path()), "--verified-only")
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert line["id"] == "run-ok" and line["training"] is True and line["tokenizer"] == "ggml-vocab-deepseek-coder.gguf"
    assert all("token_end" in s for step in line["steps"] for s in step["spans"])
    assert "exported 1 agent runs" in done.stderr
    # No tokenizer given and no catalog model installed: character offsets only, and a note says why.
    done = _cli(tmp_path, "--format", "trajectories", "-o", str(tmp_path / "all.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "no catalog model is installed" in done.stderr and done.stdout == ""
    lines = [json.loads(x) for x in (tmp_path / "all.jsonl").read_text("utf-8").splitlines()]
    assert [x["id"] for x in lines] == ["run-ok", "run-budget"] and lines[1]["tokenizer"] is None
    assert all("token_start" not in s for x in lines for step in x["steps"] for s in step["spans"])
    # A tokenizer that is not installed: a clear error, nothing written.
    done = _cli(tmp_path, "--format", "trajectories", "--tokenizer", "tiny")
    assert done.returncode == 1 and "tiny is not installed" in done.stderr and done.stdout == ""
    # The conversations' export is unchanged (the default format).
    done = _cli(tmp_path)
    assert done.returncode == 0 and "exported 0 conversations" in done.stderr
