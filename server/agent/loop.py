"""The agent's loop: Thought -> Action -> Observation, until ``finish``, a budget, or cancel.

Each turn the chat model writes a thought and one tool call, in the format Qwen2.5's
instruct models are trained on (``<tool_call>{"name", "arguments"}</tool_call>``), told in
the pack's system text (``agent@v<N>``); generation stops as soon as the call is closed. The
call is parsed strictly (one JSON object, a known tool, the schema's arguments): anything
else becomes an observation that says what was wrong, and the model tries again. The turn
and its observation are appended to the conversation, so each turn reads only the new
text (the chat model's KV cache holds the rest). The run ends at ``finish``, after
``max_steps`` turns or ``time_budget_s`` seconds, or when ``cancel`` is set (within one
token of the model or one tool run). Proposed edits are run against the workspace's tests
that cover them (:meth:`.tools.Toolbox.verify`) as soon as a proposal makes the task's failing
test pass, and the verdict is part of that step's observation; a ``finish`` whose edits fail
them is refused with their output, and the model goes on (a second finish with the same edits
ends the run); the run's last edits are checked the same way when it ends otherwise. Nothing
is ever written here.

Threads: blocks; call from a worker thread. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from typing import Callable

import json_repair

from ..assist.generation import OPEN_END, AssistantCore
from ..assist.packs import load_pack
from ..assist.records import AssistError
from .context import read_task_code
from .draft import Drafts, draft_finish
from .records import AgentRun, Observation, Step, ToolCall
from .tools import TOOLS_BY_NAME, Toolbox, tool_list

log = logging.getLogger(__name__)

MAX_STEPS = 8            # turns before the run ends with outcome "budget"
TIME_BUDGET_S = 600.0    # seconds before the run ends with outcome "budget"
TURN_TOKENS = 768        # longest tool call (a propose_edit carries code)
THOUGHT_TOKENS = 160     # longest thought before the call is asked for
RETRY_TEMPERATURE = 0.7  # a turn after a failed step is sampled from this temperature up (the others: greedy)
MAX_TEMPERATURE = 0.95   # the highest (at 1.2 the 1.5B wrote Chinese words and broken code into its calls)
OPEN, CLOSE = "<tool_call>", "</tool_call>"
EDITS = ("propose_edit", "replace_function")  # the tools that propose an edit
FINISH_NOW = "call finish now"  # said when a proposal passes its checks
NODE_ID = re.compile(r"[\w./-]+\.py::[\w:\[\]-]+")  # a pytest node id named in the task
THOUGHT_SENTENCES = 3    # a thought is kept to its first sentences (a small model can repeat itself)
OnStep = Callable[[Step], None]       # a finished step (worker thread)
OnText = Callable[[str], None]        # a piece of the current turn as the model writes it (engine thread)
OnProgress = Callable[[str], None]    # what the run is doing, in words ("step 2: run_tests"); worker thread


def _node_ids(root, node_ids: list[str]) -> list[str]:
    """Node ids made absolute (relative ones are under ``root``), each once, in order."""
    out: list[str] = []
    for n in node_ids:
        file, sep, rest = n.partition("::")
        path = file if file.startswith("/") else str(root / file)
        if path + sep + rest not in out:
            out.append(path + sep + rest)
    return out


def parse_call(turn: str) -> tuple[str, ToolCall | None, str]:
    """A turn's thought, its tool call, and what was wrong with it ("" when the call is valid).

    The thought is the text before ``<tool_call>`` (a leading ``Thought:`` removed); the call is
    the JSON object between the tags (a missing closing tag is tolerated at the turn's end).
    """
    cut = turn.find(OPEN)
    thought = (turn[:cut] if cut >= 0 else turn).strip()
    if thought.lower().startswith("thought:"):
        thought = thought[len("thought:"):].strip()
    if cut < 0:
        return thought, None, "the turn has no <tool_call>"
    call = _first_object(turn[cut + len(OPEN):], repair=True)
    if isinstance(call, str):
        return thought, None, f"the tool call is not valid JSON ({call})"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return thought, None, 'the tool call must be an object {"name": ..., "arguments": {...}}'
    args = call.get("arguments", {})
    if isinstance(args, str):  # some models send the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            pass
    if not isinstance(args, dict):
        return thought, None, "the tool call's arguments must be a JSON object"
    if call["name"] not in TOOLS_BY_NAME:
        return thought, None, f"there is no tool {call['name']!r}; the tools are {', '.join(TOOLS_BY_NAME)}"
    return thought, ToolCall(call["name"], args), ""


def _head(steps: list[Step]) -> str:
    """How the next turn starts: ``Thought: ``; after a failed call, the failure named and a change of course
    begun, so that the model does not write the same call again."""
    if not steps:
        return "Thought: "
    last = steps[-1]
    if _passed(steps):
        # The fix passes the task's test and the other tests: the 1.5B then proposed it again instead
        # of finishing (the end-to-end test), so the turn is begun as the finish; it writes the answer.
        return f'Thought: The fix works, so I will finish.\n{OPEN}\n{{"name": "finish", "arguments": {{"answer": "'
    if last.observation.kind == "shown":
        # A small model asks again for the code it was shown (the 1.5B, eight times): point it at the fix.
        return "Thought: The code is already shown above, so instead of reading it I will now propose a fix for it "
    if last.observation.ok:
        return "Thought: "
    if last.call is None and (bad := re.search(r"there is no tool '([^']*)'", last.observation.text)):
        # The 1.5B called a tool it made up (define_function) five times in a row: the real ones named
        # in its own thought, the choice of one begun.
        return f"Thought: There is no tool {bad.group(1)}; the tools are {', '.join(TOOLS_BY_NAME)}. So I will call "
    why = last.observation.text.removeprefix("error: ").split(";")[0].split("\n")[0].split(" (")[0][:120]
    # A step without a call has no tool to name ("The last malformed did not work" read as nonsense).
    head = f"Thought: The last {last.tool if last.call is not None else 'tool call'} did not work ({why})"
    if last.call is not None and last.call.name == "propose_edit" and isinstance(new := last.call.args.get("new"), str):
        head += f", so `{' '.join(new.split())[:80]}` is not the fix"  # named: the next draw tends to avoid it
    return head + ", so this time I will "


def _retry_temperature(steps: list[Step]) -> float:
    """0 (greedy) after a step that worked; after failed steps, higher with each failure in a row
    (RETRY_TEMPERATURE, then +0.25 each, at most MAX_TEMPERATURE): a confident small model draws the same
    call at 0.7."""
    failures = 0
    for s in reversed(steps):
        if s.observation.ok:
            break
        failures += 1
    return 0.0 if not failures else min(MAX_TEMPERATURE, RETRY_TEMPERATURE + 0.25 * (failures - 1))


def _verdict(check) -> str:
    """What a proposal's check says to the model: finish, or what failed."""
    if check.verdict == "passed":
        return f"The other tests of the code you changed pass too ({check.summary}): {FINISH_NOW}."
    if check.verdict == "failed":
        return f"But the other tests of the code you changed do not all pass: {check.summary}.\n{check.output}"
    return f"(The other tests could not be run: {check.summary}.) Call finish if the fix is right."


def _passed(steps: list[Step]) -> bool:
    """The last step was a proposal that passed its checks (the next turn is begun as the finish)."""
    last = steps[-1] if steps else None
    return last is not None and last.observation.kind == "passed"


def _refused_finish(steps: list[Step]) -> bool:
    """A finish was already refused in this run (the second one ends it: the model gives up)."""
    return any(s.call is not None and s.call.name == "finish" and not s.observation.ok for s in steps)


def _repeated(steps: list[Step], call: ToolCall) -> int | None:
    """The step that already made this call to no new effect, or None. Greedy decoding given the same
    conversation writes the same turn: the 1.5B proposed ``return []`` for toolz's ``drop`` eight times
    in a row, each time after "so this time I will propose a different fix".

    A read (read_file, retrieve_knowledge) or a proposal (propose_edit: the same path, old and new) made
    before; a run of the same tests (run_tests, execute_python) with no edit proposed since.
    """
    if call.name in ("read_file", "retrieve_knowledge"):
        return next((s.index for s in steps if s.call == call), None)
    if call.name in EDITS:  # a proposal that failed (one that passed may be made again: it passes again)
        return next((s.index for s in steps if s.call == call and not s.observation.ok), None)
    if call.name in ("run_tests", "execute_python"):
        for s in reversed(steps):
            if s.call == call:
                return s.index
            if s.call is not None and s.call.name in EDITS:
                return None
    return None


def _first_object(body: str, repair: bool = False) -> object:
    """The first JSON value after ``<tool_call>`` (a fence or blanks before it skipped; anything after it,
    such as a second call the model went on to write, ignored), or why there is none (a str).

    ``repair``: a call written to its end (its closing tag, or a last ``}``) that is not valid JSON is
    read with the quotes inside its last string argument escaped (:func:`_quotes_escaped`), line breaks
    written as themselves allowed, then by json-repair, when that gives an object with a ``name`` that
    fills every argument (:func:`_filled`). A small model writes a quote unescaped in a finish's answer
    (``"answer": "expected "DE""``), in a function's code (a docstring's three quotes, ``# missing "x"``)
    or a raw line break. Only for a turn already ended, never to decide whether a call is complete: a
    call cut short stays malformed (it would be "repaired" into a shorter one).
    """
    ended = CLOSE in body or body.rstrip().endswith("}")  # written to its end, not cut short
    body = body.split(CLOSE, 1)[0].strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except ValueError as e:
        if not (repair and ended):
            return str(e)
        value = None
        for candidate in (_quotes_escaped(body), body):
            try:  # a line break or tab written as itself inside a string is read as one (strict=False)
                value, _ = json.JSONDecoder(strict=False).raw_decode(candidate)
                break
            except ValueError:
                pass
        if value is None:  # a docstring's three quotes are the code's own (never in valid JSON)
            value = json_repair.loads(body.replace('"""', '\\"\\"\\"'))
        if isinstance(value, dict) and isinstance(value.get("name"), str) and _filled(value.get("arguments")):
            log.info("agent: a tool call that was not valid JSON (%s) read by repairing it", e)
            return value
        return str(e)
    return value if not isinstance(value, str) else f"a string, not an object: {value[:40]!r}"


LAST_STRING = re.compile(r'^(.*?"(?:code|new|answer|old)"\s*:\s*")(.*)("\s*}\s*}\s*)$', re.S)


def _quotes_escaped(body: str) -> str:
    """A call whose last argument is a string of code or prose (``code``, ``new``, ``old``, ``answer``)
    with every quote inside that string escaped: the call's shape is known (the string runs to the
    ``"}}`` that ends the call), so a quote before that end is the text's own. Unchanged otherwise (no such
    argument, or one that another follows)."""
    m = LAST_STRING.match(body)
    if m is None or re.search(r'"\s*,\s*"\w+"\s*:', m.group(2)):  # another argument after it: not the last
        return body
    inner = re.sub(r'(?<!\\)((?:\\\\)*)"', r'\1\\"', m.group(2))  # a quote after an even run of backslashes
    return m.group(1) + inner + m.group(3)


def _filled(value: object) -> bool:
    """No empty or null value in a repaired call's arguments: json-repair fills a value the model left
    out (``{"path": }``) with one; that call stays malformed rather than run with an invented value."""
    if isinstance(value, dict):
        return all(_filled(v) for v in value.values())
    return value not in ("", None)


def _closed(text: str) -> bool:
    """The turn's tool call is complete: its closing tag, or a whole JSON object after ``<tool_call>``
    (a model that goes on to a second call inside the same tags is stopped there)."""
    if OPEN not in text:
        return False
    body = text[text.find(OPEN) + len(OPEN):]
    return CLOSE in body or (body.rstrip().endswith("}") and isinstance(_first_object(body), dict))


def _bare_call(text: str) -> int | None:
    """Where a tool call written without ``<tool_call>`` starts (a whole ``{"name": ...}`` object), or None."""
    at = text.find('{"name"')
    return at if at >= 0 and isinstance(_first_object(text[at:]), dict) else None


def _thought_done(text: str) -> bool:
    """The first part of a turn stops at a complete tool call (with or without its tags), at an observation
    the model starts to invent, or at the end of its first paragraph when no call has begun."""
    if OPEN in text:
        return _closed(text)
    if '{"name"' in text:
        return _bare_call(text) is not None
    return "Observation" in text or "\nAction" in text or ("\n\n" in text.strip()) or \
        len(re.findall(r"[.!?](\s|$)", text)) > THOUGHT_SENTENCES


def _call_done(call_head: str) -> Callable[[str], bool]:
    """The second part of a turn stops once the call begun in ``call_head`` is complete."""
    return lambda text: _closed(call_head + text) or "Observation" in text


def _thought(text: str) -> str:
    """The reasoning of a turn's first part, without what followed it (a call begun, an invented observation)."""
    cut = min((i for i in (text.find(OPEN), text.find("Observation"), text.find("\nAction"), text.find("\n\n"))
               if i >= 0), default=len(text))
    bare = text.find('{"name"')
    cut = min(cut, bare) if bare >= 0 else cut
    plain = re.sub(r"\bThought:\s*", "", " ".join(text[:cut].split()))
    plain = re.sub(r"(^|(?<=[.!?] ))\d+\.\s*", "", plain)  # a numbered list's "1. ", "2. "
    sentences = [x for x in re.split(r"(?<=[.!?])\s+", plain) if x.strip()]
    kept: list[str] = []
    for sentence in sentences[:THOUGHT_SENTENCES]:
        if sentence in kept:  # the model began to repeat itself
            break
        kept.append(sentence)
    return " ".join(kept) or "I will use a tool."


def _cut(turn: str) -> str:
    """A turn up to the end of its tool call, written as ``<tool_call>\n{json}\n</tool_call>`` (or up to
    an observation the model started to invent)."""
    if OPEN in turn:
        head = turn[:turn.index(OPEN)]
        call = _first_object(turn[turn.index(OPEN) + len(OPEN):], repair=True)
        if isinstance(call, dict):
            return f"{head.rstrip()}\n{OPEN}\n{json.dumps(call)}\n{CLOSE}"
    cut = turn.find("Observation")
    return (turn[:cut] if cut >= 0 else turn).rstrip()


class Agent:
    """Runs the loop on an assistant's chat model (local or remote) with a :class:`~.tools.Toolbox`.

    Args:
        assistant: the assistant whose model writes the turns (:class:`server.assist.Assistant`).
        max_steps, time_budget_s: the run's budgets (turns; seconds of wall time).
    """

    def __init__(self, assistant: AssistantCore, max_steps: int = MAX_STEPS, time_budget_s: float = TIME_BUDGET_S):
        self.assistant, self.max_steps, self.time_budget_s = assistant, max_steps, time_budget_s

    def _turn(self, messages: list[dict[str, str]], pack, cancel: threading.Event, left: float,
              on_text: OnText | None, head: str = "Thought: ", temperature: float = 0.0,
              seed: int = 0) -> tuple[str, int, str]:
        """One turn: (its text, tokens written, the generation's finish reason).

        The answer is started with ``head`` (``Thought:``, or after a failed call a sentence that
        says so: greedy decoding would otherwise repeat the same call word for word; the model
        continues its own message). When the
        model goes on to a complete tool call, that is the turn. Otherwise (it wrote a paragraph,
        an invented observation, or ran long) its thought is kept and the answer is continued
        from ``<tool_call>{"name": "``: the model then writes a tool's name and arguments. Both
        parts share the prompt, which the KV cache holds, so the second reads only the thought.
        ``temperature``, ``seed``: both parts sampled (a retry after a failed step), else greedy.
        """
        drawn = {"temperature": temperature, "seed": seed}
        write = on_text or (lambda _t: None)
        done = _thought_done if OPEN not in head else (lambda t: _closed(head + t))  # a call begun in the head
        first = self.assistant.answer("agent", messages + [{"role": "assistant", "content": head + OPEN_END}], pack,
                                      write, max_tokens=THOUGHT_TOKENS, cancel=cancel, stop=done,
                                      time_cap_s=left, **drawn)
        text = head + (first.text.lstrip() if head.endswith(" ") else first.text)
        if first.finish == "cancelled" or _closed(text):
            return _cut(text), first.output_tokens, first.finish
        if (bare := _bare_call(text)) is not None:  # the call written without its tags
            return _cut(f"{text[:bare]}{OPEN}\n{text[bare:]}"), first.output_tokens, first.finish
        thought = _thought(text.removeprefix("Thought:"))
        call = f"Thought: {thought}\n{OPEN}\n{{\"name\": \""
        write(f"\n{OPEN}\n{{\"name\": \"")  # the part the model did not write
        second = self.assistant.answer("agent", messages + [{"role": "assistant", "content": call + OPEN_END}], pack,
                                       write, max_tokens=TURN_TOKENS, cancel=cancel, stop=_call_done(call),
                                       time_cap_s=left, **drawn)
        return _cut(call + second.text), first.output_tokens + second.output_tokens, second.finish

    def run(self, problem: str, box: Toolbox, tests: list[str] = (), on_step: OnStep | None = None,
            on_text: OnText | None = None, cancel: threading.Event | None = None,
            on_progress: OnProgress | None = None, run_id: str | None = None) -> AgentRun:
        """Work on ``problem`` until finish, a budget or cancel. Blocks. Never raises for what the
        model or a tool does; a model that cannot answer at all ends the run with outcome ``error``.

        Args:
            problem: the task in words (a failing test's name and output, a diagnostic, a request).
            box: the tools' workspace and state; its ``cancel`` is tied to ``cancel``.
            tests: test node ids the problem is about (and any ``path.py::name`` the problem names):
                their code and the workspace code they call are added to the task
                (:func:`.context.read_task_code`); the final verification runs them too.
            on_step: called after each step.
            on_text: each piece of a turn as it is written.
            cancel: set to stop (within one token or one tool run).
            on_progress: what the run does now, in words (for a progress bar).
            run_id: the run's id (a new one when None).
        """
        say = on_progress or (lambda _m: None)
        cancel = cancel or threading.Event()
        box.cancel = cancel
        pack = load_pack("agent")
        tests = _node_ids(box.root, [*tests, *NODE_ID.findall(problem)])
        box.task_tests = list(tests)
        code = read_task_code(box.root, tests, box.readable)
        known = code.render(box.shown)
        messages = pack.render(tools=tool_list(), problem=problem.strip() + (f"\n\n{known}" if known else ""))
        drafts = Drafts(box, problem, code)  # the first steps, when the task shows functions
        run = AgentRun(run_id or uuid.uuid4().hex[:16], problem, self.assistant.model_name, pack.version)
        checked: list = []   # the edits run.check was made with
        refused: list = []   # the edits a finish was refused for (a second finish with them ends the run)
        t0 = time.monotonic()
        while True:
            left = self.time_budget_s - (time.monotonic() - t0)
            if cancel.is_set():
                run.outcome, run.answer = "cancelled", "cancelled"
                break
            if len(run.steps) >= self.max_steps or left <= 0:
                run.outcome = "budget"
                run.answer = (f"stopped after {len(run.steps)} steps" if left > 0 else
                              f"stopped after {self.time_budget_s:.0f} s") + " without finishing"
                break
            t_step = time.monotonic()
            drafting = drafts.due(len(run.steps), _passed(run.steps), self.max_steps)
            # A draft that passes its checks is finished with its own words (the finish turn read the whole
            # conversation again: 30-77 s with the 1.5B for an answer of 40 tokens).
            finishing = bool(run.steps) and run.steps[-1].draft and _passed(run.steps)
            doing = "drafting a fix" if drafting else "finishing" if finishing else "thinking"
            say(f"step {len(run.steps) + 1}: {doing}")
            # After a failed step the turn is sampled: greedy decoding, given the failure, tends to write the
            # same call again (each retry draws with its own seed: the run is reproducible).
            drawn = {"temperature": _retry_temperature(run.steps), "seed": len(run.steps)}
            try:
                if drafting:
                    turn, call, wrong, reply = drafts.write(self.assistant, on_text or (lambda _t: None),
                                                            cancel=cancel, time_cap_s=left, **drawn)
                    tokens, finish = reply.output_tokens, reply.finish
                elif finishing:
                    turn, tokens, finish = draft_finish(drafts.answer()), 0, "stop"
                else:
                    turn, tokens, finish = self._turn(messages, pack, cancel, left, on_text, _head(run.steps),
                                                      **drawn)
            except AssistError as e:
                if drafting:  # e.g. the draft conversation outgrew the context: the tool turns go on
                    log.info("agent: no more drafts: %s", e)
                    drafts.stop()
                    continue
                run.outcome, run.answer = "error", str(e)
                break
            if finish == "cancelled" or cancel.is_set():
                run.outcome, run.answer = "cancelled", "cancelled"
                break
            if drafting:
                thought = parse_call(turn)[0]
            else:
                thought, call, wrong = parse_call(turn)
            if call is None:
                obs = Observation(f"error: {wrong}." + ("" if drafting else " Write one thought, then exactly one "
                                  f'{OPEN}{{"name": ..., "arguments": {{...}}}}{CLOSE}'), False)
            elif drafting and wrong:  # a draft that gives back code already tried: refused unrun
                obs = Observation(f"error: {wrong}.", False)
            elif call.name == "finish" and tests and not box.edits and not _refused_finish(run.steps):
                obs = Observation("error: the failing test still fails and no fix was proposed. Propose one with "
                                  "propose_edit (finish again to give up).", False)
            elif (earlier := _repeated(run.steps, call)) is not None:
                obs = Observation(f"error: you already called {call.name} with these arguments in step {earlier}; "
                                  "its observation is above. Do something else"
                                  + (": a different fix." if call.name in EDITS else "."), False)
            else:
                say(f"step {len(run.steps) + 1}: {call.name}")
                obs = box.call(call.name, call.args)
                if box.edits and obs.ok and call.name in (*EDITS, "finish") and checked != box.edits:
                    # A proposal that passes the task's test, and a finish, are checked against the other
                    # tests of the code they change: the model sees the whole verdict in the same step.
                    say("running the tests that cover the proposed edit")
                    run.check, checked = box.verify(list(tests)), list(box.edits)
                    if call.name in EDITS:
                        obs = Observation(f"{obs.text}\n{_verdict(run.check)}", run.check.verdict != "failed",
                                          "passed" if run.check.verdict == "passed" else "")
                if call.name == "finish" and obs.ok and run.check is not None and run.check.verdict == "failed" \
                        and checked == box.edits and checked != refused:
                    refused = checked
                    obs = Observation(f"error: not finished: {run.check.summary}, so the fix is not right yet "
                                      f"(finish again to give up).\n{run.check.output}", False)
            if drafting:
                obs = drafts.observe(obs)
            step = Step(len(run.steps) + 1, turn, thought, call, obs, time.monotonic() - t_step, tokens,
                        drafting or finishing)
            run.steps.append(step)
            log.info("agent step %d: %s (%s) %.1f s", step.index, step.tool, "ok" if obs.ok else "failed",
                     step.seconds)
            if on_step is not None:
                on_step(step)
            if call is not None and call.name == "finish" and obs.ok:
                run.outcome, run.answer = "finished", box.answer or ""
                break
            messages = messages + [{"role": "assistant", "content": turn},
                                   {"role": "user", "content": f"Observation: {obs.text}"}]
        if drafts.made:
            run.prompt_version = f"{pack.version}+{drafts.pack.version}"
        run.edits = list(box.edits)
        if run.edits and run.outcome != "cancelled" and (run.check is None or checked != run.edits):
            say("running the tests that cover the proposed edit")
            run.check = box.verify(list(tests))
        run.seconds = time.monotonic() - t0
        return run
