"""Two editor windows on one folder share one index directory: one process writes, the other
reads, nobody deletes anybody's data, a busy database is never taken for a damaged one
(issue #13, point 9). Real processes, real SQLite files, real hnswlib."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index.ann import DIM
from index.chunking import chunk_file
from index.database import is_corruption
from index.store import IndexStore
from index.workspace import IndexOptions, WorkspaceIndex, store_dir

from .helpers import CONFIG_PY, GEOMETRY_JS

ROOT = Path(__file__).resolve().parent.parent


def symbols(idx: WorkspaceIndex, query: str) -> set[str]:
    return {r.symbol for r in idx.search(query, k=20, mode="lexical")}


SECOND_WINDOW = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from index.workspace import IndexOptions, WorkspaceIndex
root = Path(sys.argv[1])
idx = WorkspaceIndex([root], IndexOptions(embeddings=False))
idx.start().result()
found = [r.symbol for r in idx.search("read config", k=5, mode="lexical")]
# An unsaved edit in this window: the other process writes the index, this one does not.
idx.update_file(root / "src" / "config.py", "def second_window_only():\\n    return 2\\n").result()
print(json.dumps({"found": found, "status": idx.status(),
                  "edit": [r.symbol for r in idx.search("second_window_only", k=5, mode="lexical")]}))
idx.close()
"""


def test_a_second_process_on_the_same_folder_reads_the_index_and_deletes_nothing(cache, workspace):
    first = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    first.start().result()
    db = store_dir(workspace) / "index.sqlite"
    # The first window is in the middle of a write transaction (its first pass commits every 200 files).
    busy = sqlite3.connect(db)
    busy.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", SECOND_WINDOW, str(workspace), str(ROOT)],
                              capture_output=True, text=True, timeout=120, env=os.environ.copy())
        took = time.monotonic() - started
    finally:
        busy.rollback()
        busy.close()
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "read_config" in second["found"]
    assert second["status"]["readOnly"] is True and second["status"]["files"] == 3
    assert "second_window_only" not in second["edit"]   # it did not write
    assert "unusable" not in proc.stderr, proc.stderr
    assert took < 30, "the second window waited for the first one's transaction"
    # The first window still writes the one index on disk: its edits are there for everybody.
    (workspace / "src" / "config.py").write_text(CONFIG_PY.replace("expand_home", "home_folder_of"))
    first.update_file(workspace / "src" / "config.py").result()
    assert "home_folder_of" in symbols(first, "home folder of")
    first.close()
    third = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    third.start().result()
    assert "read_config" in symbols(third, "read config")
    assert "home_folder_of" in symbols(third, "home folder of")
    assert "readOnly" not in third.status()
    third.close()


def test_the_reader_takes_over_when_the_writer_is_gone(cache, workspace):
    first = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    first.start().result()
    second = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    second.start().result()
    assert second.status()["readOnly"] is True and second.state == "ready"
    assert "read_config" in symbols(second, "read config")           # both search
    assert "read_config" in symbols(first, "read config")
    second.update_file(workspace / "src" / "config.py", "def typed_in_second():\n    return 1\n").result()
    assert "typed_in_second" not in symbols(second, "typed in second")  # read-only: not indexed
    (workspace / "src" / "geometry.js").write_text(GEOMETRY_JS.replace("circleArea", "discArea"))
    first.update_file(workspace / "src" / "geometry.js").result()
    assert "discArea" in symbols(second, "disc area")                 # sees the writer's commits
    first.close()
    (workspace / "src" / "new_module.py").write_text("def written_while_nobody_indexed():\n    return 3\n")
    # The next update in the second window takes the lock and brings the whole folder in step.
    second.update_file(workspace / "src" / "config.py", "def typed_in_second():\n    return 1\n").result()
    assert "readOnly" not in second.status()
    assert "typed_in_second" in symbols(second, "typed in second")
    assert "written_while_nobody_indexed" in symbols(second, "written while nobody indexed")
    second.close()


def test_busy_is_not_corruption(tmp_path):
    db_path = tmp_path / "x.sqlite"
    a, b = sqlite3.connect(db_path, timeout=0), sqlite3.connect(db_path, timeout=0)
    a.execute("CREATE TABLE t(x)")
    a.commit()
    a.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        b.execute("BEGIN IMMEDIATE")
    assert not is_corruption(locked.value)
    a.rollback()
    a.close()
    b.close()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(junk).execute("SELECT * FROM sqlite_master").fetchall()
    assert is_corruption(damaged.value)


def test_a_busy_database_is_not_rebuilt(tmp_path):
    directory = tmp_path / "idx"
    store = IndexStore(directory)
    store.replace_file("a.py", 1, 1, "h", chunk_file("a.py", CONFIG_PY))
    store.commit()
    store.close()
    busy = sqlite3.connect(directory / "index.sqlite")
    busy.execute("BEGIN EXCLUSIVE")  # another connection writes, for longer than sqlite3's default 5 s wait
    timer = threading.Timer(8.0, busy.rollback)
    timer.start()
    try:
        again = IndexStore(directory)
    finally:
        timer.cancel()
        busy.rollback()
        busy.close()
    assert again.writable and set(again.file_state()) == {"a.py"}
    again.close()


def test_a_reader_sees_the_writers_vectors_once_saved(tmp_path):
    directory = tmp_path / "idx"
    writer = IndexStore(directory)
    reader = IndexStore(directory)
    assert writer.writable and not reader.writable
    chunks = chunk_file("a.py", CONFIG_PY)
    writer.replace_file("a.py", 1, 1, "h", chunks)
    writer.commit()
    rng = np.random.default_rng(0)
    vectors = {c.hash: (v := rng.standard_normal(DIM).astype(np.float32)) / np.linalg.norm(v) for c in chunks}
    writer.add_vectors(list(vectors.items()))
    writer.save_ann()
    target = chunks[1]
    hits = reader.search_dense(vectors[target.hash], 3)
    assert hits and hits[0].text == target.text and hits[0].score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(RuntimeError):
        reader.replace_file("b.py", 1, 1, "h", [])
    reader.close()
    writer.close()
    assert (directory / "index.sqlite").is_file()
