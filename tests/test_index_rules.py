"""One rule for what the index may read: discovery and every update (didChange, didSave,
watched files) agree, on real files in temporary workspaces (issue #13, point 8)."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from index.rules import discover, is_secret
from index.workspace import IndexOptions, WorkspaceIndex

from .helpers import CONFIG_PY


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            (root / rel).write_bytes(data)
        else:
            (root / rel).write_text(data)


def code(word: str, filler: int = 0) -> str:
    """A file's text with one definition named ``word`` (a chunk of every language), and ``filler`` lines."""
    return f"def {word}():\n    return 1\n" + "x = 1\n" * filler


def found(idx: WorkspaceIndex, word: str) -> set[str]:
    """Paths whose indexed text holds ``word`` (one made-up word per file: nothing else matches it)."""
    return {r.path for r in idx.search(word, k=20, mode="lexical")}


@pytest.mark.parametrize("name", [
    ".env", ".ENV", ".env.local", "prod.env", ".envrc", ".git-credentials", "terraform.tfstate",
    "terraform.tfstate.backup", "Prod.TFSTATE", "service-account.json", "service-account-prod.json",
    "id_rsa", "ID_RSA.pub", "id_ed25519", "server.pem", "Server.PEM", "tls.key", ".netrc", ".pgpass",
    "credentials", "credentials.json", "Credentials.yml", "secrets.py", "Secrets.PY", ".npmrc", ".pypirc",
])
def test_secret_names_whatever_their_case(name):
    assert is_secret(name)


@pytest.mark.parametrize("name", ["config.py", "environment.py", "keys.py", "README.md", "service.json",
                                  "accounts.json", "tfstate.md", "pem.py"])
def test_ordinary_names_are_not_secret(name):
    assert not is_secret(name)


def test_discovery_takes_the_deepest_gitignore_and_never_follows_links_out_of_the_workspace(tmp_path):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    write(root, {"app.py": "x = 1\n", ".gitignore": "*.gen.py\n", "sub/.gitignore": "!keep.gen.py\n",
                 "sub/keep.gen.py": "x = 2\n", "sub/drop.gen.py": "x = 3\n", "other.gen.py": "x = 4\n",
                 ".ENV": "KEY=1\n", "ops/.envrc": "export TOKEN=1\n", "state/prod.tfstate": "{}\n"})
    write(outside, {"notes.py": "stolen = 1\n", "id_rsa": "key\n"})
    os.symlink(outside / "notes.py", root / "linked_out.py")        # a file outside every root
    os.symlink(outside, root / "outside_dir")                         # a folder outside
    os.symlink(root / ".ENV", root / "env_copy.txt")                  # inside, but a secret
    os.symlink(root / "app.py", root / "app_link.py")                 # inside, fine
    got = {rel for rel, _ in discover(root, IndexOptions())}
    assert got == {"app.py", ".gitignore", "sub/.gitignore", "sub/keep.gen.py", "app_link.py"}, got


