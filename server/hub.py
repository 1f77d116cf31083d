"""Installing and removing catalog models by name (``deepseek-lsp models pull|remove``, the page's Models).

A catalog model comes from its pip part packages when they are installed (assembled by
:func:`server.models.ensure_model_file`), else from the model hub with huggingface_hub
(resumes a broken transfer, honours ``HF_ENDPOINT``, sha256-checked, renamed into place only
when whole). No telemetry: huggingface_hub's is turned off before it is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from .models import (
    CatalogEntry,
    ModelError,
    ProgressCallback,
    ensure_model_file,
    is_verified,
    marker_path,
    resolve_model,
    set_user_default_model,
    sha256_file,
    user_default_model,
    write_marker,
)


def pull(name: str, progress: ProgressCallback | None = None) -> Path:
    """Install a catalog model: from its pip part packages when they are installed, else from
    the model hub with huggingface_hub (resumes a broken transfer, sha256-checked, atomic).

    Raises:
        ModelError: unknown name, offline, disk full, hash mismatch; the message has the fix.
    """
    resolved = resolve_model(None, name)
    entry = resolved.entry
    if is_verified(resolved.path, entry):
        return resolved.path
    if entry.parts:
        try:
            return ensure_model_file(resolved, progress)
        except ModelError:
            if entry.hub is None:
                raise
    if entry.hub is None:
        raise ModelError(f"model {name} has no download source in the catalog")
    return _download(entry, resolved.path)


def _download(entry: CatalogEntry, dest: Path) -> Path:
    import re
    import shutil
    import tempfile

    # No telemetry, ever: without this, huggingface_hub fetches an "agent harness" registry
    # and adds library and agent details to its user agent (read at import time).
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    hub = entry.hub
    try:
        meta = get_hf_file_metadata(hf_hub_url(hub.repo, hub.file, revision=hub.revision))
    except Exception as e:  # offline, DNS, 404, ...
        raise ModelError(
            f"cannot reach the model hub at {hf_constants.ENDPOINT} for {hub.repo}/{hub.file}: "
            f"{type(e).__name__}: {e}. "
            "Fix: connect to the internet once (or set HF_ENDPOINT to a mirror), or use a model installed with pip "
            "(deepseek-lsp models list).") from None
    etag = (meta.etag or "").lower()
    expected = entry.sha256 or (etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None)
    size = entry.size_bytes or meta.size or 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if size and free < size * 1.05:
        raise ModelError(f"not enough disk space for {entry.name}: it needs {size / 2**20:,.0f} MB, "
                         f"{free / 2**20:,.0f} MB are free in {dest.parent}. "
                         "Fix: free disk space or set XDG_CACHE_HOME.")
    try:
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=dest.parent) as tmp:
            got = Path(hf_hub_download(hub.repo, hub.file, revision=hub.revision, local_dir=tmp))
            digest = sha256_file(got)
            if expected and digest != expected:
                raise ModelError(f"the download of {entry.name} is damaged or not the expected file: sha256 "
                                 f"{digest[:16]}…, expected {expected[:16]}…. Nothing was kept. Fix: pull again; if it "
                                 "persists, the catalog entry or the mirror is wrong.")
            os.replace(got, dest)
    except OSError as e:
        raise ModelError(f"cannot write {dest}: {e.strerror}. Fix: free disk space or set XDG_CACHE_HOME.") from None
    write_marker(dest, digest)
    return dest


def remove(name: str) -> bool:
    """Delete an installed catalog model's file. True when something was deleted."""
    resolved = resolve_model(None, name)
    deleted = False
    for path in (resolved.path, marker_path(resolved.path)):
        if path.exists():
            path.unlink()
            deleted = True
    if user_default_model() == name:
        set_user_default_model(None)
    return deleted
