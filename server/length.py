"""Length control: how much of the model's output becomes the suggestion.

The rules (issue #2), decided from the text around the cursor before generating:

- **Single line** when code sits right of the cursor (the cursor is in the middle of
  a line) or when the cursor ends a line that does not open a block: the suggestion
  ends at the first newline.
- **Multi-line block** on an empty line, or at the end of a line that opens a block
  (Python ``:``, ``{`` in C-like languages). The block ends at the first line
  indented at or left of the block's opener (a dedent); after a line that is not a
  block opener, also at the first blank line. At most ``max_lines`` lines.
- **Never repeat what follows the cursor**: output that re-types the rest of the
  cursor's line, or the next line of the file, is cut.

:func:`trim` is pure and cheap; the engine calls it after every generated token
and stops as soon as it reports the suggestion complete.
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Languages whose blocks open with ":" at the end of a line; everything else uses "{".
_COLON_BLOCKS = {"python", "cython", "nim", "yaml"}
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
    """

    mode: Mode
    cursor_indent: int
    block_indent: int
    stop_at_blank: bool
    max_lines: int
    line_left: str
    line_right: str
    next_line: str


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


def opens_block(line: str, language_id: str) -> bool:
    """True when ``line`` (code only, no trailing newline) ends by opening a block."""
    code = line.rstrip()
    if language_id in _COLON_BLOCKS:
        # Strip a trailing comment (rough: ignores '#' inside strings at line end).
        code = code.split(" #")[0].rstrip()
        return code.endswith(":")
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
    next_line = next((ln for ln in rest.split("\n") if ln.strip()), "")
    cursor_indent = _indent(left) if not left.strip() else len(left.expandtabs(4))

    def policy(mode: Mode, block_indent: int = -1, stop_at_blank: bool = False) -> LengthPolicy:
        return LengthPolicy(mode, cursor_indent, block_indent, stop_at_blank,
                            max_lines if mode is Mode.MULTI_LINE else 1, left, right, next_line)

    if right.strip():
        return policy(Mode.SINGLE_LINE)
    if left.strip():
        if opens_block(left, language_id):
            return policy(Mode.MULTI_LINE, block_indent=_indent(left))
        return policy(Mode.SINGLE_LINE)
    # An empty line: a block body when the line above opens a block, else statements
    # at the cursor's level until a blank line or a dedent.
    above = next((ln for ln in reversed(head.split("\n")) if ln.strip()), "")
    if above and opens_block(above, language_id):
        return policy(Mode.MULTI_LINE, block_indent=_indent(above))
    return policy(Mode.MULTI_LINE, block_indent=_indent(left) - 1, stop_at_blank=True)


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


def trim(text: str, policy: LengthPolicy, final: bool = False) -> tuple[str, bool]:
    """Apply the policy to the output so far.

    Args:
        text: everything the model generated so far.
        policy: from :func:`decide`.
        final: True once generation has ended; a partial last line is then judged as whole.

    Returns:
        ``(suggestion, complete)``: the text to show (trailing whitespace trimmed) and
        whether the policy has seen the end, so generation can stop.
    """
    lines = text.split("\n")
    if policy.mode is Mode.SINGLE_LINE:
        complete = len(lines) > 1
        line = lines[0].rstrip()
        if complete or final:
            line = _dedupe_line_end(line, policy)
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
        if policy.next_line and line.strip() == policy.next_line.strip():
            complete = True  # the file already goes on this way: do not type it twice
            break
        kept.append(line.rstrip())
        if len(kept) >= policy.max_lines:
            complete = True
            break
    while len(kept) > 1 and not kept[-1].strip():
        kept.pop()
    # A first line alone that re-types the file's next line is nothing to suggest.
    if len(kept) == 1 and policy.next_line and kept[0].strip() == policy.next_line.strip():
        kept = [""]
    suggestion = "\n".join(kept)
    if not suggestion.strip():
        suggestion = ""
    return suggestion, complete
