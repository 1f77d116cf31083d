"""The owner thread: one thread owns each llama.cpp model; everything else sends it jobs.

``llama_cpp.Llama`` is not thread-safe, so an :class:`Engine` keeps one worker thread
(``ThreadPoolExecutor(max_workers=1)``) and runs every job that touches the model
there: tokenizing, building a prompt, generating. Async callers ``await`` the job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

from .model import LoadedModel
from .schedule import SCHEDULE

log = logging.getLogger("server.engine")
T = TypeVar("T")
BACKGROUND_CHUNK = 32  # prompt tokens a background model reads between two looks at the schedule


class Engine:
    """Owns one model and the one thread allowed to touch it.

    Jobs are callables ``job(model) -> T`` run on the owner thread in submission order.

    Args:
        name: names the thread (``engine-<name>``).
        foreground: its jobs come first on the CPU (the completion model: a suggestion the user
            waits for). Otherwise (the assistant's model) its model pauses between prompt chunks
            and tokens while foreground work runs (:mod:`server.engine.schedule`).
    """

    def __init__(self, name: str = "llm", foreground: bool = True):
        self.name = name
        self.foreground = foreground
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self.model: LoadedModel | None = None

    def _load(self, path: str, n_ctx: int, n_threads: int, load_config: str) -> LoadedModel:
        if self.model is not None:
            self.model.close()
            self.model = None
        t0 = time.monotonic()
        self.model = LoadedModel(path, n_ctx=n_ctx, n_threads=n_threads, load_config=load_config)
        if not self.foreground:  # gives way to suggestions, within a chunk of half the usual size
            self.model.yield_to = _yield_to_foreground
            self.model.prefill_chunk = BACKGROUND_CHUNK
        log.info("loaded %s (n_ctx %d, %d threads, %s) in %.2f s", path, n_ctx, n_threads,
                 self.model.verdict.explain() if self.model.verdict else "", time.monotonic() - t0)
        return self.model

    def load(self, path: str, *, n_ctx: int, n_threads: int, load_config: str = "auto") -> Future[LoadedModel]:
        """Load (or replace) the model on the owner thread, probed first (see :mod:`server.engine.loading`).

        Raises (through the future): ModelCrashes, ValueError, RuntimeError as :class:`LoadedModel`.
        """
        return self._executor.submit(self._load, path, n_ctx, n_threads, load_config)

    def unload(self) -> Future[None]:
        def _unload() -> None:
            if self.model is not None:
                self.model.close()
                self.model = None
        return self._executor.submit(_unload)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on the owner thread, loaded model or not (e.g. a vocab-only probe)."""
        return self._executor.submit(fn)

    def submit(self, job: Callable[[LoadedModel], T], ahead: threading.Event | None = None) -> Future[T]:
        """Run ``job(model)`` on the owner thread. ``ahead``: the job is the editor's work ahead,
        not foreground (:meth:`CpuSchedule.ahead`); this event stops it when the user turns to the
        assistant (the job must look at it, as a prefill looks at its cancel event).

        Raises (through the future):
            RuntimeError: no model is loaded.
        """
        def run() -> T:
            if self.model is None:
                raise RuntimeError("no model is loaded")
            if not self.model.vocab_only:
                self.model.fit_threads()  # the cores other programs leave free
            if ahead is not None:
                with SCHEDULE.ahead(ahead):
                    return job(self.model)
            if not self.foreground:
                return job(self.model)
            with SCHEDULE.foreground():
                return job(self.model)
        return self._executor.submit(run)

    async def run(self, job: Callable[[LoadedModel], T]) -> T:
        """``await`` form of :meth:`submit`."""
        return await asyncio.wrap_future(self.submit(job))

    def shutdown(self) -> None:
        """Cancel the queued jobs and stop the running one at its next chunk or token (its
        prompt read or answer ends unfinished); returns at once."""
        if self.model is not None:
            self.model.kv.closing = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _yield_to_foreground() -> None:
    """A background model's pause between two pieces of work: wait while a suggestion is made
    (at most 30 s at a time, so a stuck foreground job never holds the assistant for good)."""
    SCHEDULE.wait_quiet(30.0)