def test_updates_apply_the_discovery_rule(cache, tmp_path):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    write(root, {"src/config.py": CONFIG_PY, "src/notes.py": code("wordnotes"),
                 ".gitignore": "*.log\nlogs/\n", "pkg/a.py": code("wordpkga"), "pkg/deep/b.py": code("wordpkgb")})
    write(outside, {"elsewhere.py": code("wordoutside")})
    idx = WorkspaceIndex([root], IndexOptions(embeddings=False, exclude=("private/",)))
    idx.start().result()
    assert found(idx, "wordnotes") == {"src/notes.py"}
    assert found(idx, "wordpkgb") == {"pkg/deep/b.py"}

    # Files that discovery would never take, reported by didChange (unsaved text) or didSave / watched files.
    cases = {
        "secrets.py": code("wordsecretspy"),                    # a secret name
        "Deploy/.ENV": code("wordenvupper"),                    # a secret name in capitals
        "debug.log": code("wordgitignoredlog"),                 # git-ignored by pattern
        "logs/today.txt": code("wordignoreddir"),               # in a git-ignored folder
        "private/plan.md": code("wordexcluded"),                # index.exclude
        "node_modules/m/index.py": code("wordnodemodules"),     # a default-excluded folder
        "big.py": code("wordbig", 100_000),                     # over max_file_size_kb
    }
    write(root, cases)
    os.symlink(outside / "elsewhere.py", root / "src" / "linked.py")  # a link out of the workspace
    for rel, text in cases.items():
        word = text.split()[1].split("(")[0]
        idx.update_file(root / rel, text).result()        # didChange: the editor's text
        assert found(idx, word) == set(), f"{rel} (didChange)"
        idx.update_file(root / rel).result()              # didSave / watched: from disk
        assert found(idx, word) == set(), f"{rel} (didSave)"
        assert not idx.indexable(root / rel) and not idx.indexable(root / rel, text), rel
    idx.update_file(root / "src" / "linked.py").result()
    idx.update_file(root / "src" / "linked.py", code("wordoutside")).result()
    assert found(idx, "wordoutside") == set()
    assert not idx.indexable(root / "src" / "linked.py")
    # Binary content, whatever the name.
    (root / "src" / "blob.py").write_bytes(code("wordbinary").encode() + b"\x00\x01")
    idx.update_file(root / "src" / "blob.py").result()
    assert found(idx, "wordbinary") == set() and not idx.indexable(root / "src" / "blob.py")

    # A file that stops being indexable leaves the index: ignored by an edited .gitignore ...
    (root / ".gitignore").write_text("*.log\nlogs/\nsrc/notes.py\n")
    idx.update_file(root / ".gitignore").result()
    assert found(idx, "wordnotes") == set() and not idx.indexable(root / "src" / "notes.py")
    idx.update_file(root / "src" / "notes.py", code("wordnotes", 1)).result()  # and edits do not bring it back
    assert found(idx, "wordnotes") == set()
    # ... and comes back when the .gitignore lets it.
    (root / ".gitignore").write_text("*.log\nlogs/\n")
    idx.update_file(root / ".gitignore").result()
    assert found(idx, "wordnotes") == {"src/notes.py"} and idx.indexable(root / "src" / "notes.py")
    # A deleted folder takes its files along (one watched-file event for the folder).
    shutil.rmtree(root / "pkg")
    idx.update_file(root / "pkg").result()
    assert found(idx, "wordpkga") == set() and found(idx, "wordpkgb") == set()
    # What stays indexable is still indexed, from any thread.
    assert found(idx, "expand home") >= {"src/config.py"}
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(idx.indexable, [root / "src" / "config.py", root / "secrets.py"] * 50))
    assert verdicts == [True, False] * 50
    idx.close()


def test_a_file_opened_outside_the_workspace_may_be_asked_about_but_not_its_secrets_nor_a_way_out(tmp_path):
    """Chat's rule for the file it is asked about (``Runtime.readable``): a library file opened by
    "go to definition" (outside every workspace folder) is sent with the rule applied to its own folder;
    a secret there is not; inside the workspace, a git-ignored file and a folder symlinked out stay refused."""
    from server.config import Settings
    from server.runtime import Runtime

    ws, lib = tmp_path / "ws", tmp_path / "site-packages" / "lib"
    write(ws, {"app.py": code("app"), ".gitignore": "build/\n", "build/gen.py": code("gen")})
    write(lib, {"core.py": code("core"), ".env": "API_KEY=sk-live-0123456789abcdef\n"})
    os.symlink(lib, ws / "vendored")
    runtime = Runtime([ws], Settings())
    assert runtime.readable(ws / "app.py")
    assert runtime.readable(lib / "core.py")
    assert not runtime.readable(lib / ".env")
    assert not runtime.readable(ws / "build" / "gen.py")
    assert not runtime.readable(ws / "vendored" / "core.py")
    assert Runtime([], Settings()).readable(lib / "core.py")
