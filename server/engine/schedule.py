"""One CPU, one schedule: a suggestion the user waits for comes before everything else.

Two models (completion and assistant) and the index's embedder share the machine's cores, each
with threads of its own. Run at once they each go at about half speed (measured on 2 cores: a
cold completion read 712 tokens in 6.5 s while the index embedded, 110 tokens/s, half the rate
alone). So work is ranked:

- **foreground**: a suggestion being made (a request of the completion model); marked with
  :meth:`CpuSchedule.foreground`. Everything else gives way to it.
- **the assistant's requests** (a chat, Explain...: the user waits for them too): they pause
  between chunks and tokens while a suggestion is made, and nothing else. A prompt chunk of the
  assistant's model running when a suggestion begins stops inside llama.cpp's decode
  (:attr:`server.engine.kv_cache.KvCache.abort_when` is :meth:`CpuSchedule.busy`).
- **work ahead**, speculative: the completion model's (the prompt at a place the cursor went to,
  the suggestion after an accept; marked with :meth:`CpuSchedule.ahead`) and the assistant's
  reading ahead. Only one of them reads at a time, the one for where the user turned last
  (:meth:`CpuSchedule.want`): a keystroke or a cursor move is the editor, a chat panel's signal,
  an Explain asked for or the menu opened is the assistant. Turning to the assistant stops the
  editor's work ahead within one chunk (what it read stays cached); the assistant's reading
  ahead waits while the editor's runs and the editor is wanted, and for TYPING_PAUSE_S after each
  keystroke in the editor (a cursor move or a hover does not count).
- **the index's embedding**: pauses between chunks while the completion model works.

Measured before this rule (``python bench/assistant_latency.py``, 2 cores): the completion
model's reading ahead at the cursor (637 tokens, 16 s on a slow machine), being foreground, held
the assistant's reading ahead back for the whole time the person typed their question.

Work that yields looks at the schedule between two pieces of work (a prompt chunk, a token, a
chunk embedded), so the work it yields to waits for at most one piece.

Threads: any; the state (a counter, where the user turned, the editor's work ahead) is under one
lock, with an Event for quiet.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

EDITOR = "editor"
ASSISTANT = "assistant"
TYPING_PAUSE_S = 1.0  # the assistant's reading ahead waits this long after a keystroke in the editor


class CpuSchedule:
    """Foreground jobs in progress, the editor's work ahead and where the user turned last; work that
    yields asks :meth:`busy` / :meth:`reading_ahead_waits` or waits with :meth:`wait_quiet` / :meth:`pause`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._foreground = 0
        self._quiet = threading.Event()
        self._quiet.set()
        self.last_foreground = 0.0  # time.monotonic() when the last foreground job ended (0: never)
        self._wanted = EDITOR  # where the user turned last (see want)
        self._ahead: set[threading.Event] = set()  # cancel events of the editor's work ahead in progress
        self._typed_at = -TYPING_PAUSE_S  # time.monotonic() of the last keystroke's request in the editor

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

    @contextlib.contextmanager
    def ahead(self, cancel: threading.Event) -> Iterator[None]:
        """Mark the enclosed work as the editor's work ahead: it holds back no request; it is
        stopped (``cancel`` set) when, or while, the user has turned to the assistant."""
        with self._lock:
            if self._wanted != EDITOR:
                cancel.set()
            self._ahead.add(cancel)
        try:
            yield
        finally:
            with self._lock:
                self._ahead.discard(cancel)

    def want(self, who: str) -> None:
        """Where the user turned last: :data:`EDITOR` (a keystroke, a cursor move) or
        :data:`ASSISTANT` (the chat panel, an Explain, the code-action menu opened). Turning to
        the assistant stops the editor's work ahead in progress within one chunk."""
        with self._lock:
            self._wanted = who
            if who == ASSISTANT:
                for cancel in self._ahead:
                    cancel.set()

    def wanted(self) -> str:
        """Where the user turned last (:meth:`want`)."""
        return self._wanted

    def typed(self) -> None:
        """A keystroke's request (or an explicit one) in the editor: the user types there (see
        :meth:`reading_ahead_waits`)."""
        self._typed_at = time.monotonic()

    def reading_ahead_waits(self) -> bool:
        """The assistant's reading ahead should wait: a suggestion is being made, or the user is in
        the editor and either the editor's work ahead runs or they typed there in the last
        TYPING_PAUSE_S (answers from the cache took 6-8 ms at p50 instead of 2 with the assistant's model
        reading on both cores)."""
        with self._lock:
            return not self._quiet.is_set() or self._wanted != ASSISTANT and (
                bool(self._ahead) or time.monotonic() - self._typed_at < TYPING_PAUSE_S)

    def completion_working(self) -> bool:
        """The completion model works: a suggestion, or the editor's work ahead (the embedder waits)."""
        return not self._quiet.is_set() or bool(self._ahead)

    def pause(self, waits, timeout_s: float) -> bool:
        """Block while ``waits()`` (e.g. :meth:`reading_ahead_waits`), at most ``timeout_s``
        seconds, looking every 50 ms; True when it no longer waits."""
        deadline = time.monotonic() + timeout_s
        while waits():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def busy(self) -> bool:
        """A foreground job is in progress."""
        return not self._quiet.is_set()

    def wait_quiet(self, timeout_s: float) -> bool:
        """Block until no foreground job is in progress, at most ``timeout_s`` seconds; True when quiet."""
        return self._quiet.wait(timeout_s)


SCHEDULE = CpuSchedule()
"""The process's one schedule (both models and the embedder live in one server process)."""
