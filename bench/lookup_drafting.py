"""Prompt-lookup drafting: does it make the assistant write faster, per task?

For ``--functions`` top-level functions of toolz (pip-installed code this project did not
write; 4-30 lines, sampled with ``--seed``), the assistant model (the catalog's, as the
server chooses it here) answers each task's real prompt (the prompt packs of Refactor,
Write tests and Explain) twice, greedily: without drafting, then with
(:mod:`server.engine.lookup`). The prompt is in the KV cache both times, so the figures
are the writing alone:

- writing rate, tokens/s, without and with drafting, and the speed-up;
- drafted tokens, and the share of them the model wrote as well (accepted);
- whether both answers are the same text (greedy decoding: they should be, up to the
  rare token where a batched evaluation rounds differently).

    python bench/lookup_drafting.py [--functions 3] [--seed 1] [--max-tokens 200] [--tasks refactor,tests,explain]
"""

from __future__ import annotations

import argparse
import ast
import random
import tempfile
import threading
import time
from pathlib import Path

from server.assist import AssistStore
from server.assist.generation import AssistantCore
from server.assist.packs import load_pack
from server.config import parse_settings
from server.engine import Engine, default_threads
from server.manager import ModelManager

MODULES = ("itertoolz.py", "dicttoolz.py", "recipes.py")


def functions(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(module, name, source) of ``count`` top-level undecorated toolz functions of 4-30 lines."""
    import toolz

    found = []
    for module in MODULES:
        text = (Path(toolz.__file__).parent / module).read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and not node.decorator_list \
                    and 4 <= node.end_lineno - node.lineno + 1 <= 30:
                found.append((module, node.name, ast.get_source_segment(text, node)))
    return random.Random(seed).sample(found, min(count, len(found)))


def messages(task: str, module: str, name: str, code: str) -> list[dict[str, str]]:
    """The task's prompt, as the assistant lays it out for a request."""
    pack = load_pack(task)
    if task == "refactor":
        return pack.render(path=module, language="python", code=code, instruction="Make it clearer and simpler.")
    if task == "tests":
        return pack.render(framework="pytest", symbol=name, path=f"toolz/{module}",
                           import_line=f"from toolz.{module[:-3]} import {name}", language="python", code=code,
                           feedback="", max_tests="5")
    lines = code.count("\n") + 1
    return pack.render(symbol=name, path=module, start_line="1", end_line=str(lines), language="python", code=code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--tasks", default="refactor,tests,explain")
    args = ap.parse_args()
    from server.assist.host import assistant_choice, chat_settings

    settings = parse_settings({})[0]
    manager = ModelManager("chat")
    status = manager.load(chat_settings(settings, assistant_choice(settings)))
    if not status.loaded:
        raise SystemExit(f"the assistant model did not load: {status.error}")
    engine: Engine = manager.engine
    with tempfile.TemporaryDirectory(prefix="lookup-bench-") as tmp:
        core = AssistantCore(engine, status.name or "model", AssistStore(Path(tmp) / "store.sqlite"))
        print(f"{status.name}, {default_threads()} threads; {args.functions} toolz functions (seed {args.seed}), "
              f"at most {args.max_tokens} tokens per answer\n")
        print("| task | function | tokens | tokens/s off | tokens/s on | speed-up | drafted | accepted | same text |")
        print("|---|---|---|---|---|---|---|---|---|")
        totals: dict[str, list[float]] = {}
        for module, name, code in functions(args.functions, args.seed):
            for task in args.tasks.split(","):
                prompt = messages(task, module, name, code)

                def run(lookup: bool):
                    def job(model):
                        tokens = core._format(model, prompt)
                        model.prefill(tokens)  # the prompt in the cache: the figures are the writing
                        return model.generate(tokens, max_tokens=args.max_tokens, cancel=threading.Event(),
                                              deadline=time.monotonic() + 600, lookup=lookup)
                    return engine.submit(job).result()
                off, on = run(False), run(True)
                rate_off = off.generated_tokens / max((off.total_ms - off.prompt_ms) / 1000, 1e-3)
                rate_on = on.generated_tokens / max((on.total_ms - on.prompt_ms) / 1000, 1e-3)
                accepted = on.accepted_tokens / on.drafted_tokens if on.drafted_tokens else 0.0
                t = totals.setdefault(task, [0, 0.0, 0.0, 0, 0, 0, 0])
                t[0] += off.generated_tokens
                t[1] += (off.total_ms - off.prompt_ms) / 1000
                t[2] += (on.total_ms - on.prompt_ms) / 1000
                t[3] += on.drafted_tokens
                t[4] += on.accepted_tokens
                t[5] += off.text == on.text
                t[6] += 1
                print(f"| {task} | {name} | {off.generated_tokens} | {rate_off:.1f} | {rate_on:.1f} | "
                      f"{rate_on / max(rate_off, 1e-3):.2f}x | {on.drafted_tokens} | {accepted:.0%} | "
                      f"{'yes' if off.text == on.text else 'no'} |", flush=True)
        print("\n| task | tokens/s off | tokens/s on | speed-up | accepted | same text |")
        print("|---|---|---|---|---|---|")
        for task, (n, s_off, s_on, drafted, acc, same, runs) in totals.items():
            print(f"| {task} | {n / s_off:.1f} | {n / s_on:.1f} | {s_off / max(s_on, 1e-3):.2f}x | "
                  f"{acc / drafted if drafted else 0:.0%} | {same} of {runs} |")
    manager.shutdown()


if __name__ == "__main__":
    main()
