"""Runs inside the sandbox: one pytest session per *variant* of the code, and input/output checks, in one process.

Not imported by the server: :mod:`.testrun` copies this file into the sandbox's scratch
folder and runs it with the workspace's interpreter (standard library and pytest only)::

    python driver.py plan.json results.json

``plan.json``: ``{"module", "pytest_args", "checks", "call_timeout_s", "variants", "only_if_first_passes"?}``
(``only_if_first_passes``: the other variants run only when every test passed on the first):

- ``module``: the dotted module the variants patch (None: only the original runs);
- ``pytest_args``: test files or node ids and options (empty list: no pytest run);
- ``checks``: Python expressions evaluated in the module's namespace (``f(1, [2, 3])``);
- ``variants``: ``[{"label", "patches": [{"owner": class name or None, "source"}], "pytest_extra"?}]``
  (``pytest_extra``: more pytest options for this variant, e.g. ``-x``). A patch's
  source (definitions, imports) is compiled in the module's namespace (or in a class body);
  a function that already exists keeps its identity and gets the new code, so every
  reference to it (re-exports, tests that imported it) runs the variant.

``results.json``: one entry per variant, written after each: ``{"label", "tests": {node id:
"passed" | "failed" | "skipped"}, "checks": [result text], "output", "error"}``. A test call or
a check stopped after ``call_timeout_s`` seconds counts as failed / ``timeout``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import itertools
import json
import re
import signal
import sys
import types

import pytest

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
ITEMS = 200  # an iterator a check returns is compared on its first ITEMS items
PROBES = ([3, 1, 2], "abc", {"a": 1, 0: 2, 1: 3}, (0, 1), 2, None)  # arguments a returned function is called with

# What changes from run to run in pytest's output of the same failure: the session's duration at the end
# of the summary line ("= 1 failed, 2 passed in 0.12s =", over an hour "in 3723.10s (1:02:03)") and the
# addresses in objects' reprs ("<TestDict object at 0x7f992b4697d0>", ADDRESS above). Both are taken
# out, so the same failure gives the same output, and a model that reads it (Fix, the agent, the
# benchmarks' one-shot side) the same prompt.
DURATION = re.compile(r"^(=* ?(?:no tests ran|\d+ [a-z]+(?:, \d+ [a-z]+)*)) in \d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?"
                      r"(?=(?: =+)?$)", re.M)


def stable(output: str) -> str:
    """pytest's ``output`` without what differs between two runs of the same code (DURATION, ADDRESS)."""
    return ADDRESS.sub("", DURATION.sub(r"\1", output))


class CallTimeout(Exception):
    """A test call or a check ran longer than the plan allows."""


def _alarm(seconds: float) -> None:
    def fire(signum, frame):
        raise CallTimeout(f"stopped after {seconds} s")
    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


def _raw(obj):
    """The plain function under decorators (staticmethod, functools.wraps, toolz's curry...), or None."""
    for _ in range(6):
        if isinstance(obj, types.FunctionType):
            return obj
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        elif hasattr(obj, "__wrapped__"):
            obj = inspect.unwrap(obj)
        elif isinstance(getattr(obj, "func", None), types.FunctionType):
            obj = obj.func
        else:
            return None
    return None


def _apply(module, patch: dict, undo: list) -> None:
    """Compile a patch's source into ``module`` (or its class ``owner``); record how to undo it in ``undo``."""
    owner = getattr(module, patch["owner"]) if patch.get("owner") else module
    tree = ast.parse(patch["source"])
    for node in tree.body:  # an existing decorated function keeps its decorators: only its code changes
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            old = vars(owner).get(node.name)
            if old is not None and _raw(old) is not None and _raw(old) is not old:
                node.decorator_list = []
    if patch.get("owner"):  # compiled in a class body, so that zero-argument super() finds __class__
        body = tree.body
        tree = ast.parse("class __patch__:\n    pass\n")
        tree.body[0].body = body
    namespace: dict = {}
    exec(compile(tree, getattr(module, "__file__", None) or "<patch>", "exec"), vars(module), namespace)
    if patch.get("owner"):
        namespace = {k: v for k, v in vars(namespace["__patch__"]).items()
                     if k not in ("__module__", "__qualname__", "__dict__", "__weakref__", "__doc__",
                                  "__firstlineno__", "__static_attributes__")}
    for name, new in namespace.items():
        old = vars(owner).get(name)
        old_fn, new_fn = _raw(old), _raw(new)
        if old_fn is not None and new_fn is not None and \
                len(old_fn.__code__.co_freevars) == len(new_fn.__code__.co_freevars):
            undo.append(("code", old_fn, old_fn.__code__, old_fn.__defaults__, old_fn.__kwdefaults__))
            old_fn.__code__, old_fn.__defaults__ = new_fn.__code__, new_fn.__defaults__
            old_fn.__kwdefaults__ = new_fn.__kwdefaults__
        else:
            undo.append(("attr", owner, name, name in vars(owner), old))
            setattr(owner, name, new)


