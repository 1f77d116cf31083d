"""Assistant quality benchmark: Refactor and Write tests on real functions, judged by the functions' own tests.

The functions are toolz's (``toolz/itertoolz.py``, ``dicttoolz.py``, ``recipes.py``, pinned
in the ``test`` extra): pip-installed code this project did not write, whose wheel ships its
tests. A function qualifies when it is a top-level, undecorated function of 4-30 lines with at
least two places to mutate (for the server's mutator, and one for this script's independent
mutants below) and toolz's own test file for its module has a test that uses it;
``--functions`` of them are sampled with ``--seed``.

Each model gets its own server (``python -m server`` over stdio, ``chatModel`` set to it, or
not set for ``auto``: the model the server chooses on this machine, named on stderr;
indexing off) and a workspace holding a copy of the toolz package **without its tests**:
the server cannot use them to verify a rewrite and must fall back on checks it derives
(doctests, call sites, generated calls). The held-out tests then judge:

- **Refactor** ("make it clearer and simpler"): applied or refused (and why); an applied
  rewrite is *kept* when toolz's test file for its module still passes with it, *broken*
  when it fails.
- **Write tests**: kept or refused; a kept test file is run by this script (outside the
  sandbox) on the original module (*passes*) and on each of up to 8 mutants of the function
  (*catches a mutant*: at least one fails).
- **Independent mutants**, written by this script (not by the server's mutator, whose mutants
  Write tests aims at): every one-token swap of `<`/`<=`, `>`/`>=`, `==`/`!=`, `and`/`or`,
  `True`/`False` and an integer `n` -> `n + 1` in the function's body, up to 12 spread over it,
  kept when toolz's own tests catch it (so it is a real bug, not an equivalent change). A kept
  test file's score is the share of them it kills.
- Seconds per request (the whole ``workspace/executeCommand``, as a person waits for it),
  and the CPU seconds the server and its children (the sandboxed test runs) spent on it:
  on a shared machine the wall time is inflated by other work (and by a process being
  stopped), the CPU time much less so. With 2 threads for the model, an idle 2-core
  machine needs roughly half the CPU seconds in wall time while the model generates.

Printed per function and side by side per model::

    python bench/assistant_quality.py [--functions 8] [--seed 1] [--tasks refactor,tests]
                                      [--models qwen2.5-coder-0.5b-instruct-q4_k_m,qwen2.5-coder-1.5b-instruct-q4_k_m]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from server.assist.mutants import mutants  # noqa: E402
from server.assist.verify import workspace_tests  # noqa: E402

MODULES = {"itertoolz.py": "test_itertoolz.py", "dicttoolz.py": "test_dicttoolz.py", "recipes.py": "test_recipes.py"}
DEFAULT_MODELS = "qwen2.5-coder-0.5b-instruct-q4_k_m,qwen2.5-coder-1.5b-instruct-q4_k_m"
JUDGE_TIMEOUT_S = 120
MAX_INDEPENDENT = 12       # independent mutants per function, spread over its body
SWAPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "and": "or", "or": "and",
         "True": "False", "False": "True"}


@dataclass
class Function:
    module: str          # file name in toolz/, e.g. itertoolz.py
    name: str
    start: int           # 0-based first line (the def), inclusive
    end: int             # 0-based last line, inclusive
    independent: list[tuple[str, str]] = field(default_factory=list)  # (what changed, source) toolz's tests catch


@dataclass
class Outcome:
    function: str
    refactor: str = ""           # kept / broken / refused: <reason> / error: <message>
    refactor_note: str = ""      # the verification's summary
    refactor_s: float = 0.0
    refactor_cpu: float = 0.0
    tests: str = ""              # kept / refused: <reason> / error: <message>
    tests_pass: bool = False
    tests_catch: bool = False
    tests_note: str = ""
    killed: int = -1             # independent mutants the kept tests kill (-1: no tests kept)
    tests_s: float = 0.0
    tests_cpu: float = 0.0
    extra: dict = field(default_factory=dict)


# -- functions and judging -------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def toolz_dir() -> Path:
    import toolz
    return Path(toolz.__file__).parent


def pick_functions(n: int, seed: int) -> list[Function]:
    src = toolz_dir()
    found = []
    for module in MODULES:
        text = (src / module).read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            if not isinstance(node, ast.FunctionDef) or node.decorator_list or node.name.startswith("_"):
                continue
            lines = node.end_lineno - node.lineno + 1
            source = "".join(text.splitlines(keepends=True)[node.lineno - 1:node.end_lineno])
            if 4 <= lines <= 30 and len(mutants(source)) >= 2 and independent_mutants(source, 0) and \
                    workspace_tests(src.parent, f"toolz.{module[:-3]}", node.name, limit=1):
                found.append(Function(module, node.name, node.lineno - 1, node.end_lineno - 1))
    random.Random(seed).shuffle(found)
    return sorted(found[:n], key=lambda f: (f.module, f.start))


def independent_mutants(source: str, first_line: int) -> list[tuple[str, str]]:
    """One-token swaps in the body of the function ``source`` (its ``def`` line and docstring
    untouched): SWAPS, and an integer literal ``n`` -> ``n + 1``; up to MAX_INDEPENDENT spread
    evenly. Returns (description, mutated source) pairs; each parses."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    tokens = list(tokenize.generate_tokens(iter(lines).__next__))
    body = next(i for i, t in enumerate(tokens) if t.type == tokenize.NEWLINE)  # the end of the def's signature
    found = []
    for t in tokens[body:]:
        if t.type in (tokenize.OP, tokenize.NAME) and t.string in SWAPS:
            new = SWAPS[t.string]
        elif t.type == tokenize.NUMBER and t.string.isdigit():
            new = str(int(t.string) + 1)
        else:
            continue
        at = starts[t.start[0] - 1] + t.start[1]
        text = source[:at] + new + source[at + len(t.string):]
        try:
            ast.parse(text)
        except SyntaxError:
            continue
        found.append((f"line {first_line + t.start[0]}: `{t.string}` -> `{new}`", text))
    if len(found) > MAX_INDEPENDENT:
        found = [found[i * len(found) // MAX_INDEPENDENT] for i in range(MAX_INDEPENDENT)]
    return found


class Judge:
    """toolz with its tests, in a folder of its own: runs a test file against an edited module (no sandbox)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="assist-judge-"))
        shutil.copytree(toolz_dir(), self.dir / "toolz", ignore=shutil.ignore_patterns("__pycache__"))

    def passes(self, module: str, source: str, test_file: str, test_code: str | None = None) -> bool:
        """Whether ``test_file`` (toolz's, or ``test_code`` under that name) passes with ``module`` as ``source``."""
        target = self.dir / "toolz" / module
        original = target.read_text(encoding="utf-8")
        target.write_text(source, encoding="utf-8")
        path = self.dir / "toolz" / "tests" / test_file
        if test_code is not None:
            path.write_text(test_code, encoding="utf-8")
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(path)],
                               cwd=self.dir, capture_output=True, timeout=JUDGE_TIMEOUT_S)
            return r.returncode == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            target.write_text(original, encoding="utf-8")
            if test_code is not None:
                path.unlink()

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def replaced(text: str, f: Function, new: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:f.start]) + new + "".join(lines[f.end + 1:])


