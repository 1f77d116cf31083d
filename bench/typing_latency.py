"""Typing benchmark: a simulated person types into real third-party code over stdio.

The holes come in runs: ``--run`` consecutive code lines at a random place (fixed seed)
of an installed package's source, as a person writes a few lines in a row. At each hole,
after the previous line of the run has been completed, the person:

1. presses Enter where the line was: the document now has an empty, indented line there
   (``didChange`` + an automatic ``inlineCompletion``, as an editor sends);
2. pauses ``--think`` seconds;
3. types the first characters of the real line one keystroke at a time, ``--cps``
   characters a second, each keystroke a ``didChange`` + an automatic
   ``inlineCompletion``; the editor cancels the previous request (``$/cancelRequest``)
   when it has not answered yet;
4. waits for the answer to the request after the last keystroke: its latency, and
   typed text + suggestion against the real line (exact match; edit similarity as
   difflib's ratio), are recorded.

While that last request runs, ``deepseek.status`` is sent too and its latency recorded
(the event loop must not wait on the model).

Then the same model, through plain llama-cpp-python in this process, answers one naive
FIM request per hole (80 lines of prefix, 30 of suffix, cursor after the typed text,
greedy, stop at the end of the line), and both are printed side by side.

With ``--assistant-ahead``, before each place the person looks at the chat panel, open on the
20 lines above it, for 1 s (``deepseek/assistAhead`` task ``chat``: the assistant's model reads
that prompt), then types there; the run is made twice, with ``chat.readAhead`` on and off, and
the suggestions' latencies are compared (a suggestion must not wait for the assistant).

With ``--while-indexing``, the server's workspace folder is a fresh copy of three installed
packages' sources (numpy, pip, pygments: ~1,300 files, never indexed before), so the index
chunks and embeds them while the person types; the run is made twice, with ``index.embeddings``
on and off (each with its own fresh copy), and compared (a suggestion must not wait for the
embedder). The copies and their indexes are removed afterwards. With both options, the first run
has reading ahead and embedding on, the second both off. Besides each run's p50 and p90, the
difference per place (same place, first run minus second) is printed: its median and spread.

    python bench/typing_latency.py [--holes 40] [--run 5] [--seed 7] [--cps 12] [--think 0.6]
                                   [--set completion.suffixTokens=128] [--packages ...]
                                   [--assistant-ahead] [--while-indexing]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import importlib.util
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from lsp_server import fresh_workspace, paired, start_server, stop_server
from lsprotocol import types

DEFAULT_PACKAGES = ["platformdirs", "requests", "tqdm", "cattrs", "attr"]


@dataclass
class Hole:
    path: Path
    line: int        # 0-based
    indent: str
    content: str     # the real line without its indentation
    typed: str       # what the person types before looking at the suggestion


@dataclass
class Outcome:
    latency_ms: float
    suggestion: str
    exact: bool
    similarity: float


def pick_holes(packages: list[str], n: int, seed: int, run: int) -> list[Hole]:
    """Runs of ``run`` consecutive code lines (no blank, comment, decorator or docstring lines)."""
    rng = random.Random(seed)
    candidates = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py")):
            lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
            if not 40 <= len(lines) <= 3000:
                continue
            in_doc = False
            for i, line in enumerate(lines):
                s = line.strip()
                if s.count('"""') == 1 or s.count("'''") == 1:
                    in_doc = not in_doc
                    continue
                if in_doc or not 12 <= len(s) <= 90 or s.startswith(("#", "@", '"', "'")) or i < 20:
                    continue
                candidates.append((path, i))
    ok = set(candidates)
    starts = [c for c in candidates if all((c[0], c[1] + k) in ok for k in range(run))]
    chosen: list[tuple[Path, int]] = []
    for path, i in rng.sample(starts, len(starts)):
        run_lines = [(path, i + k) for k in range(run)]
        if any(abs(j - i) < 2 * run and p == path for p, j in chosen):
            continue
        chosen.extend(run_lines)
        if len(chosen) >= n:
            break
    chosen = chosen[:n]
    chosen.sort(key=lambda c: (str(c[0]), c[1]))
    holes = []
    for path, i in chosen:
        line = path.read_text(encoding="utf-8", errors="replace").split("\n")[i]
        content = line.lstrip()
        k = min(12, max(3, len(content) // 3))
        holes.append(Hole(path, i, line[: len(line) - len(content)], content.rstrip(), content[:k]))
    return holes


def score(hole: Hole, suggestion: str, latency_ms: float) -> Outcome:
    got = (hole.typed + suggestion.split("\n", 1)[0]).rstrip()
    want = hole.content.rstrip()
    return Outcome(latency_ms, suggestion, got == want, difflib.SequenceMatcher(None, got, want).ratio())


def doc_with_hole(hole: Hole) -> str:
    lines = hole.path.read_text(encoding="utf-8", errors="replace").split("\n")
    lines[hole.line] = hole.indent
    return "\n".join(lines)


async def run_server(holes: list[Hole], cps: float, think: float, settings: dict,
                     assistant_ahead: bool = False, workspace: Path | None = None) -> tuple[list[Outcome], dict]:
    client = await start_server("typing-bench", settings, workspace)
    server_pid = client._server.pid
    if assistant_ahead:  # the assistant's model loaded (its first answer), as after a first chat
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.chat", arguments=[{"message": "Reply with the one word: ready."}]))
    outcomes, status_ms, rss = [], [], []
    versions: dict[str, int] = {}
    pending: list = []

    def request(uri: str, line: int, col: int):
        for fut in pending:  # the editor cancels what has not answered yet
            if not fut.done():
                client.protocol.notify("$/cancelRequest", types.CancelParams(id=fut.msg_id))
        pending.clear()
        msg_id = f"r{time.monotonic_ns()}"
        fut = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
            msg_id=msg_id)
        fut.msg_id = msg_id
        pending.append(fut)
        return fut

    def change(uri: str, text: str | None, line: int = 0, col: int = 0, insert: str = ""):
        versions[uri] = versions.get(uri, 0) + 1
        if text is not None:
            event = types.TextDocumentContentChangeWholeDocument(text=text)
        else:
            pos = types.Position(line=line, character=col)
            event = types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=insert)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=versions[uri]),
            content_changes=[event]))

    opened = set()
    for n, hole in enumerate(holes, 1):
        uri = hole.path.as_uri()
        text = doc_with_hole(hole)
        if uri not in opened:
            opened.add(uri)
            versions[uri] = 1
            client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=text)))
        else:
            change(uri, text)  # the previous hole's line is put back, this one is emptied: "Enter"
        if assistant_ahead:  # the chat panel, open on the lines above: the assistant reads its prompt
            client.protocol.notify("deepseek/assistAhead", {"task": "chat", "uri": uri, "range": {
                "start": {"line": max(0, hole.line - 20), "character": 0}, "end": {"line": hole.line, "character": 0}}})
            await asyncio.sleep(1.0)  # the person looks at the panel, then goes back to the editor
        col = len(hole.indent)
        request(uri, hole.line, col)
        await asyncio.sleep(think)
        for ch in hole.typed:
            t_key = time.monotonic()
            change(uri, None, hole.line, col, ch)
            col += 1
            fut = request(uri, hole.line, col)
            await asyncio.sleep(max(0.0, 1 / cps - (time.monotonic() - t_key)))
        started = time.monotonic()
        s0 = time.monotonic()
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
        status_ms.append((time.monotonic() - s0) * 1000)
        try:
            result = await asyncio.wrap_future(fut)
            items = list(result.items) if result else []
        except Exception:
            items = []
        latency = (time.monotonic() - started) * 1000 + 0.0
        suggestion = items[0].insert_text if items else ""
        outcomes.append(score(hole, suggestion, latency))
        rss.append(psutil.Process(server_pid).memory_info().rss / 2**20)
        o = outcomes[-1]
        print(f"  [{n:>3}/{len(holes)}] {latency:7.0f} ms {'EXACT' if o.exact else f'{o.similarity:5.2f}'}  "
              f"{hole.typed!r} + {suggestion.split(chr(10))[0][:50]!r}", file=sys.stderr)
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))
    await stop_server(client)
    extra = {"status_ms": status_ms, "rss_mb": max(rss) if rss else 0.0, "completion": status.get("completion"),
             "chat": status.get("chat") or {}, "index": status.get("index") or {}}
    return outcomes, extra


