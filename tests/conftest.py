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
