"""Assistant latency benchmark: a simulated person asks the assistant about real code, over stdio.

The workspace is a copy of one installed third-party package (``--package``, default click;
its tests left out), trusted, indexed (the run waits until every chunk is embedded), served
by the real server (``python -m server``) with the default models: completion 0.5B, assistant
= the catalog's assistant model (``deepseek.status``'s ``chat`` names it). For each of
``--functions`` functions of the package (4-60 lines, picked with ``--seed``) the person:

1. **chat**: opens the file, moves the cursor into the function (``textDocument/codeAction``
   with an empty range, as VS Code sends at every cursor move), selects the function (a code
   action request on its lines), opens the chat panel (``deepseek/assistAhead``
   ``{task: "chat", uri, range}``), types a question at 6 characters a second and sends it
   (``deepseek.chat {message, uri, range}``);
2. **follow-up**: after the answer, the panel says so again (``deepseek/assistAhead`` with the
   reply's ``sessionId``); the person types a second question in that session;
3. **workspace**: a new chat without a selection (``deepseek.chat {message, uri}``) about a
   name defined in another file of the package;
4. **explain**: a code action request with an empty range inside the function (the cursor
   goes there: ``triggerKind`` Automatic), then the user opens the menu (the same request,
   ``triggerKind`` Invoked, as VS Code's Ctrl+. and Neovim's ``vim.lsp.buf.code_action()`` send
   it), 2 s with the menu open, then the menu's Explain (``deepseek.explain`` with the action's
   arguments);
5. **hover**: ``deepseek/assistAhead {task: "hover", uri, position}`` on a name defined in the
   file (a use of it where there is one), 2 s at rest, then ``textDocument/hover`` there.

Measured per kind: seconds from sending the request to the first ``deepseek/chatDelta`` of its
session that carries model text (Explain's heading ``**`name`** in `file`, lines a-b``, when it
streams first, is not model text) and to the whole answer (the command's result), p50/p90,
and how many got no model text at all (the assistant's 120 s cap passed while it read the
prompt); the prompt's tokens and those read after the question arrived, means (the reply's
``promptTokens`` and ``promptTokensRead``; a hover's whole prompt from the assistant's metrics
table, "n/a" where the server does not say); for hover, the share of hovers whose markdown holds
the model's explanation (the part after a ``---`` line). A workspace answer is judged too:
whether it names a place that uses the name asked about (a function or class around a use,
or another file using it, found in the package's syntax trees) and how many `backticked`
names it gives that appear nowhere in the package (invented).

The whole sequence runs twice in one run, with ``chat.readAhead: true`` and ``false``, each server
with a data folder of its own (no answer comes from the other's response cache); ``--read-ahead``
runs one of them, ``--kinds`` only some of the steps. On a 2-core machine (the 1.5B reads
~80 prompt tokens/s), one function takes 1.5-3 minutes per configuration.

    python bench/assistant_latency.py [--functions 6] [--seed 5] [--package click] [--think 1.0]
                                      [--kinds chat,follow-up,workspace,explain,hover]
                                      [--read-ahead on,off] [--out records.json]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsp_server import start_server, stop_server  # noqa: E402
from lsprotocol import types  # noqa: E402

from index.workspace import store_dir  # noqa: E402
from server.assist.store import AssistStore, data_dir  # noqa: E402

CPS = 6.0            # characters a second the person types into the chat panel
DRAFT_EVERY_S = 2.0  # the panel sends the question typed so far at a pause between words, this often at most
MENU_S = 2.0         # seconds the code action menu is open before Explain is chosen
HOVER_REST_S = 2.0   # seconds the pointer rests on a name before the hover is asked for
KINDS = ("chat", "follow-up", "workspace", "explain", "hover")
TASK = {"chat": "chat", "follow-up": "chat", "workspace": "chat", "explain": "explain", "hover": "hover"}
QUESTIONS = ["What does this function return for an empty input?",
             "Write a one-line docstring for this function.",
             "What could go wrong if this function is called with None?",
             "Explain in two sentences what this function is for."]
FOLLOW_UPS = ["Can you show a short example call and its result?", "How would you simplify it?",
              "Which of its arguments are optional, and what are their defaults?"]
WORKSPACE_QUESTIONS = ["Where is `{name}` used?", "What does `{name}` do, and who calls it?"]
HEADING = re.compile(r"\*\*`[^`]*`\*\* in `[^`]+`, lines \d+-\d+")


@dataclass
class Target:
    file: str            # path relative to the workspace
    function: str
    start: int           # 0-based line of the def, inclusive
    end: int             # 0-based last line, inclusive
    body_line: int       # a line inside the function (the cursor)
    body_col: int
    hover: tuple[int, int, str]   # line, character, name
    question: str
    follow_up: str
    workspace_question: str
    users: list[str]     # where the workspace question's name is used: files (stem) and enclosing functions


@dataclass
class Record:
    config: str          # "on" / "off": chat.readAhead
    kind: str
    target: str
    first_s: float | None = None   # to the first model text (None: nothing streamed, or a hover)
    whole_s: float = 0.0
    cache_hit: bool = False
    shown: bool | None = None      # hover: the model's explanation was in it
    prompt_tokens: int | None = None
    prompt_tokens_read: int | None = None   # read after the request came (the reply's promptTokensRead)
    first_token_ms: float | None = None     # the server's own figure, from the request reaching the model
    output_tokens: int | None = None
    error: str = ""
    answer: str = ""
    names_a_use: bool | None = None  # workspace: the answer names a file or function that uses the name
    invented: int | None = None      # workspace: `names` in the answer found nowhere in the package
    sent_at: float = 0.0           # time.time() when sent (to find its row in the metrics)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not an installed package")
    return Path(next(iter(spec.submodule_search_locations)))


def _top_names(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not n.name.startswith("__")}


def pick_targets(pkg: Path, n: int, seed: int) -> list[Target]:
    """``n`` functions (4-60 lines, not dunder) of ``pkg``'s modules outside tests, with a name to hover
    in their file and a name of another file to ask about (fixed seed)."""
    rng = random.Random(seed)
    files: dict[str, tuple[list[str], ast.Module]] = {}
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg.parent)
        if "test" in str(rel) or "__pycache__" in rel.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            files[str(rel)] = (text.split("\n"), ast.parse(text))
        except SyntaxError:
            continue
    found = [(rel, node) for rel, (_, tree) in files.items() for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("__")
             and 4 <= node.end_lineno - node.lineno + 1 <= 60]
    rng.shuffle(found)
    targets = []
    for rel, node in found[:n]:
        lines, tree = files[rel]
        start = min([d.lineno - 1 for d in node.decorator_list] + [node.lineno - 1])
        body = node.body[0]
        defined = _top_names(tree)
        uses = sorted({(m.lineno - 1, m.col_offset + 1, m.id) for m in ast.walk(tree)
                       if isinstance(m, ast.Name) and m.id in defined})
        def_col = lines[node.lineno - 1].index(node.name)
        hover = rng.choice(uses) if uses else (node.lineno - 1, def_col + 1, node.name)
        others = sorted(name for other, (_, t) in files.items() if other != rel for name in _top_names(t)
                        if not name.startswith("_"))
        other = rng.choice(others) if others else node.name
        home = next((f for f, (_, t) in files.items() if other in _top_names(t)), rel)
        targets.append(Target(rel, node.name, start, node.end_lineno - 1, body.lineno - 1, body.col_offset,
                              hover, rng.choice(QUESTIONS), rng.choice(FOLLOW_UPS),
                              rng.choice(WORKSPACE_QUESTIONS).format(name=other),
                              sorted(uses_of(other, home, {f: t for f, (_, t) in files.items()}))))
    return targets


def uses_of(name: str, home: str, trees: dict[str, ast.Module]) -> set[str]:
    """Where ``name`` (defined in the file ``home``) is used (read, called, subclassed): the
    functions and classes around each use, and the stems of the other files that use it."""
    found: set[str] = set()

    def visit(node: ast.AST, around: list[str], stem: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            around = around + [node.name]
        if (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name):
            found.update([stem] if stem != Path(home).stem else [])
            found.update(a for a in around if a != name)
        for child in ast.iter_child_nodes(node):
            visit(child, around, stem)
    for rel, tree in trees.items():
        visit(tree, [], Path(rel).stem)
    return found


def judge_workspace(rec: "Record", answer: str, target: Target, words: set[str]) -> None:
    """A workspace answer: does it name a real use (a file or function of ``target.users``), and how
    many `backticked` names does it give that are nowhere in the package (``words``)?"""
    named = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", answer))
    rec.names_a_use = bool(named & set(target.users))
    ticked = {m.split(".")[-1].split("(")[0] for m in re.findall(r"`([^`\n]+)`", answer)}
    rec.invented = sum(1 for t in ticked if re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", t) and t not in words)


def first_model_text(deltas: list[tuple[float, str, str]], session: str, kind: str) -> float | None:
    """When the first delta of ``session`` holding model text arrived (Explain's heading is not)."""
    pieces = [(t, d) for t, sid, d in deltas if sid == session]
    if kind == "explain" and pieces and HEADING.fullmatch(pieces[0][1].strip()):
        pieces = pieces[1:]
    return next((t for t, d in pieces if d.strip()), None)


async def status(client) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status"))


async def wait_for_index(client, limit_s: float) -> str:
    """Wait until the index is searchable and every chunk embedded (or embedding is off or failed)."""
    t0 = time.monotonic()
    while True:
        ix = (await status(client))["index"] or {}
        done = ix.get("state") == "ready" and (ix.get("embeddingError") or ix.get("embedded", 0) >= ix.get("chunks", 0))
        if done or ix.get("state") in ("error", "unavailable") or time.monotonic() - t0 > limit_s:
            return (f"index {ix.get('state')}: {ix.get('files')} files, {ix.get('chunks')} chunks, "
                    f"{ix.get('embedded')} embedded ({time.monotonic() - t0:.0f} s)")
        await asyncio.sleep(1.0)


async def run_config(label: str, read_ahead: bool, targets: list[Target], workspace: Path, think: float,
                     index_wait_s: float, kinds: set[str] = set(KINDS)) -> list[Record]:
    words = {w for p in workspace.rglob("*.py")
             for w in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", p.read_text(encoding="utf-8", errors="replace"))}
    os.environ["XDG_DATA_HOME"] = data = tempfile.mkdtemp(prefix=f"assist-latency-{label}-")
    client = await start_server(f"assistant-latency-{label}", {"chat.readAhead": read_ahead}, workspace)
    deltas: list[tuple[float, str, str]] = []

    @client.feature("deepseek/chatDelta")
    def on_delta(params):
        deltas.append((time.monotonic(), params.sessionId, params.delta))

    print(f"[{label}] {await wait_for_index(client, index_wait_s)}", file=sys.stderr, flush=True)
    t0 = time.monotonic()  # the assistant's model loads on its first request: not a measured one
    try:
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="deepseek.chat", arguments=[{"message": "Reply with the one word: ready."}]))
    except Exception as e:  # e.g. too slow to answer in time: the model is loaded all the same
        print(f"[{label}] the warm-up chat failed: {e}", file=sys.stderr, flush=True)
    print(f"[{label}] assistant {(await status(client))['chat']['model']} loaded and answered in "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    records: list[Record] = []

    def ahead(**params) -> None:
        client.protocol.notify("deepseek/assistAhead", {k: v for k, v in params.items() if v is not None})

    async def code_actions(uri: str, rng: types.Range, invoked: bool = False) -> list:
        """As the editor asks: automatically at a cursor move or selection, or ``invoked`` when
        the user opens the menu (VS Code's Ctrl+., Neovim's ``vim.lsp.buf.code_action()``)."""
        kind = types.CodeActionTriggerKind.Invoked if invoked else types.CodeActionTriggerKind.Automatic
        return await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=rng,
            context=types.CodeActionContext(diagnostics=[], trigger_kind=kind))) or []

    async def ask(kind: str, target: Target, command: str, arg: dict) -> dict:
        rec = Record(label, kind, f"{target.file}:{target.function}", sent_at=time.time())
        mark, t0 = len(deltas), time.monotonic()
        result: dict = {}
        try:
            result = await client.workspace_execute_command_async(types.ExecuteCommandParams(command=command,
                                                                                             arguments=[arg]))
            first = first_model_text(deltas[mark:], result["sessionId"], kind)
            rec.first_s = None if first is None else first - t0
            rec.cache_hit = bool(result.get("cacheHit"))
            rec.prompt_tokens, rec.prompt_tokens_read = result.get("promptTokens"), result.get("promptTokensRead")
            rec.first_token_ms = result.get("firstTokenMs")
            answer = result.get("reply") or result.get("markdown") or ""
            rec.answer = answer[:300]
            if kind == "workspace":
                judge_workspace(rec, answer, target, words)
        except Exception as e:  # an error is a figure too; the sequence goes on
            rec.error = str(e)[:200]
        rec.whole_s = time.monotonic() - t0
        records.append(rec)
        print(f"  {label:>3} {kind:<9} first {rec.first_s or float('nan'):6.1f} s  whole {rec.whole_s:6.1f} s  "
              f"prompt {rec.prompt_tokens} read {rec.prompt_tokens_read}  {rec.error or repr(rec.answer[:50])}",
              file=sys.stderr, flush=True)
        return result

    async def typing(question: str, **params) -> None:
        """Type ``question`` at CPS; at a pause between words, every DRAFT_EVERY_S or so, the panel
        says what is typed so far (``draft``), as the clients do."""
        last = time.monotonic()
        for i, ch in enumerate(question):
            await asyncio.sleep(1 / CPS)
            if ch == " " and time.monotonic() - last >= DRAFT_EVERY_S:
                ahead(task="chat", draft=question[:i], **params)
                last = time.monotonic()

    opened: set[str] = set()
    for n, t in enumerate(targets, 1):
        print(f"[{label}] {n}/{len(targets)}: {t.file} {t.function} (lines {t.start + 1}-{t.end + 1})",
              file=sys.stderr, flush=True)
        path = workspace / t.file
        uri = path.as_uri()
        if uri not in opened:
            opened.add(uri)
            client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=path.read_text(encoding="utf-8", errors="replace"))))
        cursor = types.Position(line=t.body_line, character=t.body_col)
        selection = {"start": {"line": t.start, "character": 0}, "end": {"line": t.end + 1, "character": 0}}
        # 1. into the function, select it, open the panel, type the question, send it.
        if "chat" in kinds:
            await code_actions(uri, types.Range(start=cursor, end=cursor))
            await asyncio.sleep(think)
            await code_actions(uri, types.Range(start=types.Position(line=t.start, character=0),
                                                end=types.Position(line=t.end + 1, character=0)))
            ahead(task="chat", uri=uri, range=selection)
            await typing(t.question, uri=uri, range=selection)
            reply = await ask("chat", t, "deepseek.chat", {"message": t.question, "uri": uri, "range": selection})
            if "follow-up" in kinds:  # 2. a follow-up in the same session.
                session = reply.get("sessionId") if isinstance(reply, dict) else None
                ahead(task="chat", uri=uri, range=selection, sessionId=session)
                await typing(t.follow_up, uri=uri, range=selection, sessionId=session)
                await ask("follow-up", t, "deepseek.chat", {"message": t.follow_up, "uri": uri, "range": selection,
                                                            **({"sessionId": session} if session else {})})
        # 3. a new chat about the workspace, no selection.
        if "workspace" in kinds:
            await asyncio.sleep(think)
            ahead(task="chat", uri=uri)
            await typing(t.workspace_question, uri=uri)
            await ask("workspace", t, "deepseek.chat", {"message": t.workspace_question, "uri": uri})
        # 4. Explain from the code action menu at the cursor: the cursor goes there, the menu opens.
        if "explain" in kinds:
            await asyncio.sleep(think)
            await code_actions(uri, types.Range(start=cursor, end=cursor))
            await asyncio.sleep(think)
            actions = await code_actions(uri, types.Range(start=cursor, end=cursor), invoked=True)
            await asyncio.sleep(MENU_S)
            await ask("explain", t, "deepseek.explain", explain_arg(actions, uri, cursor))
        # 5. rest on a name, then hover.
        if "hover" in kinds:
            await asyncio.sleep(think)
            line, col, name = t.hover
            ahead(task="hover", uri=uri, position={"line": line, "character": col})
            await asyncio.sleep(HOVER_REST_S)
            rec = Record(label, "hover", f"{t.file}:{name}", sent_at=time.time())
            t0 = time.monotonic()
            try:
                hover = await client.text_document_hover_async(types.HoverParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=col)))
                note = re.split(r"^---$", hover.contents.value if hover else "", maxsplit=1, flags=re.M)
                rec.shown = len(note) == 2 and bool(note[1].strip())
                rec.answer = note[1].strip()[:300] if rec.shown else ("" if hover else "(no hover)")
            except Exception as e:
                rec.error = str(e)[:200]
            rec.whole_s = time.monotonic() - t0
            records.append(rec)
            print(f"  {label:>3} hover     {name:<20} {rec.whole_s:5.1f} s  shown {rec.shown}  {rec.answer[:50]!r}",
                  file=sys.stderr, flush=True)
    print(f"[{label}] deepseek.status chat.readAhead: {(await status(client))['chat'].get('readAhead')}",
          file=sys.stderr, flush=True)
    await stop_server(client)
    for rec, row in _metric_rows(records):
        rec.output_tokens = row.output_tokens
        if rec.prompt_tokens is None:
            rec.prompt_tokens = row.prompt_tokens
    shutil.rmtree(data, ignore_errors=True)
    return records


