"""Prompt-processing rate of the default model on this CPU: threads, batch sizes, flash attention.

Loads the model the way the server does (the probe's load configuration, see
server/loading.py) once per configuration and evaluates the same 1,024-token prompt
of real third-party code (click's core.py) in chunks of ``--chunk`` tokens, as the
server's prefill does (64: a cancel lands within one chunk). Prints tokens per second.

    python bench/prompt_rate.py [--tokens 1024] [--chunk 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import time

import click.core

from server.engine import choose_config, open_llama
from server.models import ensure_model_file, resolve_model


def rate(path: str, config: str, tokens: list[int], chunk: int, repeat: int, **kwargs) -> float:
    llm = open_llama(path, config, n_ctx=4096, **kwargs)
    try:
        best = 0.0
        for _ in range(repeat):
            llm.reset()
            t0 = time.monotonic()
            for start in range(0, len(tokens), chunk):
                llm.eval(tokens[start:start + chunk])
            best = max(best, len(tokens) / (time.monotonic() - t0))
        return best
    finally:
        llm.close()


def default_model_tokens(n: int) -> tuple[str, str, list[int]]:
    """The default model's file, the load configuration the probe chose, and the first ``n``
    tokens of real third-party code (click's core.py) in its vocabulary."""
    path = str(ensure_model_file(resolve_model(None, None)))
    config = choose_config(path, "generate", 2).config or "minimal"
    probe = open_llama(path, config, n_ctx=4096, vocab_only=True)
    tokens = probe.tokenize(inspect.getsource(click.core).encode(), add_bos=False)[:n]
    probe.close()
    return path, config, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    path, config, tokens = default_model_tokens(args.tokens)
    print(f"default model, load configuration {config}, {len(tokens)} prompt tokens in chunks of {args.chunk}\n")
    print("| threads | n_batch / n_ubatch | flash attention | tokens/s |")
    print("|---|---|---|---|")
    for threads, batch, flash in itertools.product((1, 2), (64, 512), (False, True)):
        r = rate(path, config, tokens, args.chunk if batch >= args.chunk else batch, args.repeat,
                 n_threads=threads, n_threads_batch=threads, n_batch=batch, n_ubatch=batch, flash_attn=flash)
        print(f"| {threads} | {batch} | {'on' if flash else 'off'} | {r:.0f} |", flush=True)


if __name__ == "__main__":
    main()
