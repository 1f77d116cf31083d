import re
from pathlib import Path

from server.config import SETTINGS, Settings, parse_assignments, parse_settings


def test_defaults_when_nothing_is_given():
    settings, problems = parse_settings(None, {})
    assert settings == Settings()
    assert problems == []


def test_nested_flat_and_wrapped_sources_merge_later_wins():
    settings, problems = parse_settings(
        {"model": {"nCtx": 2048, "name": "qwen2.5-coder-1.5b-instruct-q4_k_m"}},
        {"completion.maxTokens": 32},
        {"deepseek": {"model": {"nCtx": 1024}}},
    )
    assert problems == []
    assert settings.model_n_ctx == 1024
    assert settings.model_name == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert settings.completion_max_tokens == 32
    assert settings.get("model.nCtx") == 1024


def test_invalid_values_fall_back_to_defaults_with_a_reason():
    settings, problems = parse_settings({
        "model": {"nCtx": "big"},
        "completion": {"maxTokens": -5},
        "resources": {"ramLimitMb": True},
        "log": {"level": "loud"},
        "colour": "blue",
    })
    assert settings.model_n_ctx == 4096
    assert settings.completion_max_tokens == 128
    assert settings.resources_ram_limit_mb is None
    assert settings.log_level == "info"
    text = " | ".join(problems)
    assert "model.nCtx must be an integer" in text
    assert "completion.maxTokens must be at least 1" in text
    assert "log.level must be one of" in text
    assert "unknown setting 'colour'" in text
    assert len(problems) == 5


def test_nulls_and_blank_paths_mean_default():
    settings, problems = parse_settings({"model": {"path": "  ", "nCtx": None}, "threads": None})
    assert problems == []
    assert settings.model_path is None and settings.model_n_ctx == 4096 and settings.threads is None


def test_non_mapping_source_is_reported_not_raised():
    settings, problems = parse_settings(["not", "an", "object"])
    assert settings == Settings() and problems


def test_command_line_assignments_are_json_or_strings():
    assert parse_assignments(["model.nCtx=2048", "model.path=/tmp/x.gguf", "threads=null"]) == {
        "model.nCtx": 2048, "model.path": "/tmp/x.gguf", "threads": None}


def test_every_setting_is_documented_in_readme_with_its_default():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for s in SETTINGS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{s.key}` |")), None)
        assert row is not None, f"README.md has no row for {s.key}"
        default = "none" if s.default is None else f"`{__import__('json').dumps(s.default)}`"
        assert default in row and s.unit in row, row


def test_settings_dataclass_and_table_agree():
    assert {s.key for s in SETTINGS} >= {"model.path", "model.name", "resources.ramLimitMb", "completion.maxTokens"}
    for s in SETTINGS:
        assert re.fullmatch(r"[a-z][A-Za-z]*(\.[a-z][A-Za-z]*)?", s.key), s.key
