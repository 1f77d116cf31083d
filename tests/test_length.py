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
    assert healing_tokens([b" next", b"(self", b".st", b"re"]) == 2  # ".stre": the word starts inside ".st"
    assert healing_tokens([b" self", b".cur", b"re"]) == 2
    assert healing_tokens([b"x", b"=", b"foo", b"_bar"]) == 2


# -- One golden case per hole kind of bench/completion_quality.py (issue #14) ----------------
BODY = "def split(items, n):\n    out = []\n"


def test_blank_line_where_the_block_goes_on_is_one_line():
    # Enter between two lines of a block: one line is missing; the model's 'else:' and its
    # body (which already follows) must not both come out.
    prefix = "def sign(x):\n    if x > 0:\n        return 1\n    "
    suffix = "\n        return -1\n"
    policy, text, stop = run(prefix, suffix, "else:\n        return -1\n")
    assert policy.mode is Mode.SINGLE_LINE
    assert text == "else:" and stop == len("else:\n")


def test_blank_line_whose_missing_line_opens_the_block_below_is_one_line():
    prefix = BODY + "    "
    suffix = "\n        return []\n    return out\n"
    policy, text, _ = run(prefix, suffix, "if n == 0:\n        return []\n    elif n == 1:\n")
    assert policy.mode is Mode.SINGLE_LINE and text == "if n == 0:"


def test_first_line_of_a_body_that_goes_on_below_is_one_line():
    policy, text, _ = run("def f(x):\n    ", "\n    return y\n", "y = x + 1\n    return y\n")
    assert policy.mode is Mode.SINGLE_LINE and text == "y = x + 1"


def test_a_single_line_that_retypes_the_next_line_is_nothing():
    _, text, _ = run(BODY + "    ", "\n    return out\n", "return  out\n")
    assert text == ""


def test_blank_line_at_the_end_of_a_block_is_a_block():
    # The code below is dedented: the model may write more than one line, until a dedent.
    prefix = "def f(xs):\n    for x in xs:\n        print(x)\n        "
    suffix = "\n    return len(xs)\n"
    policy, text, _ = run(prefix, suffix, "log(x)\n        count += 1\n    return len(xs)\n")
    assert policy.mode is Mode.MULTI_LINE and text == "log(x)\n        count += 1"


def test_empty_function_body_is_a_block():
    prefix = "def area(w, h):\n    "
    suffix = "\n\n\ndef volume(w, h, d):\n    return area(w, h) * d\n"
    policy, text, _ = run(prefix, suffix, "a = w * h\n    return a\n\n\ndef other():\n")
    assert policy.mode is Mode.MULTI_LINE and text == "a = w * h\n    return a"


def test_block_opener_with_an_empty_body_is_a_block():
    prefix = "def f(x):\n    if x is None:"
    suffix = "\n    return x * 2\n"
    policy, text, _ = run(prefix, suffix, "\n        x = 0\n        log(x)\n    return x * 2\n")
    assert policy.mode is Mode.MULTI_LINE and text == "\n        x = 0\n        log(x)"


def test_block_opener_whose_body_follows_gets_one_new_line():
    policy, text, _ = run("for x in xs:", "\n    total += x\n", "\n    x = abs(x)\n    y = 2\n")
    assert policy.mode is Mode.MULTI_LINE and text == "\n    x = abs(x)"


@pytest.mark.parametrize("opener", ["if ok then", "for i = 1, n do", "while true do", "local function f(a, b)",
                                    "M.setup = function(opts)", "else", "repeat"])
def test_lua_block_openers(opener):
    assert opens_block(opener, "lua")
    policy, text, _ = run(f"local x = 1\n{opener}", "\nend\n", "\n  x = x + 1\n  print(x)\nend\n", "lua")
    assert policy.mode is Mode.MULTI_LINE and text == "\n  x = x + 1\n  print(x)"


def test_lua_lines_that_do_not_open_blocks():
    for line in ("local t = f(x)", "return function_name(x)", "x = y -- then"):
        assert not opens_block(line, "lua")


def test_middle_of_a_line_after_typed_characters_is_the_rest_of_the_line():
    policy, text, _ = run(BODY + "    for i in ran", "\n        out.append(items[i:i + n])\n",
                          "ge(0, len(items), n):\n        out.append(items[i:i + n])\n")
    assert policy.mode is Mode.SINGLE_LINE and text == "ge(0, len(items), n):"


