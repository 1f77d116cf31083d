"""Golden tests for length control: the cursor's surroundings decide what is kept."""

import pytest

from server.length import Mode, decide, opens_block, trim


def run(prefix, suffix, output, language="python", max_lines=12):
    """The suggestion for ``output``, and the first index at which streaming could stop."""
    policy = decide(prefix, suffix, language, max_lines)
    stop_at = next((i for i in range(1, len(output) + 1) if trim(output[:i], policy)[1]), None)
    return policy, trim(output, policy, final=True)[0], stop_at


def test_middle_of_a_line_is_single_line():
    policy, text, stop = run("x = compute(", ")\nprint(x)\n", "a, b)\nprint(x)")
    assert policy.mode is Mode.SINGLE_LINE
    assert text == "a, b"  # the ")" right of the cursor is not typed twice
    assert stop == len("a, b)\n")


def test_right_of_cursor_repeat_is_kept_when_brackets_need_it():
    # "bar()" before ")" balances only with its own ")": keep it.
    _, text, _ = run("foo(", ")\n", "bar()\n")
    assert text == "bar()"


def test_output_equal_to_the_rest_of_the_line_is_dropped():
    _, text, _ = run("value = ", "compute(x)\n", "compute(x)\n")
    assert text == ""


def test_end_of_a_plain_line_is_single_line_with_trailing_space_trimmed():
    policy, text, _ = run("    total = ", "\n    return total\n", "sum(values)   \n    return total\n")
    assert policy.mode is Mode.SINGLE_LINE and text == "sum(values)"


def test_empty_line_after_python_block_opener_is_a_block_ended_by_dedent():
    prefix = "def area(w, h):\n    "
    suffix = "\n\ndef perimeter(w, h):\n    return 2 * (w + h)\n"
    out = "if w < 0:\n        raise ValueError(w)\n\n    return w * h\n\ndef main():\n    pass\n"
    policy, text, stop = run(prefix, suffix, out)
    assert policy.mode is Mode.MULTI_LINE
    assert text == "if w < 0:\n        raise ValueError(w)\n\n    return w * h"
    assert stop == out.index("def main") + 1  # stops at the dedent's first character


def test_end_of_line_block_opener_is_multi_line():
    policy, text, _ = run("def area(w, h):", "\n", "\n    return w * h\nprint(1)\n")
    assert policy.mode is Mode.MULTI_LINE and text == "\n    return w * h"


@pytest.mark.parametrize("language", ["javascript", "typescript", "go", "rust", "java", "c", "cpp"])
def test_brace_languages_end_the_block_at_the_closing_dedent(language):
    prefix = "function area(w, h) {\n  "
    suffix = "\n}\n"
    out = "const a = w * h;\n  return a;\n}\n\nfunction other() {}\n"
    policy, text, _ = run(prefix, suffix, out, language)
    assert policy.mode is Mode.MULTI_LINE
    assert text == "const a = w * h;\n  return a;"


def test_brace_language_end_of_line_opener():
    assert opens_block("fn main() {", "rust") and not opens_block("fn main() {", "python")
    assert opens_block("for x in xs:  # loop", "python")
    policy, text, _ = run("func main() {", "\n}\n", "\n\tfmt.Println(1)\n}\n", "go")
    assert policy.mode is Mode.MULTI_LINE and text == "\n\tfmt.Println(1)"


def test_empty_line_without_opener_stops_at_a_blank_line():
    prefix = "import os\nimport sys\n"
    out = "import re\nimport json\n\nprint(1)\n"
    policy, text, _ = run(prefix, "\n", out)
    assert policy.mode is Mode.MULTI_LINE and policy.stop_at_blank
    assert text == "import re\nimport json"


def test_never_types_the_next_line_of_the_file_again():
    prefix = "def f(x):\n    "
    suffix = "\n    return y\n"
    out = "y = x + 1\n    return y\n"
    _, text, stop = run(prefix, suffix, out)
    assert text == "y = x + 1"
    assert stop is not None


def test_a_first_line_that_only_repeats_the_next_line_gives_nothing():
    _, text, _ = run("def f(x):\n    ", "\n    return x\n", "return x\n")
    assert text == ""


def test_max_lines_caps_a_block():
    prefix = "def f():\n    "
    out = "".join(f"a{i} = {i}\n    " for i in range(50))
    _, text, stop = run(prefix, "\n", out, max_lines=4)
    assert text.count("\n") == 3 and stop is not None


def test_unfinished_output_is_not_complete_until_final():
    policy = decide("def f():\n    ", "\n", "python", 12)
    assert trim("x = 1\n    y =", policy) == ("x = 1\n    y =", False)
    assert trim("x = 1\n", policy) == ("x = 1", False)


def test_repeated_punctuation_right_of_cursor_is_dropped():
    _, text, _ = run("let a = ", ";\n", "b + 1;\n", "javascript")
    assert text == "b + 1"
    _, text, _ = run("x = foo(", ");\n", "1, 2);\n", "c")
    assert text == "1, 2"


def test_token_healing_takes_back_the_partial_word():
    from server.completion import healing_tokens
    assert healing_tokens([b" url", b"lib", b"3"]) == 3   # " urllib3": the whole word
    assert healing_tokens([b"x", b" =", b" vers", b"i"]) == 2
    assert healing_tokens([b"foo", b"("]) == 1           # punctuation is a word of its own
    assert healing_tokens([b"    ", b"return"]) == 1
    assert healing_tokens([b"self", b"."]) == 1
    assert healing_tokens([]) == 0
