"""The agent's tools, as one table: name, JSON schema, description, handler.

:data:`TOOLS` is what the model is shown (the schemas, in :func:`tool_list`) and what a call
runs (:meth:`Toolbox.call`). Every tool returns an :class:`~.records.Observation`, bounded to
:data:`OBSERVATION_CHARS`; no tool raises for what the model asked: a bad argument, a file
outside the workspace, a run that failed or timed out is an observation the model reads.

- ``execute_python(code)``: a script in the sandbox of Write tests (workspace read-only, no
  network, a clean environment, limits; :mod:`server.assist.sandbox`), run against the
  workspace as it is on disk; refused in an untrusted workspace or with ``tests.sandbox`` off.
- ``retrieve_knowledge(query)``: the workspace index's hybrid search, under the index's rule
  (no secret, ignored or excluded file).
- ``read_file(path, start_line?, end_line?)``: a file inside the workspace, with line numbers,
  as it is with the edits proposed so far; the index's rule applies.
- ``run_tests(selector)``: pytest node ids or test files of the workspace, in the sandbox, with the
  proposed edits applied (patched into the module, as a verified refactor is run).
- ``propose_edit(path, old, new)``: records an edit (``old`` must occur exactly once); never
  writes the file. A Python file must still parse; a test file is refused (the tests judge the fix).
- ``finish(answer)``: ends the run.

Threads: a worker thread (tools block on the sandbox). Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..assist import sandbox
from ..assist.records import ContextItem
from ..assist.targets import module_name
from ..assist.testrun import find_python, run_variants
from ..assist.verify import rewrite_patches, test_files, workspace_tests
from .context import is_test_file
from .edits import function_replacement, over_earlier
from .records import EditCheck, Observation, ProposedEdit, apply_edits

OBSERVATION_CHARS = 2400     # an observation longer than this keeps its head and tail
EXECUTE_TIMEOUT_S = 30       # execute_python's wall-clock limit
TESTS_TIMEOUT_S = 90         # run_tests' and the final verification's wall-clock limit
CHECK_OUTPUT_CHARS = 1500    # pytest output kept with a failed verification (the model reads it)
READ_LINES = 120             # read_file shows at most this many lines per call
FILE_CHARS = 400_000         # a file larger than this is not read or edited
SEARCH_RESULTS = 4           # chunks retrieve_knowledge returns


def bounded(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """``text`` cut to ``limit`` characters: its head and tail, with how much was left out."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 3):]
    return f"{head}\n[... {len(text) - len(head) - len(tail):,} characters left out ...]\n{tail}"


