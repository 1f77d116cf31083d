"""Code search benchmark: find functions of a real third-party package by their docstrings.

1. Copy an installed package's source (default: requests) into a temporary workspace and
   remove every docstring (each becomes ``pass`` on its first line, so line numbers and
   syntax survive).
2. Index it with the real workspace index (tree-sitter chunks, FTS5, all-MiniLM-L6-v2
   embeddings in llama.cpp, hnswlib), timing the lexical pass and the embeddings.
3. Query with each removed docstring's first sentence; a hit is a result in the right file
   whose line range overlaps the function. Report MRR@10 for lexical, dense and hybrid
   (reciprocal rank fusion), query latency, and the process's resident memory.
4. Scale: index the first ``--scale-files`` .py files of the installed site-packages (real
   third-party code) and report the time until they are searchable lexically, and the
   embedding throughput over ``--scale-dense-s`` seconds of background embedding.

    python bench/search_quality.py [--package requests] [--scale-files 1000] [--scale-dense-s 60]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil


def strip_docstrings(source: str) -> tuple[str, list[tuple[str, int, int, str]]]:
    """Source without docstrings, and (qualified name, start, end, first sentence) per function."""
    tree = ast.parse(source)
    lines = source.split("\n")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            continue
        body = node.body
        if not body or not isinstance(body[0], ast.Expr) \
                or not isinstance(getattr(body[0], "value", None), ast.Constant) \
                or not isinstance(body[0].value.value, str):
            continue
        doc = body[0].value.value
        first = re.split(r"(?<=[.!?])\s|\n\s*\n", doc.strip(), maxsplit=1)[0].replace("\n", " ").strip()
        d0, d1 = body[0].lineno - 1, body[0].end_lineno - 1
        indent = lines[d0][: len(lines[d0]) - len(lines[d0].lstrip())]
        lines[d0] = indent + "pass"
        for i in range(d0 + 1, d1 + 1):
            lines[i] = ""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(first.split()) >= 3:
            found.append((node.name, node.lineno - 1, node.end_lineno - 1, first))
    return "\n".join(lines), found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="requests")
    ap.add_argument("--scale-files", type=int, default=1000)
    ap.add_argument("--scale-dense-s", type=float, default=60.0)
    ap.add_argument("--embed-threads", type=int, default=None, help="default: physical cores, as the server")
    ap.add_argument("--embed-cut", type=int, default=None, help="word pieces embedded per chunk (default: the index's)")
    args = ap.parse_args()

    import logging
    logging.basicConfig(level=logging.WARNING)
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="bench-cache-")
    import index.embedding
    from index.embedding import ensure_embedding_model
    if args.embed_cut:
        index.embedding.MAX_TOKENS = args.embed_cut
    from index.workspace import IndexOptions, WorkspaceIndex

    # The embedding model is converted once, outside the timings.
    shared_models = Path.home() / ".cache" / "deepseek-lsp" / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    real_cache = os.environ.pop("XDG_CACHE_HOME")
    ensure_embedding_model()
    os.environ["XDG_CACHE_HOME"] = real_cache
    (Path(real_cache) / "deepseek-lsp" / "models").mkdir(parents=True, exist_ok=True)
    for f in shared_models.glob("all-minilm*.gguf"):
        shutil.copy(f, Path(real_cache) / "deepseek-lsp" / "models" / f.name)

    spec = importlib.util.find_spec(args.package)
    src = Path(next(iter(spec.submodule_search_locations)))
    work = Path(tempfile.mkdtemp(prefix="bench-ws-")) / args.package
    queries = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        stripped, funcs = strip_docstrings(path.read_text(encoding="utf-8"))
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(stripped, encoding="utf-8")
        queries += [(rel, name, s, e, q) for name, s, e, q in funcs]
    n_files = len(list(work.rglob("*.py")))
    print(f"{args.package}: {n_files} files, {len(queries)} functions with docstrings (queries)")

    idx = WorkspaceIndex([work], IndexOptions(), embed_threads=args.embed_threads)
    t0 = time.monotonic()
    idx.start().result()
    t_lex = time.monotonic() - t0
    while idx.status()["embedded"] < idx.status()["chunks"] and not idx.embedding_error:
        time.sleep(0.2)
    t_dense = time.monotonic() - t0 - t_lex
    st = idx.status()
    print(f"indexed: {st['files']} files, {st['chunks']} chunks; lexical {t_lex:.2f} s "
          f"({st['files'] / t_lex:.0f} files/s, {st['chunks'] / t_lex:.0f} chunks/s); "
          f"dense {t_dense:.1f} s ({st['chunks'] / t_dense:.1f} chunks/s, {idx._embed_threads} threads, "
          f"{index.embedding.MAX_TOKENS} word pieces per chunk)")

    def mrr(mode: str) -> tuple[float, list[float]]:
        total, times = 0.0, []
        for rel, name, start, end, q in queries:
            t = time.monotonic()
            results = idx.search(q, k=10, mode=mode)
            times.append((time.monotonic() - t) * 1000)
            for rank, r in enumerate(results, start=1):
                if r.path == rel and r.start_line <= end and r.end_line >= start:
                    total += 1 / rank
                    break
        return total / len(queries), times

    print(f"\n{'retriever':<10} {'MRR@10':>7} {'query p50':>10} {'p90':>7}")
    scores = {}
    for mode in ("lexical", "dense", "hybrid"):
        score, times = mrr(mode)
        scores[mode] = score
        times.sort()
        print(f"{mode:<10} {score:>7.3f} {statistics.median(times):>8.1f} ms {times[int(0.9 * len(times))]:>5.1f} ms")
    print(f"hybrid - lexical: {scores['hybrid'] - scores['lexical']:+.3f}")
    print(f"resident memory of this process (index + embedding model): "
          f"{psutil.Process().memory_info().rss / 2**20:.0f} MB")
    idx.close()

    # Scale: real third-party files from site-packages.
    site = Path(psutil.__file__).parent.parent
    big = Path(tempfile.mkdtemp(prefix="bench-big-"))
    copied = 0
    for path in sorted(site.rglob("*.py")):
        if copied >= args.scale_files:
            break
        if path.stat().st_size > 512 * 1024 or "bench-" in str(path):
            continue
        dest = big / path.relative_to(site)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
        copied += 1
    idx = WorkspaceIndex([big], IndexOptions(), embed_threads=args.embed_threads)
    t0 = time.monotonic()
    idx.start().result()
    t_lex = time.monotonic() - t0
    st = idx.status()
    # llama-cpp-python silences fds 1 and 2 while a model loads: let the embedder load first.
    while idx._embedder is None and not idx.embedding_error:
        time.sleep(0.1)
    print(f"\nscale: {st['files']} files of site-packages, {st['chunks']} chunks: lexically searchable in "
          f"{t_lex:.1f} s ({st['files'] / t_lex:.0f} files/s, {st['chunks'] / t_lex:.0f} chunks/s)")
    e0, t1 = idx.status()["embedded"], time.monotonic()
    time.sleep(args.scale_dense_s)
    e1 = idx.status()["embedded"]
    rate = (e1 - e0) / (time.monotonic() - t1)
    print(f"scale: embedding in the background at {rate:.1f} chunks/s: all {st['chunks']} chunks in about "
          f"{st['chunks'] / max(rate, 1e-9) / 60:.0f} min")
    t = time.monotonic()
    idx.search("parse command line arguments", k=10, mode="lexical")
    print(f"scale: lexical query on {st['chunks']} chunks: {(time.monotonic() - t) * 1000:.1f} ms")
    idx.close()


if __name__ == "__main__":
    main()
