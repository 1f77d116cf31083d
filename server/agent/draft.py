"""The agent's first steps: the corrected function asked for as a plain answer, then tried as a tool call.

A small model fixes a short function best when asked the way it was trained to answer: "fix the
bug; answer with the corrected function". In the tool-call format the 1.5B mostly copied the
buggy function back (120 of 160 steps on 20 toolz bugs: 1 fixed, against 2 for one plain call).
So a run whose task shows workspace functions (the failing test's callees,
:func:`.context.read_task_code`) starts with up to :data:`DRAFTS` *drafts*: the model is asked
in that plain framing, its answer's function (one of those shown) becomes a ``replace_function``
call, and the loop runs it as it runs any call: the failing test, then the covering tests, in the
sandbox. A draft that passes ends the run: the loop finishes with the draft's own sentence.

Drafts take turns between two *framings*, each its own conversation: the failing test's output
with the test's code and the functions it calls, and the same without the test's code (the
functions alone, as one plain "fix this function" call sees them). On 20 held-out toolz bugs the
two fixed different bugs (5 and 4, 8 in all). The first draft of each framing is greedy; a
framing's later drafts are sampled (the loop's retry temperature) after its own failed draft is
answered in its conversation ("that is not the fix yet"). (Asked to leave the docstring out, which
is most of a draft's tokens, the 1.5B gave the buggy function back more often: 4 of 8 dev bugs
fixed instead of 5.) After the drafts, the run goes on with the tools, its conversation holding
the drafts as the tool calls they were.

:class:`Drafts` holds a run's draft conversations; the loop asks it when a draft is due and for the
call each answer makes. Threads: the loop's worker thread. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import textwrap
from pathlib import Path
from typing import Callable

from ..assist.generation import FENCE, AssistantCore, code_block
from ..assist.packs import load_pack
from ..assist.records import Reply
from .context import TaskCode, is_test_file
from .edits import definition, first_line
from .records import Observation, ProposedEdit, ToolCall
from .tools import Refused, Toolbox

DRAFTS = 6          # draft steps a run starts with (fewer when one passes), the framings in turn
DRAFT_TOKENS = 768  # longest draft answer (a whole function)
MAX_CHANGES = 3     # changed runs of lines named in the answer after a passing draft
CHANGE_CHARS = 100  # of each side of one, at most
AGAIN = ("That is not the fix yet. Compare once more what the test expects with what the code does, and answer with "
         "the function corrected differently: the whole function in one fenced code block.")


def shown_functions(root: Path, shown: list[tuple[str, int, int]]) -> dict[str, str]:
    """``{name: path}`` of the top-level functions of non-test files the task showed (``shown`` as
    :meth:`.context.TaskCode.render` fills it: path relative to ``root``, first and last line)."""
    out: dict[str, str] = {}
    for rel, first, last in shown:
        if is_test_file(Path(rel)):
            continue
        try:
            tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:  # shown whole (a function cut at the task's line limit is not drafted)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and first <= node.lineno and \
                    node.end_lineno <= last:
                out.setdefault(node.name, rel)
    return out


def draft_call(reply: str, functions: dict[str, str], tried: dict[str, list[str]]) -> tuple[ToolCall | None, str]:
    """The ``replace_function`` call a draft answer makes, and what was wrong: with no call, the answer
    made none (no code, code that does not parse, no function it may change); with a call, the call is
    refused unrun (it gives back a function as it was already tried).

    Args:
        reply: the model's answer (a fenced code block with one or more functions).
        functions: ``{name: path}`` it may change (:func:`shown_functions`).
        tried: ``{name: [source]}``: each function as the task showed it and as earlier drafts wrote it;
            a function given back as one of these is no new draft (a model that also writes out the
            helpers it did not touch, or its buggy function again).
    """
    blocks = FENCE.findall(reply)[::-1] or [code_block(reply)]  # the last block first ("Fixed: ..." after the old)
    if blocks == [None]:
        return None, "the answer has no fenced code block"
    calls, why = [], ""
    for code in blocks:
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            why = why or f"the answer's code does not parse ({e.msg}, line {e.lineno})"
            continue
        lines = code.splitlines()
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name not in functions:
                continue
            source = "\n".join(lines[first_line(node) - 1:node.end_lineno])
            call = ToolCall("replace_function", {"path": functions[node.name], "name": node.name,
                                                 "code": source + "\n"})
            if not any(_same(source, old) for old in tried.get(node.name, [])):
                return call, ""
            calls.append(call)
    if calls:
        name = calls[0].args["name"]
        return calls[0], f"the answer gives {name} back as it was already tried: the bug is still in it"
    return None, why or f"the answer has no function named {' or '.join(functions)}"


def _same(a: str, b: str) -> bool:
    """Two functions' code is the same program (docstrings, comments and layout aside)."""
    try:
        return _shape(a) == _shape(b)
    except SyntaxError:
        return False


def _shape(code: str) -> str:
    tree = ast.parse(textwrap.dedent(code))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def current_sources(box: Toolbox, functions: dict[str, str]) -> dict[str, list[str]]:
    """``{name: [source]}`` of each function (decorators included) as the run's proposed edits left it; a
    function whose file cannot be read or parsed now is left out."""
    out: dict[str, list[str]] = {}
    for name, rel in functions.items():
        try:
            text = box.text(box.path(rel))
            node = definition(ast.parse(text), name)
        except (Refused, OSError, SyntaxError, ValueError):
            continue
        if node is not None:
            out[name] = ["\n".join(text.splitlines()[first_line(node) - 1:node.end_lineno])]
    return out


