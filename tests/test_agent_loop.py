"""The agent loop's parsing and the context it reads before the first turn (no model)."""

from __future__ import annotations

import json

import pytest

from server.agent.context import is_test_file, read_task_code
from server.agent.loop import _closed, _cut, _node_ids, _thought, _thought_done, parse_call
from server.agent.records import Observation, Step, ToolCall


def _workspace(root):
    (root / "calc").mkdir(parents=True)
    (root / "calc" / "__init__.py").write_text("from .ops import add\n")
    (root / "calc" / "ops.py").write_text("def add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a - b\n\n\n"
                                          "def unused():\n    return 0\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_ops.py").write_text("from calc.ops import add\n\n\ndef test_add():\n"
                                                "    assert add(2, 3) == 5\n    assert ''.join(['a']) == 'a'\n")
    (root / "secret.py").write_text("def add():\n    pass\n")


def test_the_failing_tests_code_and_the_workspace_code_it_calls_come_first(tmp_path):
    _workspace(tmp_path)
    text = read_task_code(tmp_path, ["tests/test_ops.py::test_add"]).render()
    assert "tests/test_ops.py, lines 4-6:" in text and "    5     assert add(2, 3) == 5" in text
    assert "calc/ops.py, lines 1-3:" in text and "    3     return a - b" in text
    assert "unused" not in text  # not called by the test
    assert "secret.py" not in text  # not in a package the test imports
    # A file the index's rule keeps out of prompts is not shown.
    hidden = read_task_code(tmp_path, ["tests/test_ops.py::test_add"],
                            readable=lambda p, t: p.name != "ops.py").render()
    assert "return a - b" not in hidden and "test_add" in hidden
    assert read_task_code(tmp_path, ["tests/test_ops.py::test_missing", "nowhere.py::test_x"]).render() == ""


def test_node_ids_named_in_the_task_are_made_absolute_once(tmp_path):
    ids = _node_ids(tmp_path, ["tests/t.py::test_a", f"{tmp_path}/tests/t.py::test_a", "tests/t.py::C::test_b"])
    assert ids == [f"{tmp_path}/tests/t.py::test_a", f"{tmp_path}/tests/t.py::C::test_b"]
    assert is_test_file(tmp_path.relative_to(tmp_path) / "tests" / "x.py") and not is_test_file(
        (tmp_path / "calc" / "ops.py").relative_to(tmp_path))


def test_a_turn_is_cut_after_its_first_whole_call():
    two = ('Thought: fix it\n<tool_call>\n{"name": "propose_edit", "arguments": {"path": "a.py", "old": "-", '
           '"new": "+"}}\n{"name": "finish", "arguments": {"answer": "done"}}')
    assert _closed(two)
    turn = _cut(two)
    assert turn.endswith("</tool_call>") and "finish" not in turn
    thought, call, wrong = parse_call(turn)
    assert (thought, call, wrong) == ("fix it", ToolCall("propose_edit", {"path": "a.py", "old": "-", "new": "+"}), "")
    assert not _closed('Thought: x\n<tool_call>\n{"name": "read_file", "arguments": {"path": "}')


def test_malformed_calls_say_what_is_wrong():
    assert parse_call("Thought: I am done.")[2] == "the turn has no <tool_call>"
    assert "not valid JSON" in parse_call('Thought: x\n<tool_call>\n{"name": "finish", "arguments": {')[2]
    assert "no tool 'rm'" in parse_call('<tool_call>{"name": "rm", "arguments": {}}</tool_call>')[2]
    assert "must be a JSON object" in parse_call('<tool_call>{"name": "finish", "arguments": [1]}</tool_call>')[2]
    # Arguments sent as a JSON string are read.
    args = json.dumps({"answer": "ok"})
    assert parse_call(f'<tool_call>{{"name": "finish", "arguments": {json.dumps(args)}}}</tool_call>')[1] == \
        ToolCall("finish", {"answer": "ok"})


def test_a_thought_stops_at_its_paragraph_an_invented_observation_or_a_repetition():
    assert _thought_done("The test fails.\n\nNext") and _thought_done("It fails. Observation: fixed")
    assert not _thought_done("The test fails because")
    assert _thought("It is wrong. It is wrong. It is wrong.") == "It is wrong."
    assert _thought("Check add.\n<tool_call>") == "Check add."


