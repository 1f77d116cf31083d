"""Agent benchmark: bugs injected into toolz, fixed by the agent and by a one-shot call of the same model.

The problems: top-level, undecorated functions of toolz (``itertoolz.py``, ``dicttoolz.py``,
``recipes.py``, ``functoolz.py``; pip-installed code this project did not write, whose wheel ships
its tests) with a test of toolz's own that uses them. One bug is injected per function with the
verified assistant's mutator (:func:`server.assist.mutants.mutants`), drawn (``--seed``) among
the mutants one of those tests catches: a comparison's boundary or sense, an operator, a
constant, a negated condition, as people write bugs (its ``return None`` mutant is left out: it
deletes the expression the fix needs, which turns a fix into rewriting the function);
``--problems`` are sampled with ``--seed``. The workspace is a copy of toolz *with* its tests,
the buggy function written into its module.

Both sides get the failing test's node id and output:

- **agent**: :class:`server.agent.Agent` with its tools (read_file, retrieve_knowledge over a
  lexical scan of the copy, run_tests and execute_python in the bubblewrap sandbox,
  propose_edit, finish), ``--max-steps`` turns;
- **one-shot**: the same model asked once to fix the function (its buggy source and the
  failing output in the prompt), the function of its answer's code block put in place of the
  function (renamed back when the model named it otherwise; imports and examples left out).

Success = toolz's whole test file for the module passes with the proposed change (run in the
sandbox, the change patched in as a verified refactor is), with nothing changed in any other
file. Printed per problem, then per model: success rate, steps, tool calls by kind,
malformed tool calls (and how many runs recovered from one: made a valid call after the first, or
finished, of those with a step left after it; a draft whose answer holds no function it may change
is counted apart, as a draft without a usable function: it is a plain answer, not a tool call),
wall time p50/p90, and how many proposed edits the verification would have let through that break the module's tests::

    python bench/agent_quality.py [--problems 20] [--seed 3] [--max-steps 8]
                                  [--models qwen2.5-coder-0.5b-instruct-q4_k_m,qwen2.5-coder-1.5b-instruct-q4_k_m]
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.agent import Agent, Toolbox  # noqa: E402
from server.assist import AssistStore, code_block, load_pack  # noqa: E402
from server.assist.generation import AssistantCore  # noqa: E402
from server.assist.mutants import mutants  # noqa: E402
from server.assist.records import ContextItem  # noqa: E402
from server.assist.testrun import run_variants  # noqa: E402
from server.assist.verify import rewrite_patches, workspace_tests  # noqa: E402

MODULES = {"itertoolz.py": "test_itertoolz.py", "dicttoolz.py": "test_dicttoolz.py", "recipes.py": "test_recipes.py",
           "functoolz.py": "test_functoolz.py"}
DEFAULT_MODELS = "qwen2.5-coder-0.5b-instruct-q4_k_m,qwen2.5-coder-1.5b-instruct-q4_k_m"
OUTPUT_LINES = 30  # lines of the failing test's output given to both sides


@dataclass
class Problem:
    module: str        # itertoolz.py
    name: str          # the function
    bug: str           # the mutant's description
    buggy: str         # the module's text with the bug
    original: str      # the module's text as shipped
    buggy_function: str
    test: str          # node id of a failing test, relative to the workspace
    output: str        # its output (the end)


def toolz_dir() -> Path:
    import toolz
    return Path(toolz.__file__).parent


def make_problems(n: int, seed: int, root: Path) -> list[Problem]:
    """``n`` bugs in toolz functions, each failing at least one of toolz's tests (runs in the sandbox)."""
    src = toolz_dir()
    candidates = []
    for module in MODULES:
        text = (src / module).read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and not node.decorator_list and not node.name.startswith("_") \
                    and 3 <= node.end_lineno - node.lineno + 1 <= 40:
                candidates.append((module, node.name, node.lineno - 1, node.end_lineno))
    rng = random.Random(seed)
    rng.shuffle(candidates)
    problems: list[Problem] = []
    for module, name, start, end in candidates:
        if len(problems) >= n:
            break
        text = (src / module).read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        source = "".join(lines[start:end])
        tests = [t for t in workspace_tests(root, f"toolz.{module[:-3]}", name, limit=8)
                 if f"tests/{MODULES[module]}" in t]
        if not tests:
            continue
        variants, labelled = [], {}
        for i, m in enumerate(mutants(source, first_line=start)):
            if m.description.endswith("`return None`"):  # the expression the fix needs is deleted, not changed
                continue
            buggy = "".join(lines[:start]) + m.source + "".join(lines[end:])
            patches = rewrite_patches(text, buggy)
            if not isinstance(patches, str):
                variants.append({"label": f"m{i}", "patches": patches})
                labelled[f"m{i}"] = (m, buggy)
        if not variants:
            continue
        # One bug per function, drawn among the mutants one of the function's tests catches (the first
        # one would nearly always be the same kind: a short function's only site is its return).
        run = run_variants(root, variants, module=f"toolz.{module[:-3]}", test_files=tests)
        if not run.ran:  # no sandbox: no problem could be made (say why rather than print 0 problems)
            raise SystemExit(f"the tests cannot run: {run.reason}")
        caught = [r for r in run.runs if r.failed and r.label in labelled]
        if not caught:
            continue
        r = rng.choice(caught)
        m, buggy = labelled[r.label]
        failing = next(t for t in tests if t.rsplit("::", 1)[-1] == r.failed[0].rsplit("::", 1)[-1])
        out = r.output.strip().splitlines()
        problems.append(Problem(module, name, m.description, buggy, text, m.source,
                                str(Path(failing.split("::")[0]).relative_to(root)) + "::" +
                                failing.split("::", 1)[1], "\n".join(out[-OUTPUT_LINES:])))
    return problems


