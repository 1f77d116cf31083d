"""Length control: how much of the model's output becomes the suggestion.

The rules (issue #2, revised in #14 from the quality benchmark), decided from the text
around the cursor before generating:

- **Single line** when code sits right of the cursor (the cursor is in the middle of
  a line), when the cursor ends a line that does not open a block, and on an empty
  line where the code below continues the block (the next non-blank line is indented
  at least as deep as the cursor): a line is missing there, not a block. The
  suggestion ends at the first newline.
- **Multi-line block** where nothing below continues the block: an empty line
  followed by a dedent or the end of the file, an empty block body, the end of a line
  that opens a block whose body is empty (Python ``:``, Lua ``then``/``do``/
  ``function(...)``, ``{`` in C-like languages). The block ends at the first line
  indented at or left of the block's opener (a dedent); after a line that is not a
  block opener, also at the first blank line. At most ``max_lines`` lines. The end of
  an opener line whose body already follows gets one new line.
- **Never repeat what follows the cursor**: output that re-types the rest of the
  cursor's line is cut, and so is a line that re-types one of the next few lines of
  the file (compared with whitespace normalised): the model has reached code that
  already exists. On an empty line this holds for a single line too: one of the next
  three lines (six characters or more; the next one always) is nothing to suggest.
  **Nor the line above**: on an empty line, a suggestion whose first line is the nearest
  non-blank line above typed again, at any depth (six characters or more, not a comment
  or directive), is nothing to suggest. A request you make then gets the model's next
  candidate. (Of the 33,380 empty lines and argument lines the quality benchmark can cut
  from its Python and Lua sources, 7 hold their line above again; the 0.5B repeated a
  deeper line above where ``end`` or ``else`` belonged in 3 of seed 113's 20 Lua ones.)

:func:`trim` is pure and cheap; the engine calls it after every generated token
and stops as soon as it reports the suggestion complete.
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Languages whose blocks open with ":" at the end of a line; Lua's open with a keyword
# or a function's parameter list; everything else uses "{".
_COLON_BLOCKS = {"python", "cython", "nim", "yaml"}
_LUA_OPENER = re.compile(r"(\b(then|do|else|repeat)|\bfunction\b[\w.:\s]*\([^()]*\))$")
FOLLOWING_LINES = 3  # a generated line equal to one of the file's next this-many lines is a repeat
_BRACKETS = {"(": ")", "[": "]", "{": "}"}


class Mode(str, Enum):
    SINGLE_LINE = "single-line"
    MULTI_LINE = "multi-line"


@dataclass(frozen=True)
class LengthPolicy:
    """What to keep of the model's output, decided before generation.

    Attributes:
        mode: single line or multi-line block.
        cursor_indent: columns of indentation in front of the output's first line.
        block_indent: a later non-blank line indented this much or less ends the block.
            -1 means no dedent can end it (top level).
        stop_at_blank: a blank line ends the block.
        max_lines: most lines kept.
        line_left: the cursor line's text left of the cursor.
        line_right: the cursor line's text right of the cursor.
        next_line: the first non-blank line below the cursor ("" when none).
        following: the next :data:`FOLLOWING_LINES` non-blank lines below the cursor's line,
            whitespace-normalised (see :func:`normalized`).
        previous: the first non-blank line above the cursor's line when the cursor's line is
            blank ("" otherwise), whitespace-normalised.
    """

    mode: Mode
    cursor_indent: int
    block_indent: int
    stop_at_blank: bool
    max_lines: int
    line_left: str
    line_right: str
    next_line: str
    following: tuple[str, ...] = ()
    previous: str = ""


def _indent(line: str, tab_size: int = 4) -> int:
    n = 0
    for ch in line:
        if ch == " ":
            n += 1
        elif ch == "\t":
            n += tab_size - n % tab_size
        else:
            break
    return n


def normalized(line: str) -> str:
    """``line`` with its whitespace runs collapsed to one space and its ends stripped."""
    return " ".join(line.split())


def opens_block(line: str, language_id: str) -> bool:
    """True when ``line`` (code only, no trailing newline) ends by opening a block."""
    code = line.rstrip()
    if language_id in _COLON_BLOCKS:
        # Strip a trailing comment (rough: ignores '#' inside strings at line end).
        code = code.split(" #")[0].rstrip()
        return code.endswith(":")
    if language_id == "lua":
        code = code.split(" --")[0].rstrip()
        return bool(_LUA_OPENER.search(code)) or code.endswith("{")
    return code.endswith("{")


def decide(prefix: str, suffix: str, language_id: str, max_lines: int) -> LengthPolicy:
    """Choose the length policy for a cursor between ``prefix`` and ``suffix``.

    Args:
        prefix: document text before the cursor (only its last lines matter).
        suffix: document text after the cursor.
        language_id: LSP language id (``python``, ``typescript``, ...).
        max_lines: most lines of a multi-line suggestion.
    """
    head, _, left = prefix.rpartition("\n")
    right, _, rest = suffix.partition("\n")
    below = [ln for ln in rest.split("\n", 64)[:64] if ln.strip()][:FOLLOWING_LINES]
    next_line = below[0] if below else ""
    cursor_indent = _indent(left) if not left.strip() else len(left.expandtabs(4))
    # How deep the code below the cursor's line is indented (-1: nothing below).
    below_indent = _indent(next_line) if below else -1
    previous = "" if (left + right).strip() else \
        next((ln for ln in reversed(head.rsplit("\n", 64)[-64:]) if ln.strip()), "")

    def policy(mode: Mode, block_indent: int = -1, stop_at_blank: bool = False, lines: int = max_lines) -> LengthPolicy:
        return LengthPolicy(mode, cursor_indent, block_indent, stop_at_blank,
                            lines if mode is Mode.MULTI_LINE else 1, left, right, next_line,
                            tuple(normalized(ln) for ln in below), normalized(previous))

    if right.strip():
        return policy(Mode.SINGLE_LINE)
    if left.strip():
        if not opens_block(left, language_id):
            return policy(Mode.SINGLE_LINE)
        if below_indent > _indent(left):  # the body already follows: one new line of it
            return policy(Mode.MULTI_LINE, block_indent=_indent(left), lines=2)
        return policy(Mode.MULTI_LINE, block_indent=_indent(left))
    # An empty line. Inside a call's arguments or a list (an unclosed bracket above), or
    # where the code below continues the block, one line is missing.
    if _open_bracket(head, language_id):
        return policy(Mode.SINGLE_LINE)
    above = _line_above(head, language_id)
    if above and opens_block(above, language_id):
        if below_indent > _indent(above):
            return policy(Mode.SINGLE_LINE)
        return policy(Mode.MULTI_LINE, block_indent=_indent(above))  # an empty body
    if below_indent >= cursor_indent:
        return policy(Mode.SINGLE_LINE)
    # The end of a block or of the file: statements at the cursor's level until a blank
    # line or a dedent.
    return policy(Mode.MULTI_LINE, block_indent=cursor_indent - 1, stop_at_blank=True)


def _open_bracket(head: str, language_id: str, look_back: int = 30) -> bool:
    """True when the last ``look_back`` lines of ``head`` leave a bracket open that holds
    arguments or items, not a block: ``(`` or ``[``, and ``{`` where it is a dict or table
    (Python, Lua). Strings and comments are not parsed (a rough count, lines at a time)."""
    openers = "([{" if language_id in _COLON_BLOCKS or language_id == "lua" else "(["
    stack: list[str] = []
    for line in head.rsplit("\n", look_back)[-look_back:]:
        for ch in line:
            if ch in "([{":
                stack.append(ch)
            elif ch in ")]}" and stack:
                stack.pop()
    return bool(stack) and stack[-1] in openers


def _line_above(head: str, language_id: str, look_back: int = 40) -> str:
    """The last line of code in ``head``, passing over blank lines, comments and (Python)
    a docstring, so that an empty body under a documented ``def`` is seen as one."""
    lines = head.rsplit("\n", look_back)[-look_back:]
    comment = "--" if language_id == "lua" else "#" if language_id in _COLON_BLOCKS else "//"
    i = len(lines) - 1
    while i >= 0:
        s = lines[i].strip()
        if not s or s.startswith(comment):
            i -= 1
            continue
        quote = s[-3:] if language_id in _COLON_BLOCKS and s[-3:] in ('"""', "'''") else ""
        if quote:  # skip back to the line that opens this triple-quoted string
            inner = s[:-3]
            while quote not in inner and i > 0:
                i -= 1
                inner = lines[i]
            if quote in inner:
                i -= 1
                continue
        return lines[i]
    return ""


def _bracket_imbalance(text: str) -> int:
    """Unmatched brackets in ``text``: closers without an opener plus openers left open.

    Strings and comments are not parsed: this is a tie-breaker, not a parser.
    """
    depth, excess = 0, 0
    for ch in text:
        if ch in _BRACKETS:
            depth += 1
        elif ch in _BRACKETS.values():
            if depth:
                depth -= 1
            else:
                excess += 1
    return excess + depth


def _dedupe_line_end(text: str, policy: LengthPolicy) -> str:
    """Drop the end of a single-line ``text`` that re-types the code right of the cursor."""
    right = policy.line_right.strip()
    if not right:
        return text
    body = text.rstrip()
    if body.strip() == right:
        return ""
    # The longest tail of the output that equals a head of the right-hand text is a
    # repeat, unless the brackets say the output needs it ("bar()" before ")" keeps its ")").
    full = _bracket_imbalance(policy.line_left + body + policy.line_right)
    for k in range(min(len(body), len(right)), 0, -1):
        if body.endswith(right[:k]):
            cut = body[:-k]
            trimmed = _bracket_imbalance(policy.line_left + cut + policy.line_right)
            has_brackets = any(ch in _BRACKETS or ch in _BRACKETS.values() for ch in right[:k])
            if trimmed < full or (trimmed == full and not has_brackets):
                return cut
            break
    return text


def _repeats_following(line: str, policy: LengthPolicy) -> bool:
    """True when ``line`` re-types the next line of the file, or one of the few after it
    (those only when the line has some substance: a lone ``end`` or ``}`` may be new)."""
    norm = normalized(line)
    if not norm or not policy.following:
        return False
    return norm == policy.following[0] or (len(norm) >= 6 and norm in policy.following[1:])


_LOOP = re.compile(r"(.{2,24}?)\1{7,}", re.DOTALL)


def _loop_start(text: str) -> int | None:
    """Where the model ran into a loop in ``text``: a piece of 2-24 characters with a letter
    or digit in it, eight times or more in a row (``<|cursor|>:<|cursor|>:...``); None when
    it did not. Rows of one character (``# ======``) are not loops."""
    return next((m.start() for m in _LOOP.finditer(text) if re.search(r"[^\W_]", m.group(1))), None)


def looping(text: str) -> bool:
    """True when the model ran into a loop in ``text`` (see :func:`trim`, which cuts it)."""
    return _loop_start(text) is not None


def body_missing(policy: LengthPolicy) -> bool:
    """True when the cursor ends a line that opens a block whose body is empty (nothing
    below is indented deeper): a body is known to be missing there."""
    return policy.mode is Mode.MULTI_LINE and bool(policy.line_left.strip()) and not policy.line_right.strip() \
        and (not policy.next_line or _indent(policy.next_line) <= _indent(policy.line_left))


def _stutters(line: str, policy: LengthPolicy) -> bool:
    """True when ``line``, the first of a suggestion on an empty line, types the line above
    it again (a small model's stutter: ``buffer = bufnr,`` under ``buffer = bufnr,``; the last
    line of a block again after it, where the block's ``end`` belongs). Only a line with some
    substance that is not a comment or a directive: a lone ``end`` or ``}`` under another, or
    ``#endif`` under ``#endif``, may be right."""
    norm = normalized(line)
    return len(norm) >= 6 and norm == policy.previous and not norm.startswith(("#", "--", "//"))


def trim(text: str, policy: LengthPolicy, final: bool = False) -> tuple[str, bool]:
    """Apply the policy to the output so far.

    Args:
        text: everything the model generated so far.
        policy: from :func:`decide`.
        final: True once generation has ended; a partial last line is then judged as whole.

    Returns:
        ``(suggestion, complete)``: the text to show (trailing whitespace trimmed) and
        whether the policy has seen the end, so generation can stop. A model that ran into a
        loop has: the text ends before the line the loop starts on.
    """
    if (loop := _loop_start(text)) is not None:
        text, looped = text[:text.rfind("\n", 0, loop) + 1], True
    else:
        looped = False
    lines = text.split("\n")
    if policy.mode is Mode.SINGLE_LINE:
        complete = len(lines) > 1 or looped
        line = lines[0].rstrip()
        if complete or final:
            line = _dedupe_line_end(line, policy)
            if not policy.line_right.strip() and policy.next_line and \
                    normalized(policy.line_left + line) == normalized(policy.next_line):
                line = ""  # the file's next line typed again: nothing is missing here
            if not (policy.line_left + policy.line_right).strip() and \
                    (_repeats_following(line, policy) or _stutters(line, policy)):
                line = ""  # on an empty line: one of the next lines, or the line above, typed again
        return line, complete

    kept: list[str] = [lines[0].rstrip()]
    complete = False
    for i, line in enumerate(lines[1:], start=1):
        is_last_partial = i == len(lines) - 1 and not final
        if not line.strip():
            if is_last_partial:
                break
            if policy.stop_at_blank:
                complete = True
                break
            kept.append("")
            continue
        if _indent(line) <= policy.block_indent:
            complete = True  # dedent: known as soon as the first non-blank character arrives
            break
        if is_last_partial:
            kept.append(line.rstrip())
            break
        if _repeats_following(line, policy):
            complete = True  # the file already goes on this way: do not type it twice
            break
        kept.append(line.rstrip())
        if len(kept) >= policy.max_lines:
            complete = True
            break
    while len(kept) > 1 and not kept[-1].strip():
        kept.pop()
    # A first line alone that re-types the file's next line is nothing to suggest, nor is
    # a block that starts by typing the line above again.
    if len(kept) == 1 and policy.next_line and normalized(kept[0]) == normalized(policy.next_line) \
            or (complete or final) and _stutters(kept[0], policy):
        kept = [""]
    suggestion = "\n".join(kept)
    if not suggestion.strip():
        suggestion = ""
    return suggestion, complete or looped


def cut_to_parse(grammar: str | None, before: str, after: str, suggestion: str, reach: int = 80) -> str:
    """The longest run of whole lines of a multi-line ``suggestion`` that adds no syntax error.

    The code around the cursor (``reach`` lines each way at most, from the top-level line
    above to the top-level line below where they are nearer) is parsed with tree-sitter
    with nothing inserted and with each candidate; a candidate may not have more ERROR or
    MISSING nodes than nothing. When no cut keeps more than the cursor's own line, the
    suggestion is left whole (error counts of a half-parsed region are too rough to empty an
    answer on). ``grammar`` None (no tree-sitter grammar) keeps the suggestion.
    """
    lines = suggestion.split("\n")
    if grammar is None or grammar == "text" or len(lines) < 2:
        return suggestion
    from index.syntax import syntax_errors

    head = before.rsplit("\n", reach)
    start = max(0, len(head) - reach)
    for i in range(len(head) - 2, start - 1, -1):  # the top-level line above the cursor's line
        if head[i][:1] not in ("", " ", "\t"):
            start = i
            break
    tail = after.split("\n", reach)
    stop = min(len(tail), reach)
    for i in range(1, stop):  # up to (with) the next top-level line: a closer such as "end" or "}"
        if tail[i][:1] not in ("", " ", "\t"):
            stop = i + 1
            break
    left, right = "\n".join(head[start:]), "\n".join(tail[:stop])
    allowed = syntax_errors(grammar, left + right)
    for k in range(len(lines), 1, -1):
        candidate = "\n".join(lines[:k])
        if not "\n".join(lines[1:k]).strip():
            break  # nothing but the cursor's line would be left: the count says too little to cut
        if syntax_errors(grammar, left + candidate + right) <= allowed:
            return candidate
    return suggestion
