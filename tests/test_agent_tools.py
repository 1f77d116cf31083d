"""The agent's tools and its tool-call parser, without a model: a real workspace in a temporary folder,
the index's real rule for files, the real bubblewrap sandbox and real pytest.

Every call goes through :meth:`Toolbox.call`, as the loop makes it: whatever the arguments, the
answer is an observation (``ok`` False for a refusal or a failure), never an exception.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from index.workspace import IndexOptions, IndexRules
from server.agent import Toolbox, parse_call
from server.agent.tools import OBSERVATION_CHARS, TOOLS
from server.assist.sandbox import available

from .prereqs import APT_INSTALL

needs_sandbox = pytest.mark.skipif(not available()[0], reason=f"needs bubblewrap: {available()[1]}; {APT_INSTALL}")

OPS = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TEST_OPS = "from calc.ops import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
FAILING = "tests/test_ops.py::test_add"
SECRET = "PAYMENT_GATEWAY_KEY=sk-live-9f8e7d6c5b4a39281706\n"


@pytest.fixture
def ws(tmp_path) -> Path:
    """A package ``calc`` whose ``add`` subtracts, its failing test, and a secret file."""
    root = tmp_path / "ws"
    (root / "calc").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "calc" / "__init__.py").write_text("")
    (root / "calc" / "ops.py").write_text(OPS)
    (root / "tests" / "test_ops.py").write_text(TEST_OPS)
    (root / ".env").write_text(SECRET)
    return root


@pytest.fixture
def box(ws) -> Toolbox:
    """A trusted workspace's tools under the index's own rule for which files a prompt may hold."""
    rules = IndexRules([ws], IndexOptions())
    return Toolbox(ws, trusted=True, readable=lambda p, text: rules.indexable(p, text))


# -- read_file ---------------------------------------------------------------------------------------
def test_read_file_numbers_the_lines_and_pages_through_a_range(box):
    part = box.call("read_file", {"path": "calc/ops.py", "start_line": 5, "end_line": 5})
    assert part.ok and part.text.splitlines() == ["calc/ops.py, lines 5-5:", "    5 def mul(a, b):",
                                                  "(6 lines in all; read more with start_line=6)"]
    obs = box.call("read_file", {"path": "calc/ops.py"})
    assert obs.ok
    assert obs.text.splitlines() == ["calc/ops.py, lines 1-6:", "    1 def add(a, b):", "    2     return a - b",
                                     "    3 ", "    4 ", "    5 def mul(a, b):", "    6     return a * b"]
    past = box.call("read_file", {"path": "calc/ops.py", "start_line": 40})
    assert not past.ok and past.text == "calc/ops.py has 6 lines"
    again = box.call("read_file", {"path": "calc/ops.py", "start_line": 2, "end_line": 3})  # lines it has read
    assert not again.ok and again.kind == "shown" and "calc/ops.py lines 2-3 are already shown" in again.text, again


def test_read_file_refuses_what_lies_outside_the_workspace(box, ws, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "id_rsa.py").write_text("KEY = 'private'\n")
    (ws / "calc" / "link.py").symlink_to(outside / "id_rsa.py")  # inside by its name, outside by its target
    for path in ("../elsewhere/id_rsa.py", str(outside / "id_rsa.py"), "calc/link.py", "/etc/passwd"):
        obs = box.call("read_file", {"path": path})
        assert not obs.ok and "outside the workspace" in obs.text and "private" not in obs.text, (path, obs)


def test_read_file_refuses_a_file_the_index_rule_keeps_out(box, ws):
    obs = box.call("read_file", {"path": ".env"})
    assert not obs.ok and "kept out of prompts" in obs.text and "sk-live" not in obs.text, obs
    # The same file in a workspace with no rule: the rule, not the name, refused it.
    assert "sk-live" in Toolbox(ws, trusted=True).call("read_file", {"path": ".env"}).text


# -- propose_edit ------------------------------------------------------------------------------------
def test_propose_edit_refuses_text_that_is_missing_or_ambiguous(box, ws):
    missing = box.call("propose_edit", {"path": "calc/ops.py", "old": "return a / b", "new": "return a + b"})
    assert not missing.ok and "old does not occur in calc/ops.py" in missing.text, missing
    twice = box.call("propose_edit", {"path": "calc/ops.py", "old": "    return a", "new": "    return b"})
    assert not twice.ok and "old occurs 2 times in calc/ops.py (lines 2, 6)" in twice.text, twice
    empty = box.call("propose_edit", {"path": "calc/ops.py", "old": "", "new": "x"})
    assert not empty.ok and "exact text" in empty.text
    assert box.edits == [] and (ws / "calc" / "ops.py").read_text() == OPS


def test_propose_edit_takes_the_occurrence_in_the_lines_the_model_read(box, ws):
    assert box.call("read_file", {"path": "calc/ops.py", "start_line": 5, "end_line": 6}).ok
    obs = box.call("propose_edit", {"path": "calc/ops.py", "old": "    return a", "new": "    return b"})
    assert obs.ok, obs
    lines = box.call("read_file", {"path": "calc/ops.py"}).text.splitlines()
    assert lines[2] == "    2     return a - b" and lines[6] == "    6     return b * b", lines


def test_propose_edit_refuses_a_no_op_and_an_edit_of_the_tests(box, ws):
    same = box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a - b"})
    assert not same.ok and "nothing would change" in same.text, same
    test = box.call("propose_edit", {"path": "tests/test_ops.py", "old": "== 5", "new": "== -1"})
    assert not test.ok and "tests/test_ops.py is a test" in test.text, test
    assert box.edits == [] and (ws / "tests" / "test_ops.py").read_text() == TEST_OPS


def test_propose_edit_refuses_python_that_no_longer_parses(box, ws):
    obs = box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a +"})
    assert not obs.ok and "no longer parses" in obs.text and "line 2" in obs.text, obs
    assert box.edits == []


def test_a_recorded_edit_is_read_back_but_never_written(box, ws):
    obs = box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"})
    assert obs.ok and obs.text.startswith("edit 1 recorded in calc/ops.py"), obs
    assert "    2     return a + b" in box.call("read_file", {"path": "calc/ops.py"}).text
    assert (ws / "calc" / "ops.py").read_text() == OPS
    # A second edit applies on top of the first.
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "a + b", "new": "b + a"}).ok
    assert "    2     return b + a" in box.call("read_file", {"path": "calc/ops.py"}).text
    assert box.original(ws / "calc" / "ops.py") == OPS


# -- run_tests and verification -------------------------------------------------------------------
@needs_sandbox
def test_run_tests_fails_before_the_edit_and_passes_with_it(box, ws):
    before = box.call("run_tests", {"selector": FAILING})
    assert not before.ok and before.text.startswith("0 passed, 1 failed\n") and "assert -1 == 5" in before.text, before
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"}).ok
    after = box.call("run_tests", {"selector": FAILING})
    assert after.ok and after.text.startswith("1 passed, 0 failed (with the proposed edits applied)"), after
    assert (ws / "calc" / "ops.py").read_text() == OPS  # patched into the run, not written


@needs_sandbox
def test_a_test_file_that_errors_is_an_observation(box, ws):
    (ws / "tests" / "test_broken.py").write_text("import calc.nowhere\n\n\ndef test_x():\n    pass\n")
    obs = box.call("run_tests", {"selector": "tests/test_broken.py"})
    assert not obs.ok and "ModuleNotFoundError: No module named 'calc.nowhere'" in obs.text, obs
    nothing = box.call("run_tests", {"selector": "tests/test_ops.py::test_nothing_by_this_name"})
    assert not nothing.ok and nothing.text.startswith("0 passed, 0 failed"), nothing


@needs_sandbox
def test_verify_passes_with_the_fix(box, ws):
    box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"})
    check = box.verify([str(ws / FAILING)])
    assert check.verdict == "passed", check
    # The covering test's whole file is run; the named test is in it, so it is not named again.
    assert check.tests == [str(ws / "tests" / "test_ops.py")] and check.failed == [], check


@needs_sandbox
def test_verify_fails_when_the_edit_does_not_fix_it(box, ws):
    box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return b - a"})
    check = box.verify()  # the covering test is found without being named
    assert check.verdict == "failed" and check.tests == [str(ws / "tests" / "test_ops.py")], check
    assert check.summary == "1 of 1 tests fail with the edits" and len(check.failed) == 1, check
    assert "assert -1 == 5" in check.output or "assert 1 == 5" in check.output, check.output  # for the model


@needs_sandbox
def test_verify_runs_the_whole_test_file_so_a_caller_of_the_edited_function_is_tested_too(box, ws):
    """``total`` calls ``add``; its test never names ``add``, but sits in the same file: an edit that makes
    ``test_add`` pass and breaks ``total`` fails the check (toolz: ``drop`` fixed as ``seq[n:]`` broke
    ``interpose``, whose test never names ``drop``)."""
    (ws / "calc" / "ops.py").write_text(OPS + "\n\ndef total(xs):\n    t = 0\n    for x in xs:\n"
                                          "        t = add(t, x)\n    return t\n")
    (ws / "tests" / "test_ops.py").write_text(TEST_OPS.replace("import add", "import add, total")
                                              + "\n\ndef test_total():\n    assert total([1, 2, 3]) == 6\n")
    assert box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return 5"}).ok
    assert box.call("run_tests", {"selector": FAILING}).ok  # the named test passes with the bad fix
    check = box.verify([str(ws / FAILING)])
    assert check.verdict == "failed" and check.failed == [str(ws / "tests" / "test_ops.py::test_total")], check


@needs_sandbox
def test_a_proposed_edit_is_run_against_the_tasks_failing_test_in_the_same_step(box, ws):
    box.task_tests = [str(ws / FAILING)]
    wrong = box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return b - a"})
    assert not wrong.ok and wrong.text.startswith("the failing test still fails with edit 1 (recorded in calc/ops.py")
    assert "0 passed, 1 failed" in wrong.text and "assert 1 == 5" in wrong.text, wrong
    right = box.call("propose_edit", {"path": "calc/ops.py", "old": "return b - a", "new": "return a + b"})
    assert right.ok and right.text.startswith("the failing test now passes with edit 1"), right
    assert "1 passed, 0 failed" in right.text and len(box.edits) == 1, right
    assert (ws / "calc" / "ops.py").read_text() == OPS  # nothing written
    untrusted = Toolbox(ws, trusted=False, task_tests=[str(ws / FAILING)])
    obs = untrusted.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"})
    assert obs.ok and "The failing test was not run: this workspace is not trusted" in obs.text, obs


@needs_sandbox
def test_a_failed_check_names_the_failing_tests_by_their_node_ids(box, ws):
    box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return b - a"})
    assert box.verify().failed == [str(ws / FAILING)]


def test_verify_says_unverified_when_no_test_covers_the_edit(box):
    box.call("propose_edit", {"path": "calc/ops.py", "old": "return a * b", "new": "return b * a"})
    check = box.verify()
    assert check.verdict == "unverified" and "no test of the workspace covers" in check.summary, check
    untrusted = Toolbox(box.root, trusted=False)
    untrusted.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"})
    check = untrusted.verify()
    assert check.verdict == "unverified" and "not trusted" in check.summary, check


def test_edits_to_two_files_are_not_run(box, ws):
    (ws / "calc" / "more.py").write_text("def sub(a, b):\n    return a - b\n")
    box.call("propose_edit", {"path": "calc/ops.py", "old": "return a - b", "new": "return a + b"})
    box.call("propose_edit", {"path": "calc/more.py", "old": "return a - b", "new": "return a - b - 0"})
    obs = box.call("run_tests", {"selector": FAILING})
    assert not obs.ok and "more than one file" in obs.text, obs


# -- execute_python ----------------------------------------------------------------------------------
@needs_sandbox
def test_execute_python_returns_the_output_and_the_exit_code(box):
    code = "from calc.ops import add\nprint('add:', add(2, 3))\nraise SystemExit(3)"
    obs = box.call("execute_python", {"code": code})
    assert not obs.ok and obs.text.startswith("exit code 3\nadd: -1"), obs
    ok = box.call("execute_python", {"code": "print(sum(range(10)))"})
    assert ok.ok and ok.text.startswith("exit code 0\n45"), ok
    long = box.call("execute_python", {"code": "print('x' * 20000)"})
    assert long.ok and len(long.text) < OBSERVATION_CHARS + 100 and "characters left out" in long.text


@needs_sandbox
def test_execute_python_has_no_network_and_cannot_write_the_workspace(box, ws):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        code = ("import socket\ns = socket.socket()\ns.settimeout(3)\n"
                f"s.connect(('127.0.0.1', {listener.getsockname()[1]}))\nprint('connected')\n")
        sandboxed = box.call("execute_python", {"code": code})
        assert not sandboxed.ok and "connected" not in sandboxed.text and "Error" in sandboxed.text, sandboxed
        # The same script without the sandbox reaches the listener: the sandbox is what stopped it.
        bare = Toolbox(ws, trusted=True, sandbox_mode="none").call("execute_python", {"code": code})
        assert bare.ok and "connected" in bare.text, bare
    write = box.call("execute_python", {"code": f"open({str(ws / 'calc' / 'ops.py')!r}, 'w').write('')\n"})
    assert not write.ok and "Read-only file system" in write.text, write
    assert (ws / "calc" / "ops.py").read_text() == OPS


def test_code_is_not_run_in_an_untrusted_workspace_or_with_the_sandbox_off(ws):
    marker = ws / "ran"
    code = f"open({str(marker)!r}, 'w').write('ran')"
    for box, why in ((Toolbox(ws, trusted=False), "not trusted"), (Toolbox(ws, trusted=True, sandbox_mode="off"),
                                                                   "tests.sandbox is off")):
        for name, args in (("execute_python", {"code": code}), ("run_tests", {"selector": FAILING})):
            obs = box.call(name, args)
            assert not obs.ok and why in obs.text, (name, obs)
    assert not marker.exists()


# -- what the model may get wrong ---------------------------------------------------------------------
@pytest.mark.parametrize("name, args, expected", [
    ("delete_file", {"path": "calc/ops.py"}, "there is no tool 'delete_file'; the tools are read_file"),
    ("read_file", {}, "read_file takes path, start_line, end_line (missing path)"),
    ("read_file", {"path": "calc/ops.py", "mode": "r"}, "(unknown mode)"),
    ("propose_edit", {"path": "calc/ops.py"}, "(missing old, new)"),
    ("read_file", {"path": 5}, "read_file's path must be a string"),
    ("read_file", {"path": "calc/ops.py", "start_line": "2"}, "read_file's start_line must be a"),
    ("read_file", {"path": "calc/ops.py", "start_line": True}, "read_file's start_line must be a"),
    ("run_tests", {"selector": ["tests"]}, "run_tests's selector must be a string"),
    ("read_file", {"path": "calc"}, "calc is not a file"),
    ("read_file", {"path": "calc/\x00ops.py"}, "read_file failed: ValueError"),  # the handler itself raised
    ("retrieve_knowledge", {"query": "add"}, "the workspace index is not available"),
])
def test_a_bad_call_is_an_observation_never_an_exception(box, name, args, expected):
    obs = box.call(name, args)
    assert not obs.ok and obs.text.startswith("error: ") and expected in obs.text, obs


def test_retrieve_knowledge_returns_the_search_s_chunks(ws):
    from server.assist.records import ContextItem
    asked = []

    def search(query):
        asked.append(query)
        return [ContextItem(f"calc/ops.py:{i}", f"def add(a, b):  # {i}\n") for i in range(6)]
    obs = Toolbox(ws, search=search).call("retrieve_knowledge", {"query": "addition"})
    assert obs.ok and asked == ["addition"]
    assert obs.text.count("def add(a, b)") == 4 and obs.text.startswith("calc/ops.py:0:\ndef add"), obs


def test_finish_records_the_answer(box):
    assert box.call("finish", {"answer": "add subtracted; it adds now"}).text == "finished"
    assert box.answer == "add subtracted; it adds now"


def test_every_tool_is_in_the_table_with_a_schema():
    assert [t.name for t in TOOLS] == ["read_file", "retrieve_knowledge", "run_tests", "execute_python",
                                       "propose_edit", "replace_function", "finish"]
    for tool in TOOLS:
        schema = tool.schema()
        assert schema["parameters"]["type"] == "object" and tool.description
        assert set(schema["parameters"]["required"]) <= set(schema["parameters"]["properties"])


# -- parse_call ---------------------------------------------------------------------------------------
def test_parse_call_reads_the_thought_and_the_call():
    turn = ('Thought: the test fails because add subtracts.\n<tool_call>\n'
            '{"name": "read_file", "arguments": {"path": "calc/ops.py"}}\n</tool_call>')
    thought, call, wrong = parse_call(turn)
    assert (thought, call.name, call.args, wrong) == (
        "the test fails because add subtracts.", "read_file", {"path": "calc/ops.py"}, "")


@pytest.mark.parametrize("turn, expected", [
    # a closing tag cut off at the turn's end, a fenced block, arguments as a JSON string, no arguments
    ('<tool_call>{"name": "finish", "arguments": {"answer": "done"}}', {"answer": "done"}),
    ('<tool_call>\n```json\n{"name": "finish", "arguments": {"answer": "done"}}\n```\n</tool_call>',
     {"answer": "done"}),
    ('<tool_call>' + json.dumps({"name": "finish", "arguments": json.dumps({"answer": "done"})}) + '</tool_call>',
     {"answer": "done"}),
    ('<tool_call>{"name": "finish"}</tool_call>', {}),
])
def test_parse_call_tolerates_what_models_write(turn, expected):
    thought, call, wrong = parse_call(turn)
    assert wrong == "" and call.name == "finish" and call.args == expected and thought == ""


@pytest.mark.parametrize("turn, expected", [
    ("Thought: I will read the file first.", "the turn has no <tool_call>"),
    ('Thought: x\n<tool_call>{"name": "read_file", "arguments": {"path": }}</tool_call>',
     "the tool call is not valid JSON"),
    ('<tool_call>["read_file", "calc/ops.py"]</tool_call>', 'must be an object {"name": ..., "arguments": {...}}'),
    ('<tool_call>{"name": "shell", "arguments": {"cmd": "ls"}}</tool_call>',
     "there is no tool 'shell'; the tools are read_file, "),
    ('<tool_call>{"name": "read_file", "arguments": ["calc/ops.py"]}</tool_call>', "arguments must be a JSON object"),
    ('<tool_call>{"name": "read_file", "arguments": "calc/ops.py"}</tool_call>', "arguments must be a JSON object"),
])
def test_parse_call_says_what_is_wrong(turn, expected):
    thought, call, wrong = parse_call(turn)
    assert call is None and expected in wrong, wrong
    if turn.startswith("Thought: "):
        assert thought and not thought.startswith("Thought")


@needs_sandbox
def test_a_test_file_named_without_its_package_folder_is_found_and_a_missing_one_is_said(box, ws):
    (ws / "calc" / "tests").mkdir()
    (ws / "calc" / "tests" / "test_more.py").write_text(TEST_OPS.replace("test_add", "test_add_again"))
    found = box.call("run_tests", {"selector": "tests/test_more.py::test_add_again"})  # calc/ dropped
    assert found.text.startswith("0 passed, 1 failed"), found
    missing = box.call("run_tests", {"selector": "tests/test_nowhere.py::test_x"})
    assert not missing.ok and "there is no tests/test_nowhere.py in the workspace" in missing.text, missing


@needs_sandbox
def test_replace_function_puts_the_whole_corrected_function_in_place_keeping_its_docstring(box, ws):
    (ws / "calc" / "ops.py").write_text('class Calc:\n    def add(self, a, b):\n        """Sum of a and b."""\n'
                                        "        return a - b\n\n\n" + OPS)
    box.task_tests = [str(ws / FAILING)]
    # The model's version: fenced, without the docstring, at column 0 (a method, re-indented into its class).
    fixed = box.call("replace_function", {"path": "calc/ops.py", "name": "Calc.add",
                                          "code": "```python\ndef add(self, a, b):\n    return a + b\n```"})
    assert fixed.ok is False and "still fails" in fixed.text  # the test calls calc.ops.add, not the method
    text = box.text((ws / "calc" / "ops.py").resolve())
    assert '    def add(self, a, b):\n        """Sum of a and b."""\n        return a + b\n' in text, text
    top = box.call("replace_function", {"path": "calc/ops.py", "name": "add", "code": "def add(a, b):\n  return a + b"})
    assert top.ok and "now passes" in top.text, top
    assert "def add(a, b):\n  return a + b\n\n\ndef mul" in box.text((ws / "calc" / "ops.py").resolve())
    assert len(box.edits) == 2 and (ws / "calc" / "ops.py").read_text().count("return a - b") == 2  # not written
    for args, said in (({"name": "nothing", "code": "def nothing():\n    pass"}, "there is no function nothing"),
                       ({"name": "add", "code": "def plus(a, b):\n    return a + b"}, "one whole function named add"),
                       ({"name": "add", "code": "def add(a, b):\n    return (a +"}, "code does not parse")):
        obs = box.call("replace_function", {"path": "calc/ops.py", **args})
        assert not obs.ok and said in obs.text, obs