def explain_arg(actions: list, uri: str, cursor: types.Position) -> dict:
    """The menu's Explain argument ``{uri, range}``; else the empty range at the cursor (the same code:
    the definition around it). pygls 2.1's client reads the server's CodeActions as Commands whose
    ``command`` is the action's command printed as a dict: it is read back here."""
    for a in actions:
        cmd = a.command
        if isinstance(cmd, types.Command):
            cmd = {"command": cmd.command, "arguments": cmd.arguments}
        elif isinstance(cmd, str) and cmd.startswith("{"):
            cmd = ast.literal_eval(cmd)  # the repr of a JSON object
        if isinstance(cmd, dict) and cmd.get("command") == "deepseek.explain" and cmd.get("arguments"):
            return cmd["arguments"][0]
    here = {"line": cursor.line, "character": cursor.character}
    return {"uri": uri, "range": {"start": here, "end": here}}


def _metric_rows(records: list[Record]):
    """Each record with its row of the assistant's metrics table (same task, the first after it was sent)."""
    rows = AssistStore(data_dir() / "assistant.sqlite").metric_rows(min((r.sent_at for r in records), default=0.0))
    used: set[int] = set()
    for rec in records:
        i = next((i for i, row in enumerate(rows) if i not in used and row.task == TASK[rec.kind]
                  and row.ts >= rec.sent_at), None)
        if i is not None:
            used.add(i)
            yield rec, rows[i]


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def table(records: list[Record]) -> str:
    def p(values: list[float]) -> str:
        return f"{pct(values, .5):.1f} / {pct(values, .9):.1f}" if values else "-"

    def mean(values: list[int]) -> str:
        return f"{sum(values) / len(values):.0f}" if values else "n/a"
    rows = ["| kind | n | first word p50 / p90 s (ahead on) | (ahead off) | whole answer p50 / p90 s (on) | (off) "
            "| prompt tokens, mean (on / off) | read after the question (on / off) | hover shown % (on / off) "
            "| workspace: names a use / invented names (on / off) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        on, off = ([r for r in records if r.config == c and r.kind == kind] for c in ("on", "off"))
        if not on and not off:
            continue
        first = ["n/a" if kind == "hover" else p([r.first_s for r in rs if r.first_s is not None])
                 + (f" ({n} of {len(rs)} without)" if (n := sum(r.first_s is None for r in rs)) else "")
                 for rs in (on, off)]
        whole = [p([r.whole_s for r in rs if not r.error]) for rs in (on, off)]
        tokens = " / ".join(mean([r.prompt_tokens for r in rs if r.prompt_tokens is not None]) for rs in (on, off))
        read = " / ".join(mean([r.prompt_tokens_read for r in rs if r.prompt_tokens_read is not None])
                          for rs in (on, off))
        shown = " / ".join(f"{100 * sum(bool(r.shown) for r in rs) / len(rs):.0f}%" if rs else "-"
                           for rs in (on, off)) if kind == "hover" else ""
        judged = " / ".join(f"{sum(bool(r.names_a_use) for r in rs)} of {len(rs)}, {sum(r.invented or 0 for r in rs)}"
                            if rs else "-" for rs in (on, off)) if kind == "workspace" else ""
        rows.append(f"| {kind} | {max(len(on), len(off))} | {first[0]} | {first[1]} | {whole[0]} | {whole[1]} "
                    f"| {tokens} | {read} | {shown} | {judged} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=6)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--package", default="click", help="an installed package: its copy is the workspace")
    ap.add_argument("--think", type=float, default=1.0, help="seconds between moves (reading, finding the place)")
    ap.add_argument("--index-wait", type=float, default=900.0, help="longest wait for the index, seconds")
    ap.add_argument("--kinds", default=",".join(KINDS), help="the requests to make, of " + ",".join(KINDS)
                    + " (a follow-up comes after its chat)")
    ap.add_argument("--read-ahead", default="on,off", help="the configurations to run: on,off / on / off")
    ap.add_argument("--out", type=Path, help="write the raw records to this JSON file")
    args = ap.parse_args()
    kinds = set(args.kinds.split(",")) & set(KINDS)
    if "follow-up" in kinds:
        kinds.add("chat")
    pkg = package_dir(args.package)
    targets = pick_targets(pkg, args.functions, args.seed)
    print(f"{len(targets)} functions of {args.package} (seed {args.seed}): "
          + ", ".join(f"{t.file}:{t.function}" for t in targets), file=sys.stderr, flush=True)
    workspace = Path(tempfile.mkdtemp(prefix="assist-latency-ws-"))
    shutil.copytree(pkg, workspace / pkg.name, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    records: list[Record] = []
    try:
        for label, read_ahead in (("on", True), ("off", False)):
            if label not in args.read_ahead.split(","):
                continue
            t0 = time.monotonic()
            records += asyncio.run(run_config(label, read_ahead, targets, workspace, args.think, args.index_wait,
                                              kinds))
            print(f"[{label}] {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(store_dir(workspace), ignore_errors=True)  # the index of a folder that is gone
        shutil.rmtree(workspace, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps({"package": args.package, "seed": args.seed,
                                        "targets": [asdict(t) for t in targets],
                                        "records": [asdict(r) for r in records]}, indent=1))
    print(f"\n{len(targets)} functions of {args.package} (seed {args.seed}), {CPS:.0f} characters/s typed, "
          f"chat.readAhead on / off; seconds from the request to the first model text and to the whole answer\n")
    print(table(records))
    print("\nn/a: the server did not say (a hover's tokens read after the request are not reported; "
          "a server before issue #29 reports no promptTokensRead)")


if __name__ == "__main__":
    main()