def judge(root: Path, p: Problem, fixed: str | None) -> bool:
    """Whether toolz's test file for the module passes with the module's text ``fixed`` (in the sandbox)."""
    if fixed is None or fixed == p.buggy:
        return False
    patches = rewrite_patches(p.buggy, fixed)
    if isinstance(patches, str):
        return False
    run = run_variants(root, [{"label": "fixed", "patches": patches}], module=f"toolz.{p.module[:-3]}",
                       test_files=[str(root / "toolz" / "tests" / MODULES[p.module])], timeout_s=120)
    return bool(run.runs) and not run.runs[0].error and bool(run.runs[0].passed) and not run.runs[0].failed


def problem_text(p: Problem) -> str:
    return (f"The test {p.test} fails:\n```\n{p.output}\n```\nFind the bug in the package's code (not in the "
            "test) and fix it.")


def lexical_search(root: Path):
    """retrieve_knowledge for the benchmark: definitions of the copy whose text holds the query's words."""
    def search(query: str) -> list[ContextItem]:
        words = [w for w in query.replace("(", " ").split() if len(w) > 2]
        found = []
        for path in sorted((root / "toolz").glob("*.py")):
            text = path.read_text(encoding="utf-8")
            for node in ast.parse(text).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    seg = "".join(text.splitlines(keepends=True)[node.lineno - 1:node.end_lineno])
                    score = sum(seg.count(w) for w in words)
                    if score:
                        found.append((score, ContextItem(f"From {path.relative_to(root)} (lines {node.lineno}-"
                                                         f"{node.end_lineno})", seg)))
        return [c for _, c in sorted(found, key=lambda x: -x[0])]
    return search


def one_shot(core: AssistantCore, p: Problem, trace: str | None = None) -> str | None:
    pack = load_pack("refactor")
    messages = [{"role": "system", "content": "You are an expert Python programmer. Fix the bug. Answer with the "
                                              "complete corrected function in one fenced code block."},
                {"role": "user", "content": f"{problem_text(p)}\n\nThe function, from toolz/{p.module}:\n```python\n"
                                            f"{p.buggy_function}```"}]
    reply = core.answer("fix", messages, pack, lambda _t: None, max_tokens=768)
    if trace:
        import json
        with open(trace, "a", encoding="utf-8") as f:
            f.write(json.dumps({"problem": f"{p.module}:{p.name}", "one_shot": reply.text}) + "\n")
    code = function_in(code_block(reply.text), p.name)
    if code is None or p.buggy_function not in p.buggy:
        return None
    return p.buggy.replace(p.buggy_function, code, 1)


