"""How many cores other programs keep busy, so a model uses only the cores that are free.

llama.cpp's threads meet at a barrier after every step of a token's graph: when one of them
waits for a core another program holds, all of them wait. On a desktop that is common (a
browser, a build, a test run). Measured on 2 cores with the default model
(``python bench/threads_under_load.py``): with two busy processes, 2 model threads wrote
0.3 tokens/s and 1 thread 7.9; with one busy process, 2 threads read 16.6 prompt tokens/s and
wrote 6.2, 1 thread 23.2 and 11.0; alone, 2 threads were twice as fast as 1. So before each
job, and every few tokens while it writes, a model takes as many threads as there are cores
other programs leave free (at least 1, at most what it was loaded with).

The load is sampled every SAMPLE_S by one daemon thread (two small reads of /proc through
psutil), started on first use: the whole machine's busy time minus this process's own.

Threads: any.
"""

from __future__ import annotations

import threading
import time

import psutil

SAMPLE_S = 0.5     # seconds between two samples
SMOOTHING = 0.5    # weight of the newest sample in the moving average


class CpuLoad:
    """A moving average of the cores that programs other than this one keep busy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._others = 0.0
        self.cores = psutil.cpu_count() or 1

    def others(self) -> float:
        """Cores busy with other programs (0 .. logical cores), averaged over the last second or so."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cpu-load", daemon=True)
                self._thread.start()
            return self._others

    def free_threads(self, most: int) -> int:
        """Threads for a model loaded with ``most``: the logical cores others leave free, 1..``most``."""
        return max(1, min(most, round(self.cores - self.others())))

    def _run(self) -> None:
        me = psutil.Process()
        busy0, own0, t0 = _busy(), _own(me), time.monotonic()
        while True:
            time.sleep(SAMPLE_S)
            busy, own, t = _busy(), _own(me), time.monotonic()
            sample = max(0.0, (busy - busy0) - (own - own0)) / max(t - t0, 1e-3)
            busy0, own0, t0 = busy, own, t
            with self._lock:
                self._others = SMOOTHING * sample + (1 - SMOOTHING) * self._others


def _busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    c = psutil.cpu_times()
    return sum(getattr(c, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def _own(me: psutil.Process) -> float:
    """CPU seconds this process has used (all its threads)."""
    c = me.cpu_times()
    return c.user + c.system


CPU_LOAD = CpuLoad()
"""The process's one sampler."""
