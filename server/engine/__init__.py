"""The model engine: llama.cpp models loaded safely, each owned by one thread, generating with KV-cache reuse.

Modules, by job (each imports only those listed before it, and nothing from pygls or lsprotocol):

- :mod:`~server.engine.llama_api`: the one module that touches llama-cpp-python beyond
  ``Llama``'s public methods (private handles, low-level bindings, patched defaults);
  tests/test_seams.py checks its names against the pinned version.
- :mod:`~server.engine.load_configs`, :mod:`~server.engine.crash_guard`,
  :mod:`~server.engine.probe`, :mod:`~server.engine.loading`, :mod:`~server.engine.probe_child`:
  loading a model without trusting it (a probe in a child process, a cached verdict, crash markers).
- :mod:`~server.engine.kv_plan`: which runs of a prompt the KV cache holds
  (:func:`plan_reuse`), saved states under a budget (:class:`KvSnapshots`).
- :mod:`~server.engine.kv_cache`: the record of what the KV cache holds and every change to
  it (:class:`KvCache`: prefill with reuse and shifts, evaluate, rewind, save, restore).
- :mod:`~server.engine.vocabulary`: tokenizing and the piece tables sampling looks up.
- :mod:`~server.engine.sampling`: the constraints on the logits (token healing, text first,
  margins) and the healed output text.
- :mod:`~server.engine.model`: :class:`LoadedModel`, one loaded model and its decode loop.
- :mod:`~server.engine.owner`: :class:`Engine`, the thread that owns a model; everything else
  sends it jobs.

Cancellation is real: each generation checks a ``threading.Event`` after every token, and
prompt processing checks it between chunks of :data:`PREFILL_CHUNK` tokens.

KV-cache reuse (:meth:`LoadedModel.prefill`): the new prompt is compared with what the
KV cache holds, token by token. The common prefix is kept as it is; further runs of at
least ``min_reuse`` tokens that the cache holds at other positions (the code window slid,
a file's lines moved down after an accepted block) are kept and *shifted* to their new
positions (``llama_memory_seq_add``: llama.cpp re-rotates their keys); the cells nothing
matches are removed; only the gaps are evaluated, each token at its own position, in
cancellable chunks. A shifted run keeps the attention it computed in its old place, so
its entries are close to, not exactly, what evaluating it afresh would give (llama.cpp's
``--cache-reuse`` makes the same trade); ``bench/editing_session.py`` measures what it
does to the suggestions. Before the cache is overwritten by a prompt that keeps little of
it, its state is saved (:class:`KvSnapshots`, a memory budget in MiB, least recently
used out): coming back to a file or a place restores it instead of evaluating it again.
:class:`Generation` reports the prompt tokens reused and evaluated.
"""

from .crash_guard import GUARDED_DECODES, CrashGuard, disarm_all
from .kv_cache import PREFILL_CHUNK, KvCache, Prefill
from .kv_plan import HOLE, MIN_REUSE_TOKENS, KvSnapshot, KvSnapshots, plan_reuse
from .load_configs import CONFIG_NAMES, LOAD_CONFIGS, LoadConfig, ModelCrashes, ProbeResult, Verdict
from .loading import load_llama, model_defaults, open_llama
from .model import Generation, LoadedModel, default_threads
from .owner import Engine, SecondLane
from .probe import choose_config

__all__ = [
    "CONFIG_NAMES", "GUARDED_DECODES", "HOLE", "LOAD_CONFIGS", "MIN_REUSE_TOKENS", "PREFILL_CHUNK",
    "CrashGuard", "Engine", "Generation", "KvCache", "KvSnapshot", "KvSnapshots", "LoadConfig", "LoadedModel",
    "ModelCrashes", "Prefill", "SecondLane", "ProbeResult", "Verdict", "choose_config", "default_threads", "disarm_all",
    "load_llama", "model_defaults", "open_llama", "plan_reuse",
]
