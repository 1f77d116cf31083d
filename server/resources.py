"""Will the model fit in memory? An estimate made before loading, from GGUF metadata.

needed = model file size (the weights are memory-mapped and all get touched)
       + KV cache for ``n_ctx`` tokens: 2 (K and V) x layers x n_ctx x (KV heads x head size)
         x bytes per element (f16 cache: 2)
       + a fixed overhead for compute buffers and the runtime (OVERHEAD_MB, measured:
         see README.md "Performance").

It is compared with the memory available now (psutil) or with the setting
``resources.ramLimitMb``. This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import psutil

MB = 1024 * 1024
# Compute buffers, tokenizer tables, Python and llama.cpp runtime beyond weights + KV cache.
# Measured with `python bench/memory.py` on the default model (RSS after load and one
# completion, minus file size and KV cache): 160-182 MB at n_ctx 512-8192; rounded up.
OVERHEAD_MB = 256
KV_BYTES_PER_ELEMENT = 2  # llama.cpp's default KV cache type is f16
AUTO_MAX_CTX = 32768      # the largest context a model gets when its size is chosen here (fitted_n_ctx)
AUTO_MIN_CTX = 4096       # ... and the smallest
AUTO_SPARE_MB = 1024      # memory left to the rest of the machine when the context is chosen here


@dataclass(frozen=True)
class ModelShape:
    """The parts of a GGUF header that decide the KV cache size."""

    architecture: str
    n_layers: int
    n_kv_heads: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> "ModelShape":
        """Read the shape from GGUF metadata (llama.cpp's ``{arch}.*`` keys; values as strings).

        Raises:
            ValueError: a required key is missing.
        """
        arch = meta.get("general.architecture")
        if not arch:
            raise ValueError("GGUF metadata has no general.architecture")

        def num(key: str, default: int | None = None) -> int:
            value = meta.get(f"{arch}.{key}")
            if value is None:
                if default is None:
                    raise ValueError(f"GGUF metadata has no {arch}.{key}")
                return default
            return int(value)

        n_heads = num("attention.head_count")
        head_dim = num("embedding_length") // max(1, n_heads)
        return cls(
            architecture=arch,
            n_layers=num("block_count"),
            n_kv_heads=num("attention.head_count_kv", n_heads),
            head_dim_k=num("attention.key_length", head_dim),
            head_dim_v=num("attention.value_length", head_dim),
            n_ctx_train=num("context_length", 0),
        )

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an f16 KV cache holding ``n_ctx`` tokens."""
        per_token = self.n_layers * self.n_kv_heads * (self.head_dim_k + self.head_dim_v)
        return per_token * n_ctx * KV_BYTES_PER_ELEMENT


@dataclass(frozen=True)
class MemoryCheck:
    """The estimate and the verdict, all in MB."""

    file_mb: float
    kv_cache_mb: float
    overhead_mb: float
    needed_mb: float
    available_mb: float
    limit_source: str  # "available memory" or "resources.ramLimitMb"
    n_ctx: int

    @property
    def fits(self) -> bool:
        return self.needed_mb <= self.available_mb

    def explain(self, model_name: str) -> str:
        """One paragraph for the user: the figures and, when it does not fit, the fix."""
        figures = (f"{model_name} needs about {self.needed_mb:,.0f} MB (file {self.file_mb:,.0f} MB + "
                   f"KV cache {self.kv_cache_mb:,.0f} MB for n_ctx {self.n_ctx} + overhead "
                   f"{self.overhead_mb:,.0f} MB); {self.limit_source} is {self.available_mb:,.0f} MB.")
        if self.fits:
            return figures
        return (f"Model not loaded: {figures} Fix: choose a smaller model (setting model.name or "
                f"model.path), lower model.nCtx, close other programs, or raise resources.ramLimitMb.")


def available_mb() -> float:
    """Memory available to new allocations now, in MB (psutil ``virtual_memory().available``)."""
    return psutil.virtual_memory().available / MB


def check_memory(file_bytes: int, shape: ModelShape, n_ctx: int, ram_limit_mb: int | None) -> MemoryCheck:
    """Estimate what loading needs and compare with what there is.

    Args:
        file_bytes: size of the GGUF file.
        shape: from :meth:`ModelShape.from_metadata`.
        n_ctx: the context window to allocate (tokens).
        ram_limit_mb: the user's limit; None means measure available memory.
    """
    kv = shape.kv_cache_bytes(n_ctx) / MB
    file_mb = file_bytes / MB
    if ram_limit_mb is not None:
        avail, source = float(ram_limit_mb), "resources.ramLimitMb"
    else:
        avail, source = available_mb(), "available memory"
    return MemoryCheck(file_mb, kv, OVERHEAD_MB, file_mb + kv + OVERHEAD_MB, avail, source, n_ctx)


def fitted_n_ctx(file_bytes: int, shape: ModelShape, ram_limit_mb: int | None) -> int:
    """The context window to give a model when the user did not choose one (``chat.nCtx`` 0).

    The model's trained context (GGUF ``context_length``; AUTO_MIN_CTX when unknown), at most
    AUTO_MAX_CTX, halved until the estimate of :func:`check_memory` fits with AUTO_SPARE_MB
    to spare (within ``resources.ramLimitMb`` when it is set, then with nothing to spare); never
    below AUTO_MIN_CTX (a model that does not fit even then is refused by the memory check).

    Returns:
        Tokens.
    """
    n_ctx = min(shape.n_ctx_train or AUTO_MIN_CTX, AUTO_MAX_CTX)
    spare = 0 if ram_limit_mb is not None else AUTO_SPARE_MB
    while n_ctx > AUTO_MIN_CTX:
        memory = check_memory(file_bytes, shape, n_ctx, ram_limit_mb)
        if memory.needed_mb + spare <= memory.available_mb:
            break
        n_ctx //= 2
    return max(n_ctx, min(AUTO_MIN_CTX, shape.n_ctx_train or AUTO_MIN_CTX))