def _words(reply: str, sentences: int = 3) -> str:
    """The first ``sentences`` sentences of an answer's words outside its code blocks."""
    words = " ".join(re.sub(r"```.*?(```|$)", " ", reply, flags=re.S).split())
    return " ".join(re.split(r"(?<=[.!?])\s+", words)[:sentences])


def draft_turn(reply: str, call: ToolCall | None) -> str:
    """The draft as the agent's conversation holds it: a thought (the answer's words outside its code) and
    its tool call, the format of every other turn; the answer itself when it made no call."""
    thought = _words(reply, 2) or "A first draft of the corrected function."
    if call is None:
        return f"Thought: {thought}"
    return f"Thought: {thought}\n<tool_call>\n{json.dumps({'name': call.name, 'arguments': call.args})}\n</tool_call>"


def changed_lines(edit: ProposedEdit) -> list[str]:
    """What ``edit`` changes, one entry per changed run of lines: the old lines, an arrow, the new ones, each
    side in backticks (indentation left out; each side cut to :data:`CHANGE_CHARS`)."""
    old = [line.strip() for line in edit.old.splitlines()]
    new = [line.strip() for line in edit.new.splitlines()]
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op != "equal":
            before, after = " ".join(old[i1:i2])[:CHANGE_CHARS], " ".join(new[j1:j2])[:CHANGE_CHARS]
            out.append(f"`{before}` → `{after}`" if before and after else
                       f"removed `{before}`" if before else f"added `{after}`")
    return out


def draft_finish(answer: str) -> str:
    """The turn that finishes a run after a passing draft, with the draft's words as the answer."""
    call = {"name": "finish", "arguments": {"answer": answer}}
    return f"Thought: The fix works, so I will finish.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


class Drafts:
    """A run's drafts: a conversation per framing, the functions a draft may change, and each function as
    already tried.

    Args:
        box: the run's tools (its ``shown`` filled by rendering ``code`` for the task).
        problem: the task in words.
        code: the code the task is about (no test read: no drafts).
    """

    def __init__(self, box: Toolbox, problem: str, code: TaskCode):
        self.box = box
        self.pack = load_pack("agent-draft")
        self.functions = shown_functions(box.root.resolve(), box.shown) if code.tests else {}
        # The framings: with the test's code, then the functions alone.
        self.framings = [self.pack.render(problem=problem.strip(), code=code.render(numbered=False,
                         with_tests=with_tests)) for with_tests in (True, False)] if self.functions else []
        self.tried = current_sources(box, self.functions)  # each function as shown, then as each draft wrote it
        self.made = 0
        self.reply: Reply | None = None
        self.edits: list = []  # the run's edits before the last draft

    def due(self, steps_taken: int, passed: bool, max_steps: int = DRAFTS + 1) -> bool:
        """The next step is a draft: the task shows functions, every step so far was a draft, fewer than
        :data:`DRAFTS` were made, a step is left after it (to finish), and the last did not pass (then the
        run finishes)."""
        return bool(self.functions) and self.made == steps_taken < min(DRAFTS, max_steps - 1) and not passed

    def stop(self) -> None:
        """No more drafts in this run (the model could not write one: the tool turns go on)."""
        self.functions = {}

    def write(self, assistant: AssistantCore, on_text: Callable[[str], None], temperature: float = 0.0,
              **generation) -> tuple[str, ToolCall | None, str, Reply]:
        """The model's next draft: (the turn as the agent's conversation holds it, its call, what is wrong
        with it, the reply); see :func:`draft_call`. The framings take turns; a framing's first draft is
        greedy, its later ones drawn at ``temperature``. ``generation``: ``cancel``, ``time_cap_s``,
        ``seed`` of :meth:`AssistantCore.answer`.

        Raises:
            AssistError: the model cannot answer.
        """
        framing = self.made % len(self.framings)
        first = self.made < len(self.framings)
        self.made += 1
        self.edits = list(self.box.edits)  # withdrawn again when the draft fails (observe)
        self.reply = assistant.answer("agent", self.framings[framing], self.pack, on_text, max_tokens=DRAFT_TOKENS,
                                      temperature=0.0 if first else temperature, **generation)
        call, wrong = draft_call(self.reply.text, self.functions, self.tried)
        if call is not None and not wrong:
            self.tried.setdefault(call.args["name"], []).append(call.args["code"])
        return draft_turn(self.reply.text, call), call, wrong, self.reply

    def observe(self, obs: Observation) -> Observation:
        """The last draft's observation (after :meth:`write`): answered in its framing's conversation with a
        request for another; when the draft failed, its edit is withdrawn (each draft starts from the code as
        the task showed it, so a wrong change to a helper does not spoil the next), and the observation
        returned says so."""
        framing = (self.made - 1) % len(self.framings)
        self.framings[framing] = self.framings[framing] + [
            {"role": "assistant", "content": self.reply.text},
            {"role": "user", "content": f"Observation: {obs.text}\n\n{AGAIN}"}]
        if obs.ok or self.box.edits == self.edits:
            return obs
        self.box.edits[:] = self.edits
        return Observation(f"{obs.text}\n(This draft's edit is withdrawn: the code is as it was before it.)", False)

    def answer(self) -> str:
        """The run's answer after a passing draft: what its edit changed, line by line (from the edit itself:
        a small model's account of its own fix is often wrong), then what the draft said was wrong (its
        words outside the code)."""
        changes = [f"In {self.box.relative(e.path)}: {change}." for e in self.box.edits for change in changed_lines(e)]
        words = _words(self.reply.text if self.reply is not None else "")
        return " ".join(changes[:MAX_CHANGES] + [f"The model's account: {words}" if words else
                                                 "The failing test and the tests that cover the change pass."])
