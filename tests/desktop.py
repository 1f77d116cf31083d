"""Run a command as a person at a desk runs this server: not root, with many processes of their own.

The project's machines run everything as root with a handful of processes. A desktop user is
not root (root is exempt from ``RLIMIT_NPROC`` and from most permission checks) and has
hundreds of processes and threads, all counted against their own limits. :func:`as_desktop_user`
wraps a command so that it runs like that:

- as root (CI, the project's machines): in a private mount namespace, as the unprivileged
  user ``nobody`` (uid 65534) with no capabilities. Folders the user cannot reach because a
  parent is private (``/root/.pyenv`` with ``/root`` at 0700) are shown to it in that
  namespace only: a tmpfs over the private parent, with the needed folders bound back in.
  Nothing on the machine changes;
- as any other user: as that user, unchanged;

and in both cases with :data:`DESKTOP_PROCESSES` other processes of that user alive (sleepers,
ended with the command).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

DESKTOP_PROCESSES = 120  # more than the sandbox's own process limit (64): as on any desktop
UNPRIVILEGED_UID = 65534  # nobody


def why_not() -> str | None:
    """Why commands cannot run as a desktop user here, or None when they can."""
    if sys.platform != "linux":
        return f"no unprivileged-user runs on {sys.platform}"
    if os.geteuid() != 0:
        return None  # already a normal user: run as is
    missing = [tool for tool in ("unshare", "setpriv", "mount") if shutil.which(tool) is None]
    if missing:
        return f"the suite runs as root and cannot switch to a normal user: {', '.join(missing)} missing (util-linux)"
    return None


def private_parent(path: Path) -> Path | None:
    """The closest ancestor of ``path`` that others cannot enter (no ``o+x``), or None."""
    for parent in reversed(path.parents):
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return parent
        except OSError:
            return None
    return None


def user_folder(prefix: str) -> Path:
    """A new folder the desktop user owns (for its HOME, caches, pytest's temporary folders)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(folder, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    return folder


def as_desktop_user(cmd: list[str], visible: list[Path] = ()) -> list[str]:
    """``cmd`` run as a desktop user (see the module docstring).

    Args:
        cmd: the command.
        visible: folders the command needs besides the repository and this interpreter
            (the model files); those behind a private parent are bound into view.
    """
    needed = [Path(__file__).resolve().parents[1], Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
              *(Path(p).resolve() for p in visible)]
    sleepers = (f"pids=; for i in $(seq {DESKTOP_PROCESSES}); do sleep 900 </dev/null >/dev/null 2>&1 & "
                'pids="$pids $!"; done; trap \'kill $pids 2>/dev/null\' EXIT INT TERM; "$@"')
    inner = ["sh", "-c", sleepers, "desktop"]
    if os.geteuid() != 0:
        return [*inner, *cmd]
    setup = ["set -e"]
    stage = tempfile.mkdtemp(prefix="desktop-stage-")
    for i, parent in enumerate(dict.fromkeys(p for p in map(private_parent, needed) if p is not None)):
        real = f"{stage}/{i}"
        setup += [f"mkdir -p {real}", f"mount --bind {shlex.quote(str(parent))} {real}",
                  f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(parent))}"]
        for path in needed:
            if path.is_relative_to(parent) and path != parent:
                rel = path.relative_to(parent)
                setup += [f"mkdir -p {shlex.quote(str(path))}",
                          f"mount --bind {real}/{shlex.quote(str(rel))} {shlex.quote(str(path))}"]
    switch = ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups",
              "--inh-caps=-all", "--bounding-set=-all", "--"]
    script = "\n".join(setup) + '\nexec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "desktop",
            *switch, *inner, *cmd]