def _undo(undo: list) -> None:
    for entry in reversed(undo):
        if entry[0] == "code":
            _, fn, code, defaults, kwdefaults = entry
            fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
        else:
            _, owner, name, existed, old = entry
            if existed:
                setattr(owner, name, old)
            else:
                delattr(owner, name)
    undo.clear()


def _describe(value, depth: int = 0) -> str:
    """A check's result as comparable text: iterators materialized, memory addresses removed, and a
    function (``getter(1)`` returns one) described by what it returns for each of PROBES."""
    if isinstance(value, types.GeneratorType) or (hasattr(value, "__next__") and hasattr(value, "__iter__")):
        value = list(itertools.islice(value, ITEMS))
    if depth == 0 and callable(value) and not isinstance(value, type):
        results = []
        for probe in PROBES:
            try:
                results.append(_describe(value(probe), 1))
            except Exception as e:  # noqa: BLE001 - which exception is the outcome
                if isinstance(e, CallTimeout):
                    raise
                results.append(f"raises {type(e).__name__}")
        return f"a function giving {'; '.join(results)}"[:2000]
    return ADDRESS.sub("", repr(value))[:2000]


def _check(expression: str, namespace: dict, timeout_s: float) -> str:
    try:
        code = compile(expression, "<check>", "eval")
    except SyntaxError as e:
        return f"syntax error: {e}"
    try:
        _alarm(timeout_s)
        try:
            return "= " + _describe(eval(code, dict(namespace)))
        finally:
            _disarm()
    except CallTimeout:
        return "timeout"
    except Exception as e:  # the check's outcome: which exception, not its message (it may hold addresses)
        return f"raises {type(e).__name__}"


class Outcomes:
    """A pytest plugin: each test's outcome by node id, and a time limit on each test call."""

    def __init__(self, timeout_s: float):
        self.timeout_s, self.tests, self.ids = timeout_s, {}, {}

    def pytest_itemcollected(self, item):
        # pytest names a test in a file outside its rootdir (the workspace's, seen from the private
        # folder) "::test_x": the outcome is keyed by the file's path and the test's name instead.
        self.ids[item.nodeid] = str(item.path) + "::" + item.nodeid.split("::", 1)[-1] \
            if item.nodeid.startswith("::") else item.nodeid

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            nodeid = self.ids.get(report.nodeid, report.nodeid)
            if nodeid not in self.tests or report.outcome != "passed":
                self.tests[nodeid] = report.outcome

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        _alarm(self.timeout_s)
        try:
            yield
        finally:
            _disarm()


def main(plan_path: str, results_path: str) -> None:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    timeout_s = float(plan.get("call_timeout_s", 5))
    module, error = None, ""
    if plan.get("module"):
        try:
            module = importlib.import_module(plan["module"])
        except BaseException as e:  # noqa: BLE001 - the reason goes back to the server
            error = f"cannot import {plan['module']}: {type(e).__name__}: {e}"
    results = []
    for variant in plan["variants"]:
        first = results[0]["tests"] if results else None
        if first is not None and plan.get("only_if_first_passes") and (
                "failed" in first.values() or "passed" not in first.values()):
            break  # tests that fail on the code as it is say nothing about the mutants
        entry = {"label": variant["label"], "tests": {}, "checks": [], "output": "", "error": error}
        undo: list = []
        if module is not None:
            try:
                for patch in variant.get("patches") or []:
                    _apply(module, patch, undo)
            except BaseException as e:  # noqa: BLE001
                entry["error"] = f"the variant does not load: {type(e).__name__}: {e}"
        if not entry["error"]:
            if module is not None:
                entry["checks"] = [_check(c, vars(module), timeout_s) for c in plan.get("checks") or []]
            if plan.get("pytest_args"):
                plugin, out = Outcomes(timeout_s), io.StringIO()
                with contextlib.redirect_stdout(out):
                    pytest.main(list(plan["pytest_args"]) + list(variant.get("pytest_extra") or []), plugins=[plugin])
                entry["tests"], entry["output"] = plugin.tests, stable(out.getvalue())[-6000:]
        _undo(undo)
        results.append(entry)
        with open(results_path, "w", encoding="utf-8") as f:
            json.dump(results, f)


if __name__ == "__main__":
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    main(sys.argv[1], sys.argv[2])
