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


def test_a_context_sized_here_is_the_trained_one_at_most_32k_halved_until_it_fits():
    from server.resources import AUTO_MAX_CTX, AUTO_MIN_CTX, fitted_n_ctx

    shape, size = ModelShape.from_metadata(QWEN_05B), 491_400_064
    file_mb = size / 2**20
    # 12,288 bytes of KV cache per token: 384 MB at 32k, 192 MB at 16k, 96 MB at 8k.
    assert fitted_n_ctx(size, shape, ram_limit_mb=100_000) == AUTO_MAX_CTX == 32768
    assert fitted_n_ctx(size, shape, ram_limit_mb=int(file_mb + OVERHEAD_MB + 200)) == 16384
    assert fitted_n_ctx(size, shape, ram_limit_mb=int(file_mb + OVERHEAD_MB + 100)) == 8192
    # Never below the floor: a model that does not fit even then is refused by the memory check.
    assert fitted_n_ctx(size, shape, ram_limit_mb=100) == AUTO_MIN_CTX
    assert not check_memory(size, shape, AUTO_MIN_CTX, ram_limit_mb=100).fits
    # A model trained on less gets what it was trained on.
    short = ModelShape.from_metadata(dict(QWEN_05B, **{"qwen2.context_length": "2048"}))
    assert fitted_n_ctx(size, short, ram_limit_mb=100_000) == 2048
    medium = ModelShape.from_metadata(dict(QWEN_05B, **{"qwen2.context_length": "16384"}))
    assert fitted_n_ctx(size, medium, ram_limit_mb=100_000) == 16384


@pytest.mark.model
def test_doctor_says_the_chat_models_context_and_its_memory():
    from server.config import parse_settings
    from server.doctor import machine_report

    lines = machine_report(parse_settings({})[0], probe=False).lines
    chat = lines[[label for label, _ in lines].index("Chat") + 1][1]
    # The catalog's assistant model (32k trained), on a machine with the memory for all of it.
    assert chat.startswith("context 32,768 tokens (chat.nCtx 0: as large as the model and memory allow); needs ~"), chat
    assert "KV cache 896 + overhead" in chat, chat  # 28 layers x 2 KV heads x (128 + 128) x 2 bytes x 32,768
    lines = machine_report(parse_settings({"chat": {"nCtx": 8192}})[0], probe=False).lines
    chat = lines[[label for label, _ in lines].index("Chat") + 1][1]
    assert chat.startswith("context 8,192 tokens (chat.nCtx); ") and "KV cache 224 + " in chat, chat
