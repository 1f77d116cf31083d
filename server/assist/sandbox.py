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

The rlimits are set *inside* the sandbox, by a few lines of this server's own interpreter
(``-I -S``: no site, no environment) that bubblewrap starts once the namespaces exist and
that then exec the command. Set before bubblewrap, ``RLIMIT_NPROC`` would count every
process and thread of the user (a desktop has hundreds; root is exempt) and bubblewrap
could not create its namespaces; inside a new user namespace the kernel counts only the
sandbox's own processes. The same lines print a start line first, so a sandbox that never
started (bubblewrap's own error) is told apart from a command that failed.

Nothing the sandboxed code leaves behind is trusted: :func:`read_left_file` opens a file of
the scratch folder without following links or blocking, regular files only, size-capped, and
the command's output is kept as a bounded head and tail (the rest is read and dropped).

The sandbox is bubblewrap (``bwrap``, Debian/Ubuntu package ``bubblewrap``), which needs
unprivileged user namespaces. Where it is missing or cannot start, nothing runs: the
caller says why and how to enable it (setting ``tests.sandbox``). Linux only; elsewhere
(macOS, Windows) there is no sandbox and tests are not run. Blocks: call from a worker thread.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import stat
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
PROCESSES = 64              # processes and threads it may have at once (counted inside the sandbox)
OUTPUT_HEAD = 64 * 2**10    # bytes of output kept from the start ...
OUTPUT_TAIL = 256 * 2**10   # ... and from the end; the rest is read and dropped
STARTED = b"\x00deepseek-sandbox-started\n"  # the limits wrapper's first output: the sandbox is up
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
                "it needs unprivileged user namespaces), or set tests.sandbox to \"none\" to run them without "
                "isolation (not recommended)")


@dataclass(frozen=True)
class SandboxRun:
    """What a sandboxed command did: exit code (None when killed), output, why it stopped early.

    ``started`` is False when the command never ran: the sandbox could not be set up
    (``output`` then holds bubblewrap's own error).
    """

    returncode: int | None
    output: str
    stopped: str = ""   # "", "timeout" or "cancelled"
    started: bool = True


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


def _is_python_prefix(folder: Path) -> bool:
    """Whether ``folder`` is a Python installation's prefix (``lib/pythonX.Y/os.py``), read, never run."""
    return any(folder.glob("lib/python3*/os.py")) or any(folder.glob("lib64/python3*/os.py"))


def interpreter_paths(python: str) -> list[str]:
    """Folders an interpreter needs to run inside the sandbox, found without running it.

    This server's own interpreter: its prefixes and import path, from this process. Any other
    (a workspace's ``.venv/bin/python``, which a cloned repository controls): its virtual
    environment's folder and the base installation that ``pyvenv.cfg``'s ``home`` (and the
    interpreter's symlink) point to, each only when it is a Python installation's prefix
    (``lib/pythonX.Y/os.py``), so a crafted ``pyvenv.cfg`` cannot mount ``~/.ssh``.
    """
    if python == sys.executable:
        paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
        return [p for p in dict.fromkeys(paths) if p and os.path.isdir(p)] + [str(Path(python).resolve().parent)]
    exe = Path(python)
    venv = exe.parent.parent
    candidates = [venv]
    home = pyvenv_home(venv)
    if home is not None:
        candidates.append(home.parent)
    try:
        candidates.append(exe.resolve().parent.parent)  # reads symlinks; runs nothing
    except OSError:
        pass
    return [str(c) for c in dict.fromkeys(candidates) if c.is_dir() and _is_python_prefix(c)]


def pyvenv_home(venv: Path) -> Path | None:
    """``home`` of a virtual environment's ``pyvenv.cfg`` (the base interpreter's folder), read as text."""
    try:
        with open(venv / "pyvenv.cfg", encoding="utf-8", errors="replace") as f:
            text = f.read(64 * 1024)
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "home" and value.strip().startswith("/"):
            return Path(value.strip())
    return None


# Runs inside the sandbox, in this server's interpreter with -I -S: set the limits, say the
# sandbox is up, become the command. argv: the limits as "resource=value" pairs, "--", the command.
_LIMITS_WRAPPER = """
import os, resource, sys
args = sys.argv[1:]
cut = args.index("--")
for pair in args[:cut]:
    name, value = pair.split("=")
    try:
        resource.setrlimit(getattr(resource, name), (int(value), int(value)))
    except (ValueError, OSError):
        pass
os.write(1, %r)
try:
    os.execvp(args[cut + 1], args[cut + 1:])
except OSError as e:
    os.write(2, ("cannot run %%s: %%s\\n" %% (args[cut + 1], e)).encode())
    os._exit(127)
""" % STARTED


