"""The assistant: explain, refactor, write tests, hover and chat, by concern.

- :mod:`.records`: what tasks take and return (dataclasses).
- :mod:`.packs`: the versioned prompt packs (``server/prompts/<task>@v<N>.md``).
- :mod:`.store`: conversations, the response cache and local metrics (SQLite).
- :mod:`.tasks`: :class:`Assistant`, the tasks on a chat model's engine or a remote server:
  :mod:`.generation` (the core: generation, cache, metrics), :mod:`.chat`, :mod:`.explain`
  (explain and hover), :mod:`.refactor`, :mod:`.write_tests`.
- :mod:`.host`: the chat model, the assistant and the threads tasks run on.
- :mod:`.testrun`: running tests with pytest against variants of the code, in the sandbox
  (:mod:`.sandbox`; ``driver.py`` runs inside it).
- :mod:`.verify`: verification by running code: a rewrite against the original, tests
  against :mod:`.mutants`, with :mod:`.checks` derived from the code; :mod:`.targets`
  finds where a span's function lives (and where its tests go); :mod:`.expected` takes
  expected values from it.
- :mod:`.symbols`: what hover shows about a symbol (its definition, signature, docstring).

Tree-sitter helpers (definitions, syntax checks) are shared with the index in
:mod:`index.syntax`. Nothing here imports pygls or lsprotocol.
"""

from .explain import docstring_and_signature
from .generation import code_block
from .packs import PromptPack, load_pack
from .records import (
    AssistError,
    CodeSpan,
    ContextItem,
    Mutant,
    MutationScore,
    RefactorResult,
    Reference,
    Reply,
    TestRun,
    TestsResult,
    Verification,
)
from .store import AssistStore, LatencyRow, MetricRow, SessionRow, StoredMessage, data_dir
from .tasks import Assistant
from .testrun import run_pytest
from .write_tests import python_tests

__all__ = ["Assistant", "AssistError", "AssistStore", "CodeSpan", "ContextItem", "LatencyRow", "MetricRow", "Mutant",
           "MutationScore", "PromptPack", "RefactorResult", "Reference", "Reply", "SessionRow", "StoredMessage",
           "TestRun", "TestsResult", "Verification", "code_block", "data_dir", "docstring_and_signature",
           "load_pack", "python_tests", "run_pytest"]
