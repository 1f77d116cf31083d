"""Build a tiny DeepSeek-Coder-shaped model: random weights around the real tokenizer.

No DeepSeek-Coder weights can be downloaded on the machines this project is tested on.
This writes, with llama.cpp's own ``gguf`` writer, a 2-layer, 64-wide llama-architecture
model whose tokenizer fields are copied from the real DeepSeek-Coder vocabulary
(see :func:`vocab_path`) and whose chat template follows
DeepSeek-Coder-Instruct's format. Its output is noise; it proves the plumbing: family
detection, the FIM special tokens, stop tokens and the chat template, through llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB_NAME = "ggml-vocab-deepseek-coder.gguf"
VOCAB = Path(__file__).parent / "fixtures" / VOCAB_NAME  # tracked, with its licence (LICENSE.llama.cpp)


def vocab_path() -> Path:
    """DeepSeek-Coder's real tokenizer as a vocab-only GGUF (llama.cpp test data, MIT), from ``tests/fixtures/``.

    Skips the calling test (or module) with the reason when the file is missing (a checkout
    that dropped it): it is optional input, never a collection error.
    """
    if not VOCAB.is_file():
        import pytest
        pytest.skip(f"{VOCAB} is missing: it is llama.cpp's test vocabulary (models/{VOCAB_NAME} in the llama.cpp "
                    "sources); copy it there", allow_module_level=True)
    return VOCAB


# DeepSeek-Coder-Instruct's conversation format (### Instruction / ### Response, <|EOT|>).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n' }}"
    "{% else %}{{ '### Response:\\n' + message['content'] + '\\n<|EOT|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}")


def build(out: Path, n_layers: int = 2, n_embd: int = 64, n_ff: int = 128, n_head: int = 4, seed: int = 0) -> Path:
    """Write the tiny model to ``out`` (about 17 MB) and return its path."""
    import gguf

    vocab = gguf.GGUFReader(str(vocab_path()))
    field = vocab.fields
    tokens = field["tokenizer.ggml.tokens"].contents()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("deepseek-coder-tiny-random")
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model(field["tokenizer.ggml.model"].contents())
    w.add_tokenizer_pre(field["tokenizer.ggml.pre"].contents())
    w.add_token_list(tokens)
    w.add_token_types(field["tokenizer.ggml.token_type"].contents())
    w.add_token_merges(field["tokenizer.ggml.merges"].contents())
    w.add_bos_token_id(field["tokenizer.ggml.bos_token_id"].contents())
    w.add_eos_token_id(field["tokenizer.ggml.eos_token_id"].contents())
    w.add_pad_token_id(field["tokenizer.ggml.padding_token_id"].contents())
    w.add_add_bos_token(field["tokenizer.ggml.add_bos_token"].contents())
    w.add_add_eos_token(field["tokenizer.ggml.add_eos_token"].contents())
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", weights(n_vocab, n_embd))
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", weights(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
