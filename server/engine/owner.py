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
        self.second: LoadedModel | None = None  # a second KV cache on the model's weights (open_second)
        self._queued = 0  # jobs submitted and not finished (see busy)
        self._giving_way: dict[int, threading.Event] = {}  # of those, the work ahead (see submit), by job
        self._count = threading.Lock()
        self.closed = False  # shut down: no job runs any more

    @property
    def busy(self) -> bool:
        """A request runs or waits on the owner thread: a new job would wait for it (work ahead
        stops within one chunk or token, see :meth:`submit`)."""
        with self._count:
            return self._queued > len(self._giving_way)

    def others_waiting(self) -> bool:
        """From a job on the owner thread: another job is queued behind it. Work ahead that
        is the lowest rank (the assistant's reading ahead) returns then, so the owner thread is
        never held by speculative work, and submits its rest again."""
        with self._count:
            return self._queued > 1

    def _close_models(self) -> None:
        for model in (self.second, self.model):  # the second context before the model it uses
            if model is not None:
                model.close()
        self.second = self.model = None

    def open_second(self, n_ctx: int) -> Future[LoadedModel]:
        """Give the loaded model a second context of ``n_ctx`` tokens (:meth:`LoadedModel.second_context`),
        for jobs submitted with ``second=True``; kept while the model stays loaded, made anew when
        ``n_ctx`` changes.

        Raises (through the future):
            RuntimeError: no model is loaded. ValueError: llama.cpp could not make the context.
        """
        def job() -> LoadedModel:
            if self.model is None:
                raise RuntimeError("no model is loaded")
            if self.second is None or self.second.n_ctx != n_ctx:
                if self.second is not None:
                    self.second.close()
                    self.second = None
                self.second = self.model.second_context(n_ctx)
                # Its reading ahead stops for any request within one chunk: a short one (a larger model reads slower).
                self.second.prefill_chunk = BACKGROUND_CHUNK
                log.info("%s: a second context of %d tokens on the same weights", self.name, n_ctx)
            return self.second
        return self._executor.submit(job)

    def _load(self, path: str, n_ctx: int, n_threads: int, load_config: str) -> LoadedModel:
        self._close_models()
        t0 = time.monotonic()
        self.model = LoadedModel(path, n_ctx=n_ctx, n_threads=n_threads, load_config=load_config)
        if not self.foreground:  # gives way to suggestions, within a chunk of half the usual size
            self.model.yield_to = _yield_to_foreground
            self.model.prefill_chunk = BACKGROUND_CHUNK
            self.model.kv.abort_when = SCHEDULE.busy  # ... and stops a chunk in progress when one begins
        log.info("loaded %s (n_ctx %d, %d threads, %s) in %.2f s", path, n_ctx, n_threads,
                 self.model.verdict.explain() if self.model.verdict else "", time.monotonic() - t0)
        return self.model

    def load(self, path: str, *, n_ctx: int, n_threads: int, load_config: str = "auto") -> Future[LoadedModel]:
        """Load (or replace) the model on the owner thread, probed first (see :mod:`server.engine.loading`).

        Raises (through the future): ModelCrashes, ValueError, RuntimeError as :class:`LoadedModel`.
        """
        return self._executor.submit(self._load, path, n_ctx, n_threads, load_config)

    def unload(self) -> Future[None]:
        return self._executor.submit(self._close_models)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on the owner thread, loaded model or not (e.g. a vocab-only probe)."""
        return self._executor.submit(fn)

    def submit(self, job: Callable[[LoadedModel], T], ahead: threading.Event | None = None,
               second: bool = False, gives_way: threading.Event | None = None) -> Future[T]:
        """Run ``job(model)`` on the owner thread, in submission order.

        Work ahead (speculative: nobody waits for it) is marked by an event the job looks at
        between two chunks or tokens (as a prefill or a generation looks at its cancel event);
        submitting a request (a job with neither mark) sets the events of all the work ahead
        queued or running, so a request waits for at most one chunk of it:

        - ``ahead``: the editor's work ahead, not foreground (:meth:`CpuSchedule.ahead`); the
          event is also set when the user turns to the assistant.
        - ``gives_way``: the assistant's work ahead (a prompt read ahead, an answer written ahead).

        ``second``: the job gets the second context (:meth:`open_second`) and is a suggestion
        (foreground, unless ``ahead``), whatever this engine's rank.

        Raises (through the future):
            RuntimeError: no model is loaded (or no second context, with ``second``).
        """
        mark = ahead if ahead is not None else gives_way

        def run() -> T:
            try:
                model = self.second if second else self.model
                if model is None:
                    raise RuntimeError("no second context" if second and self.model else "no model is loaded")
                if not model.vocab_only:
                    model.fit_threads()  # the cores other programs leave free
                if ahead is not None:
                    with SCHEDULE.ahead(ahead):
                        return job(model)
                if not (self.foreground or second):
                    return job(model)
                with SCHEDULE.foreground():
                    return job(model)
            finally:
                with self._count:
                    self._queued -= 1
                    self._giving_way.pop(id(run), None)
        with self._count:
            self._queued += 1
            if mark is not None:
                self._giving_way[id(run)] = mark
            else:  # a request: the work ahead before it stops at its next chunk or token
                for event in self._giving_way.values():
                    event.set()
        try:
            return self._executor.submit(run)
        except RuntimeError:  # shut down
            with self._count:
                self._queued -= 1
                self._giving_way.pop(id(run), None)
            raise

    def lane(self) -> SecondLane:
        """Submitting to the second context, as a :class:`server.completion.LocalGenerator` submits."""
        return SecondLane(self)

    async def run(self, job: Callable[[LoadedModel], T]) -> T:
        """``await`` form of :meth:`submit`."""
        return await asyncio.wrap_future(self.submit(job))

    def shutdown(self) -> None:
        """Cancel the queued jobs and stop the running one at its next chunk or token (its
        prompt read or answer ends unfinished); returns at once."""
        self.closed = True
        for model in (self.model, self.second):
            if model is not None:
                model.kv.closing = True
        self._executor.shutdown(wait=False, cancel_futures=True)


class SecondLane:
    """An engine's second context (:meth:`Engine.open_second`) with the ``submit`` of an engine: the
    larger model's fill-in-the-middle work runs on the owner thread of its chat, with a KV cache of
    its own. ``busy``: the owner thread has a request (a chat answer) that a new job would wait for."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def submit(self, job: Callable[[LoadedModel], T], ahead: threading.Event | None = None) -> Future[T]:
        return self.engine.submit(job, ahead, second=True)

    @property
    def busy(self) -> bool:
        return self.engine.busy


def _yield_to_foreground() -> None:
    """A background model's pause between two pieces of work: wait while a suggestion is made
    (at most 30 s at a time, so a stuck foreground job never holds the assistant for good)."""
    SCHEDULE.wait_quiet(30.0)
