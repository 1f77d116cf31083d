"""A sandbox for code the model wrote: bubblewrap, a clean environment, rlimits, a process group to kill.

What runs inside (generated tests and the code they import):

- sees no network (its own network namespace: only a loopback with nothing on it);
- sees only what it needs, read-only: the system's ``/usr``, ``/lib``, ``/etc``..., the
  Python installation that runs it, and the workspace; ``$HOME`` (``~/.ssh``, tokens,
  other projects) and Unix sockets elsewhere (docker.sock, the SSH agent) are not there;
- can write only a private temporary folder (its ``$HOME`` and ``/tmp``);
- gets a clean environment (no API keys, no ``SSH_AUTH_SOCK``);
- is limited in CPU seconds, memory, file size and processes (rlimits, and a pids cgroup
  where this process may create one), in its own PID namespace and session, and is killed
  with everything it started on timeout or cancel.

The sandbox is bubblewrap (``bwrap``, Debian/Ubuntu package ``bubblewrap``), which needs
unprivileged user namespaces. Where it is missing or cannot start, nothing runs: the
caller says why and how to enable it (setting ``tests.sandbox``). Linux only; elsewhere
(macOS, Windows) there is no sandbox and tests are not run. Blocks: call from a worker thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CPU_SECONDS = 60            # CPU time of the sandboxed process tree's members, each
MEMORY_BYTES = 2 * 2**30    # address space per process
FILE_BYTES = 64 * 2**20     # largest file it may write
PROCESSES = 64              # processes and threads it may have at once
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
                "it needs unprivileged user namespaces), or set tests.sandbox to \"none\" to run them without "
                "isolation (not recommended)")


@dataclass(frozen=True)
class SandboxRun:
    """What a sandboxed command did: exit code (None when killed), output, why it stopped early."""

    returncode: int | None
    output: str
    stopped: str = ""   # "", "timeout" or "cancelled"


_AVAILABLE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") when bubblewrap runs here; else (False, why). Checked once per process."""
    global _AVAILABLE
    if _AVAILABLE is None:
        bwrap = shutil.which("bwrap")
        if not sys.platform.startswith("linux"):
            _AVAILABLE = (False, f"no sandbox exists for {sys.platform} yet")
        elif bwrap is None:
            _AVAILABLE = (False, "bubblewrap (bwrap) is not installed")
        else:
            try:
                probe = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                                       capture_output=True, text=True, timeout=10)
                _AVAILABLE = (True, "") if probe.returncode == 0 else (
                    False, f"bubblewrap cannot start here ({probe.stderr.strip()[:200]}); user namespaces may be off")
            except (OSError, subprocess.TimeoutExpired) as e:
                _AVAILABLE = (False, f"bubblewrap cannot start here ({e})")
    return _AVAILABLE


def interpreter_paths(python: str) -> list[str]:
    """Folders an interpreter needs to run (its prefixes and import path), read by running it isolated."""
    out = subprocess.run([python, "-I", "-c", "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, "
                          "sys.exec_prefix, *sys.path]))"], capture_output=True, text=True, timeout=30)
    paths = json.loads(out.stdout) if out.returncode == 0 else []
    return [p for p in paths if p and os.path.isdir(p)] + [str(Path(python).resolve().parent)]


def _limits(group: Path | None) -> None:
    """Session, cgroup and rlimits for the sandboxed tree (runs in the child between fork and exec)."""
    import resource
    os.setsid()
    if group is not None:
        try:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            pass
    for which, value in ((resource.RLIMIT_CPU, CPU_SECONDS), (resource.RLIMIT_AS, MEMORY_BYTES),
                         (resource.RLIMIT_FSIZE, FILE_BYTES), (resource.RLIMIT_NPROC, PROCESSES),
                         (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _pids_cgroup() -> Path | None:
    """A fresh pids cgroup limited to PROCESSES, where this process may create one (root, delegation)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
            continue
        group = base / f"deepseek-tests-{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(PROCESSES))
            return group
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def run(cmd: list[str], *, workspace: Path, scratch: Path, python_paths: list[str], env: dict[str, str],
        timeout_s: float, cancel: threading.Event | None = None) -> SandboxRun:
    """Run ``cmd`` in the sandbox (see the module docstring). Blocks until it ends, times out or is cancelled.

    Args:
        workspace: mounted read-only at its own path.
        scratch: mounted read-write at its own path; also ``$HOME`` and ``$TMPDIR``.
        python_paths: folders the interpreter needs (read-only).
        env: the whole environment inside (nothing else is inherited).

    Raises:
        RuntimeError: bubblewrap is not available (see :func:`available`).
    """
    ok, why = available()
    if not ok:
        raise RuntimeError(why)
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    bound: set[str] = set()
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
            bound.add(d)
    for p in sorted(set(python_paths), key=len):
        if not any(p == b or p.startswith(b.rstrip("/") + "/") for b in bound):
            args += ["--ro-bind", p, p]
            bound.add(p)
    args += ["--ro-bind", str(workspace), str(workspace), "--bind", str(scratch), str(scratch),
             "--chdir", str(scratch), "--clearenv"]
    for k, v in {**env, "HOME": str(scratch), "TMPDIR": str(scratch)}.items():
        args += ["--setenv", k, v]
    group = _pids_cgroup()
    return _supervise(args + ["--", *cmd], group, timeout_s, cancel)


def run_unsandboxed(cmd: list[str], *, scratch: Path, env: dict[str, str], timeout_s: float,
                    cancel: threading.Event | None = None) -> SandboxRun:
    """``tests.sandbox: none``: no isolation of files or network, but the clean environment, the
    limits and the kill of the whole process group still apply. Blocks."""
    return _supervise(cmd, _pids_cgroup(), timeout_s, cancel, cwd=scratch,
                      env={**env, "HOME": str(scratch), "TMPDIR": str(scratch)})


def _supervise(cmd: list[str], group: Path | None, timeout_s: float, cancel: threading.Event | None,
               cwd: Path | None = None, env: dict[str, str] | None = None) -> SandboxRun:
    """Start ``cmd`` in its own session under the limits; wait, killing the session on timeout or cancel."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: _limits(group), cwd=cwd, env=env)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(65536), b"")),
                              name="sandbox-output", daemon=True)
    reader.start()
    deadline, stopped = time.monotonic() + timeout_s, ""
    while proc.poll() is None:
        if cancel is not None and cancel.is_set():
            stopped = "cancelled"
        elif time.monotonic() > deadline:
            stopped = "timeout"
        if stopped:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole session: bwrap and everything under it
            except ProcessLookupError:
                pass
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=5)
    if group is not None:  # whatever it left running (a daemon, a process in another session) goes too
        for _ in range(50):
            try:
                pids = [int(x) for x in (group / "cgroup.procs").read_text().split()]
            except OSError:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.02)
    output = b"".join(chunks).decode("utf-8", "replace")
    return SandboxRun(None if stopped else proc.returncode, output, stopped)
