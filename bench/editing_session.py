"""Editing-session benchmark: the moves a person makes, over stdio, with KV reuse on and off.

A session works in two real files of an installed third-party package (file A and file B):

1. **first**: at a place in A, the person has typed the first third of a line (the rest
   of the line is missing from the document) and an automatic ``inlineCompletion`` comes;
2. **type**: types two more characters, one keystroke at a time (``--cps``), each a
   ``didChange`` + a request; the last one is scored;
3. **accept**: presses Tab (the shown suggestion is inserted, the editor asks again at the
   new cursor: the rest is nothing), then Enter: the request on the new line (indented as
   editors do) is the suggestion after the accept (latency only); then the line is put
   back as it was in the file;
4. **jump**: goes to another function of A, 20 to 200 lines away, and does 1-3 there;
   twice;
5. **switch**: goes to file B and does 1 there;
6. **switch-back**: comes back to where it was in A and types one more character;
7. a last **jump** in A.

The person pauses ``--think`` seconds between moves (reading the suggestion), and at a new
place before the first request (the editor has asked for code actions there, as VS Code does
at every cursor move for its light bulb), as people do.
Scored requests compare typed text + the suggestion's first line with the real line
(exact match; edit similarity as difflib's ratio). For each request the server's
``deepseek.status`` before and after gives the prompt tokens evaluated and reused.

The same sessions run twice, in one run: with the defaults (KV runs shifted into place,
saved states of places left, work ahead after a shown suggestion, a shorter window first at a
place the cache has not seen) and with all four off (``completion.kvShiftMinTokens=0``,
``completion.kvSnapshotsMb=0``, ``completion.workAhead=false``, ``completion.coldPromptMs=0``:
only the common prompt prefix is reused and every prompt is whole, as before).

With ``--assistant-ahead`` the two runs compare instead ``chat.readAhead`` on and off (KV reuse at
its defaults in both): the assistant's model is loaded first (one short chat), and at each new
place the person first looks at the chat panel open on the 20 lines above it for 1 s
(``deepseek/assistAhead`` task ``chat``), then goes on as above (a suggestion must not wait for
the assistant). With ``--while-indexing`` the workspace is a fresh copy of numpy, pip and
pygments, indexed during the sessions, and the runs compare ``index.embeddings`` on and off; with
both options, both on against both off. The per-request difference (same request, first run minus
second) is printed besides each run's percentiles.

    python bench/editing_session.py [--sessions 6] [--seed 3] [--cps 10] [--think 1.0]
                                    [--set completion.suffixTokens=128] [--packages click jinja2 ...]
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

DEFAULT_PACKAGES = ["click", "jinja2", "toolz", "h11", "pathspec", "packaging", "attr", "platformdirs"]
KINDS = ("first", "type", "jump", "switch", "switch-back", "accept")
OFF = {"completion.kvShiftMinTokens": 0, "completion.kvSnapshotsMb": 0, "completion.workAhead": False,
       "completion.coldPromptMs": 0}


@dataclass
class Place:
    path: Path
    line: int       # 0-based
    indent: str
    content: str    # the real line without indentation
    typed: int      # characters typed before the first request


@dataclass
class Session:
    a: Path
    b: Path
    places: list[Place]   # A, A (jump), A (jump), B, A (jump)


@dataclass
class Record:
    kind: str
    latency_ms: float
    evaluated: int
    reused: int
    exact: bool | None = None
    similarity: float | None = None
    suggestion: str = ""
    key: tuple = ()  # (file, line, column, kind): the same request in the other run


def _code_lines(path: Path) -> list[int]:
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    out, in_doc = [], False
    for i, line in enumerate(lines):
        s = line.strip()
        if s.count('"""') == 1 or s.count("'''") == 1:
            in_doc = not in_doc
            continue
        if in_doc or not 14 <= len(s) <= 90 or s.startswith(("#", "@", '"', "'")) or i < 30:
            continue
        out.append(i)
    return out


