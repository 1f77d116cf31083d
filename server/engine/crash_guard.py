"""Crash markers: a load that killed this process is not tried again in a loop.

A :class:`CrashGuard` writes ``<cache dir>/probe/markers/<key>-<pid>.json`` before an
in-process load and removes it after the first :data:`GUARDED_DECODES` decodes. A marker
left by a dead process means the server died there (:func:`dead_markers`); ``faulthandler``
writes to ``<pid>.fault`` beside it while a marker is armed, so a native crash leaves its
report there and a process killed from outside (which leaves none) is told apart. See
:mod:`server.engine.loading` for the whole procedure.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .load_configs import probe_dir

log = logging.getLogger("server.loading")

# Decodes (generations or embedding calls) after which an in-process load is trusted.
GUARDED_DECODES = 3


def _process_started(pid: int) -> float | None:
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


_ARMED: set["CrashGuard"] = set()  # guards of this process whose marker is on disk
_fault: tuple[Path, Any] | None = None  # this process's fault file while a guard is armed, and its handle


def _fault_file() -> str | None:
    """Point ``faulthandler`` at this process's fault file (created once); its path, or None."""
    global _fault
    if _fault is None:
        import faulthandler
        path = probe_dir() / "markers" / f"{os.getpid()}.fault"
        try:
            fh = open(path, "w", encoding="utf-8")
        except OSError:
            return None
        faulthandler.enable(file=fh, all_threads=True)
        _fault = (path, fh)
    return str(_fault[0])


def _fault_file_done() -> None:
    """No guard armed any more: ``faulthandler`` back to the log file (or stderr); the fault file goes."""
    global _fault
    if _fault is None or _ARMED:
        return
    path, fh = _fault
    _fault = None
    import faulthandler

    from .. import logs
    if logs._crash_log is not None:
        faulthandler.enable(file=logs._crash_log, all_threads=True)
    else:
        faulthandler.enable()
    fh.close()
    path.unlink(missing_ok=True)


def disarm_all() -> None:
    """Remove this process's crash markers: it is ending normally (atexit, SIGTERM), not crashing."""
    for guard in list(_ARMED):
        guard.disarm()


atexit.register(disarm_all)


class CrashGuard:
    """The crash marker of one in-process load: armed before the load, removed once trusted.

    Thread-safety: ``decoded`` and ``disarm`` may be called from any thread.
    """

    def __init__(self, key: str, config: str, limit: int = GUARDED_DECODES):
        self.path = probe_dir() / "markers" / f"{key}-{os.getpid()}.json"
        self.config = config
        self._left = limit
        self._lock = threading.Lock()
        self.armed = False

    def arm(self, stage: str) -> None:
        """Write (or rewrite) the marker: this process is now ``stage`` with ``config``."""
        record = {"pid": os.getpid(), "started": _process_started(os.getpid()), "config": self.config,
                  "stage": stage, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            record["fault"] = _fault_file()
            self.path.write_text(json.dumps(record), encoding="utf-8")
            self.armed = True
            _ARMED.add(self)
        except OSError as e:  # a read-only cache only loses the protection against a crash loop
            log.warning("cannot write the crash marker %s: %s", self.path, e)

    def decoded(self) -> None:
        """One decode survived; after :data:`GUARDED_DECODES` of them the marker goes."""
        if not self.armed:
            return
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.disarm()

    def disarm(self) -> None:
        self.armed = False
        _ARMED.discard(self)
        self.path.unlink(missing_ok=True)
        _fault_file_done()


def dead_markers(key: str) -> dict[str, str]:
    """Configurations that a now-dead process died in (its marker is still there); removes those markers."""
    died: dict[str, str] = {}
    faults: set[Path] = set()
    for marker in (probe_dir() / "markers").glob(f"{key}-*.json"):
        try:
            rec = json.loads(marker.read_text(encoding="utf-8"))
            pid, config = int(rec["pid"]), str(rec["config"])
        except (OSError, ValueError, KeyError, TypeError):
            marker.unlink(missing_ok=True)
            continue
        started = _process_started(pid)
        alive = started is not None and (rec.get("started") is None or abs(started - rec["started"]) < 1)
        if alive:
            continue  # another server is loading this model right now
        marker.unlink(missing_ok=True)
        if rec.get("fault"):  # faulthandler's report of a native crash (markers written before it had none)
            faults.add(Path(rec["fault"]))
            try:
                report = Path(rec["fault"]).read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                report = ""
            if not report:
                log.warning("a server process (pid %d) ended while %s the model with load configuration %s, without "
                            "a crash report: it was killed (editor, out of memory, a test); the configuration is kept",
                            pid, rec.get("stage", "loading"), config)
                continue
            where = keep_in_log(f"a server process (pid {pid}) crashed while {rec.get('stage', 'loading')} the "
                                 f"model with load configuration {config}:\n{report}")
        else:
            where = None
        died[config] = f"a server process (pid {pid}) died while {rec.get('stage', 'loading')} ({rec.get('at', '?')})"
        log.warning("the last start died while %s the model with load configuration %s; trying another%s",
                    rec.get("stage", "loading"), config, f" (report in {where})" if where else "")
    for fault in faults:
        fault.unlink(missing_ok=True)
    return died


def keep_in_log(report: str) -> str | None:
    """Append ``report`` to the log file (not to stderr); its path, or None when it cannot be written."""
    from ..logs import log_file, redact
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO {log.name}: {redact(report)}\n")
    except OSError:
        return None
    return str(path)


def segfault() -> None:
    """Die the way a native fault does: a real invalid memory read (SIGSEGV). Test switches only.

    faulthandler reports it as it reports a real one: on stderr in a probe child (which the
    parent keeps in the log file), in the fault file while a guard is armed."""
    import ctypes
    ctypes.string_at(0)