@dataclass(frozen=True)
class Tool:
    """One tool: its name, JSON schema of its arguments, what the model is told, and its handler
    (``handler(toolbox, **arguments) -> Observation``)."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Callable[..., Observation]

    def schema(self) -> dict[str, Any]:
        """The tool as the model sees it (OpenAI's function shape)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def _params(required: list[str], **props: tuple[str, str]) -> dict[str, Any]:
    return {"type": "object", "properties": {k: {"type": t, "description": d} for k, (t, d) in props.items()},
            "required": required}


class Refused(Exception):
    """A tool call that cannot run (its message is the observation; ``kind`` its :class:`Observation` kind)."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


@dataclass
class Toolbox:
    """The tools' shared state for one run: the workspace, its trust, the sandbox, the search, the edits.

    Args:
        root: the workspace folder (absolute).
        trusted: the user trusts the workspace (code from it may run, in the sandbox).
        sandbox_mode: ``tests.sandbox`` (``bubblewrap``, ``none``, ``off``).
        search: the index's search as prompt context (``query -> [ContextItem]``), or None without an index.
        readable: the index's rule for a file (``(path, text) -> bool``); None: every file inside ``root``.
        cancel: set to stop a running tool (its process tree is killed).
        task_tests: the failing tests the task names (set by the loop): ``propose_edit`` runs them with
            the edit at once, so an attempt and its result are one step.
    """

    root: Path
    trusted: bool = False
    sandbox_mode: str = "bubblewrap"
    search: Callable[[str], list[ContextItem]] | None = None
    readable: Callable[[Path, str], bool] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    edits: list[ProposedEdit] = field(default_factory=list)
    answer: str | None = None
    shown: list[tuple[str, int, int]] = field(default_factory=list)  # (path, first, last line) the task showed
    task_tests: list[str] = field(default_factory=list)  # the failing tests the task names (absolute node ids)
    _originals: dict[Path, str] = field(default_factory=dict)

    def call(self, name: str, args: dict[str, Any]) -> Observation:
        """Run tool ``name`` with ``args``; an unknown tool, a missing or wrong argument, a refusal or a
        tool's own error is an observation with ``ok`` False."""
        tool = TOOLS_BY_NAME.get(name)
        if tool is None:
            return Observation(f"error: there is no tool {name!r}; the tools are {', '.join(TOOLS_BY_NAME)}", False)
        missing = [k for k in tool.parameters["required"] if k not in args]
        unknown = [k for k in args if k not in tool.parameters["properties"]]
        if missing or unknown:
            what = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and unknown else "") + \
                (f"unknown {', '.join(unknown)}" if unknown else "")
            return Observation(f"error: {name} takes {', '.join(tool.parameters['properties'])} ({what})", False)
        for k, v in args.items():
            want = tool.parameters["properties"][k]["type"]
            if (want == "string" and not isinstance(v, str)) or \
                    (want == "integer" and (not isinstance(v, int) or isinstance(v, bool))):
                return Observation(f"error: {name}'s {k} must be a {want}", False)
        try:
            obs = tool.handler(self, **args)
        except Refused as e:
            return Observation(f"error: {e}", False, e.kind)
        except Exception as e:  # a tool's own fault must not end the run: the model reads it
            return Observation(f"error: {name} failed: {type(e).__name__}: {e}", False)
        return Observation(bounded(obs.text), obs.ok, obs.kind)

    # -- files -----------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """A workspace path from the model (relative to the root, or absolute inside it).

        Raises:
            Refused: outside the workspace (after resolving links), or not a readable file by the index's rule.
        """
        p = Path(rel)
        p = (p if p.is_absolute() else self.root / p).resolve()
        try:
            p.relative_to(self.root.resolve())
        except ValueError:
            raise Refused(f"{rel} is outside the workspace ({self.root})") from None
        return p

    def text(self, p: Path) -> str:
        """A file's text with the edits proposed so far.

        Raises:
            Refused: missing, not a regular file, too large, binary, or kept out by the index's rule.
        """
        if p not in self._originals:
            if not p.is_file():
                raise Refused(f"{p.relative_to(self.root.resolve())} is not a file")
            if p.stat().st_size > FILE_CHARS:
                raise Refused(f"{p.name} is larger than {FILE_CHARS:,} bytes")
            raw = p.read_bytes()
            if b"\x00" in raw[:8192]:
                raise Refused(f"{p.name} is a binary file")
            text = raw.decode("utf-8", "replace")
            if self.readable is not None and not self.readable(p, text):
                raise Refused(f"{p.name} is kept out of prompts (a secret, ignored or excluded file)")
            self._originals[p] = text
        return apply_edits(self._originals[p], [e for e in self.edits if e.path == p])

    def original(self, p: Path) -> str:
        """A file's text as the agent first read it (before any proposed edit)."""
        return self._originals[p]

    def relative(self, p: Path) -> str:
        return str(p.relative_to(self.root.resolve()))

    # -- running code ------------------------------------------------------------------------
    def _may_run(self) -> None:
        if not self.trusted:
            raise Refused("this workspace is not trusted: no code from it is run")
        if self.sandbox_mode == "off":
            raise Refused("tests.sandbox is off: no code is run")

    def patches(self) -> tuple[str | None, list[dict]]:
        """The proposed edits as driver patches of one module: (module, patches); (None, []) without edits.

        Raises:
            Refused: the edits touch more than one file, a file that is not an importable module,
                or change something that cannot be patched in (see :func:`rewrite_patches`).
        """
        files = list(dict.fromkeys(e.path for e in self.edits))
        if not files:
            return None, []
        if len(files) > 1:
            raise Refused("edits to more than one file cannot be run yet: keep the fix in one file")
        p = files[0]
        module = module_name(self.root, p) if p.suffix == ".py" else None
        if module is None:
            raise Refused(f"{self.relative(p)} is not an importable Python module of the workspace")
        patches = rewrite_patches(self._originals[p], self.text(p))
        if isinstance(patches, str):
            raise Refused(patches)
        return module, patches

    def run_tests(self, selectors: list[str], timeout_s: float = TESTS_TIMEOUT_S):
        """pytest on ``selectors`` (node ids inside the workspace) with the edits patched in: the driver's run."""
        module, patches = self.patches()
        return run_variants(self.root, [{"label": "edited", "patches": patches}], module=module,
                            test_files=selectors, cancel=self.cancel, mode=self.sandbox_mode, timeout_s=timeout_s)

    def covering_tests(self) -> list[str]:
        """The workspace's tests that exercise a function the edits changed (the refactor verification's rule)."""
        module, patches = self.patches()
        names: list[str] = []
        for patch in patches:
            for node in ast.parse(patch["source"]).body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.append(node.name)
        found: list[str] = []
        for name in dict.fromkeys(names):
            found += [t for t in workspace_tests(self.root, module, name) if t not in found]
        return found

    def verify(self, also: list[str] = ()) -> EditCheck:
        """Run the test files that hold a test covering the edits, whole, and ``also`` (the tests the
        problem named), with the edits applied, in the sandbox. Never raises.

        Whole files, not just the covering tests: a function is also exercised through the functions
        that call it, whose tests usually sit in the same file (toolz's ``drop`` by ``interpose``'s test).
        """
        try:
            self._may_run()
            files = list(dict.fromkeys(t.split("::", 1)[0] for t in self.covering_tests()))
            tests = files + [t for t in dict.fromkeys(also) if t.split("::", 1)[0] not in files]
            if not tests:
                return EditCheck("unverified", "no test of the workspace covers the edited code")
            result = self.run_tests(tests)
        except Refused as e:
            return EditCheck("unverified", str(e))
        if not result.ran or not result.runs:
            return EditCheck("unverified", result.reason or "the tests did not run", tests)
        run = result.runs[0]
        if run.error:
            return EditCheck("failed", f"the edited code does not run: {run.error}", tests, tests,
                             bounded(run.output, CHECK_OUTPUT_CHARS))
        failed = run.failed
        if not failed and not run.passed:
            return EditCheck("failed", "no covering test ran: " + bounded(run.output, 400), tests)
        if failed:
            return EditCheck("failed", f"{len(failed)} of {len(failed) + len(run.passed)} tests fail with the edits",
                             tests, failed, bounded(run.output, CHECK_OUTPUT_CHARS))
        where = f"{len(files)} test file(s) that cover the edited code" if files else "the tests named"
        return EditCheck("passed", f"{len(run.passed)} tests pass with the edits ({where})", tests)


