"""Loading llama.cpp models without trusting them: a probe in a child process, a cached verdict, crash markers.

llama.cpp is compiled for the CPU it is installed on, and some (build, CPU, model file)
combinations crash in native code: on CPUs with AMX, weights repacked into llama.cpp's
AMX buffer type segfault in the first decode (llama.cpp issue 20824). A crash there
would take the whole language server with it. So before a model is loaded in this
process for the first time:

1. A **probe** runs in a child process (``python -m server.engine.probe_child``): it loads the model
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

The parts: :mod:`~server.engine.load_configs` (the configurations, the verdict),
:mod:`~server.engine.probe` (probing, the verdict cache), :mod:`~server.engine.probe_child`
(the child), :mod:`~server.engine.crash_guard` (the markers); this module loads.

This package imports nothing from pygls or lsprotocol. The probe runs on whichever
thread loads the model (an engine's owner thread, the index's embedder thread, or the
command line's main thread) and blocks it for the probe's duration (seconds, first
start only).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from .crash_guard import CrashGuard, segfault
from .llama_api import default_params, route_llama_logs
from .load_configs import ENV_CRASH_IN_LOAD, ModelCrashes, config_named
from .probe import choose_config, probe_key

_LOAD_LOCK = threading.Lock()  # loads take turns: verbose=False swaps fds 1/2 and the defaults are patched


# A generating context holds two sequences in one KV cache: 0 is the prompt; 1 is scratch
# for evaluating a gap in the middle of 0 (llama.cpp appends to a sequence only after its
# last position; see server.engine.kv_cache.KvCache.decode_at).
GENERATE_CONTEXT_PARAMS = {"n_seq_max": 2, "kv_unified": True}


@contextlib.contextmanager
def model_defaults(config: str) -> Iterator[None]:
    """While active, ``llama_cpp.Llama`` loads with the model parameters of ``config``.

    For code that builds ``Llama`` itself (llama-cpp-python's own server in the tests);
    ``config``'s ``llama_kwargs`` (threads, mmap) are the caller's to pass.
    """
    with _LOAD_LOCK, default_params(config_named(config).model_params):
        yield


def open_llama(path: str | Path, config: str = "default", **kwargs: Any):
    """``llama_cpp.Llama(model_path=path, **kwargs)`` with the load configuration ``config``. No probe.

    Loads take turns (a process-wide lock). Raises what ``Llama`` raises (ValueError for an
    unreadable file).
    """
    from llama_cpp import Llama

    route_llama_logs()
    cfg = config_named(config)
    generating = not kwargs.get("embedding") and not kwargs.get("vocab_only")
    with _LOAD_LOCK, default_params(cfg.model_params, GENERATE_CONTEXT_PARAMS if generating else None):
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
        segfault()
    try:
        llm = open_llama(path, verdict.config, n_threads=n_threads, n_threads_batch=n_threads, **kwargs)
    except BaseException:
        guard.disarm()  # a Python-level failure is not a crash
        raise
    guard.arm("running its first decodes")
    return llm, guard, verdict
