"""What the tests need from outside pip, checked before a test starts, with the command that installs it.

README.md names the same packages ("Set up"); a test whose prerequisites are missing is
skipped with the install command in its reason, instead of failing half-way through a
build. It fails only when its prerequisites are there and the product is wrong.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Debian packages for the whole suite, as README.md gives them (one copy-paste line).
APT_PACKAGES = "chromium ripgrep libkrb5-dev build-essential python3 bubblewrap emacs-nox elpa-eglot"
APT_INSTALL = f"apt-get install {APT_PACKAGES}"
NODE_INSTALL = "Node.js 20 with npm (Debian: apt-get install nodejs from NodeSource, or https://nodejs.org)"


def _node_major() -> int | None:
    import subprocess
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def require_node() -> None:
    """Skip unless Node.js 20+ and npm are on PATH (the VS Code extension's build and tests)."""
    major = _node_major()
    if major is None or shutil.which("npm") is None:
        pytest.skip(f"needs {NODE_INSTALL}")
    if major < 20:
        pytest.skip(f"needs Node.js 20 or newer (found {major}): {NODE_INSTALL}")


def require_real_vscode(code_server_installed: bool) -> None:
    """Skip unless what the real-VS Code test needs is here.

    Always: Chromium and ripgrep. To install code-server from npm (first run only): the
    headers and tools its native modules build with (kerberos needs gssapi/gssapi.h from
    libkrb5-dev; node-gyp needs a C++ compiler, make and python3).
    """
    require_node()
    missing = []
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        missing.append("chromium")
    if not shutil.which("rg"):
        missing.append("ripgrep")
    if not code_server_installed:
        if not Path("/usr/include/gssapi/gssapi.h").exists():
            missing.append("libkrb5-dev (gssapi/gssapi.h, for code-server's kerberos module)")
        if not (shutil.which("c++") or shutil.which("g++")) or not shutil.which("make"):
            missing.append("build-essential (a C++ compiler and make, for code-server's native modules)")
        if not shutil.which("python3"):
            missing.append("python3 (node-gyp)")
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: {APT_INSTALL}")


def require_chromium() -> None:
    """Skip unless Node.js 20+ and Chromium are here (the page's browser test drives Chromium with playwright-core)."""
    require_node()
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        pytest.skip(f"needs chromium (Debian's package): {APT_INSTALL}")
