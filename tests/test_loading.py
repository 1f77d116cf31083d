"""Loading a model without trusting it: real probe children that really die, with the real default model.

The test switches of :mod:`server.engine.load_configs` make the probe child kill itself with a real
SIGSEGV (an invalid memory read) after loading, where llama.cpp's AMX fault strikes.
Nothing about the probe's outcome is mocked: the parent sees a child die by a signal.
Every test keeps its verdicts and markers in its own cache directory (XDG_CACHE_HOME).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server import engine
from server.engine import crash_guard
from server.engine.load_configs import ENV_CRASH_IN_LOAD, ENV_PROBE_CRASH, ENV_PROBE_TIMEOUT, ModelCrashes

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
HOLE = '''import os


def config_path(name):
    """The path of the config file called name, in the user's home."""
    return os.path.join(os.path.expanduser("~"), name)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\\n") for line in f]


def count_lines(path):
    return len(read_lines(path))
'''


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """This test's own cache directory: its verdicts and crash markers only."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv(ENV_PROBE_CRASH, raising=False)
    return cache / "deepseek-lsp" / "probe"


@pytest.mark.parametrize("cpu", ["this CPU", "a CPU where the default load crashes"])
def test_the_first_configuration_that_works_here_is_chosen_and_decodes(default_model_path, own_cache, monkeypatch,
                                                                        cpu):
    # What the product promises on every CPU (on some, llama.cpp's default load crashes: AMX):
    # configurations are tried in order, the first that loads and decodes in a child is used.
    if cpu != "this CPU":
        monkeypatch.setenv(ENV_PROBE_CRASH, "first")  # the child really dies by SIGSEGV in "default"
    verdict = engine.choose_config(default_model_path, "generate", 2)
    assert verdict.config is not None and verdict.source == "probe", verdict
    assert [r.config for r in verdict.tried] == list(engine.CONFIG_NAMES[:len(verdict.tried)])
    *failed, chosen = verdict.tried
    assert chosen.config == verdict.config and chosen.ok and chosen.outcome == "ok", chosen
    assert chosen.prompt_tokens_per_s and chosen.prompt_tokens_per_s > 10
    assert not any(r.ok for r in failed)
    if cpu != "this CPU":
        assert failed and failed[0].outcome == "crashed (SIGSEGV)"


def test_a_probe_child_that_dies_is_survived_and_the_next_configuration_used(default_model_path, own_cache,
                                                                              monkeypatch):
    monkeypatch.setenv(ENV_PROBE_CRASH, "first")
    verdict = engine.choose_config(default_model_path, "generate", 2)
    assert [r.config for r in verdict.tried] == ["default", "no-repack"]
    assert verdict.tried[0].outcome == "crashed (SIGSEGV)" and not verdict.tried[0].ok
    assert verdict.config == "no-repack" and verdict.source == "probe"
    # Remembered: the next start reads the verdict and starts no child.
    t0 = time.monotonic()
    again = engine.choose_config(default_model_path, "generate", 2)
    assert again.source == "cache" and again.config == "no-repack"
    assert time.monotonic() - t0 < 0.5
    # And the model loads in this process with that configuration and really decodes.
    llm, guard, used = engine.load_llama(default_model_path, kind="generate", n_threads=2, n_ctx=512)
    try:
        assert used.config == "no-repack" and guard.armed and guard.path.exists()
        llm.eval(llm.tokenize(b"def add(a, b):\n    return"))
        assert llm.detokenize([llm.sample(temp=0.0)]).strip()
        for _ in range(engine.GUARDED_DECODES):
            guard.decoded()
        assert not guard.path.exists()  # trusted after its first decodes
    finally:
        llm.close()
        guard.disarm()


def test_when_every_configuration_dies_loading_says_so(default_model_path, own_cache, monkeypatch):
    monkeypatch.setenv(ENV_PROBE_CRASH, "all")
    with pytest.raises(ModelCrashes) as caught:
        engine.load_llama(default_model_path, kind="generate", n_threads=2, n_ctx=512)
    verdict = caught.value.verdict
    assert verdict.config is None
    assert [(r.config, r.outcome) for r in verdict.tried] == [
        (name, "crashed (SIGSEGV)") for name in engine.CONFIG_NAMES]
    message = str(caught.value)
    assert "every load configuration" in message and "Fix:" in message and "GGML_NATIVE=OFF" in message
    # Not probed again at the next start (each probe would crash again): the verdict is cached.
    assert engine.choose_config(default_model_path, "generate", 2).source == "cache"


def test_a_hung_probe_is_stopped_at_its_time_limit(default_model_path, own_cache, monkeypatch):
    monkeypatch.setenv(ENV_PROBE_CRASH, "hang-first")
    # The limit applies to every probe: it must leave the next configuration's (a few seconds on an
    # idle machine) time to pass on a busy one, or that one times out too (seen under a full suite).
    monkeypatch.setenv(ENV_PROBE_TIMEOUT, "25")
    t0 = time.monotonic()
    verdict = engine.choose_config(default_model_path, "generate", 2)
    assert verdict.tried[0].outcome == "timed out after 25 s"
    assert verdict.config == "no-repack"
    assert time.monotonic() - t0 < 25 + 60  # the hung child was stopped, not waited for


def test_a_forced_configuration_is_used_without_a_probe(default_model_path, own_cache, monkeypatch):
    monkeypatch.setenv(ENV_PROBE_CRASH, "all")  # a probe would fail everything
    verdict = engine.choose_config(default_model_path, "generate", 2, "no-repack")
    assert verdict.config == "no-repack" and verdict.source == "setting" and not verdict.tried


def test_the_embedding_model_is_probed_too(own_cache, monkeypatch):
    from index.embedding import Embedder, EmbeddingUnavailable, ensure_embedding_model

    path = ensure_embedding_model()
    monkeypatch.setenv(ENV_PROBE_CRASH, "first")
    embedder = Embedder(path, n_threads=2)
    try:
        assert embedder.verdict.config == "no-repack"
        assert embedder.verdict.tried[0].outcome == "crashed (SIGSEGV)"
        vectors = embedder.embed(["def read_config(path):", "parse a configuration file"])
        assert vectors.shape == (2, 384) and abs(float((vectors[0] ** 2).sum()) - 1) < 1e-3
    finally:
        embedder.close()
    monkeypatch.setenv(ENV_PROBE_CRASH, "all")
    with pytest.raises(EmbeddingUnavailable, match="semantic search is off"):
        Embedder(path, n_threads=1)


def _complete(model: Path, file: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """README's main job, ``deepseek-lsp complete``, in a child process."""
    return subprocess.run([sys.executable, "-m", "server", "complete", str(file), "--line", "6", "--col", "12",
                           "--set", f"model.path={model}"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)


def test_a_start_after_a_crash_during_load_probes_again_instead_of_crashing(default_model_path, own_cache,
                                                                           tmp_path):
    file = tmp_path / "paths.py"
    file.write_text(HOLE.replace('    return os.path.join(os.path.expanduser("~"), name)\n', "    return \n"))
    env = {**os.environ}
    # 1. The probe chooses the first configuration that works on this CPU, then the process dies
    # while loading it (SIGSEGV).
    crashed = _complete(default_model_path, file, {**env, ENV_CRASH_IN_LOAD: "1"})
    assert crashed.returncode == -signal.SIGSEGV, crashed.stderr
    markers = list((own_cache / "markers").glob("*.json"))
    assert len(markers) == 1
    died_in = json.loads(markers[0].read_text())["config"]
    (chosen,) = json.loads((own_cache / "verdicts.json").read_text()).values()
    assert chosen["config"] == died_in
    # 2. The next start sees the marker, does not trust that configuration again, and answers.
    ok = _complete(default_model_path, file, env)
    assert ok.returncode == 0, ok.stderr
    assert "os.path" in ok.stdout or "name" in ok.stdout, ok.stdout
    verdicts = json.loads((own_cache / "verdicts.json").read_text())
    (verdict,) = verdicts.values()
    assert verdict["config"] is not None and verdict["config"] != died_in
    assert "died while loading" in verdict["died"][died_in]
    assert not list((own_cache / "markers").glob("*.json"))  # a normal exit leaves no marker


def test_a_process_killed_while_its_marker_is_armed_keeps_the_configuration_a_crash_does_not(own_cache):
    # A real process arms a crash marker, as a server does before its first decodes, then is
    # killed (SIGKILL: the editor giving up on it, the out-of-memory killer, a test's teardown).
    arm = ("import os, signal\nfrom server.engine import crash_guard\n"
           "crash_guard.CrashGuard('k', 'default').arm('running its first decodes')\n")
    killed = subprocess.run([sys.executable, "-c", arm + "os.kill(os.getpid(), signal.SIGKILL)\n"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list((own_cache / "markers").glob("k-*.json"))) == 1
    assert crash_guard.dead_markers("k") == {}  # no crash report: not the configuration's fault
    assert not list((own_cache / "markers").iterdir())
    # The same, but the process dies in native code (a real SIGSEGV): faulthandler's report is
    # in the fault file, and the configuration is not trusted again.
    crashed = subprocess.run([sys.executable, "-c", arm + "crash_guard.segfault()\n"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -signal.SIGSEGV, crashed.stderr
    died = crash_guard.dead_markers("k")
    assert list(died) == ["default"] and "died while running its first decodes" in died["default"]
    assert not list((own_cache / "markers").iterdir())


def test_a_crash_in_a_test_load_shows_the_user_one_quiet_line_and_keeps_the_report_in_the_log(
        default_model_path, own_cache, tmp_path, monkeypatch):
    # On an AMX CPU the first start's probe child dies by SIGSEGV in "default": working as designed.
    file = tmp_path / "paths.py"
    file.write_text(HOLE.replace('    return os.path.join(os.path.expanduser("~"), name)\n', "    return \n"))
    state = tmp_path / "state"
    out = _complete(default_model_path, file, {**os.environ, ENV_PROBE_CRASH: "first", "XDG_STATE_HOME": str(state)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert "Fatal Python error" not in out.stderr and "Traceback" not in out.stderr and 'File "' not in out.stderr
    said = [line for line in out.stderr.splitlines() if "crashed" in line]
    assert len(said) == 1 and "trying the next one" in said[0], out.stderr
    log_text = "".join(p.read_text() for p in state.rglob("*.log"))
    assert "Fatal Python error: Segmentation fault" in log_text
