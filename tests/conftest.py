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