def function_in(code: str | None, name: str) -> str | None:
    """The definition of ``name`` in a reply's code block (what the one-shot call was asked for), or its one
    function under another name (``fix_assoc`` for ``assoc``: renamed back); imports and examples beside it
    are left out, since only the function is put in place. None when there is no such function."""
    try:
        tree = ast.parse(code or "")
    except SyntaxError:
        return None
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    named = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]  # nested too
    fn = named[0] if named else funcs[0] if len(funcs) == 1 else None
    if fn is None:
        return None
    source = textwrap.dedent("\n".join(code.splitlines()[fn.lineno - 1:fn.end_lineno])) + "\n"
    return source.replace(f"def {fn.name}(", f"def {name}(", 1)


def malformed_turns(run) -> list:
    """The run's tool turns without a valid tool call (a draft without a usable function is not one: a draft
    is a plain answer, not a tool call; those are counted apart)."""
    return [s for s in run.steps if s.call is None and not s.draft]


def recovered(run) -> bool:
    """A run got back on track after a malformed tool call: a valid call came after its first one (or it
    finished)."""
    first = min(s.index for s in malformed_turns(run))
    return run.outcome == "finished" or any(s.call is not None for s in run.steps if s.index > first)


def could_recover(run) -> bool:
    """A step came after the run's first malformed tool call (one written at the step budget's last step
    had none to recover in)."""
    return min(s.index for s in malformed_turns(run)) < len(run.steps) or run.outcome == "finished"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


