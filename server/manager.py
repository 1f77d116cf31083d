"""The model's life cycle: resolve, assemble, inspect, check memory, load.

:class:`ModelManager` is used the same way by the LSP server and the command line.
Its blocking :meth:`ModelManager.load` runs off the event loop; every touch of a
llama.cpp model happens on the engine's owner thread. The outcome is a
:class:`ModelStatus` that the caller turns into editor messages or terminal text.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable

from .config import Settings
from .engine import Engine, LoadedModel, ModelCrashes, Verdict, choose_config, default_threads
from .models import ModelError, ProgressCallback, ResolvedModel, ensure_model_file, needs_assembly, resolve_model
from .prompting import FimFormat, TokenCounter, detect_fim_format
from .resources import MemoryCheck, ModelShape, check_memory, fitted_n_ctx

log = logging.getLogger(__name__)


class ModelState(str, Enum):
    NOT_LOADED = "not-loaded"
    PREPARING = "preparing"   # assembling the GGUF file from its part packages
    LOADING = "loading"
    LOADED = "loaded"
    TOO_LARGE = "too-large"   # the memory check said no; nothing was loaded
    CRASHED = "crashed"       # llama.cpp crashed in every load configuration the probe tried
    ERROR = "error"           # missing part, bad hash, corrupt file...


@dataclass(frozen=True)
class ModelStatus:
    """Everything the editor and ``doctor`` show about the model."""

    state: ModelState = ModelState.NOT_LOADED
    name: str | None = None
    path: str | None = None
    family: str | None = None          # FIM family, None when unknown or not a FIM model
    size_mb: float | None = None
    memory: MemoryCheck | None = None
    n_ctx: int | None = None           # the context window, tokens (chosen at load when the settings say 0)
    n_threads: int | None = None
    error: str | None = None           # user-facing text with the fix, for TOO_LARGE, CRASHED and ERROR
    load_config: str | None = None     # the llama.cpp load configuration in use (server.engine.load_configs)
    verdict: Verdict | None = field(default=None, compare=False, repr=False)  # how it was chosen
    metadata: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def loaded(self) -> bool:
        return self.state is ModelState.LOADED


@dataclass(frozen=True)
class Inspection:
    """What a vocab-only load tells before the weights are touched."""

    metadata: dict[str, str]
    fim: FimFormat | None


def _inspect(model: LoadedModel) -> Inspection:
    return Inspection(model.metadata, detect_fim_format(model))


class ModelManager:
    """Holds the completion model and its status.

    Attributes:
        engine: the owner thread of the loaded model.
        status: the latest :class:`ModelStatus` (replaced, never mutated).
        fim: the loaded model's FIM format (None until loaded, or for non-FIM models).
        counter: a token counter bound to the loaded model (cache shared across requests).
    """

    def __init__(self, name: str = "completion") -> None:
        # The completion model's jobs come first on the CPU; any other model yields to them.
        self.engine = Engine(name, foreground=name == "completion")
        self.status = ModelStatus()
        self.fim: FimFormat | None = None
        self.counter: TokenCounter | None = None
        self._lock = threading.Lock()
        self._loaded_key: tuple | None = None

    def load(self, settings: Settings, progress: ProgressCallback | None = None,
             on_state: Callable[[ModelStatus], None] | None = None) -> ModelStatus:
        """Make the model the settings ask for ready, blocking (seconds). Never raises.

        Args:
            settings: decides the model (``model.*``, ``threads``, ``resources.ramLimitMb``);
                ``model_n_ctx`` 0 means as large as the model and memory allow
                (:func:`server.resources.fitted_n_ctx`, the chat model's ``chat.nCtx`` 0).
            progress: (done, total) bytes while the GGUF file is assembled.
            on_state: called with each intermediate :class:`ModelStatus` (for progress UIs).

        Returns:
            The final status: LOADED, TOO_LARGE or ERROR (with ``error`` saying why and the fix).
        """
        with self._lock:
            key = settings.model_key() + (settings.resources_ram_limit_mb,)
            if self._loaded_key == key and self.status.loaded:
                return self.status
            status = self._load_locked(settings, progress, on_state or (lambda s: None))
            self.status = status
            self._loaded_key = key if status.loaded else None
            return status

    def inspect(self, settings: Settings, progress: ProgressCallback | None = None,
                probe: bool = False) -> ModelStatus:
        """Everything :meth:`load` does except loading the weights (for ``doctor``). Never raises.

        Args:
            probe: also run the load probe afresh (child processes, seconds) and record its verdict.

        Returns:
            NOT_LOADED with family, memory figures and (with ``probe``) the verdict filled in,
            or TOO_LARGE / CRASHED / ERROR.
        """
        with self._lock:
            status = self._load_locked(settings, progress, lambda s: None, load=False)
            if not probe or status.state is not ModelState.NOT_LOADED or not status.path:
                return status
            verdict = choose_config(status.path, "generate", status.n_threads or default_threads(),
                                    settings.model_load_config, fresh=True)
            if verdict.config is None:
                return replace(status, state=ModelState.CRASHED, error=verdict.explain(), verdict=verdict)
            return replace(status, load_config=verdict.config, verdict=verdict)

    def _set(self, status: ModelStatus, on_state) -> ModelStatus:
        self.status = status
        on_state(status)
        return status

    def _load_locked(self, settings: Settings, progress, on_state, load: bool = True) -> ModelStatus:
        n_threads = settings.threads or default_threads()
        status = ModelStatus(n_ctx=settings.model_n_ctx, n_threads=n_threads)
        try:
            resolved: ResolvedModel = resolve_model(settings.model_path, settings.model_name)
            status = replace(status, name=resolved.name, path=str(resolved.path))
            if needs_assembly(resolved):
                status = self._set(replace(status, state=ModelState.PREPARING), on_state)
            path = ensure_model_file(resolved, progress)
            size = path.stat().st_size
            status = replace(status, size_mb=size / 2**20)
            if load:  # unload the previous model first: its memory must not count against the new one
                self.engine.unload().result()
                self.fim, self.counter = None, None
            info = self._inspect(str(path), n_threads)
            family = info.fim.family.name if info.fim else None
            status = replace(status, family=family, metadata=info.metadata)
            shape = ModelShape.from_metadata(info.metadata)
            n_ctx = settings.model_n_ctx or fitted_n_ctx(size, shape, settings.resources_ram_limit_mb)
            memory = check_memory(size, shape, n_ctx, settings.resources_ram_limit_mb)
            status = replace(status, memory=memory, n_ctx=n_ctx)
            if not memory.fits:
                return replace(status, state=ModelState.TOO_LARGE, error=memory.explain(resolved.name))
            if not load:
                return status
            self._set(replace(status, state=ModelState.LOADING), on_state)
            model = self.engine.load(str(path), n_ctx=n_ctx, n_threads=n_threads,
                                     load_config=settings.model_load_config).result()
            self.fim = detect_fim_format(model) if info.fim else None
            self.counter = TokenCounter(model)
            return replace(status, state=ModelState.LOADED, load_config=model.load_config, verdict=model.verdict)
        except ModelCrashes as e:
            log.error("%s: %s", status.name, e)
            return replace(status, state=ModelState.CRASHED, error=f"{status.name}: {e}", verdict=e.verdict)
        except ModelError as e:
            return replace(status, state=ModelState.ERROR, error=str(e))
        except (ValueError, RuntimeError, OSError) as e:
            log.exception("model load failed")
            where = status.path or "the model file"
            return replace(status, state=ModelState.ERROR, error=(
                f"llama.cpp could not load {where}: {e}. The file may be damaged or of an unsupported "
                "architecture. Fix: delete it so it is assembled or downloaded again, or choose another model."))

    def _inspect(self, path: str, n_threads: int) -> Inspection:
        """Read metadata and vocabulary without the weights (a vocab-only load, ~0.2 s)."""
        def job() -> Inspection:
            probe = LoadedModel(path, n_ctx=256, n_threads=n_threads, vocab_only=True)
            try:
                return _inspect(probe)
            finally:
                probe.close()
        return self.engine.call(job).result()

    def shutdown(self) -> None:
        self.engine.shutdown()
