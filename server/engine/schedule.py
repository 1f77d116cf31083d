"""One CPU, one schedule: a suggestion the user waits for comes before everything else.

Two models (completion and assistant) and the index's embedder share the machine's cores, each
with threads of its own. Run at once they each go at about half speed (measured on 2 cores: a
cold completion read 712 tokens in 6.5 s while the index embedded, 110 tokens/s, half the rate
alone). So work is ranked:

- **foreground**: every job of the completion model (a suggestion, and its own reading ahead,
  which is short and yields to its own requests); marked with :meth:`CpuSchedule.foreground`.
- **background**: the assistant's reading ahead (stops for good when a suggestion starts),
  the assistant's own prompt reading and writing (pauses between chunks and tokens while a
  suggestion is made), and the index's embedding (pauses between chunks).

Background work looks at the schedule between two pieces of work (a prompt chunk, a token, a
chunk embedded), so a suggestion waits for at most one piece.

Threads: any; the state is one counter under a lock and an Event.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator


class CpuSchedule:
    """Counts foreground jobs in progress; background work asks :meth:`busy` or waits with :meth:`wait_quiet`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._foreground = 0
        self._quiet = threading.Event()
        self._quiet.set()
        self.last_foreground = 0.0  # time.monotonic() when the last foreground job ended (0: never)

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """Mark the enclosed work as foreground (a suggestion): background work yields to it."""
        with self._lock:
            self._foreground += 1
            self._quiet.clear()
        try:
            yield
        finally:
            with self._lock:
                self._foreground -= 1
                if self._foreground == 0:
                    self.last_foreground = time.monotonic()
                    self._quiet.set()

    def busy(self) -> bool:
        """A foreground job is in progress."""
        return not self._quiet.is_set()

    def wait_quiet(self, timeout_s: float) -> bool:
        """Block until no foreground job is in progress, at most ``timeout_s`` seconds; True when quiet."""
        return self._quiet.wait(timeout_s)


SCHEDULE = CpuSchedule()
"""The process's one schedule (both models and the embedder live in one server process)."""
