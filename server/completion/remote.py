"""The remote generator: the same pipeline against an OpenAI-compatible server (:mod:`server.remote`).

Caches, joining, debounce, gates and length control are the service's, shared with the local
generator; generation differs: the FIM prompt is sent as text in the classic
prefix-suffix-middle layout (the typed text ends the prefix; the remote server reuses its own
prompt cache), there is no token healing (it needs logits), and token budgets are estimated
(about 3.5 characters a token).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from ..config import Settings
from ..engine import Generation
from ..length import trim
from ..prompting import Budget, FimFormat, TokenCounter, window
from .parts import Entry, Flight
from .request import CompletionRequest

if TYPE_CHECKING:
    from ..remote import OpenAIBackend

log = logging.getLogger("server.completion")


class RemoteGenerator:
    """Generations on a remote server, from a pool of ``remote-*`` threads (HTTP waits, not CPU)."""

    engine = None  # no local model: no work ahead, no alternatives

    def __init__(self, backend: OpenAIBackend, family: FimFormat, workers: int = 4):
        """Args:
            backend: the OpenAI-compatible server.
            family: the FIM format of the server's model (its vocabulary cannot be read from here).
            workers: threads for requests in flight.
        """
        from ..remote import ApproxVocabulary
        self.backend, self.family = backend, family
        self.counter = TokenCounter(ApproxVocabulary())
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remote")

    def submit(self, job: Callable[[None], Entry | None], ahead=None) -> Future:
        """Run a request on the pool (there is no local model: the job gets None; ``ahead`` is
        for a local model's schedule, unused here)."""
        return self._pool.submit(job, None)

    def close(self) -> None:
        """Stop the requests not started and close the HTTP client."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()

    def generate(self, model: None, req: CompletionRequest, settings: Settings, flight: Flight,
                 not_before: float, cap_ms: float, resume: Entry | None) -> Entry | None:
        """As :meth:`LocalGenerator.generate`, over HTTP (``resume`` is not used: no tokens to continue from)."""
        cancel, cursor, policy = flight.cancel, req.cursor, req.policy
        if cancel.is_set():
            return None
        budget = Budget(settings.completion_prefix_tokens, settings.completion_suffix_tokens)
        above, typed, suffix, p_drop, s_drop, _ = window(cursor, budget, self.counter)
        f = self.family
        prompt = f"{f.fim_prefix}{above}{typed}{f.fim_suffix}{suffix}{f.fim_middle}"
        if (wait := not_before - time.monotonic()) > 0 and cancel.wait(wait):
            return None
        t0 = time.monotonic()

        def judge(text: str) -> bool:
            flight.partial = text
            return trim(text, policy)[1]

        result = self.backend.complete(prompt, max_tokens=req.max_tokens, stop=list(f.stop_tokens), cancel=cancel,
                                       cap_s=cap_ms / 1000, judge=judge)
        if result.finish == "cancelled":
            return None
        ms = (time.monotonic() - t0) * 1000
        gen = Generation(result.text, result.finish, [], self.counter.count(prompt), 0, 0, ms, ms)
        log.info("remote completion: %s, %d chars in %.0f ms; finish %s", policy.mode.value, len(result.text), ms,
                 result.finish)
        return Entry(cursor.typed, result.text, [], result.finish in ("stop", "complete", "length"), policy.mode,
                     p_drop, s_drop, 0, gen)
