"""The agent: a loop of Thought -> Action -> Observation with tools, ending in a verified fix.

- :mod:`.records`: what a run is made of (steps, tool calls, observations, proposed edits).
- :mod:`.tools`: the tools as one table (name, schema, description, handler) and the
  :class:`~.tools.Toolbox` that runs them in the workspace and the sandbox.
- :mod:`.loop`: :class:`~.loop.Agent`, the loop on the assistant's chat model.
- :mod:`.trajectories`: runs stored in SQLite and exported as training data with spans.

Nothing here imports pygls or lsprotocol; the LSP (:mod:`server.lsp.agent`) and HTTP
(:mod:`server.http.openai`) wire it to the editor and to ``serve``.
"""

from .loop import Agent, parse_call
from .records import AgentRun, EditCheck, Observation, ProposedEdit, Step, ToolCall
from .tools import TOOLS, Toolbox, tool_list

__all__ = ["Agent", "AgentRun", "EditCheck", "Observation", "ProposedEdit", "Step", "TOOLS", "ToolCall", "Toolbox",
           "parse_call", "tool_list"]
