"""What this machine can run: cores, memory, the model, the load probe; for ``doctor`` and the web page.

:func:`machine_report` runs the checks (seconds: the load probe starts child processes)
and returns them as lines for a terminal plus a verdict in plain words. This module
imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from . import __version__
from .config import Settings
from .models import ProgressCallback


@dataclass(frozen=True)
class MachineReport:
    """The outcome of the checks.

    Attributes:
        lines: (label, text) rows as ``doctor`` prints them (label "" continues the row above).
        ok: completions will work with the chosen model.
        verdict: one sentence in plain words (what runs, or what does not and why).
        model: the model's name (None when it could not be resolved).
        needed_mb / available_mb: memory the model needs and the memory there is, MB (None when unknown).
        tokens_per_s: prompt tokens per second the probe measured (None when not probed).
    """

    lines: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = False
    verdict: str = ""
    model: str | None = None
    needed_mb: float | None = None
    available_mb: float | None = None
    tokens_per_s: float | None = None


def machine_report(settings: Settings, progress: ProgressCallback | None = None, probe: bool = True) -> MachineReport:
    """Run doctor's checks for the model ``settings`` choose (blocks for seconds). Never raises.

    Args:
        progress: (done, total) bytes while the model's file is assembled from its parts.
        probe: run the load probe afresh (child processes that load the model and decode).
    """
    import psutil

    from .engine import default_threads
    from .logs import log_file
    from .manager import ModelManager, ModelState
    from .models import cache_dir

    vm = psutil.virtual_memory()
    try:
        from importlib.metadata import version
        llama_version = version("llama-cpp-python")
    except Exception:
        llama_version = "not installed"
    lines = [("", f"deepseek-lsp {__version__} (Python {platform.python_version()}, llama-cpp-python {llama_version})"),
             ("CPU", f"{psutil.cpu_count(logical=False)} physical cores, {psutil.cpu_count()} logical; "
                     f"model threads: {settings.threads or default_threads()}"),
             ("RAM", f"{vm.total / 2**20:,.0f} MB total, {vm.available / 2**20:,.0f} MB available"
                     + (f"; limit set: {settings.resources_ram_limit_mb:,} MB" if settings.resources_ram_limit_mb
                        else "")),
             ("Cache", str(cache_dir())), ("Log", str(log_file()))]
    manager = ModelManager()
    try:
        status = manager.inspect(settings, progress, probe=probe)
    finally:
        manager.shutdown()
    lines.append(("Model", status.name or "?"))
    if status.path:
        lines.append(("", f"file {status.path}" + (f" ({status.size_mb:,.0f} MB)" if status.size_mb else "")))
    if status.size_mb is not None:
        lines.append(("", f"FIM family: {status.family or 'none (cannot complete code)'}"))
    m = status.memory
    if m:
        lines.append(("", f"needs ~{m.needed_mb:,.0f} MB (file {m.file_mb:,.0f} + KV cache {m.kv_cache_mb:,.0f} "
                          f"for n_ctx {m.n_ctx} + overhead {m.overhead_mb:,.0f}); {m.limit_source}: "
                          f"{m.available_mb:,.0f} MB"))
    lines.append(("Chat", _assistant_line(settings)))
    if (chat := _assistant_context(settings)) is not None:
        lines.append(("", chat))
    rate = None
    v = status.verdict
    if v is not None:
        lines.append(("Load", "forced by model.loadConfig" if v.source == "setting" else "probed in a child process"))
        for r in v.tried:
            speed = f", {r.prompt_tokens_per_s:,.0f} prompt tokens/s" if r.prompt_tokens_per_s else ""
            rate = rate or r.prompt_tokens_per_s
            lines.append(("", f"{r.config:<10} {r.outcome} ({r.seconds:.1f} s{speed})"))
        for name, why in v.died.items():
            lines.append(("", f"{name:<10} not tried: {why}"))
        if v.config is not None:
            lines.append(("", f"configuration in use: {v.config}"))
    report = dict(model=status.name, needed_mb=m.needed_mb if m else None, available_mb=m.available_mb if m else None,
                  tokens_per_s=rate)
    if status.state in (ModelState.ERROR, ModelState.TOO_LARGE, ModelState.CRASHED):
        return MachineReport(lines, False, f"does not work: {status.error}", **report)
    if not status.family:
        return MachineReport(lines, False, "loads, but it has no FIM tokens: choose a code model for completions.",
                             **report)
    return MachineReport(lines, True, "fits; completions will work.", **report)


def _assistant_line(s: Settings) -> str:
    """Which model chat, refactor and write tests run on, and why (``chatModel`` or the catalog's choice)."""
    from .assist.host import assistant_choice

    if (s.backend_kind if s.chat_backend == "same" else s.chat_backend) == "openai":
        return f"{s.backend_model or 'the model'} at backend.url"
    return f"{s.chat_model} (chatModel)" if s.chat_model else assistant_choice(s).reason


def _assistant_context(s: Settings) -> str | None:
    """The local chat model's context window and memory (``chat.nCtx``; read from its file's
    header, nothing loaded), or None for a remote chat model or one that cannot be inspected."""
    from .assist.host import assistant_choice, chat_settings
    from .manager import ModelManager

    if (s.backend_kind if s.chat_backend == "same" else s.chat_backend) == "openai":
        return None
    manager = ModelManager("chat")
    try:
        status = manager.inspect(chat_settings(s, assistant_choice(s)))
    finally:
        manager.shutdown()
    m = status.memory
    if m is None or status.n_ctx is None:
        return None
    how = "chat.nCtx" if s.chat_n_ctx else "chat.nCtx 0: as large as the model and memory allow"
    return (f"context {status.n_ctx:,} tokens ({how}); needs ~{m.needed_mb:,.0f} MB (file {m.file_mb:,.0f} + "
            f"KV cache {m.kv_cache_mb:,.0f} + overhead {m.overhead_mb:,.0f})")


def plain_words(report: MachineReport) -> str:
    """The verdict for someone who does not know what n_ctx or a KV cache is."""
    if not report.ok:
        return f"This machine cannot run {report.model or 'the model'} as it is set up: {report.verdict}"
    room = ""
    if report.needed_mb and report.available_mb:
        room = (f" It needs about {report.needed_mb:,.0f} MB of memory and {report.available_mb:,.0f} MB are "
                "free, so it fits" + (" with room to spare." if report.available_mb > 2 * report.needed_mb else "."))
    speed = ""
    if report.tokens_per_s:
        speed = (f" It reads about {report.tokens_per_s:,.0f} tokens of code per second here: "
                 + ("suggestions will come while you type." if report.tokens_per_s >= 100 else
                    "suggestions will be slow; a smaller model or fewer context tokens would help."))
    return f"This machine can run {report.model} for code completion and chat.{room}{speed}"


@dataclass(frozen=True)
class ModelRow:
    """A catalog model on this machine.

    Attributes:
        size_mb: the GGUF file, MB (None when the catalog does not say).
        needed_mb: weights + KV cache at the default n_ctx (4,096 tokens) + runtime overhead, MB (None: unknown).
        fits: ``needed_mb`` is within the memory available now (None: unknown).
        default: it is the model used when no setting names one.
    """

    name: str
    title: str
    family: str | None
    size_mb: float | None
    needed_mb: float | None
    installed: bool
    fits: bool | None
    default: bool


def model_rows() -> tuple[list[ModelRow], float]:
    """Every catalog model with its memory needs and whether it fits; and the memory available now, MB."""
    from .models import is_installed, load_catalog, user_default_model
    from .resources import available_mb

    default, entries = load_catalog()
    current = user_default_model() or default
    avail = available_mb()
    rows = []
    for e in entries.values():
        need = e.needed_mb()
        rows.append(ModelRow(e.name, e.title, e.family, e.size_mb, need, is_installed(e),
                             None if need is None else need <= avail, e.name == current))
    return rows, avail