# -- one model -------------------------------------------------------------------------------------
async def run_model(model: str, functions: list[Function], tasks: set[str], judge: Judge) -> list[Outcome]:
    from lsp_server import start_server, stop_server
    from lsprotocol import types

    workspace = Path(tempfile.mkdtemp(prefix="assist-ws-"))
    shutil.copytree(toolz_dir(), workspace / "toolz", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    settings = {"index": {"enabled": False}} | ({} if model == "auto" else {"chatModel": model})
    # A data folder of its own: no answer comes from the response cache of an earlier run.
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="assist-data-")
    client = await start_server("assistant-bench", settings, workspace)
    if model == "auto":  # chatModel not set: the model the server chooses on this machine, and why
        chat = (await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.status")))["chat"]
        print(f"  auto: {chat['reason']}", file=sys.stderr, flush=True)
    edits: list = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):  # as an editor would; the files stay as they are
        edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    async def command(name: str, arg: dict) -> tuple[dict | str, float, float]:
        t0, cpu0 = time.monotonic(), cpu_seconds(client._server.pid)
        try:
            result = await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name,
                                                                                             arguments=[arg]))
        except Exception as e:  # a refusal with an error is an outcome too
            result = f"error: {e}"
        return result, time.monotonic() - t0, cpu_seconds(client._server.pid) - cpu0

    outcomes = []
    opened = set()
    for n, f in enumerate(functions, 1):
        path = workspace / "toolz" / f.module
        text = path.read_text(encoding="utf-8")
        uri = path.as_uri()
        if uri not in opened:
            opened.add(uri)
            client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=text)))
        rng = {"start": {"line": f.start + 1, "character": 4}, "end": {"line": f.start + 1, "character": 4}}
        out = Outcome(f"{f.module[:-3]}.{f.name}")
        test_file = MODULES[f.module]
        if "refactor" in tasks:
            result, out.refactor_s, out.refactor_cpu = await command("deepseek.refactor", {"uri": uri, "range": rng})
            if isinstance(result, str):
                out.refactor = result[:80]
            elif result.get("applied"):
                new = edits[-1].document_changes[0].edits[0].new_text
                ok = judge.passes(f.module, replaced(text, f, new), test_file)
                out.refactor = "kept" if ok else "broken"
                out.refactor_note = (result.get("verification") or {}).get("summary", "")
            else:
                out.refactor = f"refused: {result.get('reason', '')[:70]}"
                out.refactor_note = ((result.get("verification") or {}).get("summary") or "")[:70]
        if "tests" in tasks:
            result, out.tests_s, out.tests_cpu = await command("deepseek.writeTests", {"uri": uri, "range": rng})
            if isinstance(result, str):
                out.tests = result[:80]
            elif result.get("applied"):
                code = edits[-1].document_changes[-1].edits[0].new_text
                out.tests = "kept"
                out.tests_note = (result.get("mutants") or {}).get("summary", "")
                out.tests_pass = judge.passes(f.module, text, f"test_generated_{f.name}.py", code)
                source = "".join(text.splitlines(keepends=True)[f.start:f.end + 1])
                out.tests_catch = out.tests_pass and any(
                    not judge.passes(f.module, replaced(text, f, m.source), f"test_generated_{f.name}.py", code)
                    for m in mutants(source, first_line=f.start))
                out.killed = sum(not judge.passes(f.module, replaced(text, f, m), f"test_generated_{f.name}.py", code)
                                 for _, m in f.independent) if out.tests_pass else 0
            else:
                out.tests = f"refused: {result.get('reason', '')[:70]}"
                out.tests_note = ((result.get("mutants") or {}).get("summary") or "")[:70]
        outcomes.append(out)
        print(f"  {model[:22]} [{n}/{len(functions)}] {out.function:<28} refactor {out.refactor:<10} "
              f"{out.refactor_s:5.1f} s ({out.refactor_cpu:.0f} CPU s) | tests {out.tests[:10]:<10} "
              f"pass={out.tests_pass!s:<5} catch={out.tests_catch!s:<5} "
              f"independent {max(out.killed, 0)}/{len(f.independent)} {out.tests_s:5.1f} s "
              f"({out.tests_cpu:.0f} CPU s)  {out.refactor_note} / {out.tests_note}", file=sys.stderr, flush=True)
    await stop_server(client)
    shutil.rmtree(workspace, ignore_errors=True)
    return outcomes