def _place(path: Path, i: int) -> Place:
    line = path.read_text(encoding="utf-8", errors="replace").split("\n")[i]
    content = line.lstrip()
    return Place(path, i, line[: len(line) - len(content)], content.rstrip(), max(3, len(content.rstrip()) // 3))


def pick_sessions(packages: list[str], n: int, seed: int) -> list[Session]:
    """``n`` sessions on files of 300-3000 lines; jumps of 20-200 lines (fixed seed)."""
    rng = random.Random(seed)
    files = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py")):
            if 300 <= path.read_text(encoding="utf-8", errors="replace").count("\n") <= 3000 \
                    and "test" not in path.name:
                files.append(path)
    rng.shuffle(files)
    sessions = []
    for a, b in zip(files[0::2], files[1::2]):
        lines_a, lines_b = _code_lines(a), _code_lines(b)
        if len(lines_a) < 20 or not lines_b:
            continue
        first = rng.choice(lines_a)
        chain = [first]
        for _ in range(3):
            near = [i for i in lines_a if 20 <= abs(i - chain[-1]) <= 200 and i not in chain]
            if not near:
                break
            chain.append(rng.choice(near))
        if len(chain) < 4:
            continue
        places = [_place(a, i) for i in chain[:3]] + [_place(b, rng.choice(lines_b)), _place(a, chain[3])]
        sessions.append(Session(a, b, places))
        if len(sessions) >= n:
            break
    return sessions


def doc_with(place: Place, typed: str) -> str:
    lines = place.path.read_text(encoding="utf-8", errors="replace").split("\n")
    lines[place.line] = place.indent + typed
    return "\n".join(lines)


class Editor:
    """The editor side: documents, versions, requests with cancellation of unanswered ones."""

    def __init__(self, client):
        self.client = client
        self.versions: dict[str, int] = {}
        self.pending: list = []

    def open(self, path: Path, text: str) -> str:
        uri = path.as_uri()
        self.versions[uri] = 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))
        return uri

    def set_text(self, uri: str, text: str) -> None:
        self.versions[uri] += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def request(self, uri: str, line: int, col: int):
        for fut in self.pending:
            if not fut.done():
                self.client.protocol.notify("$/cancelRequest", types.CancelParams(id=fut.msg_id))
        self.pending.clear()
        msg_id = f"r{time.monotonic_ns()}"
        fut = self.client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
            msg_id=msg_id)
        fut.msg_id = msg_id
        self.pending.append(fut)
        return fut

    def moved(self, uri: str, line: int, col: int) -> None:
        """The cursor went to (line, col): VS Code asks for code actions there (the light bulb)."""
        pos = types.Position(line=line, character=col)
        self.client.protocol.send_request(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start=pos, end=pos),
            context=types.CodeActionContext(diagnostics=[])))

    async def status(self) -> dict:
        return await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="deepseek.status"))


