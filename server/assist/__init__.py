"""The assistant: explain, refactor, write tests, hover and chat, by concern.

- :mod:`.records`: what tasks take and return (dataclasses).
- :mod:`.packs`: the versioned prompt packs (``server/prompts/<task>@v<N>.md``).
- :mod:`.store`: conversations, the response cache and local metrics (SQLite).
- :mod:`.tasks`: the tasks themselves, on a chat model's engine or a remote server.
- :mod:`.testrun`: running generated tests with pytest.

Tree-sitter helpers (definitions, syntax checks) are shared with the index in
:mod:`index.syntax`. Nothing here imports pygls or lsprotocol.
"""

from .packs import PromptPack, load_pack
from .records import AssistError, CodeSpan, ContextItem, RefactorResult, Reference, Reply, TestRun, TestsResult
from .store import AssistStore, LatencyRow, MetricRow, SessionRow, StoredMessage, data_dir
from .tasks import Assistant, code_block, docstring_and_signature, python_tests
from .testrun import run_pytest

__all__ = ["Assistant", "AssistError", "AssistStore", "CodeSpan", "ContextItem", "LatencyRow", "MetricRow",
           "PromptPack", "RefactorResult", "Reference", "Reply", "SessionRow", "StoredMessage", "TestRun",
           "TestsResult", "code_block", "data_dir", "docstring_and_signature", "load_pack", "python_tests",
           "run_pytest"]
