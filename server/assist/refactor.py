"""Refactor: a rewrite of a span, checked before it is offered.

The rewrite must parse, keep the definition's name, and not shadow what the file already
defines or imports; then it is run against the original (:func:`.verify.verify_rewrite`)
when the workspace is trusted and a sandbox is on. A rewrite that changes behaviour is
refused.

Threads: a worker thread (it blocks for the generation and the runs). This module imports
nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

from index.chunking import chunk_file
from index.syntax import syntax_errors

from ..text import split_lines
from .generation import AssistantCore, OnProgress, code_block
from .packs import load_pack
from .records import CodeSpan, RefactorResult, Verification
from .verify import verify_rewrite


class RefactorTask(AssistantCore):
    """Refactor, on top of the core's generation."""

    def refactor(self, span: CodeSpan, instruction: str = "", root: Path | None = None, trusted: bool = False,
                 cancel: threading.Event | None = None, on_progress: OnProgress | None = None) -> RefactorResult:
        """The rewritten code for the span, or None with the reason it is refused.

        A rewrite that parses and keeps the definition's name is then run (Python, a trusted
        workspace ``root``, a sandbox): the workspace's tests of the function and checks
        derived from it, against the original and the rewrite (:func:`verify_rewrite`). A
        rewrite that changes behaviour is refused; one that could not be run is returned
        with ``verification.verdict == "unverified"`` and the reason.
        """
        say = on_progress or (lambda message: None)
        pack = load_pack("refactor")
        messages = pack.render(path=span.path.name, language=span.language, code=span.code,
                               instruction=(f"Instruction: {instruction.strip()}" if instruction.strip() else
                                            "Make it clearer and simpler."))
        budget = max(self.max_tokens, len(span.code) // 2 + 128)  # room for the whole rewrite
        say("writing the rewrite")
        reply = self._generate("refactor", messages, pack, None, None, max_tokens=budget, cancel=cancel)
        new = code_block(reply.text)
        if new is None:
            return RefactorResult(None, "the model's answer held no code block", reply)
        if "```" not in reply.text[reply.text.find("```") + 3:]:
            return RefactorResult(None, f"the answer was cut off after {budget} tokens; nothing was changed", reply)
        new = _drop_redefinitions(span, new)
        new = _match_indent(span.code, new)
        lines = split_lines(span.text, keepends=True)
        after = "".join(lines[:span.start_line]) + new + "".join(lines[span.end_line + 1:])
        before_errors, after_errors = syntax_errors(span.language, span.text), syntax_errors(span.language, after)
        if after_errors > before_errors:
            return RefactorResult(None, f"the rewritten code does not parse ({after_errors - before_errors} new "
                                        "syntax error(s)); nothing was changed", reply)
        if new.strip() == span.code.strip():
            return RefactorResult(None, "the model proposed no change", reply)
        if span.symbol and not re.search(rf"\b{re.escape(span.symbol)}\b", new):
            return RefactorResult(None, f"the rewrite no longer defines `{span.symbol}`, which other code may "
                                        "call; nothing was changed", reply)
        if cancel is not None and cancel.is_set():
            return RefactorResult(None, "cancelled", reply)
        if root is None or not trusted:
            verification = Verification("unverified", "not verified: running the workspace's code needs a trusted "
                                                      "workspace")
        elif self.sandbox == "off":
            verification = Verification("unverified", "not verified: tests.sandbox is off")
        else:
            say("running the code: original and rewrite")
            verification = verify_rewrite(root, span, after, cancel, self.sandbox)
        if verification.verdict == "changed":
            return RefactorResult(None, f"not applied: {verification.summary}", reply, verification)
        return RefactorResult(new, "", reply, verification)


def _drop_redefinitions(span: CodeSpan, new: str) -> str:
    """Remove from a rewrite any top-level definition of a name defined elsewhere in the file, and
    the names of its top-level imports that the file already binds.

    A small model likes to append its own versions of the helpers it saw, or imports of
    names the module already has; applied, they would shadow the real ones.
    """
    lines = split_lines(span.text, keepends=True)
    blank = "\n" * (span.end_line - span.start_line + 1)
    rest = "".join(lines[:span.start_line]) + blank + "".join(lines[span.end_line + 1:])
    elsewhere = {c.symbol for c in chunk_file(span.path.name, rest) if c.symbol and c.kind != "lines"} - {span.symbol}
    new_lines = split_lines(new, keepends=True)
    drop: set[int] = set()
    for c in chunk_file(span.path.name, new):
        if c.symbol in elsewhere and not new_lines[c.start_line][:1].isspace():
            first = c.start_line
            while first > 0 and new_lines[first - 1].lstrip().startswith("@"):
                first -= 1  # its decorators go too
            drop.update(range(first, c.end_line + 1))
    # An import of a name the file already binds: redundant, or it shadows the file's own (a model
    # that writes `from itertools import accumulate` above its rewrite replaces toolz's accumulate).
    replace: dict[int, str] = {}
    try:
        bound = _bound_names(ast.parse(rest))
        new_tree = ast.parse(new)
    except SyntaxError:
        bound, new_tree = set(), None
    for node in new_tree.body if new_tree is not None else []:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.end_lineno is not None:
            keep = [a for a in node.names if (a.asname or a.name).split(".")[0] not in bound]
            if len(keep) < len(node.names):
                drop.update(range(node.lineno - 1, node.end_lineno))
                if keep:
                    node.names = keep
                    replace[node.lineno - 1] = ast.unparse(node) + "\n"
    kept = "".join(replace.get(i, line) for i, line in enumerate(new_lines) if i not in drop or i in replace)
    return re.sub(r"\n{3,}$", "\n", kept)


def _bound_names(tree: ast.Module) -> set[str]:
    """Names a module's top-level statements bind: definitions, imports, assignments."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _match_indent(original: str, new: str) -> str:
    """Re-indent ``new`` to the original's first-line indentation; end with a newline."""
    import textwrap
    first = next((ln for ln in split_lines(original) if ln.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    body = textwrap.indent(textwrap.dedent(new), indent, lambda ln: bool(ln.strip()))
    return body if body.endswith("\n") else body + "\n"