# -- handlers -------------------------------------------------------------------------------------
def _execute_python(box: Toolbox, code: str) -> Observation:
    box._may_run()
    python, _ = find_python(box.root)
    python = python or sys.executable
    if box.sandbox_mode == "bubblewrap" and not (ok := sandbox.available())[0]:
        raise Refused(f"{ok[1]}; {sandbox.INSTALL_HINT}")
    scratch = Path(tempfile.mkdtemp(prefix="deepseek-agent-"))
    try:
        (scratch / "snippet.py").write_text(code, encoding="utf-8")
        cmd = [python, str(scratch / "snippet.py")]
        env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(box.root),
               "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}
        if box.sandbox_mode == "none":
            run = sandbox.run_unsandboxed(cmd, scratch=scratch, env=env, timeout_s=EXECUTE_TIMEOUT_S,
                                          cancel=box.cancel)
        else:
            run = sandbox.run(cmd, workspace=box.root.resolve(), scratch=scratch,
                              python_paths=sandbox.interpreter_paths(python), env=env, timeout_s=EXECUTE_TIMEOUT_S,
                              cancel=box.cancel)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not run.started:
        raise Refused(f"the sandbox did not start: {run.output[-300:]}")
    if run.stopped:
        return Observation(f"stopped ({run.stopped} after {EXECUTE_TIMEOUT_S} s)\n{run.output}", False)
    note = "" if not box.edits else "\n(note: the proposed edits are not applied here; run_tests applies them)"
    return Observation(f"exit code {run.returncode}\n{run.output or '(no output)'}{note}", run.returncode == 0)


def _retrieve_knowledge(box: Toolbox, query: str) -> Observation:
    if box.search is None:
        raise Refused("the workspace index is not available (index.enabled off, or no workspace folder)")
    items = box.search(query)[:SEARCH_RESULTS]
    if not items:
        return Observation("nothing found (the index may still be building)")
    return Observation("\n\n".join(f"{i.label}:\n{i.text.strip()}" for i in items))