def limited(cmd: list[str]) -> list[str]:
    """``cmd`` behind the limits wrapper: CPU, memory, file size, core dumps and processes limited."""
    limits = {"RLIMIT_CPU": CPU_SECONDS, "RLIMIT_AS": MEMORY_BYTES, "RLIMIT_FSIZE": FILE_BYTES,
              "RLIMIT_NPROC": PROCESSES, "RLIMIT_CORE": 0}
    return [str(Path(sys.executable).resolve()), "-I", "-S", "-c", _LIMITS_WRAPPER,
            *(f"{k}={v}" for k, v in limits.items()), "--", *cmd]


def _session(group: Path | None) -> None:
    """A session of its own, in the pids cgroup when there is one (runs in the child between fork and exec)."""
    os.setsid()
    if group is not None:
        try:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            pass


def read_left_file(path: Path, cap: int) -> str | None:
    """A file the sandboxed code could have written or replaced, read without trusting it.

    Opened without following a symlink and without blocking (a FIFO), read only when it is a
    regular file, and at most ``cap`` bytes. Returns None when it is missing, is anything
    else than a regular file, or is larger than ``cap``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        data = os.read(fd, cap + 1)
        return None if len(data) > cap else data.decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


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
    for p in interpreter_paths(sys.executable):  # the limits wrapper's interpreter
        if not any(p == b or p.startswith(b.rstrip("/") + "/") for b in bound):
            args += ["--ro-bind", p, p]
            bound.add(p)
    args += ["--ro-bind", str(workspace), str(workspace), "--bind", str(scratch), str(scratch),
             "--chdir", str(scratch), "--clearenv"]
    for k, v in {**env, "HOME": str(scratch), "TMPDIR": str(scratch)}.items():
        args += ["--setenv", k, v]
    return _supervise(args + ["--", *limited(cmd)], _pids_cgroup(), timeout_s, cancel)


def run_unsandboxed(cmd: list[str], *, scratch: Path, env: dict[str, str], timeout_s: float,
                    cancel: threading.Event | None = None) -> SandboxRun:
    """``tests.sandbox: none``: no isolation of files or network, but the clean environment, the
    limits and the kill of the whole process group still apply. Blocks."""
    return _supervise(limited(cmd), _pids_cgroup(), timeout_s, cancel, cwd=scratch,
                      env={**env, "HOME": str(scratch), "TMPDIR": str(scratch)})


def _supervise(cmd: list[str], group: Path | None, timeout_s: float, cancel: threading.Event | None,
               cwd: Path | None = None, env: dict[str, str] | None = None) -> SandboxRun:
    """Start ``cmd`` in its own session under the limits; wait, killing the session on timeout or cancel."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: _session(group), cwd=cwd, env=env)
    output = BoundedOutput()
    reader = threading.Thread(target=output.drain, args=(proc.stdout,), name="sandbox-output", daemon=True)
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
    before, started, after = output.text().partition(STARTED.decode())
    if not started:  # the wrapper never ran: bubblewrap could not set the sandbox up
        return SandboxRun(None if stopped else proc.returncode, before.strip(), stopped, started=False)
    return SandboxRun(None if stopped else proc.returncode, after, stopped)


class BoundedOutput:
    """A command's output, of any size, kept as its first OUTPUT_HEAD and last OUTPUT_TAIL bytes."""

    def __init__(self, head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL) -> None:
        self._head, self._tail_max = bytearray(), tail
        self._head_max = head
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_size = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self._head_max - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size - len(self._tail[0]) >= self._tail_max:
            self._tail_size -= len(self._tail[0])
            self.dropped += len(self._tail.popleft())

    def drain(self, stream) -> None:
        """Read ``stream`` to its end (blocks)."""
        for data in iter(lambda: stream.read(65536), b""):
            self.add(data)

    def text(self) -> str:
        tail = b"".join(self._tail)
        if len(tail) > self._tail_max:
            self.dropped += len(tail) - self._tail_max
            tail = tail[-self._tail_max:]
            self._tail = collections.deque([tail])
            self._tail_size = len(tail)
        cut = f"\n[... {self.dropped:,} bytes of output left out ...]\n".encode() if self.dropped else b""
        return (bytes(self._head) + cut + tail).decode("utf-8", "replace")
