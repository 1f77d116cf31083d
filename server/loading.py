"""Loading llama.cpp models without trusting them: a probe in a child process, a cached verdict, crash markers.

llama.cpp is compiled for the CPU it is installed on, and some (build, CPU, model file)
combinations crash in native code: on CPUs with AMX, weights repacked into llama.cpp's
AMX buffer type segfault in the first decode (llama.cpp issue 20824). A crash there
would take the whole language server with it. So before a model is loaded in this
process for the first time:

1. A **probe** runs in a child process (``python -m server.loading``): it loads the model
   with one :class:`LoadConfig` and decodes a short prompt plus a few tokens (or embeds
   two texts, for an embedding model). The child dying by a signal, exiting with an
   error, or passing :data:`PROBE_TIMEOUT_S` fails that configuration, and the next one
   in :data:`LOAD_CONFIGS` is tried.
2. The **verdict** (the first configuration that worked, and what failed before it) is
   cached in ``<cache dir>/probe/verdicts.json`` under a key made of what decides it:
   llama-cpp-python's version, the CPU's model name and flags, the model file's path,
   size and modification time, the kind of use and the thread count. Later starts read
   it and pay nothing.
3. A **crash marker** (``<cache dir>/probe/markers/<key>-<pid>.json``) is written before
   the in-process load and removed after the first :data:`GUARDED_DECODES` decodes. A
   marker left by a dead process means the server died there, in a way the probe did not
   foresee: that configuration is recorded as failed and the next start probes the next
   one, instead of crashing again in a loop. While a marker is armed, ``faulthandler``
   writes to ``<pid>.fault`` beside it, so a native crash leaves its report there; a
   process that died without one was killed (by the editor, the out-of-memory killer, a
   test), which says nothing about the configuration: it is kept.

When no configuration works, :func:`load_llama` raises :class:`ModelCrashes`, whose
message lists what was tried and what to do; the server stays up and says so.

This module imports nothing from pygls or lsprotocol. The probe runs on whichever
thread loads the model (an engine's owner thread, the index's embedder thread, or the
command line's main thread) and blocks it for the probe's duration (seconds, first
start only).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

# Bumped when the probe's test changes, so old verdicts are not trusted.
PROBE_VERSION = 1
# Decodes (generations or embedding calls) after which an in-process load is trusted.
GUARDED_DECODES = 3
# Test-only switches, read by the probe child and the loader (never set by users):
#   DEEPSEEK_LSP_TEST_PROBE_CRASH=first|all|hang-first: the probe child dies by SIGSEGV
#     (a real invalid memory read) in the first configuration / in every one, or hangs
#     in the first one.
#   DEEPSEEK_LSP_TEST_CRASH_IN_LOAD=1: this process dies by SIGSEGV right after arming the
#     crash marker of an in-process load (a crash the probe did not foresee).
ENV_PROBE_CRASH = "DEEPSEEK_LSP_TEST_PROBE_CRASH"
ENV_CRASH_IN_LOAD = "DEEPSEEK_LSP_TEST_CRASH_IN_LOAD"
# Seconds a probe child may take (load + decode) before it counts as hung.
ENV_PROBE_TIMEOUT = "DEEPSEEK_LSP_PROBE_TIMEOUT_S"
PROBE_TIMEOUT_S = 120.0

KINDS = ("generate", "embedding")  # generate: completion and chat models; embedding: the index's model

# A code snippet for the probe's prompt: ~120 tokens, enough for a batched matrix product.
_PROBE_TEXT = '''import os


def read_config(path):
    """Read KEY=VALUE lines from path into a dict, skipping comments."""
    result = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


def main():
    config = read_config(os.environ.get("CONFIG", "app.cfg"))
    for key in sorted(config):
'''


@dataclass(frozen=True)
class LoadConfig:
    """One way to load a model into llama.cpp.

    Attributes:
        name: the value of the ``model.loadConfig`` setting that forces it.
        description: what it changes, in plain words.
        model_params: fields of llama.cpp's ``llama_model_params`` to set.
        llama_kwargs: keyword arguments for ``llama_cpp.Llama`` (they override the caller's).
    """

    name: str
    description: str
    model_params: dict[str, Any] = field(default_factory=dict)
    llama_kwargs: dict[str, Any] = field(default_factory=dict)


# Tried in this order; the first that survives the probe is used.
LOAD_CONFIGS: tuple[LoadConfig, ...] = (
    LoadConfig("default", "llama.cpp's defaults: weights repacked for this CPU (AMX or AVX-512 buffer types)"),
    LoadConfig("no-repack", "weights used as stored, no repacking into extra buffer types (llama.cpp's --no-repack)",
               model_params={"use_extra_bufts": False}),
    LoadConfig("minimal", "no repacking, weights read into memory instead of memory-mapped, one thread",
               model_params={"use_extra_bufts": False}, llama_kwargs={"use_mmap": False, "n_threads": 1,
                                                                      "n_threads_batch": 1}),
)
CONFIG_NAMES = tuple(c.name for c in LOAD_CONFIGS)
_BY_NAME = {c.name: c for c in LOAD_CONFIGS}


class ModelCrashes(RuntimeError):
    """Every load configuration crashed or hung on this machine; ``verdict`` says what was tried."""

    def __init__(self, verdict: "Verdict"):
        super().__init__(verdict.explain())
        self.verdict = verdict


@dataclass
class ProbeResult:
    """How one configuration fared in a probe child.

    Attributes:
        config: the :class:`LoadConfig` name.
        ok: it loaded and decoded.
        outcome: ``ok``, ``crashed (SIGSEGV)``, ``timed out after N s`` or ``failed: <error>``.
        seconds: the probe's wall time.
        prompt_tokens_per_s: prompt-processing rate seen by the probe (generate kind), or None.
    """

    config: str
    ok: bool
    outcome: str
    seconds: float
    prompt_tokens_per_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "ok": self.ok, "outcome": self.outcome, "seconds": round(self.seconds, 2),
                "promptTokensPerS": self.prompt_tokens_per_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ProbeResult":
        return cls(d["config"], bool(d["ok"]), d["outcome"], float(d.get("seconds", 0)), d.get("promptTokensPerS"))


@dataclass
class Verdict:
    """Which configuration to load a model with, and how that was decided.

    Attributes:
        config: the configuration to use; None when none works.
        source: ``probe`` (probed now), ``cache`` (an earlier probe), ``setting`` (forced by
            ``model.loadConfig``).
        tried: the probe results, in order.
        died: configurations a server process died in (from crash markers), with why.
    """

    config: str | None
    source: str
    tried: list[ProbeResult] = field(default_factory=list)
    died: dict[str, str] = field(default_factory=dict)
    key: str | None = None  # the probe key it is stored under (None when forced or unreadable)

    def explain(self) -> str:
        """One paragraph for the editor and ``doctor``."""
        if self.config is not None:
            failed = [f"{r.config}: {r.outcome}" for r in self.tried if not r.ok]
            failed += [f"{name}: {why}" for name, why in self.died.items()]
            return f"load configuration {self.config} ({self.source})" + (
                f"; failed before it: {'; '.join(failed)}" if failed else "")
        what = [f"{r.config}: {r.outcome}" for r in self.tried] + [f"{n}: {why}" for n, why in self.died.items()]
        return ("llama.cpp crashes with this model on this machine in every load configuration tried ("
                + "; ".join(what) + "). Completions from this model are off; the editor keeps working. "
                "Fix: rebuild llama-cpp-python for a generic CPU (CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" "
                "pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36), or choose another "
                "model (model.name), then run deepseek-lsp doctor.")

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "source": self.source, "tried": [r.to_json() for r in self.tried],
                "died": dict(self.died)}


# -- where verdicts and markers live ---------------------------------------------------------
def probe_dir() -> Path:
    from .models import cache_dir
    return cache_dir() / "probe"


def cpu_fingerprint() -> str:
    """The CPU's model name and instruction-set flags (what a native llama.cpp build depends on)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    name = flags = ""
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k = k.strip()
        if k in ("model name", "Model", "cpu model") and not name:
            name = v.strip()
        elif k in ("flags", "Features") and not flags:
            flags = " ".join(sorted(v.split()))
        if name and flags:
            break
    return f"{platform.machine()} {name} | {flags}"


def _llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return "unknown"


def probe_key(path: str | Path, kind: str, n_threads: int) -> str:
    """A short hash of everything that decides whether a load works (see the module docstring).

    Raises:
        OSError: the model file cannot be read.
    """
    p = Path(path).resolve()
    st = p.stat()
    parts = {"probe": PROBE_VERSION, "llama_cpp": _llama_cpp_version(), "cpu": cpu_fingerprint(),
             "model": [str(p), st.st_size, st.st_mtime_ns], "kind": kind, "threads": n_threads,
             "test": os.environ.get(ENV_PROBE_CRASH, "")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


_STATE_LOCK = threading.Lock()


def _read_verdicts() -> dict[str, Any]:
    try:
        data = json.loads((probe_dir() / "verdicts.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: probe again


def _write_verdict(key: str, verdict: Verdict) -> None:
    """Store ``verdict`` under ``key`` atomically; a full disk only costs a probe next time."""
    with _STATE_LOCK:
        data = _read_verdicts()
        data[key] = {**verdict.to_json(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        out = probe_dir() / "verdicts.json"
        tmp = out.with_name(f"verdicts.json.{os.getpid()}-{threading.get_ident()}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, out)
        except OSError as e:
            log.warning("cannot save the probe verdict: %s", e)
            tmp.unlink(missing_ok=True)


def cached_verdict(key: str) -> Verdict | None:
    d = _read_verdicts().get(key)
    if not isinstance(d, dict):
        return None
    try:
        return Verdict(d.get("config"), "cache", [ProbeResult.from_json(r) for r in d.get("tried", [])],
                       dict(d.get("died", {})))
    except (KeyError, TypeError, ValueError):
        return None


# -- crash markers -----------------------------------------------------------------------------
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

    from server import logs
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


def _dead_markers(key: str) -> dict[str, str]:
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
            where = _keep_in_log(f"a server process (pid {pid}) crashed while {rec.get('stage', 'loading')} the "
                                 f"model with load configuration {config}:\n{report}")
        else:
            where = None
        died[config] = f"a server process (pid {pid}) died while {rec.get('stage', 'loading')} ({rec.get('at', '?')})"
        log.warning("the last start died while %s the model with load configuration %s; trying another%s",
                    rec.get("stage", "loading"), config, f" (report in {where})" if where else "")
    for fault in faults:
        fault.unlink(missing_ok=True)
    return died


# -- the probe ---------------------------------------------------------------------------------
def _timeout_s() -> float:
    try:
        return float(os.environ.get(ENV_PROBE_TIMEOUT, PROBE_TIMEOUT_S))
    except ValueError:
        return PROBE_TIMEOUT_S


def run_probe(path: str | Path, kind: str, n_threads: int, config: str) -> ProbeResult:
    """Load ``path`` with ``config`` in a child process and decode a few tokens. Blocks (seconds).

    Returns:
        The outcome; a native crash shows as ``crashed (SIGSEGV)`` and its stack goes to the log.
    """
    cmd = [sys.executable, "-m", "server.loading", str(Path(path).resolve()), "--kind", kind,
           "--threads", str(n_threads), "--config", config]
    # ``-m`` puts the working directory first on sys.path: run from this package's parent so
    # the child imports this same package, not a user's folder that happens to be called server/.
    root = str(Path(__file__).resolve().parent.parent)
    t0 = time.monotonic()
    timeout = _timeout_s()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, cwd=root,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        return ProbeResult(config, False, f"timed out after {timeout:.0f} s", time.monotonic() - t0)
    except OSError as e:
        return ProbeResult(config, False, f"failed: cannot start the probe: {e}", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        # Expected on some CPUs, and handled (the next configuration is tried): one quiet line for
        # the user, the child's report (faulthandler's stacks) in the log file only.
        where = _keep_in_log(f"probe of {path} with load configuration {config} crashed ({name}); its last output:\n"
                             + "\n".join(stderr.splitlines()[-40:]))
        log.warning("load configuration %s crashed in a test load on this CPU (%s); trying the next one%s",
                    config, name, f" (report in {where})" if where else "")
        return ProbeResult(config, False, f"crashed ({name})", seconds)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except ValueError:
        report = {}
    if proc.returncode != 0 or not report.get("ok"):
        why = report.get("error") or (stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}")
        return ProbeResult(config, False, f"failed: {why}", seconds)
    return ProbeResult(config, True, "ok", seconds, report.get("promptTokensPerS"))


def _keep_in_log(report: str) -> str | None:
    """Append ``report`` to the log file (not to stderr); its path, or None when it cannot be written."""
    from .logs import log_file, redact
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO {__name__}: {redact(report)}\n")
    except OSError:
        return None
    return str(path)


def choose_config(path: str | Path, kind: str, n_threads: int, forced: str = "auto", *,
                  fresh: bool = False) -> Verdict:
    """The load configuration to use for ``path`` on this machine (probing when not known yet).

    Args:
        path: the GGUF file.
        kind: ``generate`` or ``embedding`` (what the probe decodes).
        n_threads: the thread count the model will be loaded with.
        forced: ``auto`` (probe), or a :data:`CONFIG_NAMES` entry to use without probing.
        fresh: probe again even when a verdict is cached (``doctor``).

    Returns:
        The verdict; ``config`` is None when every configuration failed. Never raises.
    """
    if forced != "auto":
        return Verdict(forced if forced in _BY_NAME else "default", "setting")
    try:
        key = probe_key(path, kind, n_threads)
    except OSError as e:
        return Verdict(None, "probe", [ProbeResult("default", False, f"failed: {e}", 0.0)])
    new_deaths = _dead_markers(key)
    cached = cached_verdict(key)
    died = {**(cached.died if cached else {}), **new_deaths}
    if cached is not None and not fresh and cached.config not in new_deaths:
        cached.key = key
        if new_deaths:
            cached.died = died
            _write_verdict(key, cached)
        return cached  # also when it says nothing works: probing again would crash again
    verdict = Verdict(None, "probe", [], died, key)
    for config in LOAD_CONFIGS:
        if config.name in died:
            continue
        result = run_probe(path, kind, n_threads, config.name)
        log.info("probe %s (%s, %d threads) with %s: %s in %.1f s", Path(path).name, kind, n_threads, config.name,
                 result.outcome, result.seconds)
        verdict.tried.append(result)
        if result.ok:
            verdict.config = config.name
            break
    _write_verdict(key, verdict)
    return verdict


# -- loading -----------------------------------------------------------------------------------
_LOAD_LOCK = threading.Lock()  # loads take turns: verbose=False swaps fds 1/2 and the defaults are patched
_llama_log_callback = None  # keeps the ctypes callback alive


def route_llama_logs() -> None:
    """Send llama.cpp's own log lines to the ``llama.cpp`` Python logger (once per process).

    Its INFO chatter (hundreds of lines per load) becomes DEBUG; warnings and errors stay.
    """
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    import ctypes

    from llama_cpp import llama_cpp as _ll

    llama_log = logging.getLogger("llama.cpp")
    # enum ggml_log_level in the ggml.h this llama-cpp-python ships: NONE 0, DEBUG 1, INFO 2,
    # WARN 3, ERROR 4, CONT 5 (continues the previous line). llama_cpp._logger's table is older.
    levels = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
    last = [logging.DEBUG]

    @_ll.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lvl = last[0] if level == 5 else levels.get(level, logging.DEBUG)
        last[0] = lvl
        if llama_log.isEnabledFor(lvl):
            msg = text.decode("utf-8", "replace").rstrip()
            if msg:
                llama_log.log(lvl, "%s", msg)

    _llama_log_callback = callback
    _ll.llama_log_set(callback, ctypes.c_void_p(0))


# A generating context holds two sequences in one KV cache: 0 is the prompt; 1 is scratch
# for evaluating a gap in the middle of 0 (llama.cpp appends to a sequence only after its
# last position; see server.engine.LoadedModel._decode_at).
GENERATE_CONTEXT_PARAMS = {"n_seq_max": 2, "kv_unified": True}


@contextlib.contextmanager
def _default_params(model: dict[str, Any], context: dict[str, Any] | None = None) -> Iterator[None]:
    """Make ``llama_model_default_params()`` / ``llama_context_default_params()`` return
    ``model`` / ``context`` on top of llama.cpp's defaults.

    ``Llama.__init__`` takes its parameters from those functions and has no argument for
    fields such as ``use_extra_bufts``, ``n_seq_max`` or ``kv_unified``. Callers hold
    :data:`_LOAD_LOCK`.
    """
    from llama_cpp import llama_cpp as _ll

    originals = {"llama_model_default_params": _ll.llama_model_default_params,
                 "llama_context_default_params": _ll.llama_context_default_params}

    def patch(name: str, fields: dict[str, Any]):
        def patched():
            p = originals[name]()
            for key, value in fields.items():
                setattr(p, key, value)
            return p
        return patched
    for name, fields in (("llama_model_default_params", model), ("llama_context_default_params", context or {})):
        if fields:
            setattr(_ll, name, patch(name, fields))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(_ll, name, fn)


@contextlib.contextmanager
def model_defaults(config: str) -> Iterator[None]:
    """While active, ``llama_cpp.Llama`` loads with the model parameters of ``config``.

    For code that builds ``Llama`` itself (llama-cpp-python's own server in the tests);
    ``config``'s ``llama_kwargs`` (threads, mmap) are the caller's to pass.
    """
    with _LOAD_LOCK, _default_params(_BY_NAME.get(config, LOAD_CONFIGS[0]).model_params):
        yield


def open_llama(path: str | Path, config: str = "default", **kwargs: Any):
    """``llama_cpp.Llama(model_path=path, **kwargs)`` with the load configuration ``config``. No probe.

    Loads take turns (a process-wide lock). Raises what ``Llama`` raises (ValueError for an
    unreadable file).
    """
    from llama_cpp import Llama

    route_llama_logs()
    cfg = _BY_NAME.get(config, LOAD_CONFIGS[0])
    generating = not kwargs.get("embedding") and not kwargs.get("vocab_only")
    with _LOAD_LOCK, _default_params(cfg.model_params, GENERATE_CONTEXT_PARAMS if generating else None):
        return Llama(model_path=str(path), **{"verbose": False, **kwargs, **cfg.llama_kwargs})


def load_llama(path: str | Path, *, kind: str, n_threads: int, forced: str = "auto", **kwargs: Any):
    """Load a model for use in this process, safely: probe first (cached), guard the first decodes.

    Args:
        path: the GGUF file.
        kind: ``generate`` or ``embedding``.
        n_threads: threads for generation and prompt processing.
        forced: the ``model.loadConfig`` setting (``auto`` or a configuration name).
        **kwargs: more ``llama_cpp.Llama`` arguments (n_ctx, embedding, ...).

    Returns:
        ``(llama, guard, verdict)``: call ``guard.decoded()`` after each decode.

    Raises:
        ModelCrashes: no configuration survives the probe.
        ValueError / RuntimeError: llama.cpp could not load the file.
    """
    verdict = choose_config(path, kind, n_threads, forced)
    if verdict.config is None:
        raise ModelCrashes(verdict)
    try:
        key = verdict.key or probe_key(path, kind, n_threads)  # a forced configuration was not probed
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    guard = CrashGuard(key, verdict.config)
    guard.arm("loading")
    if os.environ.get(ENV_CRASH_IN_LOAD):
        _segfault()
    try:
        llm = open_llama(path, verdict.config, n_threads=n_threads, n_threads_batch=n_threads, **kwargs)
    except BaseException:
        guard.disarm()  # a Python-level failure is not a crash
        raise
    guard.arm("running its first decodes")
    return llm, guard, verdict


def _segfault() -> None:
    """Die the way a native fault does: a real invalid memory read (SIGSEGV). Test switches only.

    faulthandler reports it as it reports a real one: on stderr in a probe child (which the
    parent keeps in the log file), in the fault file while a guard is armed."""
    import ctypes
    ctypes.string_at(0)


# -- the probe child ---------------------------------------------------------------------------
def _probe_child(path: str, kind: str, n_threads: int, config: str) -> dict[str, Any]:
    """Load and decode in this (child) process; the report is printed as one JSON line."""
    switch = os.environ.get(ENV_PROBE_CRASH, "")
    first = config == LOAD_CONFIGS[0].name
    t0 = time.monotonic()
    if kind == "embedding":
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN
        llm = open_llama(path, config, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                         pooling_type=LLAMA_POOLING_TYPE_MEAN, n_threads=n_threads, n_threads_batch=n_threads)
    else:
        llm = open_llama(path, config, n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads)
    load_s = time.monotonic() - t0
    if switch == "all" or (switch == "first" and first):
        _segfault()  # where the real AMX fault strikes: the first decode
    if switch == "hang-first" and first:
        time.sleep(3600)
    if kind == "embedding":
        t1 = time.monotonic()
        vectors = llm.embed([_PROBE_TEXT[:400], "read a config file"], normalize=True)
        if len(vectors) != 2 or not all(any(v) for v in vectors):
            return {"ok": False, "error": "the embedding model returned empty vectors"}
        return {"ok": True, "loadS": round(load_s, 3), "embedS": round(time.monotonic() - t1, 3)}
    tokens = llm.tokenize(_PROBE_TEXT.encode(), add_bos=False)
    t1 = time.monotonic()
    llm.eval(tokens)  # prompt processing: one batch
    prompt_s = time.monotonic() - t1
    for _ in range(4):  # generation: one token per decode
        llm.eval([llm.sample(temp=0.0)])
    return {"ok": True, "loadS": round(load_s, 3), "promptTokens": len(tokens),
            "promptTokensPerS": round(len(tokens) / max(prompt_s, 1e-6), 1)}


def main(argv: list[str] | None = None) -> int:
    """The probe child: ``python -m server.loading PATH --kind K --threads N --config C``."""
    import faulthandler
    faulthandler.enable()  # a native crash's stack goes to stderr, which the parent logs
    parser = argparse.ArgumentParser(prog="python -m server.loading", description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--kind", choices=KINDS, default="generate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", choices=CONFIG_NAMES, default="default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        report = _probe_child(args.path, args.kind, args.threads, args.config)
    except Exception as e:  # a load error is a verdict too, not a crash
        report = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(report), flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
