"""The assistant: explain, refactor, write tests, hover and chat, by concern.

- :mod:`.records`: what tasks take and return (dataclasses).
- :mod:`.packs`: the versioned prompt packs (``server/prompts/<task>@v<N>.md``).
- :mod:`.store`: conversations, the response cache and local metrics (SQLite).
- :mod:`.tasks`: the tasks themselves, on a chat model's engine or a remote server.
- :mod:`.testrun`: running tests with pytest against variants of the code, in the sandbox.
- :mod:`.verify`: mutants, verification of rewrites by running code (``driver.py`` runs inside the sandbox).

Tree-sitter helpers (definitions, syntax checks) are shared with the index in
:mod:`index.syntax`. Nothing here imports pygls or lsprotocol.
"""

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
from .tasks import Assistant, code_block, docstring_and_signature, python_tests
from .testrun import run_pytest

__all__ = ["Assistant", "AssistError", "AssistStore", "CodeSpan", "ContextItem", "LatencyRow", "MetricRow", "Mutant",
           "MutationScore", "PromptPack", "RefactorResult", "Reference", "Reply", "SessionRow", "StoredMessage",
           "TestRun", "TestsResult", "Verification", "code_block", "data_dir", "docstring_and_signature",
           "load_pack", "python_tests", "run_pytest"]