def test_a_steps_spans_cover_its_thought_call_and_observation():
    turn = 'Thought: read it\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n</tool_call>'
    step = Step(1, turn, "read it", ToolCall("read_file", {"path": "a.py"}), Observation("a.py, lines 1-1: x"))
    text, spans = step.spans()
    got = {kind: text[a:b] for kind, a, b in spans}
    assert got["reason"] == "Thought: read it"
    assert got["action"].startswith("<tool_call>") and got["action"].endswith("</tool_call>")
    assert got["observation"] == "Observation: a.py, lines 1-1: x"


def test_a_new_proposal_replaces_the_earlier_one_it_touches_instead_of_stacking_on_it(tmp_path):
    from server.agent import Toolbox

    _workspace(tmp_path)
    box = Toolbox(tmp_path, trusted=True)
    ops = (tmp_path / "calc" / "ops.py").resolve()
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a - b - 1"}).ok
    # The same line of the code as shown, proposed again: in place of the first proposal, not on top of it.
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"}).ok
    assert "return a + b\n" in box.text(ops) and len(box.edits) == 1
    # Text of the proposal itself: one edit of the original covering it.
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "a + b", "new": "b + a"}).ok
    assert "    return b + a\n" in box.text(ops) and len(box.edits) == 1
    assert box.edits[0].old == "return a - b" and box.edits[0].new == "return b + a"
    # An edit elsewhere in the file is kept beside it.
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "return 0", "new": "return 1"}).ok
    assert len(box.edits) == 2 and "return 1" in box.text(ops) and "return b + a" in box.text(ops)
    assert box.original(ops) == (tmp_path / "calc" / "ops.py").read_text()  # nothing written


def test_a_call_written_without_its_tags_is_read_and_a_numbered_thought_is_cleaned():
    from server.agent.loop import OPEN, _bare_call

    turn = 'Thought: The test passes now. {"name": "finish", "arguments": {"answer": "fixed"}}'
    assert _thought_done(turn.removeprefix("Thought: "))
    at = _bare_call(turn)
    assert parse_call(_cut(f"{turn[:at]}{OPEN}\n{turn[at:]}"))[1] == ToolCall("finish", {"answer": "fixed"})
    assert _thought("1. The test expects 4. Thought: 2.") == "The test expects 4."


def test_a_call_with_an_unescaped_quote_is_read_by_repair_and_one_cut_short_is_not():
    # The 1.5B's finish after a passing test (toolz drop): a quote of the test unescaped in the answer.
    turn = ('Thought: The test passes now.\n<tool_call>\n{"name": "finish", "arguments": {"answer": "drop returned '
            'None; the test expected "DE" and now gets it."}}\n</tool_call>')
    thought, call, wrong = parse_call(turn)
    assert wrong == "" and call == ToolCall("finish", {"answer": 'drop returned None; the test expected "DE" and now '
                                                                 'gets it.'}), (call, wrong)
    assert json.loads(_cut(turn).split("\n")[2]) == {"name": "finish", "arguments": call.args}  # kept as valid JSON
    cut_short = 'Thought: x\n<tool_call>\n{"name": "propose_edit", "arguments": {"path": "a.py", "old": "x = 1", "new'
    assert parse_call(cut_short)[1] is None and "not valid JSON" in parse_call(cut_short)[2]


