"""The probe child: load a model with one configuration and decode a little, in a process of its own.

Run by :func:`server.engine.probe.run_probe` as ``python -m server.engine.probe_child PATH
--kind K --threads N --config C``; prints one JSON line (``{"ok": true, ...}`` or
``{"ok": false, "error": ...}``). A native crash kills only this process; its stack goes to
stderr, which the parent keeps in the log file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from .crash_guard import segfault
from .load_configs import CONFIG_NAMES, ENV_PROBE_CRASH, KINDS, LOAD_CONFIGS
from .loading import open_llama

# A code snippet for the probe's prompt: ~120 tokens, enough for a batched matrix product.
_PROBE_TEXT = '''import os


def read_config(path):
    """Read KEY=VALUE lines from path into a dict, skipping comments."""
    result = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


def main():
    config = read_config(os.environ.get("CONFIG", "app.cfg"))
    for key in sorted(config):
'''



def probe_child(path: str, kind: str, n_threads: int, config: str) -> dict[str, Any]:
    """Load and decode in this (child) process; the report is printed as one JSON line."""
    switch = os.environ.get(ENV_PROBE_CRASH, "")
    first = config == LOAD_CONFIGS[0].name
    t0 = time.monotonic()
    if kind == "embedding":
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN
        llm = open_llama(path, config, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                         pooling_type=LLAMA_POOLING_TYPE_MEAN, n_threads=n_threads, n_threads_batch=n_threads)
    else:
        llm = open_llama(path, config, n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads)
    load_s = time.monotonic() - t0
    if switch == "all" or (switch == "first" and first):
        segfault()  # where the real AMX fault strikes: the first decode
    if switch == "hang-first" and first:
        time.sleep(3600)
    if kind == "embedding":
        t1 = time.monotonic()
        vectors = llm.embed([_PROBE_TEXT[:400], "read a config file"], normalize=True)
        if len(vectors) != 2 or not all(any(v) for v in vectors):
            return {"ok": False, "error": "the embedding model returned empty vectors"}
        return {"ok": True, "loadS": round(load_s, 3), "embedS": round(time.monotonic() - t1, 3)}
    tokens = llm.tokenize(_PROBE_TEXT.encode(), add_bos=False)
    t1 = time.monotonic()
    llm.eval(tokens)  # prompt processing: one batch
    prompt_s = time.monotonic() - t1
    for _ in range(4):  # generation: one token per decode
        llm.eval([llm.sample(temp=0.0)])
    return {"ok": True, "loadS": round(load_s, 3), "promptTokens": len(tokens),
            "promptTokensPerS": round(len(tokens) / max(prompt_s, 1e-6), 1)}


def main(argv: list[str] | None = None) -> int:
    """The probe child: ``python -m server.engine.probe_child PATH --kind K --threads N --config C``."""
    import faulthandler
    faulthandler.enable()  # a native crash's stack goes to stderr, which the parent logs
    parser = argparse.ArgumentParser(prog="python -m server.engine.probe_child", description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--kind", choices=KINDS, default="generate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", choices=CONFIG_NAMES, default="default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        report = probe_child(args.path, args.kind, args.threads, args.config)
    except Exception as e:  # a load error is a verdict too, not a crash
        report = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(report), flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
