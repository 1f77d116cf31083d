"""The default model's speed while other programs keep the CPU busy, per thread count.

On a desktop the model is rarely alone: a browser, a build or a test run keeps some cores
busy. llama.cpp's threads meet at a barrier after every step of the graph, so when one of
them waits for a core, all wait. This measures, for each number of busy processes (pure
Python spin loops started here, each keeping one core busy) and each model thread count:
the prompt rate (``--tokens`` tokens of real third-party code read in chunks of 64, as the
server's prefill does) and the writing rate (``--generate`` tokens decoded one at a time).

    python bench/threads_under_load.py [--tokens 256] [--generate 32] [--busy 0,1,2] [--threads 1,2]

Prints a table; run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from prompt_rate import default_model_tokens

from server.engine import open_llama


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def measure(path: str, config: str, threads: int, tokens: list[int], generate: int) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) of one load with ``threads`` threads."""
    llm = open_llama(path, config, n_ctx=4096, n_threads=threads, n_threads_batch=threads)
    try:
        llm.reset()
        t0 = time.monotonic()
        for start in range(0, len(tokens), 64):
            llm.eval(tokens[start:start + 64])
        prompt = len(tokens) / (time.monotonic() - t0)
        t0 = time.monotonic()
        for token in tokens[:generate]:  # one token per step, as writing an answer does
            llm.eval([token])
        return prompt, generate / (time.monotonic() - t0)
    finally:
        llm.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--generate", type=int, default=32)
    ap.add_argument("--busy", default="0,1,2", help="numbers of busy processes, comma-separated")
    ap.add_argument("--threads", default="1,2", help="model thread counts, comma-separated")
    args = ap.parse_args()
    path, config, tokens = default_model_tokens(args.tokens)
    print(f"default model, load configuration {config}, {multiprocessing.cpu_count()} logical CPUs; "
          f"{len(tokens)} prompt tokens, {args.generate} generated\n")
    print("| busy processes | model threads | prompt tokens/s | generated tokens/s |")
    print("|---|---|---|---|")
    for busy in (int(b) for b in args.busy.split(",")):
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            time.sleep(0.5)
            for threads in (int(t) for t in args.threads.split(",")):
                prompt, gen = measure(path, config, threads, tokens, args.generate)
                print(f"| {busy} | {threads} | {prompt:,.1f} | {gen:,.1f} |", flush=True)
        finally:
            stop.set()
            for p in spinners:
                p.join(5)


if __name__ == "__main__":
    main()