def test_a_call_repeated_to_no_new_effect_is_found_and_one_after_a_new_edit_is_not():
    from server.agent.loop import _head, _repeated, _retry_temperature

    edit = ToolCall("propose_edit", {"path": "toolz/itertoolz.py", "old": "return None", "new": "return []"})
    tests = ToolCall("run_tests", {"selector": "toolz/tests/test_itertoolz.py::test_drop"})
    failed = Observation("the failing test still fails with edit 1 (recorded in toolz/itertoolz.py, not written): "
                         "0 passed, 1 failed", False)
    steps = [Step(1, "", "", edit, failed), Step(2, "", "", tests, Observation("0 passed, 1 failed", False))]
    assert _repeated(steps, edit) == 1  # the same fix again (the 1.5B's loop on toolz's drop)
    assert _repeated(steps, ToolCall("propose_edit", {**edit.args, "new": "return seq[n:]"})) is None
    assert _repeated(steps, tests) == 2  # the same tests, nothing changed since
    steps.append(Step(3, "", "", ToolCall("propose_edit", {**edit.args, "new": "return seq[n:]"}), failed))
    assert _repeated(steps, tests) is None  # an edit since: the run may differ
    assert _repeated(steps, ToolCall("finish", {"answer": "done"})) is None
    # The next turn's head names the failure without the observation's details, and the fix that failed.
    assert _head(steps) == "Thought: The last propose_edit did not work (the failing test still fails with edit 1), " \
        "so `return seq[n:]` is not the fix, so this time I will "
    # Sampled after failures, hotter with each in a row; greedy after a step that worked.
    assert _retry_temperature(steps) == pytest.approx(0.95)
    assert _retry_temperature(steps[:1]) == pytest.approx(0.7)
    assert _retry_temperature([*steps, Step(4, "", "", tests, Observation("1 passed", True))]) == 0.0
    made_up = Observation("error: there is no tool 'define_function'; the tools are read_file, finish", False)
    assert _head([Step(1, "", "", None, made_up)]) == "Thought: There is no tool define_function; the tools are " \
        "read_file, retrieve_knowledge, run_tests, execute_python, propose_edit, replace_function, finish. " \
        "So I will call "
    broken = Observation("error: the tool call is not valid JSON (Expecting ',' delimiter: line 1 column 65). Write "
                         "one thought, then exactly one call", False)
    assert _head([Step(1, "", "", None, broken)]) == "Thought: The last tool call did not work (the tool call is " \
        "not valid JSON), so this time I will "
    shown = Observation("error: toolz/itertoolz.py lines 662-675 are already shown above, in the task", False, "shown")
    assert "propose a fix" in _head([Step(1, "", "", ToolCall("read_file", {"path": "t.py"}), shown)])


def test_a_docstrings_three_quotes_in_code_are_read_as_the_codes_own():
    from server.agent.loop import _quotes_escaped

    # The 1.5B's replace_function for toolz's sliding_window: its docstring's quotes left unescaped.
    turn = ('Thought: fix it\n<tool_call>\n{"name": "replace_function", "arguments": {"path": "t.py", "name": "f", '
            '"code": "def f(n):\\n    """ Double n. """\\n    return 2 * n"}}\n</tool_call>')
    _, call, wrong = parse_call(turn)
    assert wrong == "" and call.args["code"] == 'def f(n):\n    """ Double n. """\n    return 2 * n', (call, wrong)
    # get_in's docstring (held-out seed 41): a comment's quotes; itemfilter: a line break written as itself.
    turn = ('<tool_call>\n{"name": "replace_function", "arguments": {"path": "t.py", "name": "f", "code": "def f(c):'
            '\\n    return c[\\"a\\"][0]  # missing "transaction" arg\n"}}\n</tool_call>')
    _, call, wrong = parse_call(turn)
    assert wrong == "" and call.args["code"] == 'def f(c):\n    return c["a"][0]  # missing "transaction" arg\n', \
        (call, wrong)
    # Not the last argument: its quotes are not escaped up to the call's end (json-repair reads this one).
    body = '{"name": "replace_function", "arguments": {"code": "x = "a"", "path": "t.py", "name": "f"}}'
    assert _quotes_escaped(body) == body
    assert parse_call(f"<tool_call>{body}")[1] == ToolCall("replace_function", {"code": 'x = "a"', "path": "t.py",
                                                                                "name": "f"})


def test_after_a_proposal_that_passes_its_checks_the_turn_is_begun_as_the_finish():
    from server.agent.loop import FINISH_NOW, _head, _repeated

    edit = ToolCall("replace_function", {"path": "calc/ops.py", "name": "add", "code": "def add(a, b): return a + b"})
    passed = Observation(f"the failing test now passes with edit 1: 1 passed\nThe other tests of the code you changed "
                         f"pass too (1 tests pass with the edits): {FINISH_NOW}.", True, "passed")
    steps = [Step(1, "", "", edit, passed)]
    head = _head(steps)
    assert head.endswith('<tool_call>\n{"name": "finish", "arguments": {"answer": "'), head
    _, call, wrong = parse_call(head + 'add subtracted; it adds now."}}\n</tool_call>')
    assert wrong == "" and call == ToolCall("finish", {"answer": "add subtracted; it adds now."})
    assert _repeated(steps, edit) is None  # proposing a passing fix again is not refused as a failed one
