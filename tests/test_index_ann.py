"""The ANN file in step with the database: chunk ids never reused, the ANN stamped with the
database generation it matches and rebuilt when it does not (issue #13, point 10).

Real SQLite files, real hnswlib, a real process killed with SIGKILL; the store-level tests
give chunks made-up unit vectors (one per content, derived from it) so that every dense
hit can be checked against the vector of the chunk it names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.ann import ANN_RECHECK_S, DIM
from index.chunking import chunk_file
from index.database import SCHEMA_VERSION
from index.store import IndexStore
from index.workspace import IndexOptions, WorkspaceIndex, store_dir

from .helpers import CONFIG_PY, GEOMETRY_JS

ROOT = Path(__file__).resolve().parent.parent


def vector(text: str) -> np.ndarray:
    """A unit vector that stands for ``text`` (seeded by its hash: the same text, the same vector)."""
    seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def source(prefix: str, n: int) -> str:
    return "".join(f"def {prefix}_{i}(value):\n    return value * {i} + {len(prefix)}\n\n\n" for i in range(n))


def put(store: IndexStore, path: str, text: str) -> list:
    """Index one file and its vectors (committed) the way the index's writer does."""
    chunks = chunk_file(path, text)
    store.ann_remove(store.replace_file(path, 1, len(text), hashlib.sha1(text.encode()).hexdigest(), chunks))
    store.commit()
    store.add_vectors([(c.hash, vector(c.text)) for c in chunks])
    return chunks


def assert_hits_name_their_own_vectors(store: IndexStore, query: np.ndarray) -> list:
    """Every dense hit's score is the cosine between the query and the vector of the chunk it names."""
    hits = store.search_dense(query, 10)
    assert hits
    for h in hits:
        assert h.score == pytest.approx(float(query @ vector(h.text)), abs=1e-4), (h.path, h.symbol)
    return hits


def test_chunk_ids_are_never_reused(tmp_path):
    store = IndexStore(tmp_path / "idx")
    first = put(store, "a.py", source("alpha", 5))
    old_ids = {i for c in first for i in store.ids_with_hash(c.hash)}
    store.ann_remove(store.remove_file("a.py"))  # the newest chunks go: SQLite would hand their ids out again
    store.commit()
    second = put(store, "b.py", source("beta", 5))
    new_ids = {i for c in second for i in store.ids_with_hash(c.hash)}
    assert min(new_ids) > max(old_ids)
    store.ann_remove(store.remove_file("b.py"))
    store.commit()
    store.close()
    again = IndexStore(tmp_path / "idx")  # nor after a restart
    third = put(again, "c.py", source("gamma", 5))
    assert min(i for c in third for i in again.ids_with_hash(c.hash)) > max(new_ids)
    again.close()


def test_an_edited_file_keeps_its_unchanged_chunks_in_dense_search(tmp_path):
    store = IndexStore(tmp_path / "idx")
    before = put(store, "a.py", source("alpha", 4))
    text = source("alpha", 4) + "def added_later(value):\n    return value\n"  # an edit: one function more
    store.ann_remove(store.replace_file("a.py", 2, len(text), "h2", chunk_file("a.py", text)))
    store.commit()
    for c in before:  # no new embedding needed: the content's vector is known, under the chunk's new id
        assert assert_hits_name_their_own_vectors(store, vector(c.text))[0].text == c.text
    store.close()


KILLED_AFTER_COMMIT = """
import hashlib, os, signal, sys
sys.path.insert(0, sys.argv[2])
from tests.test_index_ann import put, source
from index.store import IndexStore
store = IndexStore(__import__("pathlib").Path(sys.argv[1]))
store.ann_remove(store.remove_file("a.py"))
store.commit()
put(store, "b.py", source("beta", 6))
os.kill(os.getpid(), signal.SIGKILL)  # committed, the ANN file never saved
"""


@pytest.mark.parametrize("how", ["killed between the commit and the ANN save", "an older ANN file and its stamp"])
def test_an_ann_file_out_of_step_is_rebuilt_and_never_names_the_wrong_chunk(tmp_path, how):
    directory = tmp_path / "idx"
    store = IndexStore(directory)
    a_chunks = put(store, "a.py", source("alpha", 6))
    store.close()  # the ANN saved, in step
    if how.startswith("killed"):
        proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, str(directory), str(ROOT)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    else:
        saved = tmp_path / "saved"
        saved.mkdir()
        for name in ("vectors.hnsw", "vectors.hnsw.stamp"):
            if (directory / name).exists():
                shutil.copy(directory / name, saved / name)
        store = IndexStore(directory)
        store.ann_remove(store.remove_file("a.py"))
        store.commit()
        put(store, "b.py", source("beta", 6))
        store.close()
        for f in saved.iterdir():  # a backup tool, a copy from another machine: an older pair comes back
            shutil.copy(f, directory / f.name)
    again = IndexStore(directory)
    assert again.ann_rebuilt
    for c in a_chunks:  # the old vectors' labels now belong to nobody, or to b.py's chunks
        assert all(h.path == "b.py" for h in assert_hits_name_their_own_vectors(again, vector(c.text)))
    b_chunks = chunk_file("b.py", source("beta", 6))
    for c in b_chunks:
        assert assert_hits_name_their_own_vectors(again, vector(c.text))[0].text == c.text
    again.close()
    third = IndexStore(directory)  # the rebuilt ANN was saved with its stamp: loaded as is next time
    assert not third.ann_rebuilt
    assert assert_hits_name_their_own_vectors(third, vector(b_chunks[0].text))[0].text == b_chunks[0].text
    third.close()


