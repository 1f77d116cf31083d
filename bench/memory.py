"""Measure what loading a model really costs in memory, to ground server.resources.OVERHEAD_MB.

For each n_ctx, in a fresh process: load the model, run one FIM completion over a
~1,000-token prompt, and print resident memory (RSS) against the estimate's parts.

    python bench/memory.py [--model-path FILE] [--n-ctx 512 2048 4096 8192]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, threading, psutil
from server.engine import LoadedModel
from server.prompting import Budget, CursorText, build_fim_prompt, detect_fim_format
from server.resources import ModelShape
path, n_ctx = sys.argv[1], int(sys.argv[2])
proc = psutil.Process()
base = proc.memory_info().rss
m = LoadedModel(path, n_ctx=n_ctx, n_threads=os.cpu_count(), vocab_only=False)
loaded = proc.memory_info().rss
fim = detect_fim_format(m)
code = open(psutil.__file__.replace("__init__.py", "_common.py")).read()
p = build_fim_prompt(m, fim, CursorText(code[:20000], "", code[20000:24000]), Budget(min(900, n_ctx - 300), 200))
m.generate(p.tokens, max_tokens=32, cancel=threading.Event(), deadline=1e18, stop_ids=fim.stop_ids)
after = proc.memory_info().rss
kv = ModelShape.from_metadata(m.metadata).kv_cache_bytes(n_ctx)
print(json.dumps({"n_ctx": n_ctx, "python_mb": base / 2**20, "rss_loaded_mb": loaded / 2**20,
                  "rss_after_mb": after / 2**20, "file_mb": os.path.getsize(path) / 2**20,
                  "kv_mb": kv / 2**20, "prompt_tokens": len(p.tokens)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path")
    ap.add_argument("--n-ctx", type=int, nargs="+", default=[512, 2048, 4096, 8192])
    args = ap.parse_args()
    if args.model_path:
        path = args.model_path
    else:
        from server.models import ensure_model_file, resolve_model
        path = str(ensure_model_file(resolve_model(None, None)))
    print(f"model {path}")
    print(f"{'n_ctx':>6} {'file':>7} {'KV':>6} {'RSS':>7} {'overhead':>9}  (MB; overhead = RSS - file - KV)")
    for n_ctx in args.n_ctx:
        run = subprocess.run([sys.executable, "-c", CHILD, path, str(n_ctx)], capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"n_ctx {n_ctx} failed:\n{run.stderr[-2000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
        overhead = r["rss_after_mb"] - r["file_mb"] - r["kv_mb"]
        print(f"{n_ctx:>6} {r['file_mb']:>7.0f} {r['kv_mb']:>6.0f} {r['rss_after_mb']:>7.0f} {overhead:>9.0f}")


if __name__ == "__main__":
    main()