# -- the table -------------------------------------------------------------------------------------
def p50(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} s" if values else "-"


def share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.0%})" if whole else "-"


def table(results: dict[str, list[Outcome]], tasks: set[str], functions: list[Function]) -> str:
    models = list(results)
    rows: list[tuple[str, list[str]]] = []

    def row(label, fn):
        rows.append((label, [fn(results[m]) for m in models]))
    n = len(next(iter(results.values()))) if results else 0
    if "refactor" in tasks:
        row("Refactor applied", lambda o: f"{sum(x.refactor in ('kept', 'broken') for x in o)} of {n}")
        row("  behaviour kept (held-out tests pass)", lambda o: str(sum(x.refactor == "kept" for x in o)))
        row("  **broken** (held-out tests fail)", lambda o: str(sum(x.refactor == "broken" for x in o)))
        row("Refactor refused: changes behaviour", lambda o: str(sum("changes behaviour" in x.refactor or
                                                                        "does not run" in x.refactor for x in o)))
        row("Refactor refused: other reasons", lambda o: str(sum(x.refactor.startswith(("refused", "error")) and not
                                                                 ("changes behaviour" in x.refactor or
                                                                  "does not run" in x.refactor) for x in o)))
        row("Refactor wall time p50 / max", lambda o: f"{p50([x.refactor_s for x in o])} / "
                                                       f"{max([x.refactor_s for x in o] or [0]):.0f} s")
        row("Refactor CPU time p50 / max", lambda o: f"{p50([x.refactor_cpu for x in o])} / "
                                                      f"{max([x.refactor_cpu for x in o] or [0]):.0f} s")
    if "tests" in tasks:
        row("Write tests: kept", lambda o: f"{sum(x.tests == 'kept' for x in o)} of {n}")
        row("  pass on the original (re-run here)", lambda o: str(sum(x.tests_pass for x in o)))
        row("  catch a mutant (re-run here)", lambda o: str(sum(x.tests_catch for x in o)))
        row("Independent mutants killed by kept tests", lambda o: share(
            sum(x.killed for x in o if x.killed >= 0), sum(len(f.independent) for x, f in zip(o, functions)
                                                             if x.killed >= 0)))
        row("  kept files killing >= 1 / >= 60%", lambda o: f"{sum(x.killed > 0 for x in o)} / "
            f"{sum(x.killed >= 0.6 * len(f.independent) > 0 for x, f in zip(o, functions))}")
        row("  per function, refused = 0", lambda o: share(sum(max(x.killed, 0) for x in o),
                                                          sum(len(f.independent) for f in functions)))
        row("Write tests wall time p50 / max", lambda o: f"{p50([x.tests_s for x in o])} / "
                                                          f"{max([x.tests_s for x in o] or [0]):.0f} s")
        row("Write tests CPU time p50 / max", lambda o: f"{p50([x.tests_cpu for x in o])} / "
                                                         f"{max([x.tests_cpu for x in o] or [0]):.0f} s")
    width = max(len(r[0]) for r in rows) if rows else 10
    lines = [f"| {'':<{width}} | " + " | ".join(m.replace("qwen2.5-coder-", "").replace("-instruct-q4_k_m", "")
                                                 for m in models) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("---" for _ in models) + "|"]
    lines += [f"| {label:<{width}} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--functions", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tasks", default="refactor,tests")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated catalog names, or auto")
    args = ap.parse_args()
    tasks = set(args.tasks.split(","))
    functions = pick_functions(args.functions, args.seed)
    print(f"{len(functions)} functions: " + ", ".join(f"{f.module[:-3]}.{f.name}" for f in functions), file=sys.stderr)
    judge = Judge()
    try:
        for module in {f.module for f in functions}:  # the judge must agree that the untouched module passes
            assert judge.passes(module, (toolz_dir() / module).read_text(encoding="utf-8"), MODULES[module])
        if "tests" in tasks:  # independent mutants: those toolz's own tests catch
            for f in functions:
                text = (toolz_dir() / f.module).read_text(encoding="utf-8")
                source = "".join(text.splitlines(keepends=True)[f.start:f.end + 1])
                f.independent = [(what, m) for what, m in independent_mutants(source, f.start)
                                 if not judge.passes(f.module, replaced(text, f, m), MODULES[f.module])]
                print(f"  {f.module[:-3]}.{f.name}: {len(f.independent)} independent mutants toolz's tests catch: "
                      + ", ".join(what for what, _ in f.independent), file=sys.stderr, flush=True)
        results = {m: asyncio.run(run_model(m, functions, tasks, judge)) for m in args.models.split(",")}
    finally:
        judge.close()
    print(table(results, tasks, functions))


if __name__ == "__main__":
    main()
