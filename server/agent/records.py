"""What an agent run is made of: its steps, the edits it proposed, how it ended (dataclasses).

A run is a problem, then steps; each step is the model's turn (a thought and one tool call,
as it wrote them) and the tool's observation. The character spans of each step's text
(``reason``, ``action``, ``observation``) are what :mod:`.trajectories` exports for
span-specific training losses. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """One parsed ``<tool_call>``: the tool's name and its arguments (a JSON object)."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """What a tool returned to the model: its text (bounded, see :data:`.tools.OBSERVATION_CHARS`)
    and whether the call worked (``ok`` False: a malformed call, an unknown tool, a tool error,
    a refusal or a timeout; the model reads why and may try again). ``kind``, for the loop (never
    shown): ``passed`` (a proposed edit passed the task's test and the tests that cover it: the run
    finishes), ``shown`` (a read refused: the code is already in the task), else ""."""

    text: str
    ok: bool = True
    kind: str = ""


@dataclass(frozen=True)
class Step:
    """One Thought -> Action -> Observation turn.

    Attributes:
        index: 1-based.
        text: the model's turn as it wrote it (thought, then the tool call).
        thought: the reasoning before the call (may be empty).
        call: the parsed tool call, or None when the turn held none or a malformed one.
        observation: what the tool (or the parser) answered.
        seconds: wall time of the step (model and tool).
        tokens: tokens the model wrote in this turn.
        draft: the turn was a draft (:mod:`.draft`): the model answered a plain "fix this function"
            prompt, and ``text`` is that answer as the turn it made (its words as the thought, its
            function as the ``replace_function`` call).
    """

    index: int
    text: str
    thought: str
    call: ToolCall | None
    observation: Observation
    seconds: float = 0.0
    tokens: int = 0
    draft: bool = False

    @property
    def tool(self) -> str:
        """The tool called, ``malformed`` when the turn held no valid call."""
        return self.call.name if self.call is not None else "malformed"

    def spans(self) -> tuple[str, list[tuple[str, int, int]]]:
        """The step as one text (the model's turn, a blank line, ``Observation: ...``) and its
        spans ``(kind, start, end)`` in characters, ``kind`` one of ``reason``, ``action``, ``observation``."""
        cut = self.text.find("<tool_call>")
        reason_end = cut if cut >= 0 else len(self.text)
        reason_start = len(self.text) - len(self.text.lstrip())
        spans = []
        if self.text[reason_start:reason_end].strip():
            spans.append(("reason", reason_start, len(self.text[:reason_end].rstrip())))
        if cut >= 0:
            spans.append(("action", cut, len(self.text.rstrip())))
        head = self.text.rstrip() + "\n\n"
        obs = f"Observation: {self.observation.text}"
        spans.append(("observation", len(head), len(head) + len(obs)))
        return head + obs, spans


@dataclass(frozen=True)
class ProposedEdit:
    """An edit the agent proposed: in ``path`` (absolute), the original file's text ``old``, at character
    ``at`` of the original, replaced by ``new``. A run's edits of one file never overlap (a later
    proposal that touches an earlier one replaces it) and all apply to the file as the agent first read
    it. Recorded, never written: the user applies them after they are verified."""

    path: Path
    old: str
    new: str
    at: int = 0


def apply_edits(original: str, edits: list[ProposedEdit]) -> str:
    """``original`` with ``edits`` (of that file, non-overlapping, positions in ``original``) made."""
    text = original
    for e in sorted(edits, key=lambda e: e.at, reverse=True):
        text = text[:e.at] + e.new + text[e.at + len(e.old):]
    return text


@dataclass(frozen=True)
class EditCheck:
    """Whether the proposed edits pass the workspace's tests that cover them, run in the sandbox.

    ``verdict``: ``passed`` (every covering test passed with the edits), ``failed`` (one did
    not: ``failed`` names them), ``unverified`` (nothing could be run: ``summary`` says why).
    ``tests``: what was run (test files and node ids); ``output``: the end of pytest's output
    when the verdict is ``failed`` (bounded), for the model to read.
    """

    verdict: str
    summary: str
    tests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    output: str = ""


@dataclass
class AgentRun:
    """A whole run: the problem, the steps, and how it ended.

    Attributes:
        id: the run's id (also its row in the store).
        problem: what the user asked (with the failing output when there is one).
        model: the model that answered; ``prompt_version`` the packs (``agent@v3``; ``agent@v3+agent-draft@v1``
            when the run drafted).
        steps: in order.
        outcome: ``finished`` (the model called finish), ``budget`` (steps or time ran out),
            ``cancelled``, ``error`` (the model could not answer: ``answer`` says why).
        answer: finish's answer, or why the run ended without one.
        edits: the proposed edits, in order (each applies to the file with the earlier ones applied).
        check: the edits' verification (None when no edit was proposed).
        seconds: wall time of the run.
    """

    id: str
    problem: str
    model: str
    prompt_version: str
    steps: list[Step] = field(default_factory=list)
    outcome: str = ""
    answer: str = ""
    edits: list[ProposedEdit] = field(default_factory=list)
    check: EditCheck | None = None
    seconds: float = 0.0

    @property
    def verified(self) -> bool:
        """The run finished and its edits (at least one) passed the tests that cover them."""
        return self.outcome == "finished" and bool(self.edits) and self.check is not None and \
            self.check.verdict == "passed"

    @property
    def malformed(self) -> int:
        """Turns whose tool call could not be parsed."""
        return sum(1 for s in self.steps if s.call is None)


def step_dict(step: Step) -> dict[str, Any]:
    """A step as JSON: ``{index, thought, tool, arguments, observation, ok, seconds, tokens, draft}``
    (``tool`` is ``malformed`` and ``arguments`` null for a turn without a valid call)."""
    return {"index": step.index, "thought": step.thought, "tool": step.tool,
            "arguments": step.call.args if step.call is not None else None,
            "observation": step.observation.text, "ok": step.observation.ok, "seconds": round(step.seconds, 2),
            "tokens": step.tokens, "draft": step.draft}


def run_dict(run: AgentRun) -> dict[str, Any]:
    """A run as JSON (the contract of docs/PROTOCOL.md ``deepseek.agent`` and docs/HTTP.md's ``agent``):
    ``{runId, outcome, answer, model, promptVersion, steps, edits: [{path, old, new}], check, verified,
    seconds, malformed}``; ``check`` is null without edits, else ``{verdict, summary, tests, failed}``."""
    check = None if run.check is None else {"verdict": run.check.verdict, "summary": run.check.summary,
                                            "tests": run.check.tests, "failed": run.check.failed}
    return {"runId": run.id, "outcome": run.outcome, "answer": run.answer, "model": run.model,
            "promptVersion": run.prompt_version, "steps": [step_dict(s) for s in run.steps],
            "edits": [{"path": str(e.path), "old": e.old, "new": e.new} for e in run.edits], "check": check,
            "verified": run.verified, "seconds": round(run.seconds, 2), "malformed": run.malformed}
