"""Explain's length: what a shorter explanation saves in time, and what it leaves out.

For ``--functions`` functions of installed packages this project did not write (top-level or
methods, 8-60 lines, sampled with ``--seed`` from ``--packages``), the assistant model (the
catalog's, as the server chooses it here) explains each with every prompt pack version given
(``--versions 1,2``: ``server/prompts/explain@v<N>.md``), greedily, the prompt read first so
the figures are the writing:

- tokens written, seconds of writing (at this machine's rate), and whether the answer hit the
  token cap (``--max-tokens``, default ``chat.maxTokens``: 512);
- **coverage**: the share of the function's facts the explanation names: its parameters (not
  ``self``/``cls``), the exceptions it raises, and the functions and methods it calls (the
  ``--calls`` most frequent). A crude proxy for what a reader learns, read from the code
  with ``ast``; the same facts for every version, so the comparison is fair.

    python bench/explain_length.py [--functions 6] [--seed 2] [--versions 1,2] [--packages click toolz]
"""

from __future__ import annotations

import argparse
import ast
import builtins
import collections
import importlib.util
import random
import re
import statistics
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from server.assist import AssistStore
from server.assist.generation import AssistantCore
from server.assist.packs import load_pack
from server.config import parse_settings
from server.engine import Engine, default_threads
from server.manager import ModelManager


def functions(packages: list[str], count: int, seed: int) -> list[tuple[str, str, str]]:
    """(file, name, source) of ``count`` functions of 8-60 lines (not dunder methods)."""
    found = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise SystemExit(f"{package} is not installed")
        for path in sorted(Path(spec.origin).parent.rglob("*.py")):
            if path.name.startswith("test") or "tests" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("__") \
                        and 8 <= node.end_lineno - node.lineno + 1 <= 60:
                    lines = text.split("\n")[node.lineno - 1:node.end_lineno]
                    found.append((f"{package}/{path.name}", node.name, textwrap.dedent("\n".join(lines))))
    return random.Random(seed).sample(found, min(count, len(found)))


def facts(code: str, calls: int) -> list[str]:
    """Names an explanation of ``code`` should mention: parameters, raised exceptions, the most called."""
    node = ast.parse(code).body[0]
    params = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs) if a.arg not in
              ("self", "cls")]
    params += [a.arg for a in (node.args.vararg, node.args.kwarg) if a is not None]
    raised, called = [], collections.Counter()
    for n in ast.walk(node):
        if isinstance(n, ast.Raise) and n.exc is not None:
            target = n.exc.func if isinstance(n.exc, ast.Call) else n.exc
            if isinstance(target, (ast.Name, ast.Attribute)):
                raised.append(target.id if isinstance(target, ast.Name) else target.attr)
        if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute)):
            called[n.func.id if isinstance(n.func, ast.Name) else n.func.attr] += 1
    top = [name for name, _ in called.most_common() if name not in params and name not in raised
           and not hasattr(builtins, name)][:calls]
    return list(dict.fromkeys(params + raised + top))


def mentioned(text: str, names: list[str]) -> int:
    return sum(bool(re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", text)) for name in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=6)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--versions", default="1,2")
    ap.add_argument("--packages", nargs="+", default=["click", "toolz"])
    ap.add_argument("--calls", type=int, default=4, help="most-called names counted as facts")
    ap.add_argument("--max-tokens", type=int, default=0, help="token cap (0: chat.maxTokens)")
    args = ap.parse_args()
    from server.assist.host import assistant_choice, chat_settings

    settings = parse_settings({})[0]
    cap = args.max_tokens or settings.chat_max_tokens
    manager = ModelManager("chat")
    status = manager.load(chat_settings(settings, assistant_choice(settings)))
    if not status.loaded:
        raise SystemExit(f"the assistant model did not load: {status.error}")
    engine: Engine = manager.engine
    versions = [int(v) for v in args.versions.split(",")]
    sample = functions(args.packages, args.functions, args.seed)
    print(f"{status.name}, {default_threads()} threads; {len(sample)} functions of {', '.join(args.packages)} "
          f"(seed {args.seed}); cap {cap} tokens\n")
    print("| function | facts | " + " | ".join(f"v{v} tokens / s / named" for v in versions) + " |")
    print("|---|---|" + "---|" * len(versions))
    rows: dict[int, list[tuple[int, float, float, bool]]] = {v: [] for v in versions}
    with tempfile.TemporaryDirectory(prefix="explain-bench-") as tmp:
        core = AssistantCore(engine, status.name or "model", AssistStore(Path(tmp) / "store.sqlite"))
        for where, name, code in sample:
            wanted = facts(code, args.calls)
            cells = []
            for v in versions:
                pack = load_pack("explain", v)
                lines = code.count("\n") + 1
                prompt = pack.render(symbol=name, path=where.rsplit("/", 1)[-1], start_line="1",
                                     end_line=str(lines), language="python", code=code)

                def job(model):
                    tokens = core._format(model, prompt)
                    model.prefill(tokens)  # the prompt in the cache: the figures are the writing
                    return model.generate(tokens, max_tokens=cap, cancel=threading.Event(),
                                          deadline=time.monotonic() + 900)
                gen = engine.submit(job).result()
                seconds = (gen.total_ms - gen.prompt_ms) / 1000
                share = mentioned(gen.text, wanted) / len(wanted) if wanted else 1.0
                rows[v].append((gen.generated_tokens, seconds, share, gen.finish == "max_tokens"))
                cells.append(f"{gen.generated_tokens}{' (cap)' if gen.finish == 'max_tokens' else ''} / "
                             f"{seconds:.0f} / {share:.0%}")
            print(f"| {where}:{name} | {len(wanted)} | " + " | ".join(cells) + " |", flush=True)
    print("\n| pack | tokens p50 | seconds p50 | seconds p90 | facts named, mean | hit the cap |")
    print("|---|---|---|---|---|---|")
    for v, got in rows.items():
        secs = sorted(s for _, s, _, _ in got)
        p90 = secs[min(len(secs) - 1, int(0.9 * len(secs)))]
        print(f"| explain@v{v} | {statistics.median(t for t, _, _, _ in got):.0f} | {statistics.median(secs):.1f} | "
              f"{p90:.1f} | {statistics.mean(c for _, _, c, _ in got):.0%} | {sum(h for *_, h in got)} of {len(got)} |")
    manager.shutdown()


if __name__ == "__main__":
    main()
