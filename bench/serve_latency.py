"""The same FIM request through ``deepseek-lsp serve``'s endpoint and over LSP: p50 latency of each, and the ratio.

Both servers run the same pipeline (:class:`server.completion.CompletionService`, an explicit
request: ``inlineCompletion`` with trigger kind Invoked over LSP, ``POST /v1/completions``
with ``prompt`` and ``suffix`` over HTTP) on the same default model, one after the other on
the same machine in the same run, never at the same time. Each hole is a different document
(a line of platformdirs' unix.py cut in half), so no answer comes from a cache; the order of
the two paths alternates from hole to hole. Time is measured by the client, from sending the
request to having the answer. Target (issue #17): the endpoint within 10% of LSP.

    python bench/serve_latency.py [--holes 20] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import platformdirs
from lsprotocol import types

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lsp_server import start_server, stop_server  # noqa: E402

SETTINGS = {"index": {"enabled": False}}


def holes(n: int) -> list[tuple[str, int, int]]:
    """(document, line, column): every eligible line of unix.py cut in half, the cursor at the cut."""
    source = Path(platformdirs.__file__).with_name("unix.py").read_text()
    lines = source.split("\n")
    out = []
    for i, line in enumerate(lines):
        body = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent >= 8 and len(body) > 24 and not body.startswith(("#", '"', "'")):
            cut = indent + len(body) // 2
            out.append(("\n".join(lines[:i] + [line[:cut]] + lines[i + 1:]), i, cut))
    step = max(1, len(out) // n)
    return out[::step][:n]


def start_serve(folder: Path) -> tuple[subprocess.Popen, str, str]:
    """``python -m server serve`` on a free port; (process, base URL, token)."""
    env = {k: v for k, v in os.environ.items() if k != "DEEPSEEK_LSP_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", "0", "--workspace", str(folder),
                             "--set", "index.enabled=false"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    line = proc.stdout.readline()
    base, token = line.split()[-1].split("/?token=")
    return proc, base, token


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holes", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2, help="first holes not counted (model load, first prompts)")
    args = ap.parse_args()
    work = holes(args.holes + args.warmup)
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    path = folder / "unix.py"
    uri = path.as_uri()

    client = await start_server("serve-latency", SETTINGS)
    proc, base, token = start_serve(folder)
    http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=300)
    version = 1
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=version, text=work[0][0])))

    async def over_lsp(text: str, line: int, col: int) -> tuple[float, str]:
        nonlocal version
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        t0 = time.perf_counter()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        ms = (time.perf_counter() - t0) * 1000
        items = list(result.items) if result else []
        return ms, items[0].insert_text if items else ""

    async def over_http(text: str, line: int, col: int) -> tuple[float, str]:
        lines = text.split("\n")
        offset = sum(len(x) + 1 for x in lines[:line]) + col
        t0 = time.perf_counter()
        r = await http.post("/v1/completions", json={"prompt": text[:offset], "suffix": text[offset:],
                                                     "language": "python", "path": str(path)})
        ms = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
        return ms, r.json()["choices"][0]["text"]

    lsp_ms, http_ms, same = [], [], 0
    try:
        for n, (text, line, col) in enumerate(work):
            paths = [("lsp", over_lsp), ("http", over_http)]
            if n % 2:
                paths.reverse()
            got = {}
            for name, fn in paths:
                got[name] = await fn(text, line, col)
            same += got["lsp"][1] == got["http"][1]
            counted = n >= args.warmup
            if counted:
                lsp_ms.append(got["lsp"][0])
                http_ms.append(got["http"][0])
            print(f"  [{n + 1:>3}/{len(work)}]{'' if counted else ' (warm-up)'} lsp {got['lsp'][0]:7.0f} ms  "
                  f"http {got['http'][0]:7.0f} ms  {got['http'][1].split(chr(10))[0][:50]!r}", file=sys.stderr)
    finally:
        await http.aclose()
        proc.terminate()
        proc.wait(timeout=30)
        await stop_server(client)
    p50_lsp, p50_http = statistics.median(lsp_ms), statistics.median(http_ms)
    print(f"FIM request, {len(lsp_ms)} holes of unix.py (each a different document), default model, explicit request")
    print(f"LSP inlineCompletion   p50 {p50_lsp:7.0f} ms")
    print(f"HTTP /v1/completions   p50 {p50_http:7.0f} ms")
    print(f"ratio endpoint / LSP   {p50_http / p50_lsp:.3f}  (target: at most 1.10); same suggestion on "
          f"{same}/{len(work)} holes")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: the servers are still stopped by `finally`
    asyncio.run(main())
