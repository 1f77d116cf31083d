"""The index and the assistant's database are private: folders 0700, files 0600 (SQLite's
``-wal`` and ``-shm`` too), whatever the umask, checked with ``os.stat`` on the files the real
stores create; and folders or files left wider by an older version are tightened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from index.chunking import chunk_file
from index.store import IndexStore
from index.workspace import IndexOptions, WorkspaceIndex, store_dir
from server.assist.store import AssistStore

from .helpers import CONFIG_PY


@pytest.fixture
def open_umask():
    """The usual umask of a desktop session (022: files 0644, folders 0755 unless asked otherwise)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def modes(folder: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in folder.iterdir()}


def test_the_index_store_is_private(tmp_path, open_umask):
    folder = tmp_path / "index" / "ws-0123"
    store = IndexStore(folder)
    store.replace_file("src/config.py", 1, len(CONFIG_PY), "h", chunk_file("src/config.py", CONFIG_PY))
    store.commit()
    store.add_vectors([("h1", np.ones(384, dtype=np.float32))])
    store.save_ann()
    files = modes(folder)
    assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "writer.lock", "vectors.hnsw",
            "vectors.hnsw.stamp"} <= set(files), files  # the database is open: its WAL files exist
    assert mode(folder) == 0o700
    assert files == {name: 0o600 for name in files}, {n: oct(m) for n, m in files.items()}
    store.close()


def test_an_older_wider_index_is_tightened_when_opened(tmp_path, open_umask):
    folder = tmp_path / "ws-0123"
    IndexStore(folder).close()
    os.chmod(folder, 0o755)
    for p in folder.iterdir():
        os.chmod(p, 0o644)
    store = IndexStore(folder)
    assert mode(folder) == 0o700 and all(m == 0o600 for m in modes(folder).values()), modes(folder)
    store.close()


def test_the_workspace_index_folders_are_private(cache, workspace, open_umask):
    index = WorkspaceIndex([workspace], IndexOptions(embeddings=False))
    index.start().result(timeout=60)
    try:
        folder = store_dir(workspace)
        assert mode(folder.parent) == 0o700 and mode(folder) == 0o700  # .../deepseek-lsp/index/<workspace>
        assert all(m == 0o600 for m in modes(folder).values()), modes(folder)
    finally:
        index.close()


def test_the_assistant_database_is_private(tmp_path, monkeypatch, open_umask):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    store = AssistStore()
    sid = store.new_session("a question about the code")
    store.add_message(sid, "user", "what does read_config do?")
    folder = store.path.parent
    files = modes(folder)
    assert {"assistant.sqlite", "assistant.sqlite-wal", "assistant.sqlite-shm"} <= set(files), files
    assert mode(folder) == 0o700
    assert files == {name: 0o600 for name in files}, {n: oct(m) for n, m in files.items()}
    store.db.close()
    os.chmod(folder, 0o755)
    os.chmod(store.path, 0o644)
    again = AssistStore()
    assert mode(folder) == 0o700 and mode(again.path) == 0o600
    assert [m.text for m in again.messages(sid)] == ["what does read_config do?"]
    again.db.close()