def test_line_inside_a_call_s_arguments_is_one_line():
    prefix = "parser.add_argument(\n    \"--count\",\n    "
    suffix = "\n    help=\"how many\",\n)\n"
    policy, text, _ = run(prefix, suffix, "type=int,\n    help=\"how many\",\n)\n")
    assert policy.mode is Mode.SINGLE_LINE and text == "type=int,"


def test_a_block_stops_where_it_retypes_any_of_the_next_lines():
    # After an opener whose body follows, the model writes a line that is already there two
    # lines on (with other spacing): a repeat, cut.
    policy, text, stop = run("for x in xs:", "\n    total += x\n    count += 1\n", "\n    count  += 1\n")
    assert policy.mode is Mode.MULTI_LINE and text == "" and stop is not None
    # A short line such as "end" may well be new, unless it is the very next line.
    policy = decide("if a then", "\n  x()\nend\nend\n", "lua", 12)
    assert policy.following == ("x()", "end", "end")


def test_empty_body_under_a_docstring_is_a_block():
    prefix = 'def area(w, h):\n    """The area.\n\n    Rectangles only.\n    """\n    # compute it\n    '
    policy, text, _ = run(prefix, "\n\n\ndef f():\n    pass\n", "a = w * h\n\n    return a\n\n\ndef g():\n")
    assert policy.mode is Mode.MULTI_LINE and not policy.stop_at_blank
    assert text == "a = w * h\n\n    return a"
    policy, _, _ = run('def f():\n    """One line."""\n    ', "\n", "x\n")
    assert policy.mode is Mode.MULTI_LINE and not policy.stop_at_blank


def test_cut_to_parse_keeps_the_lines_that_parse():
    from server.length import cut_to_parse
    before = "import os\n\n\ndef f(xs):\n    for x in xs:"
    after = "\n    return xs\n\n\ndef g():\n    pass\n"
    good = "\n        print(x)\n        total += x"
    assert cut_to_parse("python", before, after, good) == good
    # A block whose last line opens a bracket it never closes: cut before it.
    assert cut_to_parse("python", before, after, good + "\n        items = (x,") == good
    # Lua: an 'end' too many would close the function early.
    lua_before = "local function f(xs)\n  for _, x in ipairs(xs) do"
    lua_after = "\n  end\n  return xs\nend\n"
    body = "\n    print(x)"
    assert cut_to_parse("lua", lua_before, lua_after, body + "\n  end") == body
    assert cut_to_parse(None, before, after, good + "\n        (") == good + "\n        ("
    assert cut_to_parse("python", before, after, "x = (") == "x = ("  # one line: not this function's business


@pytest.mark.parametrize("language, prefix, suffix", [
    ("python", "run(\n    cmd,\n    ", "\n)\n"),                               # the last argument
    ("lua", "vim.api.nvim_buf_set_lines(\n  buf,\n  ", "\n)\n"),
    ("lua", "local opts = {\n  ", "\n}\n"),                                    # a table's field
    ("javascript", "f(a,\n  ", "\n);\n"),
])
def test_an_empty_line_inside_arguments_is_one_line(language, prefix, suffix):
    policy, text, _ = run(prefix, suffix, "check=True,\n  other=1\n)\n", language)
    assert policy.mode is Mode.SINGLE_LINE and text == "check=True,"


def test_an_empty_line_in_a_brace_block_is_not_inside_arguments():
    policy, _, _ = run("function f() {\n  a();\n  ", "\n}\n", "b();\n}\n", "javascript")
    assert policy.mode is Mode.MULTI_LINE


