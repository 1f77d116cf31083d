"""The agent's edits as text: a whole function replaced, a proposal over earlier ones.

Pure functions on a file's text (no workspace, no model); :mod:`.tools` turns their
``ValueError`` into a refusal the model reads. Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from .records import ProposedEdit, apply_edits


def function_replacement(text: str, name: str, code: str) -> tuple[str, str]:
    """(old, new): the text of function ``name`` (top-level, or ``Class.method``) in ``text``, from its
    first decorator (when ``code`` has decorators) or its ``def`` line to its end, and ``code`` put in its
    place: fences removed, re-indented to the definition's indentation, the original's docstring kept
    when ``code`` has none.

    Meant for a small model, which rewrites a short function more readily than it finds and copies
    the one wrong line: asked once for the corrected function the 1.5B fixed toolz's ``countby``;
    asked for the wrong line, it edited a line of the docstring. (Measured since: in the agent the
    1.5B mostly copies the function unchanged; README, the agent.)

    Raises:
        ValueError: ``text`` does not parse ("the file" names it), there is no such function, or
            ``code`` does not parse or is not one function of that name.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise ValueError(f"the file does not parse ({e.msg}, line {e.lineno})") from None
    node = definition(tree, name)
    if node is None:
        raise ValueError(f"there is no function {name} in the file")
    fenced = code.strip().removeprefix("```python").removeprefix("```").removesuffix("```")
    body = textwrap.dedent(fenced.strip("\n")).strip("\n")
    try:
        new_tree = ast.parse(body)
    except SyntaxError as e:
        raise ValueError(f"code does not parse ({e.msg}, line {e.lineno}): write the whole function") from None
    defs = [n for n in new_tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(defs) != 1 or defs[0].name != name.split(".")[-1]:
        raise ValueError(f"code must be one whole function named {name.split('.')[-1]}, nothing else")
    lines = text.splitlines(keepends=True)
    indent = _indent_of(lines[node.lineno - 1])
    new_lines = body.splitlines(keepends=True)
    if not ast.get_docstring(defs[0]) and (doc := _docstring_lines(node, lines)):
        at = defs[0].body[0].lineno - 1  # the docstring goes before the first statement of the new body
        was, now = _indent_of(doc[0]), _indent_of(new_lines[at])
        new_lines[at:at] = [now + line[len(was):] if line.startswith(was) else line for line in doc]
    if not new_lines[-1].endswith("\n"):
        new_lines[-1] += "\n"
    start = node.lineno - 1 if not defs[0].decorator_list else first_line(node) - 1
    new = "".join(indent + line if line.strip() else line for line in new_lines)
    return "".join(lines[start:node.end_lineno]), new


def _indent_of(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def definition(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The top-level function ``name``, or the method ``Class.method``."""
    *owner, fn = name.split(".")
    body = tree.body
    if owner:
        cls = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == owner[0]), None)
        body = cls.body if cls is not None else []
    return next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn), None)


def first_line(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> int:
    """The 1-based first line of a definition, its decorators included."""
    return min([d.lineno for d in node.decorator_list] + [node.lineno])


def _docstring_lines(node: ast.AST, lines: list[str]) -> list[str]:
    """The source lines of ``node``'s docstring (whole lines), or []."""
    first = node.body[0] if node.body else None
    if ast.get_docstring(node) is None or first is None:
        return []
    return lines[first.lineno - 1:first.end_lineno]


def over_earlier(p: Path, original: str, mine: list[ProposedEdit], start: int, old: str,
                  new: str) -> ProposedEdit:
    """``old`` found at ``start`` of the edited text, replaced by ``new``, as one edit of the original that
    covers every earlier edit the match touches."""
    segments = []  # (start, end) in the edited text -> (start, end) in the original, per earlier edit
    shift = 0
    for e in sorted(mine, key=lambda e: e.at):
        segments.append((e.at + shift, e.at + shift + len(e.new), e.at, e.at + len(e.old)))
        shift += len(e.new) - len(e.old)
    end = start + len(old)

    def to_original(pos: int, is_end: bool) -> tuple[int, int]:
        """(edited, original) positions of a boundary, pushed out of any earlier edit it falls in."""
        shift = 0
        for a, b, oa, ob in segments:
            if a < pos < b or (pos == a == b):
                return (b, ob) if is_end else (a, oa)
            if b <= pos:
                shift = ob - b
        return pos, pos + shift
    (es, os_), (ee, oe) = to_original(start, False), to_original(end, True)
    edited = apply_edits(original, mine)
    region = edited[es:ee]
    inner = start - es
    return ProposedEdit(p, original[os_:oe], region[:inner] + new + region[inner + len(old):], os_)
