"""The completion model's writing speed with the assistant's model loaded beside it, on its own thread.

The server gives each model an owner thread; llama.cpp runs each decode as an OpenMP parallel
region of that thread's team. This prints the completion model's (the 0.5B's) ms per generated
token before the assistant's model (the 1.5B) first decodes on its own thread, and after, with
the OpenMP wait policy the server sets (see ``server/__init__.py``) or libgomp's default.

Usage: ``python bench/two_models_decode.py [--libgomp-default]`` (about a minute; run nothing else).
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def measure() -> None:
    import click.core

    from server.engine import choose_config, open_llama
    from server.models import ensure_model_file, resolve_model

    small_path = str(ensure_model_file(resolve_model(None, None)))
    large_path = str(ensure_model_file(resolve_model(None, "qwen2.5-coder-1.5b-instruct-q4_k_m")))
    small_owner, large_owner = ThreadPoolExecutor(1), ThreadPoolExecutor(1)

    def load(path: str, n_ctx: int):
        return open_llama(path, choose_config(path, "generate", 2).config or "minimal", n_ctx=n_ctx,
                          n_threads=2, n_threads_batch=2)
    small = small_owner.submit(load, small_path, 4096).result()
    large = large_owner.submit(load, large_path, 32768).result()
    source = inspect.getsource(click.core)
    prompt = small.tokenize(source[:3000].encode(), add_bos=False)[:300]
    chunk = large.tokenize(source[5000:9000].encode(), add_bos=False)[:64]

    def ms_per_token() -> float:
        small.reset()
        small.eval(prompt)
        t0 = time.monotonic()
        for _ in range(30):
            small.eval(prompt[-1:])
        return (time.monotonic() - t0) / 30 * 1000

    before = sorted(small_owner.submit(ms_per_token).result() for _ in range(3))
    large_owner.submit(lambda: (large.reset(), large.eval(chunk))).result()
    after = sorted(small_owner.submit(ms_per_token).result() for _ in range(5))
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}: the completion model writes "
          f"{before[1]:.1f} ms/token (median of 3) before the assistant's model decodes on its thread, "
          f"{after[2]:.1f} ms/token (median of 5) after")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libgomp-default", action="store_true", help="also measure with libgomp's own defaults")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import server  # noqa: F401  (sets the OpenMP policy unless the environment has one)
        measure()
        return
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    runs = [("the server's setting", env)]
    if args.libgomp_default:
        runs.append(("libgomp's default", {**env, "OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""}))
    for label, run_env in runs:  # a process each: libgomp reads its settings once, when it is loaded
        out = subprocess.run([sys.executable, __file__, "--child"], env=run_env, capture_output=True, text=True)
        print(f"{label}: {out.stdout.strip() or out.stderr.strip()[-500:]}")


if __name__ == "__main__":
    main()
