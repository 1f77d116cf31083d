"""The completion pipeline: a document snapshot in, a suggestion out, fast while typing.

Modules by job (each runs where it says):

- :mod:`.parts`: what a snapshot, a suggestion, a cached entry and a flight are; the gate
  (:func:`check_document`) and token healing's count. Plain data, any thread.
- :mod:`.request`: :class:`CompletionRequest`, built once per request: the cursor's text,
  the length policy, the cache key, the token budget.
- :mod:`.cache`: the type-through cache and the alternatives shown (event loop only).
- :mod:`.service`: :class:`CompletionService`: flights, joining, debounce, work ahead (event loop only).
- :mod:`.local`: :class:`LocalGenerator`: FIM prompt, cold windows, cross-file context,
  healing, candidates, on the engine's owner thread. :mod:`server.alternatives` uses it too.
- :mod:`.remote`: :class:`RemoteGenerator`: the same over an OpenAI-compatible server.
- :mod:`.large`: :class:`~.large.LargerModel`: the assistant's larger model writing the
  suggestions the user asks for (``completion.manualModel``), with a KV cache of its own.

This package imports nothing from pygls or lsprotocol.
"""

from .local import ContextProvider, LocalGenerator, heal
from .parts import (
    MAX_HEALED_TOKENS,
    SINGLE_LINE_MAX_TOKENS,
    CompletionStats,
    Confidence,
    Snapshot,
    Suggestion,
    Unsuitable,
    check_document,
    healing_tokens,
    language_grammar,
    least_sure,
)
from .request import CompletionRequest
from .service import CompletionService, RemoteCompletionService

__all__ = ["MAX_HEALED_TOKENS", "SINGLE_LINE_MAX_TOKENS", "CompletionRequest", "CompletionService",
           "CompletionStats", "Confidence", "ContextProvider", "LocalGenerator", "RemoteCompletionService", "Snapshot",
           "Suggestion", "Unsuitable", "check_document", "heal", "healing_tokens", "language_grammar", "least_sure"]
