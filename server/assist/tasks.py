"""The assistant: explain, refactor, write tests, hover and chat, on one chat model.

:class:`Assistant` is the core's generation, cache and metrics
(:class:`.generation.AssistantCore`) with each task family from its own module:

- :meth:`~Assistant.chat`: :mod:`.chat`;
- :meth:`~Assistant.explain` and :meth:`~Assistant.hover`: :mod:`.explain`;
- :meth:`~Assistant.refactor`: :mod:`.refactor`;
- :meth:`~Assistant.write_tests`: :mod:`.write_tests`;
- :meth:`~Assistant.answer` (a conversation a client built itself): :mod:`.generation`.

Threads: every task blocks for the length of a generation: call them from a worker
thread, never from the event loop. This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

from .chat import ChatTask
from .explain import ExplainTasks
from .refactor import RefactorTask
from .write_tests import WriteTestsTask


class Assistant(ChatTask, ExplainTasks, RefactorTask, WriteTestsTask):
    """The tasks, on top of a chat model's :class:`~server.engine.Engine` (or a remote server).

    Made as an :class:`~.generation.AssistantCore` (the same arguments).
    """