@contextlib.contextmanager
def fixed_folder(name: str):
    """An empty folder at the same path on every run of this user (removed after): the paths in the test
    output both sides read are the same from run to run, so is the prompt for the same bug. The user id
    in its name keeps two users' runs apart; a link planted at the path is never followed (mkdir fails)."""
    path = Path(tempfile.gettempdir()) / f"{name}-{os.getuid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--sides", default="agent,one-shot")
    ap.add_argument("--verbose", action="store_true", help="print each step")
    ap.add_argument("--trace", help="write each agent run (steps, edits, check) and each one-shot reply as a JSON "
                                    "line to this file")
    args = ap.parse_args()
    if args.verbose:
        import logging
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from server.config import parse_settings
    from server.manager import ModelManager

    sides = args.sides.split(",")
    with fixed_folder("deepseek-lsp-agent-bench") as tmp:
        root = Path(tmp) / "ws"
        shutil.copytree(toolz_dir(), root / "toolz", ignore=shutil.ignore_patterns("__pycache__"))
        problems = make_problems(args.problems, args.seed, root)
        print(f"{len(problems)} problems (seed {args.seed}): "
              + ", ".join(f"{p.module[:-3]}.{p.name} ({p.bug})" for p in problems) + "\n", flush=True)
        summary = []
        for model_name in args.models.split(","):
            settings = parse_settings({"chatModel": model_name})[0]
            from server.assist.host import chat_settings
            manager = ModelManager("chat")
            status = manager.load(chat_settings(settings))
            if not status.loaded:
                print(f"{model_name}: did not load: {status.error}")
                continue
            core = AssistantCore(manager.engine, status.name or model_name, AssistStore(Path(tmp) / "s.sqlite"),
                                 time_cap_s=300)
            # As the server does once the chat model is loaded: the packs' system texts (the agent's, with
            # its tools' schemas) read once and kept as saved KV states, so no run pays for them.
            from server.agent import tool_list
            from server.assist.ahead import SystemStates
            from server.models import cache_dir
            states = SystemStates(cache_dir() / "kv-states", {"agent": {"tools": tool_list()}})
            budget = settings.chat_kv_snapshots_mb * 2**20
            manager.engine.submit(lambda model: model.snapshots.resize(budget)).result()
            t_warm = time.monotonic()
            manager.engine.submit(lambda model: states.ensure(core, model, lambda: "")).result()
            print(f"system texts read in {time.monotonic() - t_warm:.0f} s (once per model, as the server does)",
                  flush=True)
            agent = Agent(core, max_steps=args.max_steps)
            rows = collections.defaultdict(list)
            tools: collections.Counter = collections.Counter()
            print(f"## {status.name}\n\n| problem | agent | steps | tools | s | one-shot | s |\n"
                  "|---|---|---|---|---|---|---|", flush=True)
            for p in problems:
                target = root / "toolz" / p.module
                target.write_text(p.buggy, encoding="utf-8")
                cells = [f"{p.module[:-3]}.{p.name}"]
                if "agent" in sides:
                    t0 = time.monotonic()
                    box = Toolbox(root, trusted=True, search=lexical_search(root))
                    run = agent.run(problem_text(p), box, tests=[str(root / p.test.split("::")[0]) + "::" +
                                                                  p.test.split("::", 1)[1]], cancel=threading.Event())
                    secs = time.monotonic() - t0
                    if args.trace:
                        import json

                        from server.agent.records import run_dict
                        with open(args.trace, "a", encoding="utf-8") as f:
                            f.write(json.dumps({"problem": f"{p.module}:{p.name}", **run_dict(run),
                                            "turns": [s.text for s in run.steps]}) + "\n")
                    fixed = box.text(target.resolve()) if run.edits else None
                    other = {e.path for e in run.edits} - {target.resolve()}
                    ok = not other and judge(root, p, fixed)
                    passes_check = run.check is not None and run.check.verdict == "passed"
                    rows["agent"].append(ok)
                    rows["agent_s"].append(secs)
                    rows["steps"].append(len(run.steps))
                    rows["malformed_runs"].append(bool(malformed_turns(run)))
                    rows["recovered"].append(bool(malformed_turns(run)) and recovered(run))
                    rows["could_recover"].append(bool(malformed_turns(run)) and could_recover(run))
                    rows["empty_drafts"].append(sum(s.call is None and s.draft for s in run.steps))
                    rows["bad_verified"].append(passes_check and not ok)
                    tools.update(s.tool for s in run.steps)
                    cells += [f"{'fixed' if ok else 'no'} ({run.outcome}{', verified' if passes_check else ''})",
                              str(len(run.steps)), " ".join(s.tool for s in run.steps), f"{secs:.0f}"]
                if "one-shot" in sides:
                    t0 = time.monotonic()
                    ok1 = judge(root, p, one_shot(core, p, args.trace))
                    rows["one"].append(ok1)
                    rows["one_s"].append(time.monotonic() - t0)
                    cells += ["fixed" if ok1 else "no", f"{time.monotonic() - t0:.0f}"]
                target.write_text(p.original, encoding="utf-8")
                print("| " + " | ".join(cells) + " |", flush=True)
            manager.shutdown()
            summary.append((status.name, rows, tools))
        print("\n| model | agent fixed | one-shot fixed | steps mean | runs with a malformed tool call | "
              "recovered / with a step left after it | drafts without a usable function | verified but broken | "
              "agent s p50 / p90 | one-shot s p50 | "
              "tool calls |\n|---|---|---|---|---|---|---|---|---|---|---|")
        for name, rows, tools in summary:
            n = len(rows["agent"]) or len(rows["one"])
            mal = sum(rows["malformed_runs"])
            print(f"| {name} | {sum(rows['agent'])}/{n} | {sum(rows['one'])}/{n} | "
                  f"{statistics.mean(rows['steps']) if rows['steps'] else 0:.1f} | {mal} | "
                  f"{sum(rows['recovered'])}/{sum(rows['could_recover'])} | {sum(rows['empty_drafts'])} | "
                  f"{sum(rows['bad_verified'])} | "
                  f"{pct(rows['agent_s'], 0.5):.0f} / {pct(rows['agent_s'], 0.9):.0f} | "
                  f"{pct(rows['one_s'], 0.5):.0f} | "
                  + ", ".join(f"{k} {v}" for k, v in tools.most_common()) + " |")


if __name__ == "__main__":
    main()
