"""The workspace index on real files in temporary workspaces, with the real embedding model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from index.chunking import MAX_LINES, OVERLAP_LINES, chunk_file
from index.lexical import words
from index.retrieval import rrf
from index.rules import discover
from index.store import Hit
from index.workspace import IndexOptions, WorkspaceIndex, store_dir

from .helpers import CONFIG_PY, GEOMETRY_JS


def wait(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_identifier_aware_words():
    assert words("readConfigFile") == "readconfigfile read config file"
    assert words("max_file_size = 3") == "max_file_size max file size 3"
    assert words("HTTPServerError") == "httpservererror http server error"


def test_python_chunks_are_functions_methods_and_classes():
    chunks = chunk_file("src/config.py", CONFIG_PY)
    found = {(c.kind, c.symbol, c.start_line, c.end_line) for c in chunks}
    assert ("class", "ConfigReader", 3, 12) in found
    assert ("function", "read_config", 6, 12) in found  # a method, by the Python grammar's node type
    assert ("function", "expand_home", 15, 16) in found
    assert all(c.path == "src/config.py" for c in chunks)


@pytest.mark.parametrize("path,source,expected", [
    ("a.js", GEOMETRY_JS, {("function", "circleArea"), ("class", "Rectangle"), ("method", "area")}),
    ("a.ts", "interface Shape { area(): number }\nfunction f(x: number): number {\n  return x\n}\n",
     {("interface", "Shape"), ("function", "f")}),
    ("a.go", "package m\n\ntype T struct{ A int }\n\nfunc (t *T) Get() int {\n\treturn t.A\n}\n",
     {("type", "T"), ("method", "Get")}),
    ("a.rs", "struct S { a: i32 }\nimpl S {\n    fn get(&self) -> i32 { self.a }\n}\n",
     {("struct", "S"), ("function", "get")}),
    ("A.java", "class A {\n  int get() {\n    return 1;\n  }\n}\n", {("class", "A"), ("method", "get")}),
    ("a.c", "int add(int a, int b) {\n  return a + b;\n}\n", {("function", "add")}),
    ("a.cpp", "class K {\n public:\n  int v;\n};\nint twice(int x) { return 2 * x; }\n",
     {("class", "K"), ("function", "twice")}),
])
def test_definitions_in_every_supported_language(path, source, expected):
    got = {(c.kind, c.symbol) for c in chunk_file(path, source)}
    assert expected <= got, got


def test_long_bodies_are_split_with_overlap_and_unknown_languages_get_windows():
    body = "".join(f"    x{i} = {i}\n" for i in range(150))
    chunks = [c for c in chunk_file("big.py", "def big():\n" + body) if c.symbol == "big"]
    assert len(chunks) == 3 and all(c.end_line - c.start_line + 1 <= MAX_LINES for c in chunks)
    assert chunks[1].start_line == chunks[0].end_line - OVERLAP_LINES + 1
    windows = chunk_file("notes.txt", "".join(f"line {i}\n" for i in range(100)))
    assert {c.kind for c in windows} == {"lines"} and windows[-1].end_line == 99


def test_discovery_respects_gitignore_defaults_secrets_size_and_settings(tmp_path):
    root = tmp_path / "ws"
    for rel, data in {
        "app.py": b"print(1)\n", "lib/util.py": b"x = 1\n", "generated/out.py": b"x = 2\n",
        "debug.log": b"log\n", "node_modules/pkg/index.js": b"x\n", ".venv/lib/site.py": b"x\n",
        ".env": b"API_KEY=1\n", "deploy/id_rsa": b"key\n", "certs/server.pem": b"pem\n", "conf/app.key": b"k\n",
        "logo.png": b"\x89PNG", "blob.dat": b"abc\x00def", "huge.py": b"x = 1\n" * 200_000,
        "docs/keep.md": b"# keep\n", "docs/skip.md": b"# skip\n", "sub/.gitignore": b"local.py\n",
        "sub/local.py": b"x\n", "sub/shared.py": b"x\n", ".gitignore": b"generated/\n*.log\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    found = {rel for rel, _ in discover(root, IndexOptions(exclude=("docs/skip.md",), include=("debug.log",)))}
    assert {"app.py", "lib/util.py", "docs/keep.md", "sub/shared.py", "debug.log", ".gitignore",
            "sub/.gitignore"} <= found
    for never in ("generated/out.py", "node_modules/pkg/index.js", ".venv/lib/site.py", ".env", "deploy/id_rsa",
                  "certs/server.pem", "conf/app.key", "logo.png", "huge.py", "docs/skip.md", "sub/local.py"):
        assert never not in found, never
    # A binary file that got through the name checks is still never indexed.
    from index.rules import read_text
    assert read_text(root / "blob.dat") is None


def test_index_search_update_delete_and_reuse_across_restarts(cache, workspace):
    idx = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    idx.start().result()
    assert idx.status() == {"state": "ready", "files": 3, "chunks": idx.status()["chunks"], "embedded": 0}
    top = idx.search("read config", k=3, mode="lexical")[0]
    assert (top.path, top.symbol) == ("src/config.py", "read_config") and top.start_line == 6
    # Edit: a new function appears, the old one goes.
    (workspace / "src" / "config.py").write_text(CONFIG_PY.replace("read_config", "load_settings"))
    idx.update_file(workspace / "src" / "config.py").result()
    assert idx.search("load settings", k=1, mode="lexical")[0].symbol == "load_settings"
    assert all(r.symbol != "read_config" for r in idx.search("read config", k=10, mode="lexical"))
    # Delete: the file leaves the index.
    (workspace / "src" / "geometry.js").unlink()
    idx.update_file(workspace / "src" / "geometry.js").result()
    assert all(r.path != "src/geometry.js" for r in idx.search("circle area rectangle", k=10, mode="lexical"))
    idx.close()
    # A restart finds the index on disk and touches no unchanged file.
    again = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    again.start().result()
    assert again.status()["files"] == 2
    assert again.search("load settings", k=1, mode="lexical")[0].symbol == "load_settings"
    again.close()


def test_a_damaged_database_is_rebuilt(cache, workspace):
    idx = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    idx.start().result()
    idx.close()
    db = store_dir(workspace) / "index.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    again = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    again.start().result()
    assert again.status()["files"] == 3
    assert again.search("expand home", k=1, mode="lexical")[0].symbol == "expand_home"
    again.close()


def test_a_process_killed_mid_index_loses_nothing_committed(cache, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    for i in range(3000):
        (root / f"mod_{i}.py").write_text(f"def handler_{i}(request):\n    return respond(request, {i})\n")
    script = ("import sys; from pathlib import Path; from index.workspace import WorkspaceIndex, IndexOptions;"
              "WorkspaceIndex([Path(sys.argv[1])], IndexOptions(embeddings=False)).start().result()")
    proc = subprocess.Popen([sys.executable, "-c", script, str(root)], env=os.environ.copy())
    db = store_dir(root) / "index.sqlite"
    wait(lambda: db.exists() and db.stat().st_size > 0, timeout=60)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    idx = WorkspaceIndex([root], IndexOptions(embeddings=False))
    idx.start().result()
    assert idx.status()["files"] == 3000
    assert idx.search("handler_2999", k=1, mode="lexical")[0].path == "mod_2999.py"
    idx.close()


def test_reciprocal_rank_fusion():
    def hit(i):
        return Hit(i, "p", 0, 0, "", "", "", 0.0)
    fused = rrf([[hit(1), hit(2), hit(3)], [hit(3), hit(1)]])
    assert [h.chunk_id for h, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


@pytest.mark.model
def test_dense_search_finds_code_by_meaning_and_survives_a_damaged_ann_file(cache, workspace):
    idx = WorkspaceIndex([workspace], IndexOptions(embeddings=True), embed_threads=2)
    idx.start().result()
    wait(lambda: idx.status()["embedded"] == idx.status()["chunks"] or idx.embedding_error)
    assert idx.embedding_error is None, idx.embedding_error
    dense = idx.search("parse a settings file of key value pairs into a dictionary", k=2, mode="dense")
    assert dense[0].symbol in ("read_config", "ConfigReader")
    hybrid = idx.search("area of a circle", k=3)
    assert hybrid[0].symbol == "circleArea"
    idx.close()
    (store_dir(workspace) / "vectors.hnsw").write_bytes(b"garbage")
    again = WorkspaceIndex([workspace], IndexOptions(embeddings=True))
    again.start().result()
    wait(lambda: again._embedder is not None or again.embedding_error)
    assert again.search("area of a circle", k=1, mode="dense")[0].symbol == "circleArea"
    assert again.status()["embedded"] == again.status()["chunks"]  # from SQLite: nothing re-embedded
    again.close()
