"""Shared fixtures: real tokenizers and the real default model, never stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def deepseek_vocab():
    """DeepSeek-Coder's real tokenizer (vocab-only GGUF from llama.cpp's test models)."""
    from server.engine import LoadedModel

    from .tiny_deepseek import vocab_path
    model = LoadedModel(str(vocab_path()), n_ctx=256, n_threads=1, vocab_only=True)
    yield model
    model.close()


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The default model's GGUF file, assembled from its pip part packages on first use."""
    from server.models import ensure_model_file, resolve_model

    return ensure_model_file(resolve_model(None, None))


@pytest.fixture(scope="session")
def qwen_vocab(default_model_path):
    """Qwen2.5-Coder's real tokenizer, from the default model (vocab only: no weights)."""
    from server.engine import LoadedModel

    model = LoadedModel(str(default_model_path), n_ctx=256, n_threads=1, vocab_only=True)
    yield model
    model.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This test's own user cache directory (index folders, probe verdicts)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def workspace(tmp_path):
    """A small workspace of real code (a module may define its own ``workspace`` instead)."""
    from .helpers import CONFIG_PY, GEOMETRY_JS
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "config.py").write_text(CONFIG_PY)
    (root / "src" / "geometry.js").write_text(GEOMETRY_JS)
    (root / "README.md").write_text("# Demo\n\nReads configuration files and computes areas.\n")
    return root


class LeftRunning(UserWarning):
    """A test left a process or a busy thread behind (see :func:`_leaves_nothing_running`)."""


@pytest.fixture(autouse=True)
def _leaves_nothing_running(request):
    """After each test, nothing it started is still working.

    A server, editor or browser left running, or an engine thread still reading a prompt, takes
    the CPU from every later test: llama.cpp's threads wait for each other at every step, so on
    2 busy cores a model reads ~30 times slower (measured: 188 tokens in 40 s instead of 0.6 s),
    and timing-based tests far from the culprit fail. What a test left behind is reported as a
    warning naming the test; processes it started are killed.
    """
    import threading
    import time
    import warnings

    import psutil

    me = psutil.Process()
    before = {t.native_id for t in threading.enumerate()}
    started = time.time()
    kept = set(me.children(recursive=True))  # a module's or session's fixtures: theirs to end
    yield
    left = []
    for child in set(me.children(recursive=True)) - kept:
        try:
            child.wait(timeout=2)
        except psutil.TimeoutExpired:
            try:
                left.append(" ".join(child.cmdline()[:3]) or child.name())
                child.kill()
            except psutil.Error:
                pass
        except psutil.Error:
            pass
    # This process, idle between tests: which threads the test started still use the CPU; and
    # processes started during the test that left this one's tree (a daemon, an orphan) and work.
    cpu0 = {t.id: t.user_time + t.system_time for t in me.threads()}
    strays = {}
    for p in psutil.process_iter(["create_time"]):
        try:
            if p.pid != me.pid and p not in kept and (p.info["create_time"] or 0) >= started - 1:
                strays[p] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    time.sleep(0.25)
    busy = [t.id for t in me.threads() if t.id not in before
            and t.user_time + t.system_time - cpu0.get(t.id, 0.0) > 0.1]
    names = {t.native_id: t.name for t in threading.enumerate()}
    busy = [names.get(tid, f"native thread {tid}") for tid in busy]
    working = []
    for p, cpu in strays.items():
        try:
            if sum(p.cpu_times()[:2]) - cpu > 0.1:
                working.append(p)
        except psutil.Error:
            pass
    # A process on its way out (a server whose editor just quit, closing its models) is not left
    # running: it gets 2 s to end.
    for p in psutil.wait_procs(working, timeout=2)[1] if working else ():
        try:
            left.append(f"{' '.join(p.cmdline()[:3]) or p.name()} (pid {p.pid}, not ours to kill)")
        except psutil.Error:
            pass
    if left or busy:
        warnings.warn(f"{request.node.nodeid} left work running: processes {left}, busy threads {busy}",
                      LeftRunning, stacklevel=1)
