"""The assistant's larger model writing the suggestions the user asks for (``completion.manualModel``).

A suggestion asked for (Invoked) may take longer than one as you type, and the assistant's model
(the 1.5B, loaded for chat anyway) fills in far better than the completion model (the 0.5B). It
writes through a :class:`~.local.LocalGenerator` of its own, on a second context of the chat
model's weights (:meth:`server.engine.Engine.open_second`): its own KV cache, the same prompts,
rules and caches as the completion model. :class:`LargerModel` decides, per request, whether it
writes (``auto``: while it has no chat answer to write, and where it reads what its KV cache lacks
of the prompt in time) and counts its answers. Event loop, but for :meth:`LargerModel.job`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..config import Settings
from ..engine import LoadedModel
from .local import LocalGenerator
from .parts import Entry
from .request import CompletionRequest

log = logging.getLogger("server.completion")
TOO_SLOW = object()  # the larger model declined an explicit request it would not read in time (see job)


class LargerModel:
    """The larger model for explicit requests: its generator, its name (for ``deepseek.status``), its answers.

    Attributes:
        generator: writes on the second context of the chat model (``generator.engine`` is a
            :class:`server.engine.SecondLane`).
        name: the model's name. answers: explicit requests it wrote.
    """

    def __init__(self, generator: LocalGenerator, name: str):
        self.generator, self.name, self.answers = generator, name, 0

    def takes(self, manual: bool, idle: bool, settings: Settings) -> bool:
        """Whether it writes a request: one the user asked for, unless ``completion.manualModel`` is
        ``small``; under ``auto`` not while its owner thread writes a chat answer (the request would
        wait for it)."""
        if not manual or idle or settings.completion_manual_model == "small":
            return False
        if settings.completion_manual_model == "auto" and self.generator.engine.busy:
            log.info("explicit request: the larger model is busy (a chat answer); the completion model answers")
            return False
        return True

    def job(self, write: Callable[[LoadedModel], Entry | None], req: CompletionRequest, settings: Settings,
            cap_ms: float, t0: float) -> Callable[[LoadedModel], Entry | object | None]:
        """``write`` (the generation, on the owner thread) as this model's job: under ``auto``, first
        checked to read what the KV cache lacks of the prompt within half of ``cap_ms`` from ``t0``
        (:meth:`LocalGenerator.affords`; else :data:`TOO_SLOW`); the entry is marked as its own."""
        check = settings.completion_manual_model == "auto"

        def run(model: LoadedModel) -> Entry | object | None:
            left = cap_ms / 2 - (time.monotonic() - t0) * 1000
            if check and not self.generator.affords(model, req, settings, left):
                return TOO_SLOW
            entry = write(model)
            if entry is not None:
                entry.large = True
            return entry
        return run
