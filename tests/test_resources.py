import pytest

from server.resources import OVERHEAD_MB, ModelShape, check_memory

# general.architecture and shape keys of the default model (Qwen2.5-Coder-0.5B), as llama.cpp reports them.
QWEN_05B = {
    "general.architecture": "qwen2", "qwen2.block_count": "24", "qwen2.context_length": "32768",
    "qwen2.embedding_length": "896", "qwen2.attention.head_count": "14", "qwen2.attention.head_count_kv": "2",
}


def test_kv_cache_size_from_gguf_metadata():
    shape = ModelShape.from_metadata(QWEN_05B)
    assert (shape.n_layers, shape.n_kv_heads, shape.head_dim_k, shape.n_ctx_train) == (24, 2, 64, 32768)
    # 24 layers x 2 KV heads x (64 + 64) x 2 bytes = 12,288 bytes per token.
    assert shape.kv_cache_bytes(4096) == 12_288 * 4096


def test_explicit_key_and_value_lengths_win():
    meta = dict(QWEN_05B, **{"qwen2.attention.key_length": "128", "qwen2.attention.value_length": "96"})
    assert ModelShape.from_metadata(meta).kv_cache_bytes(1) == 24 * 2 * (128 + 96) * 2


def test_missing_metadata_is_a_clear_error():
    with pytest.raises(ValueError, match="qwen2.block_count"):
        ModelShape.from_metadata({k: v for k, v in QWEN_05B.items() if k != "qwen2.block_count"})


def test_ram_limit_decides_and_the_message_has_figures_and_fix():
    shape = ModelShape.from_metadata(QWEN_05B)
    check = check_memory(491_400_064, shape, 4096, ram_limit_mb=100)
    assert not check.fits
    assert round(check.needed_mb) == round(491_400_064 / 2**20 + 48 + OVERHEAD_MB)
    text = check.explain("qwen")
    assert "resources.ramLimitMb is 100 MB" in text and "KV cache 48 MB for n_ctx 4096" in text
    assert "Fix: choose a smaller model" in text and "lower model.nCtx" in text
    assert check_memory(491_400_064, shape, 4096, ram_limit_mb=100_000).fits