async def run_sessions(sessions: list[Session], settings: dict, cps: float, think: float,
                       label: str, assistant_ahead: bool = False,
                       workspace: Path | None = None) -> tuple[list[Record], dict]:
    client = await start_server(f"session-bench-{label}", settings, workspace)
    if assistant_ahead:  # the assistant's model loaded (its first answer), as after a first chat
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.chat", arguments=[{"message": "Reply with the one word: ready."}]))
    pid = client._server.pid
    ed = Editor(client)
    records: list[Record] = []
    rss: list[float] = []

    async def measured(kind: str, uri: str, place: Place | None, line: int, col: int, typed: str) -> str:
        before = (await ed.status())["completion"] or {}
        t0 = time.monotonic()
        fut = ed.request(uri, line, col)
        try:
            result = await asyncio.wrap_future(fut)
            items = list(result.items) if result else []
        except Exception:
            items = []
        ms = (time.monotonic() - t0) * 1000
        after = (await ed.status())["completion"] or {}
        prompt = after.get("promptTokens", 0) - before.get("promptTokens", 0)
        reused = after.get("reusedTokens", 0) - before.get("reusedTokens", 0)
        text = items[0].insert_text if items else ""
        rec = Record(kind, ms, prompt - reused, reused, suggestion=text, key=(uri, line, col, kind))
        if place is not None:
            got = (typed + text.split("\n", 1)[0]).rstrip()
            rec.exact = got == place.content
            rec.similarity = difflib.SequenceMatcher(None, got, place.content).ratio()
        records.append(rec)
        rss.append(psutil.Process(pid).memory_info().rss / 2**20)
        print(f"  {label:>3} {kind:<11} {ms:7.0f} ms  eval {rec.evaluated:5d} reused {rec.reused:5d}  "
              f"{'' if rec.exact is None else 'EXACT' if rec.exact else f'{rec.similarity:.2f} '} {text[:40]!r}",
              file=sys.stderr)
        return text

    async def work_at(place: Place, uri: str, kind: str, keystrokes: int = 2, accept: bool = True) -> None:
        typed = place.content[:place.typed]
        ed.set_text(uri, doc_with(place, typed))
        col = len(place.indent) + len(typed)
        if assistant_ahead:  # the chat panel, open on the lines above: the assistant reads its prompt
            client.protocol.notify("deepseek/assistAhead", {"task": "chat", "uri": uri, "range": {
                "start": {"line": max(0, place.line - 20), "character": 0},
                "end": {"line": place.line, "character": 0}}})
            await asyncio.sleep(1.0)
        ed.moved(uri, place.line, col)  # the person goes there and looks before typing
        await asyncio.sleep(think)
        shown = await measured(kind, uri, place, place.line, col, typed)
        for k in range(keystrokes):
            await asyncio.sleep(1 / cps)
            typed = place.content[:place.typed + k + 1]
            ed.set_text(uri, doc_with(place, typed))
            col += 1
            if k < keystrokes - 1:
                ed.request(uri, place.line, col)  # answered or cancelled by the next keystroke
            else:
                shown = await measured("type", uri, place, place.line, col, typed)
        place.typed += keystrokes
        await asyncio.sleep(think)
        if accept and shown and "\n" not in shown:
            line = typed + shown
            ed.set_text(uri, doc_with(place, line))  # Tab; the editor asks again (the rest: nothing)
            ed.request(uri, place.line, col + len(shown))
            await asyncio.sleep(0.3)
            # Enter, with the indentation an editor gives (one level deeper after a block opener).
            indent = place.indent + ("    " if line.rstrip().endswith((":", "(", "[", "{")) else "")
            ed.set_text(uri, doc_with(place, line + "\n" + indent))
            await measured("accept", uri, None, place.line + 1, len(indent), "")
            await asyncio.sleep(think)
        ed.set_text(uri, place.path.read_text(encoding="utf-8", errors="replace"))

    for n, s in enumerate(sessions, 1):
        print(f"[{label}] session {n}/{len(sessions)}: {s.a.parent.name}/{s.a.name} + {s.b.parent.name}/{s.b.name}",
              file=sys.stderr)
        ua = ed.open(s.a, s.a.read_text(encoding="utf-8", errors="replace"))
        ub = ed.open(s.b, s.b.read_text(encoding="utf-8", errors="replace"))
        p1, p2, p3, pb, p4 = s.places
        await work_at(p1, ua, "first")
        await asyncio.sleep(think)
        await work_at(p2, ua, "jump")
        await asyncio.sleep(think)
        await work_at(p3, ua, "jump")
        await asyncio.sleep(think)
        await work_at(pb, ub, "switch", keystrokes=0, accept=False)
        await asyncio.sleep(think)
        p3.typed += 1  # one more character than before
        await work_at(p3, ua, "switch-back", keystrokes=0, accept=False)
        await asyncio.sleep(think)
        await work_at(p4, ua, "jump")
        for uri in (ua, ub):
            client.text_document_did_close(types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri)))
    status = await ed.status()
    await stop_server(client)
    return records, {"rss_first_mb": rss[0] if rss else 0.0, "rss_max_mb": max(rss) if rss else 0.0,
                     "completion": status.get("completion")}


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def table(on: list[Record], off: list[Record]) -> str:
    rows = ["| request | n | p50 ms (on / off) | p90 ms | p99 ms | evaluated tokens, mean | reused, mean "
            "| exact (on / off) | edit sim. |",
            "|---|---|---|---|---|---|---|---|---|"]
    for kind in KINDS + ("all",):
        a = [r for r in on if kind in ("all", r.kind)]
        b = [r for r in off if kind in ("all", r.kind)]
        if not a:
            continue

        def lat(rs, q):
            return pct([r.latency_ms for r in rs], q)

        def mean(rs, f):
            vals = [f(r) for r in rs if f(r) is not None]
            return statistics.mean(vals) if vals else float("nan")
        ex = (f"{mean(a, lambda r: None if r.exact is None else float(r.exact)):.2f} / "
              f"{mean(b, lambda r: None if r.exact is None else float(r.exact)):.2f}")
        sim = f"{mean(a, lambda r: r.similarity):.3f} / {mean(b, lambda r: r.similarity):.3f}"
        rows.append(f"| {kind} | {len(a)} | {lat(a, .5):.0f} / {lat(b, .5):.0f} | {lat(a, .9):.0f} / {lat(b, .9):.0f} "
                    f"| {lat(a, .99):.0f} / {lat(b, .99):.0f} | {mean(a, lambda r: r.evaluated):.0f} / "
                    f"{mean(b, lambda r: r.evaluated):.0f} | {mean(a, lambda r: r.reused):.0f} / "
                    f"{mean(b, lambda r: r.reused):.0f} | {ex} | {sim} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--cps", type=float, default=10.0)
    ap.add_argument("--think", type=float, default=1.0)
    ap.add_argument("--packages", nargs="+", default=DEFAULT_PACKAGES)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a server setting for both runs (JSON value), e.g. completion.suffixTokens=128")
    ap.add_argument("--only", choices=("on", "off"), help="run one of the two configurations")
    ap.add_argument("--assistant-ahead", action="store_true",
                    help="compare chat.readAhead on and off, the chat panel opened at each place for 1 s")
    ap.add_argument("--while-indexing", action="store_true",
                    help="the workspace is a fresh copy of numpy, pip and pygments, indexed meanwhile; compare "
                         "index.embeddings on and off (with --assistant-ahead: both on against both off)")
    args = ap.parse_args()
    import json
    base = {"index": {"enabled": False}}
    for kv in args.set:
        key, _, value = kv.partition("=")
        try:
            base[key] = json.loads(value)
        except json.JSONDecodeError:
            base[key] = value
    sessions = pick_sessions(args.packages, args.sessions, args.seed)
    print(f"{len(sessions)} sessions, {sum(len(s.places) for s in sessions)} places, seed {args.seed}", file=sys.stderr)
    results = {}
    compared = {key: True for wanted, key in ((args.assistant_ahead, "chat.readAhead"),
                                               (args.while_indexing, "index.embeddings")) if wanted}
    if args.while_indexing:
        base["index"] = {"enabled": True}
    configurations = ((("on", compared), ("off", {k: False for k in compared})) if compared
                      else (("on", {}), ("off", OFF)))
    for label, extra in configurations:
        if args.only and args.only != label:
            continue
        fresh = pick_sessions(args.packages, args.sessions, args.seed)  # places are mutated (typed count)
        t0 = time.monotonic()
        with fresh_workspace() if args.while_indexing else contextlib.nullcontext() as workspace:
            results[label] = asyncio.run(run_sessions(fresh, {**base, **extra}, args.cps, args.think, label,
                                                      args.assistant_ahead, workspace))
        print(f"[{label}] {time.monotonic() - t0:.0f} s", file=sys.stderr)
    on, info_on = results.get("on", ([], {}))
    off, info_off = results.get("off", ([], {}))
    print(f"\n{len(sessions)} sessions (seed {args.seed}), packages {', '.join(args.packages)}; "
          + (f"{' and '.join(compared)} on / off\n" if compared else f"reuse on = defaults, off = {OFF}\n"))
    print(table(on or off, off or on))
    if on and off:  # the same request in both runs (a request made in one only, after a different answer, is left out)
        theirs = {r.key: r for r in off}
        for kind in KINDS + ("all",):
            pairs = [(r.latency_ms, theirs[r.key].latency_ms) for r in on
                     if kind in ("all", r.kind) and r.key in theirs]
            if pairs:
                print(f"{kind}: " + paired([a for a, _ in pairs], [b for _, b in pairs]))
    for label, info in (("on", info_on), ("off", info_off)):
        if info:
            c = info.get("completion") or {}
            print(f"\n{label}: server RSS {info['rss_first_mb']:.0f} MB after the first request, "
                  f"max {info['rss_max_mb']:.0f} MB (growth {info['rss_max_mb'] - info['rss_first_mb']:.0f} MB); "
                  f"prompt tokens {c.get('promptTokens')}, reused {c.get('reusedTokens')} "
                  f"(shifted {c.get('shiftedTokens')}), saved states restored {c.get('restoredStates')}, "
                  f"kept {c.get('kvStates')}")


if __name__ == "__main__":
    main()
