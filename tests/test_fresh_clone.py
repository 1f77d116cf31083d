"""README's test command on a fresh clone with nothing beside it: every test module collects.

The project's own machines have ``../shared`` beside each checkout; a user's clone does not.
The repository's files (tracked and not ignored, as ``git clone`` would give them plus this
work tree's new files) are copied into an empty folder, and pytest collects the suite there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_copy_with_nothing_beside_it_collects_every_test(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (nothing tells which files a clone has)")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    clone = tmp_path / "alone" / "deepseek-lsp"
    for rel in filter(None, listed):
        source = ROOT / rel
        if source.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / rel)
    assert not (clone.parent.parent / "shared").exists()
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                               cwd=clone, capture_output=True, text=True, timeout=600)
    tail = collected.stdout[-3000:] + collected.stderr[-2000:]
    assert collected.returncode == 0, tail
    assert " error" not in collected.stdout.splitlines()[-1], tail
    assert "tests/test_e2e_deepseek.py::" in collected.stdout, tail
