"""The agent's drafts: which functions a draft may change, and the replace_function call its answer makes (no model)."""

from __future__ import annotations

from server.agent.context import TaskCode, read_task_code
from server.agent.draft import current_sources, draft_call, draft_turn, shown_functions
from server.agent.loop import parse_call
from server.agent.tools import Toolbox

OPS = ('def add(a, b):\n    """Sum."""\n    return a - b\n\n\ndef neg(a):\n    return -a\n\n\n'
       'def unused():\n    return 0\n')


def _workspace(root):
    (root / "calc").mkdir(parents=True)
    (root / "calc" / "__init__.py").write_text("")
    (root / "calc" / "ops.py").write_text(OPS)
    (root / "tests").mkdir()
    (root / "tests" / "test_ops.py").write_text("from calc.ops import add, neg\n\n\ndef test_add():\n"
                                                "    assert add(2, neg(-3)) == 5\n")
    return ["tests/test_ops.py::test_add"]


def test_a_draft_may_change_the_workspace_functions_the_test_calls_and_sees_them_as_code(tmp_path):
    tests = _workspace(tmp_path)
    shown: list = []
    read_task_code(tmp_path, tests).render(shown)
    assert shown_functions(tmp_path, shown) == {"add": "calc/ops.py", "neg": "calc/ops.py"}  # not the test
    code = read_task_code(tmp_path, tests).render(numbered=False)
    assert "```python\ndef add(a, b):\n" in code and "    3 " not in code  # no line numbers to copy


def test_the_answers_changed_function_becomes_a_replace_function_call(tmp_path):
    tests = _workspace(tmp_path)
    shown: list = []
    read_task_code(tmp_path, tests).render(shown)
    functions = shown_functions(tmp_path, shown)
    box = Toolbox(tmp_path)
    tried = current_sources(box, functions)
    assert tried["add"] == ['def add(a, b):\n    """Sum."""\n    return a - b']
    # The model writes out the helper it did not touch first (its docstring-less copy is the same program).
    reply = ("The test expects a sum.\n```python\ndef neg(a):\n    return -a\n\n"
             "def add(a, b):\n    return a + b\n```\nThe bug was a minus.")
    call, wrong = draft_call(reply, functions, tried)
    assert wrong == "" and call.name == "replace_function"
    assert call.args == {"path": "calc/ops.py", "name": "add", "code": "def add(a, b):\n    return a + b\n"}
    # In the agent's conversation the draft is a turn like any other: a thought and its call.
    thought, parsed, bad = parse_call(draft_turn(reply, call))
    assert (thought, parsed, bad) == ("The test expects a sum. The bug was a minus.", call, "")
    # The tool puts it in place (the docstring kept) and records it; nothing is written.
    obs = box.call(call.name, call.args)
    assert "a + b" in box.text(box.path("calc/ops.py")) and '"""Sum."""' in box.text(box.path("calc/ops.py"))
    assert (tmp_path / "calc" / "ops.py").read_text() == OPS and obs.text


def test_a_draft_that_changes_nothing_new_says_why(tmp_path):
    tests = _workspace(tmp_path)
    shown: list = []
    read_task_code(tmp_path, tests).render(shown)
    functions = shown_functions(tmp_path, shown)
    tried = current_sources(Toolbox(tmp_path), functions)
    same = "```python\ndef add(a, b):\n    # adds\n    return a - b\n```"
    # A replace_function call all the same (the step is not malformed), refused unrun, saying why.
    call, wrong = draft_call(same, functions, tried)
    assert call.name == "replace_function" and wrong == "the answer gives add back as it was already tried: " \
                                                          "the bug is still in it"
    tried["add"].append("def add(a, b):\n    return a * b\n")  # an earlier draft
    assert draft_call("```python\ndef add(a, b):\n    return a * b\n```", functions, tried)[1] == wrong
    assert draft_call("I think it is fine.", functions, tried) == (None, "the answer has no fenced code block")
    assert "does not parse" in draft_call("```python\ndef add(a, b:\n```", functions, tried)[1]
    assert draft_call("```python\ndef other():\n    pass\n```", functions, tried)[1] == \
        "the answer has no function named add or neg"
    assert parse_call(draft_turn("No code.", None))[1] is None


def test_drafts_are_the_first_steps_only_when_the_task_shows_functions(tmp_path):
    from server.agent.draft import DRAFTS, Drafts

    tests = [str(tmp_path / t) for t in _workspace(tmp_path)]
    box = Toolbox(tmp_path)
    code = read_task_code(tmp_path, tests)
    code.render(box.shown)
    drafts = Drafts(box, "The test fails: assert -1 == 5", code)
    assert drafts.functions == {"add": "calc/ops.py", "neg": "calc/ops.py"}
    with_test, alone = drafts.framings  # the test's code and the functions, then the functions alone
    assert with_test[0]["role"] == "system" and "```python\ndef add(a, b):" in with_test[1]["content"]
    assert "def test_" in with_test[1]["content"] and "def test_" not in alone[1]["content"]
    assert "```python\ndef add(a, b):" in alone[1]["content"]
    assert drafts.due(0, passed=False) and not drafts.due(1, passed=False)  # a step that was not a draft came first
    drafts.made = DRAFTS - 1
    assert drafts.due(DRAFTS - 1, passed=False) and not drafts.due(DRAFTS - 1, passed=True)
    drafts.made = DRAFTS
    assert not drafts.due(DRAFTS, passed=False)
    assert not Drafts(Toolbox(tmp_path), "Make it faster.", TaskCode()).due(0, passed=False)  # no test, no function


def test_a_draft_is_read_from_its_last_code_block_and_decorated_helpers_count_as_tried(tmp_path):
    (tmp_path / "m.py").write_text("import functools\n\n\n@functools.cache\ndef base():\n    return 1\n\n\n"
                                   "def add(a, b):\n    return a - b + base() - 1\n")
    functions = {"add": "m.py", "base": "m.py"}
    tried = current_sources(Toolbox(tmp_path), functions)
    assert tried["base"] == ["@functools.cache\ndef base():\n    return 1"]
    # "Fixed:" after "Original:", the untouched decorated helper first in the fixed block.
    reply = ("Original:\n```python\ndef add(a, b):\n    return a - b + base() - 1\n```\nFixed:\n```python\n"
             "@functools.cache\ndef base():\n    return 1\n\ndef add(a, b):\n    return a + b + base() - 1\n```")
    call, wrong = draft_call(reply, functions, tried)
    assert wrong == "" and call.args["name"] == "add" and "a + b" in call.args["code"]


def test_a_function_the_task_showed_cut_short_is_not_drafted(tmp_path):
    (tmp_path / "m.py").write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 80)
    assert shown_functions(tmp_path, [("m.py", 1, 2), ("m.py", 5, 64)]) == {"short": "m.py"}


def test_the_answer_after_a_passing_draft_names_the_lines_its_edit_changed(tmp_path):
    from server.agent.draft import changed_lines
    from server.agent.records import ProposedEdit

    old = 'def unique(seq):\n    """Doc."""\n    if not item not in seen:\n        seen.add(item)\n'
    new = 'def unique(seq):\n    """Doc."""\n    if item not in seen:\n        seen.add(item)\n    return seen\n'
    assert changed_lines(ProposedEdit(tmp_path / "m.py", old, new)) == [
        "`if not item not in seen:` → `if item not in seen:`", "added `return seen`"]
    assert changed_lines(ProposedEdit(tmp_path / "m.py", old, old)) == []