def test_a_line_that_types_the_line_above_again_is_nothing():
    # Seen on the quality benchmark (seed 6): Lua table fields and Python keyword arguments.
    lua = "vim.api.nvim_create_autocmd('BufWritePre', {\n  group = 'nvim.editorconfig',\n  "
    policy, text, stop = run(lua, "\n  once = true,\n})\n", "group = 'nvim.editorconfig',\n", "lua")
    assert policy.mode is Mode.SINGLE_LINE and text == "" and stop == len("group = 'nvim.editorconfig',\n")
    assert run(lua, "\n  once = true,\n})\n", "buffer = bufnr,\n", "lua")[1] == "buffer = bufnr,"
    py = "    return PlatformDirs(\n        appname=appname,\n        roaming=roaming,\n\n        "
    assert run(py, "\n        version=version,\n    )\n", "roaming=roaming,\n")[1] == ""
    # A block that starts with the line above is nothing either; its partial first line is shown meanwhile.
    block = "def f(xs):\n    total = 0\n    total = 0\n\n    "
    policy = decide(block, "\n", "python", 12)
    assert policy.mode is Mode.MULTI_LINE
    assert trim("total = 0", policy) == ("total = 0", False)
    assert run(block, "\n", "total = 0\n    return total\n")[1] == ""
    # At another depth too: the last line of a block again after it (seed 113, where ``end`` belonged).
    lua_block = "    if caps.positionEncoding then\n      self.encoding = caps.positionEncoding\n    "
    assert run(lua_block, "\n\n    self.info = info\n", "self.encoding = caps.positionEncoding\n", "lua")[1] == ""
    assert run(lua_block, "\n\n    self.info = info\n", "end\n", "lua")[1] == "end"
    loop = "def f(xs):\n    for x in xs:\n        total += x\n    "
    assert run(loop, "\n", "total += x\n    return total\n")[1] == ""


def test_a_short_closer_under_the_same_closer_may_be_right():
    prefix = "if a then\n  if b then\n    f()\n  end\n"
    assert run(prefix, "\nreturn x\n", "end\n", "lua")[1] == "end"
    _, text, _ = run("    x = 1\n    x = 1\n    ", "\n", "x = 1\n")  # under six characters: left alone
    assert text == "x = 1"
    assert run("#endif\n", "\n", "#endif\n", "c")[1] == "#endif"  # nested conditionals close in a row
    # Text right of the cursor: not an empty line.
    assert run("  group = 'g',\n  ", "}\n", "group = 'g',\n", "lua")[1] == "group = 'g',"


def test_a_single_line_on_an_empty_line_never_types_one_of_the_next_lines():
    # toolz's merge_sorted (quality benchmark, seed 8): the loop header below, typed again.
    prefix = "    try:\n        val2 = next(seq2)\n    except StopIteration:\n        return\n\n    "
    suffix = "\n        if val2 < val1:\n            yield val2\n            for val2 in seq2:\n                pass\n"
    policy, text, _ = run(prefix, suffix, "for val2 in seq2:\n")
    assert policy.mode is Mode.SINGLE_LINE and text == ""
    assert run(prefix, suffix, "for val1 in seq1:\n")[1] == "for val1 in seq1:"
    # Typed characters make it the line being written: only the very next line counts then.
    assert run(prefix + "for v", suffix, "al2 in seq2:\n")[1] == "al2 in seq2:"
    # Short lines further down ("pass", "end") may well be new.
    assert run("def f():\n    ", "\n    x = 1\n    pass\n", "pass\n")[1] == "pass"


def test_a_body_is_known_to_be_missing_only_at_the_end_of_an_opener_with_an_empty_body():
    from server.length import body_missing
    assert body_missing(decide("def f(x):\n    for c in x:", "\n\ndef g():\n    pass\n", "python", 12))
    assert body_missing(decide("if ok then", "\nend\n", "lua", 12))
    assert not body_missing(decide("def f(x):\n    for c in x:", "\n        g(c)\n", "python", 12))  # body follows
    assert not body_missing(decide("def f(x):\n    ", "\n    return x\n", "python", 12))  # an empty line
    assert not body_missing(decide("x = f(", ")\n", "python", 12))


def test_a_loop_is_told_from_code_that_repeats_a_little():
    from server.length import looping
    assert looping("<|cursor|>:" * 12)  # seen: an alternative of a method body at the 512-token prefix
    assert looping("foo(" + "a, " * 9 + ")")
    assert not looping("# " + "=" * 70)  # a rule line is not a loop
    assert not looping("x = [0, 0, 0, 0]\n" + " " * 40 + "y = 1")
    assert not looping('return self._append_app_name_and_version("/var/lib")')


def test_trim_ends_a_suggestion_before_the_line_where_the_model_ran_into_a_loop():
    from server.length import decide, trim
    line = decide("def f(x):\n    return g(", "\n", "python", 12)
    assert trim("<|cursor|>:" * 9, line) == ("", True)  # stop generating: nothing to show
    block = decide("def f(x):\n", "\n\ndef h():\n    pass\n", "python", 12)
    text = "    y = x + 1\n    z = y * 2\n    return " + "foo(" * 10
    assert trim(text, block) == ("    y = x + 1\n    z = y * 2", True)
    assert trim("    y = x + 1\n    return y", block, final=True) == ("    y = x + 1\n    return y", False)
