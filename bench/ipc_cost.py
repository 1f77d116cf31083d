"""What moving the engine into a child process would cost a keystroke: the IPC round trip.

A keystroke's job crosses from the event loop to the engine's owner thread today
(``ThreadPoolExecutor.submit``). In a child process it would cross a pipe instead: the
snapshot (the whole document text, cursor, settings) pickled there, the suggestion
pickled back. This measures both round trips with a real document (platformdirs'
unix.py, ~10 KB, and a 100 KB file), with a no-op job, so only the crossing is timed.

    python bench/ipc_cost.py [--n 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _child(conn) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send({"text": "return self._user_media_dir(\"XDG_MUSIC_DIR\", \"~/Music\")", "version": msg["version"]})


def _job(msg: dict) -> dict:
    return {"text": "return self._user_media_dir(\"XDG_MUSIC_DIR\", \"~/Music\")", "version": msg["version"]}


def measure(text: str, n: int) -> tuple[list[float], list[float]]:
    pool = ThreadPoolExecutor(max_workers=1)
    here, there = [], []
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_child, args=(child,), daemon=True)
    proc.start()
    for i in range(n):
        msg = {"uri": "file:///tmp/unix.py", "version": i, "text": text, "offset": len(text) // 2,
               "settings": {"completion.maxTokens": 128, "completion.prefixTokens": 1024}}
        t0 = time.perf_counter()
        pool.submit(_job, msg).result()
        here.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        parent.send(msg)
        parent.recv()
        there.append((time.perf_counter() - t0) * 1000)
    parent.send(None)
    proc.join()
    pool.shutdown()
    return here, there


def main() -> None:
    import platformdirs
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    unix = Path(platformdirs.__file__).with_name("unix.py").read_text()
    for name, text in (("unix.py", unix), ("100 KB file", (unix * 12)[:100_000])):
        here, there = measure(text, args.n)
        q = lambda v, p: sorted(v)[int(p * (len(v) - 1))]  # noqa: E731
        print(f"{name:<12} ({len(text) / 1024:5.1f} KB)  thread hop p50 {statistics.median(here):.3f} ms "
              f"p99 {q(here, .99):.3f} ms | child-process round trip p50 {statistics.median(there):.3f} ms "
              f"p99 {q(there, .99):.3f} ms")


if __name__ == "__main__":
    main()