def test_a_reading_process_follows_the_writer_and_a_rebuilt_database(tmp_path):
    directory = tmp_path / "idx"
    writer, reader = IndexStore(directory), IndexStore(directory)  # two processes' stores: one lock
    assert writer.writable and not reader.writable
    a_chunks = put(writer, "a.py", source("alpha", 4))
    writer.save_ann()
    for c in a_chunks:  # the reader loads the writer's newer ANN file once its stamp matches
        assert assert_hits_name_their_own_vectors(reader, vector(c.text))[0].text == c.text
    writer.close()
    # The writer's next start finds the database damaged and starts afresh (what IndexStore does then):
    # the ids start over in another database, under the reader's feet.
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "vectors.hnsw", "vectors.hnsw.stamp"):
        (directory / name).unlink(missing_ok=True)
    writer = IndexStore(directory)
    b_chunks = put(writer, "b.py", source("beta", 4))
    time.sleep(ANN_RECHECK_S + 0.1)
    for c in a_chunks:
        assert all(h.path == "b.py" for h in assert_hits_name_their_own_vectors(reader, vector(c.text)))
    for c in b_chunks:  # no ANN file saved yet: rebuilt from the new database
        assert assert_hits_name_their_own_vectors(reader, vector(c.text))[0].text == c.text
    reader.close()
    writer.close()


def test_every_change_to_chunks_or_vectors_moves_the_generation(tmp_path):
    store = IndexStore(tmp_path / "idx")
    g0 = store.generation()
    put(store, "a.py", source("alpha", 2))
    g1 = store.generation()
    assert g1 > g0
    store.remove_file("missing.py")  # nothing removed: nothing to stamp
    store.commit()
    assert store.generation() == g1
    store.ann_remove(store.remove_file("a.py"))
    store.commit()
    g2 = store.generation()
    assert g2 > g1
    store.close()  # the ANN is saved stamped with the generation it matches
    assert (tmp_path / "idx" / "vectors.hnsw.stamp").read_text().split()[1] == str(g2)


def test_an_index_of_the_previous_schema_is_rebuilt(tmp_path):
    directory = tmp_path / "idx"
    directory.mkdir()
    db = sqlite3.connect(directory / "index.sqlite")
    db.executescript("""
        CREATE TABLE files(path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, hash TEXT);
        CREATE TABLE chunks(id INTEGER PRIMARY KEY, path TEXT NOT NULL, start_line INTEGER, end_line INTEGER,
                            symbol TEXT, kind TEXT, text TEXT, hash TEXT);
        CREATE VIRTUAL TABLE chunks_fts USING fts5(words, tokenize='unicode61');
        CREATE TABLE vectors(hash TEXT PRIMARY KEY, vec BLOB NOT NULL);
        INSERT INTO files VALUES ('old.py', 1, 1, 'x');
        PRAGMA user_version=1;
    """)
    db.close()
    (directory / "vectors.hnsw").write_bytes(b"an old ANN file")
    store = IndexStore(directory)
    assert store.file_state() == {}
    sql = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks'").fetchone()[0]
    assert "AUTOINCREMENT" in sql
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


KILLED_WORKSPACE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from index.workspace import IndexOptions, WorkspaceIndex
root = Path(sys.argv[1])
idx = WorkspaceIndex([root], IndexOptions(embeddings=False))
idx.start().result()
(root / "src" / "geometry.js").unlink()
idx.update_file(root / "src" / "geometry.js").result()   # the newest ids are freed ...
(root / "src" / "copy.py").write_text((root / "src" / "config.py").read_text())
idx.update_file(root / "src" / "copy.py").result()       # ... and taken by chunks whose vectors exist
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.model
def test_dense_search_after_a_kill_names_the_chunks_it_scores(cache, tmp_path):
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "config.py").write_text(CONFIG_PY)
    (root / "src" / "geometry.js").write_text(GEOMETRY_JS)
    idx = WorkspaceIndex([root], IndexOptions(embeddings=True), embed_threads=2)
    idx.start().result()
    deadline = time.monotonic() + 180
    while idx.status()["embedded"] < idx.status()["chunks"] and not idx.embedding_error:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert idx.embedding_error is None, idx.embedding_error
    idx.close()
    proc = subprocess.run([sys.executable, "-c", KILLED_WORKSPACE, str(root), str(ROOT)],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    again = WorkspaceIndex([root], IndexOptions(embeddings=True), embed_threads=2)
    again.start().result()
    while again.embed_query("x") is None and not again.embedding_error:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    query = "area of a circle from its radius"
    q = again.embed_query(query)
    hits = again.search(query, k=10, mode="dense")
    assert hits and all(h.path != "src/geometry.js" for h in hits)
    for h in hits:  # the score is the similarity to the text of the chunk returned, not to a deleted one's
        assert h.score == pytest.approx(float(q @ again.embed_query(h.text)), abs=1e-3), (h.path, h.symbol)
    assert store_dir(root).joinpath("vectors.hnsw.stamp").is_file()
    again.close()
