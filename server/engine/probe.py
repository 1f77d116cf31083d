"""The probe: a model loaded and decoded once in a child process, before this process trusts it.

:func:`choose_config` returns the cached verdict for this (llama-cpp-python, CPU, model file,
kind, threads), or probes the configurations in order (:func:`run_probe`: ``python -m
server.engine.probe_child`` in a new session) and caches the first that works. See
:mod:`server.engine.loading` for the whole procedure. Blocks its caller for the probe's
duration (seconds, first start only).
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from .crash_guard import dead_markers, keep_in_log
from .load_configs import (
    CONFIG_NAMES,
    ENV_PROBE_CRASH,
    ENV_PROBE_TIMEOUT,
    LOAD_CONFIGS,
    PROBE_TIMEOUT_S,
    PROBE_VERSION,
    ProbeResult,
    Verdict,
    probe_dir,
)

log = logging.getLogger("server.loading")

CHILD_MODULE = "server.engine.probe_child"  # what the probe runs with ``python -m``


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
    """A short hash of everything that decides whether a load works (see :mod:`server.engine.loading`).

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
    cmd = [sys.executable, "-m", CHILD_MODULE, str(Path(path).resolve()), "--kind", kind,
           "--threads", str(n_threads), "--config", config]
    # ``-m`` puts the working directory first on sys.path: run from the folder that holds the
    # server package so the child imports this same package, not a user's folder that happens
    # to be called server/.
    root = str(Path(__file__).resolve().parents[2])
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
        where = keep_in_log(f"probe of {path} with load configuration {config} crashed ({name}); its last output:\n"
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
        return Verdict(forced if forced in CONFIG_NAMES else "default", "setting")
    try:
        key = probe_key(path, kind, n_threads)
    except OSError as e:
        return Verdict(None, "probe", [ProbeResult("default", False, f"failed: {e}", 0.0)])
    new_deaths = dead_markers(key)
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