def run_naive(holes: list[Hole], model_path: str, threads: int) -> list[Outcome]:
    """One naive FIM request per hole through plain llama-cpp-python."""
    from server.engine import choose_config, open_llama

    # Plain llama-cpp-python, loaded the way this machine allows (the probe's verdict; see server.engine.loading).
    config = choose_config(model_path, "generate", threads).config or "minimal"
    llm = open_llama(model_path, config, n_ctx=4096, n_threads=threads)
    out = []
    for n, hole in enumerate(holes, 1):
        lines = doc_with_hole(hole).split("\n")
        prefix = "\n".join(lines[max(0, hole.line - 80): hole.line] + [hole.indent + hole.typed])
        suffix = "\n" + "\n".join(lines[hole.line + 1: hole.line + 31])
        prompt = f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
        t0 = time.monotonic()
        r = llm.create_completion(prompt, max_tokens=64, temperature=0.0, stop=["\n", "<|endoftext|>",
                                  "<|file_sep|>", "<|fim_pad|>"])
        latency = (time.monotonic() - t0) * 1000
        text = r["choices"][0]["text"]
        out.append(score(hole, text, latency))
        print(f"  naive [{n:>3}/{len(holes)}] {latency:7.0f} ms {'EXACT' if out[-1].exact else ''}", file=sys.stderr)
    llm.close()
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    import logging
    logging.getLogger("pygls").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holes", type=int, default=40)
    ap.add_argument("--run", type=int, default=5, help="consecutive lines typed at each place")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cps", type=float, default=12.0, help="typing speed, characters per second")
    ap.add_argument("--think", type=float, default=0.6, help="pause after Enter before typing, seconds")
    ap.add_argument("--packages", nargs="+", default=DEFAULT_PACKAGES)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="server settings")
    ap.add_argument("--while-indexing", action="store_true",
                    help="the workspace is a fresh copy of numpy, pip and pygments, indexed while the person types; "
                         "run twice, index.embeddings on and off, and compare")
    ap.add_argument("--assistant-ahead", action="store_true",
                    help="before each place, the chat panel opens on the 20 lines above it (deepseek/assistAhead) "
                         "for 1 s; run twice, chat.readAhead on and off, and compare (with --while-indexing: both "
                         "on against both off)")
    args = ap.parse_args()

    from server.config import parse_assignments
    from server.engine import default_threads
    from server.models import ensure_model_file, resolve_model

    holes = pick_holes(args.packages, args.holes, args.seed, args.run)
    print(f"{len(holes)} holes (runs of {args.run} lines) in {len({h.path for h in holes})} files of "
          f"{', '.join(args.packages)}; typing {args.cps:g} chars/s after a {args.think:g} s pause; "
          f"settings {args.set or 'default'}")
    settings = parse_assignments(args.set)
    if args.while_indexing or args.assistant_ahead:
        arms = {"on": dict(settings), "off": dict(settings)}
        for wanted, key in ((args.assistant_ahead, "chat.readAhead"), (args.while_indexing, "index.embeddings")):
            if wanted:
                arms["on"][key], arms["off"][key] = True, False
        runs = {}
        for label, arm in arms.items():
            with fresh_workspace() if args.while_indexing else contextlib.nullcontext() as workspace:
                runs[label] = asyncio.run(run_server(holes, args.cps, args.think, arm, args.assistant_ahead, workspace))
        shown = [k for k in ("chat.readAhead", "index.embeddings") if k in arms["on"]]
        print(f"\non = {' and '.join(shown)} on; off = {' and '.join(shown)} off; the same places, one after the other")
        print(f"\n{'':<6} {'p50 ms':>8} {'p90 ms':>8} {'exact':>8} {'edit sim':>8}")
        for label, (outs, extra) in runs.items():
            lat = [o.latency_ms for o in outs]
            print(f"{label:<6} {pct(lat, 0.5):>8.0f} {pct(lat, 0.9):>8.0f} "
                  f"{100 * sum(o.exact for o in outs) / len(outs):>7.1f}% "
                  f"{statistics.mean(o.similarity for o in outs):>8.3f}   deepseek.status p50 "
                  f"{pct(extra['status_ms'], 0.5):.0f} ms; read ahead {extra['chat'].get('readAhead')}; "
                  f"index at the end {extra['index'] or '-'}")
        print(paired(*([o.latency_ms for o in runs[label][0]] for label in ("on", "off"))))
        return
    ours, extra = asyncio.run(run_server(holes, args.cps, args.think, settings))
    naive = None if args.no_naive else run_naive(holes, str(ensure_model_file(resolve_model(None, None))),
                                                 default_threads())

    def row(name: str, outs: list[Outcome]) -> str:
        lat = [o.latency_ms for o in outs]
        return (f"{name:<26} {pct(lat, 0.5):>8.0f} {pct(lat, 0.9):>8.0f} "
                f"{100 * sum(o.exact for o in outs) / len(outs):>7.1f}% "
                f"{statistics.mean(o.similarity for o in outs):>8.3f}")

    print(f"\n{'':<26} {'p50 ms':>8} {'p90 ms':>8} {'exact':>8} {'edit sim':>8}")
    print(row("deepseek-lsp (typing)", ours))
    if naive:
        print(row("naive FIM (80/30 lines)", naive))
        ratio = pct([o.latency_ms for o in ours], 0.5) / pct([o.latency_ms for o in naive], 0.5)
        print(f"p50 latency ratio, ours / naive: {ratio:.3f}")
    c = extra["completion"] or {}
    if c.get("promptTokens"):
        print(f"prompt tokens reused from the KV cache: {100 * c['reusedTokens'] / c['promptTokens']:.1f}% "
              f"({c['reusedTokens']:,} of {c['promptTokens']:,}); answers from the model {c['modelAnswers']}, "
              f"from the cache {c['cacheAnswers']}")
    print(f"deepseek.status while a suggestion was computed: p50 {pct(extra['status_ms'], 0.5):.1f} ms, "
          f"max {max(extra['status_ms']):.1f} ms")
    print(f"server resident memory (max): {extra['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