def _read_file(box: Toolbox, path: str, start_line: int = 1, end_line: int = 0) -> Observation:
    p = box.path(path)
    lines = box.text(p).splitlines()
    start = max(1, start_line)
    end = min(len(lines), end_line if end_line >= start else start + READ_LINES - 1, start + READ_LINES - 1)
    if start > len(lines):
        return Observation(f"{box.relative(p)} has {len(lines)} lines", False)
    rel = box.relative(p)
    if not any(e.path == p for e in box.edits) and any(
            f == rel and a <= start and end <= b for f, a, b in box.shown):
        raise Refused(f"{rel} lines {start}-{end} are already shown above, in the task: act on them (replace_function "
                      "with the corrected function, or propose_edit)", kind="shown")
    shown = "\n".join(f"{n:>5} {lines[n - 1]}" for n in range(start, end + 1))
    if not any(e.path == p for e in box.edits):  # line numbers of the file as it is: the model has seen them
        box.shown.append((rel, start, end))
    more = f"\n({len(lines)} lines in all; read more with start_line={end + 1})" if end < len(lines) else ""
    return Observation(f"{box.relative(p)}, lines {start}-{end}:\n{shown}{more}")


def _run_tests(box: Toolbox, selector: str) -> Observation:
    box._may_run()
    selectors = selector.split()
    result = box.run_tests([str(_test_path(box, file)) + rest for file, rest in (_split_node(s) for s in selectors)])
    if not result.ran:
        raise Refused(result.reason)
    if not result.runs:
        return Observation(f"the tests did not finish ({result.reason})\n{result.output}", False)
    run = result.runs[0]
    if run.error:
        return Observation(f"the edited code does not run: {run.error}\n{run.output}", False)
    head = f"{len(run.passed)} passed, {len(run.failed)} failed" + \
        (" (with the proposed edits applied)" if box.edits else "")
    return Observation(f"{head}\n{run.output.strip()}", not run.failed and bool(run.passed))


def _test_path(box: Toolbox, file: str) -> Path:
    """The workspace path of a test file the model named: as named, or else the one workspace file whose
    path ends with it (a small model drops the package folder: ``tests/test_x.py`` for ``pkg/tests/test_x.py``).

    Raises:
        Refused: outside the workspace, or no such file (or several that end so: they are named).
    """
    p = box.path(file)
    if p.exists():
        return p
    rel = Path(file).as_posix().lstrip("/")
    ends = [q for q in test_files(box.root.resolve()) if q.as_posix().endswith("/" + rel)][:5]
    if len(ends) == 1:
        return ends[0]
    if ends:
        raise Refused(f"{file} is ambiguous: {', '.join(box.relative(q) for q in ends)}")
    raise Refused(f"there is no {file} in the workspace; test files are named from the workspace root")


def _split_node(selector: str) -> tuple[str, str]:
    """A pytest node id as (file, the rest: ``::Class::test`` or "")."""
    file, sep, rest = selector.partition("::")
    return file, sep + rest


def _propose_edit(box: Toolbox, path: str, old: str, new: str) -> Observation:
    p = box.path(path)
    text = box.text(p)
    if not old:
        raise Refused("old must be the exact text to replace, copied from the file")
    if old == new:
        raise Refused("new is the same as old: nothing would change")
    if is_test_file(p.relative_to(box.root.resolve())):
        raise Refused(f"{box.relative(p)} is a test: the agent fixes the code, not the tests that judge the fix")
    original = box.original(p)
    mine = [e for e in box.edits if e.path == p]
    if original.count(old) >= 1 and _the_occurrence(box, p, original, old, quiet=True) is not None:
        at = _the_occurrence(box, p, original, old)  # the code as shown: this proposal replaces what it overlaps
        edit = ProposedEdit(p, old, new, at)
    else:  # text of an earlier proposal: widened to cover the proposals it touches, in the original's terms
        edit = over_earlier(p, original, mine, _the_occurrence(box, p, text, old), old, new)
    kept = [e for e in mine if e.at + len(e.old) <= edit.at or e.at >= edit.at + len(edit.old)]
    after = apply_edits(original, kept + [edit])
    if p.suffix == ".py":
        try:
            ast.parse(after)
        except SyntaxError as e:
            raise Refused(f"with this edit {box.relative(p)} no longer parses ({e.msg}, line {e.lineno})") from None
    replaced = len(mine) - len(kept)
    box.edits[:] = [e for e in box.edits if e.path != p] + kept + [edit]
    said = (f"recorded in {box.relative(p)}" + (f" in place of {replaced} earlier edit(s) there" if replaced else "")
            + ", not written: the user applies it once the tests pass")
    if not box.task_tests:
        return Observation(f"edit {len(box.edits)} {said}")
    try:  # the attempt's result in the same step: the failing tests of the task, run with the edits
        tried = _run_tests(box, " ".join(box.task_tests))
    except Refused as e:
        return Observation(f"edit {len(box.edits)} {said}. The failing test was not run: {e}")
    return Observation(f"the failing test {'now passes' if tried.ok else 'still fails'} with edit {len(box.edits)} "
                       f"({said}): {tried.text}", tried.ok)


