"""Reading the assistant's next prompt ahead, while the user selects, types a question or looks at a menu.

A person gives the machine time: they select code, open the chat panel and type a question,
or open the code-action menu, 2-20 s during which the CPU is idle. :class:`PromptReader`
reads the part of the next prompt known by then into the chat model's KV cache (the whole
Explain or hover prompt; a chat prompt up to the question's message, see :mod:`.chat`), so
that when the request comes only what is new is read. It also keeps the KV state of each
prompt pack's system text (the start of every prompt of that task): computed once per model
and saved on disk (:class:`SystemStates`), so a restart does not pay again.

Reading ahead is background work (:mod:`server.engine.schedule`): it reads in chunks of
:data:`AHEAD_CHUNK` tokens (:data:`AHEAD_CHUNK_ASSISTANT` while the user has turned to the
assistant) and, between two, gives way for good to a request (any job
submitted to the chat engine that is not work ahead) or to a newer reading ahead. It gives the
owner thread back, and waits off it, while the completion model works and while any other job
waits for that thread (the larger model's fill-in-the-middle read at the cursor comes first).
What it read stays in the KV cache (or in a saved state when another prompt replaces it), so
reading ahead again later continues where it stopped. It reuses only what the cache (or a saved
state) holds from the prompt's start, never a run moved to another place: the decode after a
move re-rotates every cell of the cache (~0.4 s for the 1.5B's 32k-token context on 2 cores),
which cannot stop for a suggestion. Measured (``python bench/typing_latency.py --holes 30
--assistant-ahead``): with moves, the first suggestion in a new file met it, p90 2,316 against
2,000 ms with reading ahead off; without, 2,006 against 2,187.

Threads: :meth:`PromptReader.read` and :meth:`PromptReader.warm` may be called from any
thread; the work runs on the chat engine's owner thread. No pygls or lsprotocol here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engine import KvSnapshot, LoadedModel
from ..engine.schedule import ASSISTANT, SCHEDULE
from .generation import OPEN_END, AssistantCore
from .packs import load_pack

log = logging.getLogger(__name__)

# Prompt tokens read between two looks at the schedule: a request waits at most this many
# (~0.2 s with the 1.5B on 2 cores at ~80 tokens/s).
AHEAD_CHUNK = 16
# ... while the user has turned to the assistant (the chat panel, the code-action menu): no
# keystroke is expected, and the 1.5B reads 64-token chunks ~25% faster than 16-token ones
# (91 against 73 tokens/s on 2 cores); a request for the prompt read continues from it.
AHEAD_CHUNK_ASSISTANT = 64
SYSTEM_PACKS = ("chat", "explain", "hover", "refactor", "tests", "agent")  # tasks whose system text is kept
NEEDS_VALUES = frozenset({"agent"})  # packs whose system text needs values (the agent's tools' schemas)


@dataclass
class AheadResult:
    """What one reading ahead did.

    Attributes:
        tokens: the prompt's tokens (the part known before the request).
        reused: tokens the KV cache (or a saved state) held already.
        evaluated: tokens read now.
        done: the whole part is in the KV cache.
        why: why it stopped early or did nothing (``superseded``, ``too long``, ``no model``), else "".
        ms: wall time, ms (pauses for suggestions included).
    """

    tokens: int
    reused: int
    evaluated: int
    done: bool
    why: str
    ms: float


class PromptReader:
    """Reads prompts into the chat model's KV cache ahead of the requests that will use them.

    Args:
        core: the assistant whose engine and chat template are used (a remote assistant has
            no engine: nothing is read).
        states: where the system texts' KV states are kept on disk (None: in memory only).

    Attributes (read for ``deepseek.status``): ``reads`` (prompts read ahead), ``evaluated``
    (tokens read ahead), ``answers`` (short answers written ahead by the caller: hovers),
    ``last`` (the latest :class:`AheadResult`).
    """

    def __init__(self, core: AssistantCore, states: SystemStates | None = None):
        self.core, self.states = core, states
        self._latest = 0
        self._lock = threading.Lock()
        # Waits off the owner thread between the turns of a reading (one reading at a time: a newer
        # one supersedes the older, which ends at its next look).
        self._driver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self.reads = self.evaluated = self.answers = 0
        self.last: AheadResult | None = None
        self._reading: tuple[list[dict[str, str]] | None, Future | None] = (None, None)  # the latest, while it runs
        self._closed = False

    def read(self, messages: list[dict[str, str]]) -> Future[AheadResult] | None:
        """Read ``messages`` (in the chat template; cut at :data:`OPEN_END` when a message holds
        it) into the KV cache, in the background. A newer call supersedes this one.

        The reading is work ahead of the lowest rank. It runs on the chat engine's owner thread in
        chunks of :data:`AHEAD_CHUNK` tokens and returns the thread between two whenever another
        job waits for it (a request, the larger model's fill-in-the-middle read at the cursor),
        or while :meth:`CpuSchedule.reading_ahead_waits`; it then waits off that thread and
        submits its rest again. A request of the assistant stops it for good
        (:meth:`server.engine.Engine.submit`'s ``gives_way``); so does a newer reading ahead of
        another prompt. The same prompt again, while its reading runs, leaves it running.

        Returns:
            The future of the result (the running one's for the same prompt again), or None for
            a remote assistant or after :meth:`close`.
        """
        engine = self.core.engine
        if engine is None:
            return None
        with self._lock:
            if messages == self._reading[0] and self._reading[1] is not None and not self._reading[1].done():
                return self._reading[1]  # the same prompt again (the cursor's code actions, then the menu's)
            self._latest += 1
            mine = self._latest
        asked = threading.Event()  # set by the engine when a request is submitted

        def superseded() -> bool:
            return asked.is_set() or self._latest != mine
        stopped = _stop_rule(engine, superseded)

        t0 = time.monotonic()
        tally = {"reused": -1, "evaluated": 0}

        def job(model: LoadedModel) -> AheadResult | None:
            """One turn on the owner thread: the result, or None when it gave way (the rest to come)."""
            if superseded():
                return AheadResult(0, 0, tally["evaluated"], False, "superseded", (time.monotonic() - t0) * 1000)
            if self.states is not None and not self.states.ensure(self.core, model, stopped):
                return None
            tokens = self.core._format(model, messages)
            if any(OPEN_END in m["content"] for m in messages):
                tokens = tokens + tokens[-1:]  # prefill reads all but the last token: here, all of it
            if len(tokens) + self.core.max_tokens > model.n_ctx:
                return AheadResult(len(tokens), 0, 0, False, "too long", 0.0)
            chunk = AHEAD_CHUNK_ASSISTANT if SCHEDULE.wanted() == ASSISTANT else AHEAD_CHUNK
            # No K-shift (above); a chunk stops part way when reading ahead should wait (a suggestion,
            # the editor's work ahead while the user is in the editor).
            prep = model.prefill(tokens, stopped=stopped, chunk=chunk, exact=True, abort=SCHEDULE.reading_ahead_waits)
            tally["reused"] = prep.reused if tally["reused"] < 0 else tally["reused"]
            tally["evaluated"] += prep.evaluated
            if not (prep.done or model.kv.closing or superseded()):
                return None
            return AheadResult(len(tokens) - 1, tally["reused"], tally["evaluated"], prep.done,
                               "" if prep.done else "superseded", (time.monotonic() - t0) * 1000)

        def drive() -> AheadResult:
            """Off the owner thread: submit the turns until one ends the reading."""
            while (result := engine.submit(job, gives_way=asked).result()) is None:
                SCHEDULE.pause(lambda: SCHEDULE.reading_ahead_waits() and not superseded() and not engine.closed, 3600)
            self.reads += 1
            self.evaluated += result.evaluated
            self.last = result
            log.debug("read ahead: %d tokens, %d reused, %d evaluated in %.0f ms%s", result.tokens,
                      result.reused, result.evaluated, result.ms, "" if result.done else f" ({result.why})")
            return result
        with self._lock:
            if self._closed:
                return None
            future = self._driver.submit(drive)
            if self._latest == mine:
                self._reading = (messages, future)
        return future

    def warm(self) -> Future | None:
        """Make the KV states of the packs' system texts ready (from disk, or computed and
        saved), in the background, giving way as :meth:`read` does. None for a remote
        assistant, without ``states`` or after :meth:`close`."""
        engine = self.core.engine
        if engine is None or self.states is None:
            return None
        asked = threading.Event()
        stopped = _stop_rule(engine, asked.is_set)

        def drive() -> None:
            while not engine.submit(lambda model: self.states.ensure(self.core, model, stopped),
                                    gives_way=asked).result() and not asked.is_set():
                SCHEDULE.pause(lambda: SCHEDULE.reading_ahead_waits() and not engine.closed, 3600)
        with self._lock:
            return None if self._closed else self._driver.submit(drive)

    def close(self) -> None:
        """Read ahead no more (its model was replaced, or the server stops): a running reading is
        superseded (it ends at its next look), none starts (:meth:`read` and :meth:`warm` return
        None), and the thread that drives them ends once idle."""
        with self._lock:
            self._closed = True
            self._latest += 1
            self._driver.shutdown(wait=False, cancel_futures=True)


def _stop_rule(engine, superseded: Callable[[], bool]) -> Callable[[], str]:
    """The ``stopped`` of a prefill read ahead on ``engine``'s owner thread: ``superseded`` for good,
    ``yield`` (give the thread back, go on later) while the schedule says to wait or another job
    waits for the thread, else "" (read on)."""
    def stopped() -> str:
        if superseded():
            return "superseded"
        return "yield" if SCHEDULE.reading_ahead_waits() or engine.others_waiting() else ""
    return stopped


class SystemStates:
    """The KV states of the prompt packs' system texts, per model, in memory and on disk.

    A state is kept in the model's saved states (:class:`server.engine.KvSnapshots`, where
    a prompt that starts with it finds it) and in ``folder`` as a file named by a hash of the
    model file (path, size, modification time), its load configuration, llama-cpp-python's
    version and the tokens; a file llama.cpp refuses (another build) is computed again.

    Args:
        folder: where the files go (created 0700 on first write).
        values: a pack's placeholders in its system text, by task (the agent's ``tools``).
    """

    def __init__(self, folder: Path, values: dict[str, dict[str, str]] | None = None):
        self.folder, self.values = folder, values or {}
        self._done: set[int] = set()  # id() of the models already seen to

    def ensure(self, core: AssistantCore, model: LoadedModel, stopped: Callable[[], str]) -> bool:
        """On the chat engine's thread: each pack's system state in ``model``'s saved states.

        Args:
            stopped: as :meth:`LoadedModel.prefill`'s: non-empty stops the reading between two chunks.

        Returns:
            True when all are kept (or none can be); False when ``stopped`` stopped it (the rest another time).
        """
        if id(model) in self._done or model.snapshots.budget_bytes <= 0:
            return True
        for task in SYSTEM_PACKS:
            try:
                pack = load_pack(task)
                if task in NEEDS_VALUES and task not in self.values:
                    continue  # its system text is only right with values this reader was not given
                system = pack.render(**self.values.get(task, {}))[0]["content"]
                tokens = core._format(model, [{"role": "system", "content": system + OPEN_END}])
                if not self._restore_or_compute(model, tokens, stopped):
                    return False
            except Exception as e:  # a pack without system text, a refused state: nothing kept
                log.info("system state of %s not kept: %s", task, e)
        self._done.add(id(model))
        return True

    def _restore_or_compute(self, model: LoadedModel, tokens: list[int], stopped: Callable[[], str]) -> bool:
        """The state of ``tokens`` in the saved states; False when ``stopped`` stopped the work."""
        import llama_cpp

        path = self.folder / (hashlib.sha256(repr((
            model.path, _stat(model.path), model.load_config, llama_cpp.__version__, tokens)).encode()).hexdigest()
            + ".kv")
        if any(snap.cells == tokens for snap in model.snapshots):
            return True
        if path.is_file():
            model.snapshots.add(KvSnapshot(list(tokens), path.read_bytes()))
            return True
        if not model.prefill(tokens + tokens[-1:], chunk=AHEAD_CHUNK, stopped=stopped).done:
            return False  # what it read stays in the KV cache: the next turn goes on from there
        snap = model.save_state()
        model.snapshots.add(snap)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(snap.data)
            tmp.replace(path)
        except OSError as e:  # a full disk or a read-only cache: kept in memory only
            log.info("system state not saved to %s: %s", path, e)
        return True


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return 0, 0
