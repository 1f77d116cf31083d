"""Work ahead: the completion model reads and writes while the user pauses (event loop only).

Two kinds, both for the local model only, both stopped by any request within one chunk:
the prompt at a place the cursor went to is read into the KV cache (:meth:`WorkAhead.prefill_at`),
and the suggestion after accepting one and pressing Enter is prepared
(:meth:`WorkAhead.prefetch_after`). Each document has at most one piece pending.
"""

from __future__ import annotations

import asyncio
import logging
import re

from ..config import Settings
from ..engine.schedule import EDITOR, SCHEDULE
from ..length import Mode
from .parts import IDLE_MS, READ_AHEAD_MS, Flight, Snapshot, Unsuitable
from .request import CompletionRequest

log = logging.getLogger("server.completion")
LARGE_SLOT = "\0large"  # a document's work ahead for the larger model, after its URI (see read_large)


class WorkAhead:
    """The work ahead of one :class:`.service.CompletionService` (its flights, typing history and caches)."""

    def __init__(self, service) -> None:  # the CompletionService that owns it (which imports this module)
        self.service = service

    def prefetch_after(self, snap: Snapshot, text: str, settings: Settings) -> None:
        """Work ahead: once the user has been idle IDLE_MS (and two typing intervals), prepare
        the suggestion that follows accepting ``text`` at ``snap`` and pressing Enter (its prompt
        read, then generated while there is time), so Tab, Enter and the next suggestion cost
        nothing. (Right after Tab the type-through cache already knows the rest: nothing.) The
        new line gets the indentation editors give it: the accepted line's, one level deeper
        after a line that opens a block.

        Any request stops it within one token or one prefill chunk; its answer is cached
        like any other (it is not counted as a model answer).
        """
        svc = self.service
        if svc.local is None or not text or not settings.completion_work_ahead or svc._closed:
            return
        shown_at = svc.pace.last.get(snap.uri)
        line = snap.text[snap.text.rfind("\n", 0, snap.offset) + 1:snap.offset] + text
        line = line[line.rfind("\n") + 1:]
        indent = line[:len(line) - len(line.lstrip(" \t"))]
        if line.rstrip().endswith((":", "{", "(", "[")) or re.search(r"\b(then|do|function\b.*\))\s*$", line):
            indent += "\t" if indent.startswith("\t") else "    "
        enter = text + "\n" + indent
        after = Snapshot(snap.uri, None, snap.text[:snap.offset] + enter + snap.text[snap.offset:],
                         snap.offset + len(enter), snap.language_id)

        async def work() -> None:
            await asyncio.sleep(max(IDLE_MS, 2 * svc.pace.gap_ms.get(snap.uri, 0)) / 1000)
            if svc.pace.last.get(snap.uri) != shown_at or any(not f.idle for f in svc._flights.values()):
                return  # the user went on: typing is not idle time
            try:
                s = await svc.suggest(after, settings, manual=False, idle=True)
            except (Unsuitable, asyncio.CancelledError):
                return
            if s is not None:
                svc.prefetched += 1
                log.info("prepared ahead: the suggestion after accepting %d chars: %d chars in %.0f ms",
                         len(text), len(s.text), s.latency_ms)
            if snap.uri in svc.local.cut and svc.pace.last.get(snap.uri) == shown_at:
                await self._read_idle(snap, settings, dict(svc.pace.last), whole=True)
        self._idle(snap.uri, work())

    def prefill_at(self, snap: Snapshot, settings: Settings) -> None:
        """Work ahead at a place the cursor went to (the editor asked for code actions there):
        once no request has come for READ_AHEAD_MS, read the FIM prompt for it into the KV cache, so
        the first suggestion there pays only for what is typed; then, if that prompt was the
        shorter window of a place the cache had not seen (:meth:`LocalGenerator.fim_prompt`), the
        whole one. Any request stops it within one 64-token chunk; nothing is generated.
        """
        svc = self.service
        SCHEDULE.want(EDITOR)  # the cursor moved: the user is in the editor
        if svc.local is None or not settings.completion_work_ahead or svc._closed:
            return
        since = dict(svc.pace.last)

        async def work() -> None:
            # Short: while typing, the place is the one read already (a few tokens to read,
            # which the keystroke's request stops); after a move, every 50 ms counts.
            await asyncio.sleep(READ_AHEAD_MS / 1000)
            if await self._read_idle(snap, settings, since, whole=False) and snap.uri in svc.local.cut:
                await self._read_idle(snap, settings, since, whole=True)
            if self._large_reads(settings):
                await self._read_idle(snap, settings, since, whole=True, large=True)
        if (older := svc._idle_tasks.pop(snap.uri + LARGE_SLOT, None)) is not None:
            older.cancel()  # a read for the larger model at the place the cursor left
        self._idle(snap.uri, work())

    def _large_reads(self, settings: Settings) -> bool:
        return self.service.large is not None and settings.completion_manual_model != "small"

    def read_large(self, snap: Snapshot, settings: Settings) -> None:
        """Read the larger model's whole prompt at ``snap`` once no request has come for READ_AHEAD_MS
        (an explicit request there found it unread: the next one there is answered by it)."""
        svc = self.service
        if svc.large is None or svc._closed:
            return
        since = dict(svc.pace.last)

        async def work() -> None:
            await asyncio.sleep(READ_AHEAD_MS / 1000)
            await self._read_idle(snap, settings, since, whole=True, large=True)
        # Its own slot: the completion model's work ahead after its answer (prefetch_after) must not replace it.
        self._idle(snap.uri + LARGE_SLOT, work())

    def _idle(self, uri: str, work) -> None:
        """Run ``work`` as the document's one pending piece of work ahead (replacing an older one)."""
        svc = self.service
        if (older := svc._idle_tasks.pop(uri, None)) is not None:
            older.cancel()
        task = svc._idle_tasks[uri] = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(lambda t: svc._idle_tasks.get(uri) is t and svc._idle_tasks.pop(uri))

    async def _read_idle(self, snap: Snapshot, settings: Settings, since: dict[str, float], whole: bool,
                         large: bool = False) -> bool:
        """Read the FIM prompt at ``snap`` into the KV cache if no request came since ``since``
        (once a suggestion still being made is done). ``whole``: the whole prompt, read exactly
        (no run shifted from elsewhere), even where a request would get the shorter window.
        ``large``: into the larger model's KV cache (the one for explicit requests).

        Returns:
            True when the prompt is in the cache; False when a request came (before or during).
        """
        svc = self.service
        while (svc._flights or svc.alternatives_running) and svc.pace.last == since:
            await asyncio.sleep(0.05)  # a suggestion asked before (or its alternatives) is still being made
        if svc.pace.last != since or svc._flights or svc.alternatives_running:
            return False  # a request came since: not idle
        local = svc.large if large else svc.local
        if local is None:
            return False
        req = CompletionRequest.of(snap, settings, check=False)
        # The larger model's read has a slot of its own: the completion model's work ahead in the
        # document (the suggestion after an accept) does not supersede it; any request stops it.
        slot = snap.uri + (LARGE_SLOT if large else "")
        flight = svc._flights[slot] = Flight(("prefill",), req.cursor.typed, Mode.SINGLE_LINE, idle=True, large=large)
        try:
            flight.future = asyncio.wrap_future(local.submit(
                lambda model: local.read_ahead_job(model, req, settings, flight, whole), ahead=flight.cancel))
            return bool(await svc._wait(slot, flight))
        except Exception as e:  # idle work must never surface
            if not svc._closed:  # at shutdown the engine refuses new work: nothing to say
                log.warning("preparing the prompt at a new place failed: %s", e)
            return False
