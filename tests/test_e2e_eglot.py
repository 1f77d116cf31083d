"""End to end: Emacs's eglot, a client nobody here wrote, completes with the textDocument/completion fallback.

eglot (like Helix and Zed) has no inline completion: it asks ``textDocument/completion`` and
keeps only the items whose filterText (or label) begins with the word before the cursor. Real
Emacs runs in batch mode (tests/fixtures/eglot_complete.el): it opens a held-out file, empties
a line, types ``return s`` into the buffer (eglot sends incremental didChange), lists eglot's
own completion-at-point candidates and inserts the first. The server runs the real default model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import SOURCE
from .prereqs import APT_INSTALL

pytestmark = pytest.mark.model

DRIVER = Path(__file__).with_name("fixtures") / "eglot_complete.el"
NEEDS = f"needs Emacs with eglot (Debian: emacs-nox elpa-eglot): {APT_INSTALL}"
LINE = '        return self._user_media_dir("XDG_VIDEOS_DIR", "~/Videos")'  # emptied, then typed again
TYPED = "return s"


def _require_eglot() -> str:
    """The emacs executable; skip (naming the Debian packages) when Emacs or its eglot is missing."""
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.skip(NEEDS)
    load = ("(progn (dolist (d (file-expand-wildcards \"/usr/share/emacs/site-lisp/elpa/*\"))"
            " (add-to-list 'load-path d t)) (require 'eglot))")
    try:
        found = subprocess.run([emacs, "--batch", "-Q", "--eval", load], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"emacs does not start ({e}); {NEEDS}")
    if found.returncode != 0:
        pytest.skip(f"eglot does not load ({found.stderr.strip()[-200:]}); {NEEDS}")
    return emacs


def test_eglot_completion_at_point_offers_the_suggestion_for_the_typed_word(tmp_path, default_model_path):
    emacs = _require_eglot()
    held_out = tmp_path / "held_out.py"
    held_out.write_text(SOURCE.read_text())
    line = SOURCE.read_text().split("\n").index(LINE) + 1
    out = tmp_path / "result.json"
    env = dict(os.environ, DEEPSEEK_PYTHON=sys.executable, DEEPSEEK_FILE=str(held_out), DEEPSEEK_LINE=str(line),
               DEEPSEEK_TYPED=TYPED, DEEPSEEK_OUT=str(out))
    run = subprocess.run([emacs, "--batch", "-Q", "-l", str(DRIVER)], cwd=Path(__file__).resolve().parents[1],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), f"emacs wrote no result (exit {run.returncode}): {run.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, f"{result['error']}\n{run.stderr[-3000:]}"

    word = TYPED.split()[-1]
    assert result["probe"] == word  # eglot completes the symbol before the cursor
    suggestion = result["inline"]
    assert suggestion, "the server suggested nothing here: the test cannot check the fallback"
    assert result["candidates"], f"eglot kept no candidate for {word!r}: {run.stderr[-3000:]}"
    assert all(c.startswith(word) for c in result["candidates"]), result["candidates"]
    before, point = result["before"], result["point"]
    assert before[:point].endswith("        " + TYPED)
    # The first candidate inserted: the typed word followed by the server's suggestion, nothing lost or doubled.
    assert result["after"] == before[:point] + suggestion + before[point:]
