"""The ways to load a model into llama.cpp, and the verdict on which one works on this machine.

:data:`LOAD_CONFIGS` lists the configurations in the order they are tried; a :class:`Verdict`
says which one to use and what failed before it (see :mod:`server.engine.loading` for how it
is reached). Plain data: nothing here loads or probes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bumped when the probe's test changes, so old verdicts are not trusted.
PROBE_VERSION = 1
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


def config_named(name: str) -> LoadConfig:
    """The configuration called ``name``; the first (llama.cpp's defaults) for an unknown name."""
    return next((c for c in LOAD_CONFIGS if c.name == name), LOAD_CONFIGS[0])


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


def probe_dir() -> Path:
    """Where verdicts (``verdicts.json``) and crash markers (``markers/``) live: ``<cache dir>/probe``."""
    from ..models import cache_dir
    return cache_dir() / "probe"