def _replace_function(box: Toolbox, path: str, name: str, code: str) -> Observation:
    """``name`` (a function, or ``Class.method``) of ``path`` replaced by ``code``, the model's whole corrected
    version of it (:func:`.edits.function_replacement`), as a :func:`_propose_edit` of the function's text
    as it is now (with earlier proposals)."""
    p = box.path(path)
    try:
        old, new = function_replacement(box.text(p), name, code)
    except ValueError as e:
        raise Refused(str(e).replace("the file", box.relative(p))) from None
    return _propose_edit(box, path, old, new)


def _the_occurrence(box: Toolbox, p: Path, text: str, old: str, quiet: bool = False) -> int | None:
    """Where ``old`` is in ``text``: its only occurrence, or the only one inside the lines the model has been
    shown (the task's code, its reads), since that is the code it is editing.

    Raises:
        Refused: not found, or several candidates (the lines of each are named).
    """
    starts, i = [], text.find(old)
    while i >= 0:
        starts.append(i)
        i = text.find(old, i + 1)
    if len(starts) == 1:
        return starts[0]
    rel = box.relative(p)
    lines = [text.count("\n", 0, s) + 1 for s in starts]
    seen = [s for s, n in zip(starts, lines) if any(f == rel and a <= n <= b for f, a, b in box.shown)]
    if len(seen) == 1:
        return seen[0]
    if quiet:
        return None
    if not starts:
        raise Refused(f"old does not occur in {rel}; copy it exactly from the code shown (without the line numbers, "
                      "with the same indentation)")
    raise Refused(f"old occurs {len(starts)} times in {rel} (lines {', '.join(map(str, lines[:8]))}); include the "
                  "lines around it so that it occurs once")


def _finish(box: Toolbox, answer: str) -> Observation:
    box.answer = answer
    return Observation("finished")


TOOLS: tuple[Tool, ...] = (
    Tool("read_file", "Read a file of the workspace, with line numbers (as it is with your proposed edits).",
         _params(["path"], path=("string", "path relative to the workspace root"),
                 start_line=("integer", "first line, 1-based (default 1)"),
                 end_line=("integer", f"last line (default: {READ_LINES} lines)")), _read_file),
    Tool("retrieve_knowledge", "Search the workspace's code by words or meaning; returns the best matching pieces.",
         _params(["query"], query=("string", "what to look for")), _retrieve_knowledge),
    Tool("run_tests", "Run pytest tests of the workspace with your proposed edits applied.",
         _params(["selector"], selector=("string", "test node ids or test files, separated by spaces, e.g. "
                                                   "tests/test_x.py::test_y")), _run_tests),
    Tool("execute_python", "Run a Python script in a sandbox (the workspace importable, read-only, no network); "
                           "returns its output.",
         _params(["code"], code=("string", "the script")), _execute_python),
    Tool("propose_edit", "Propose replacing the exact text `old` of a file by `new` (nothing is written yet).",
         _params(["path", "old", "new"], path=("string", "path relative to the workspace root"),
                 old=("string", "the exact text to replace, copied from the file, occurring once"),
                 new=("string", "the replacement")), _propose_edit),
    Tool("replace_function", "Propose replacing a whole function of a file by your corrected version of it "
                             "(nothing is written yet).",
         _params(["path", "name", "code"], path=("string", "path relative to the workspace root"),
                 name=("string", "the function's name (Class.method for a method)"),
                 code=("string", "the corrected function from its def line to its end, without its docstring "
                                 "(the docstring is kept)")), _replace_function),
    Tool("finish", "End the task with your answer: what was wrong and what you changed.",
         _params(["answer"], answer=("string", "the answer for the user")), _finish),
)
TOOLS_BY_NAME = {t.name: t for t in TOOLS}


def tool_list() -> str:
    """The tools as the model reads them: one JSON schema per line."""
    import json
    return "\n".join(json.dumps(t.schema()) for t in TOOLS)
