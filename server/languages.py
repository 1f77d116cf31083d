"""The languages deepseek-lsp serves: one table, read by the server and the index, generated into the clients.

Every language here gets completions. A language with a tree-sitter ``grammar`` also gets
the index's definition chunks, code actions (explain, refactor, write tests) and hover;
``definitions`` maps the grammar's node types to the kind of definition reported.

The clients' lists are generated from this table (``python -m server.languages --write``):
``clients/vscode/src/languages.ts``, the ``onLanguage`` activation events in
``clients/vscode/package.json`` and ``clients/neovim/lua/deepseek/languages.lua``; a test
keeps them equal. This module imports nothing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Language:
    """One language.

    Attributes:
        id: the LSP language id editors send (``typescriptreact``).
        extensions: file extensions, lower case with the dot.
        grammar: the tree-sitter-language-pack name (``tsx``); None: completions only.
        definitions: node type -> kind (``function``, ``class``...) for chunks, actions and hover.
        neovim: Neovim's filetype, when it differs from ``id``.
    """

    id: str
    extensions: tuple[str, ...]
    grammar: str | None = None
    definitions: dict[str, str] = field(default_factory=dict)
    neovim: str | None = None


_JS = {"function_declaration": "function", "class_declaration": "class", "method_definition": "method",
       "generator_function_declaration": "function"}
_TS = {"function_declaration": "function", "class_declaration": "class", "method_definition": "method",
       "interface_declaration": "interface", "type_alias_declaration": "type", "enum_declaration": "enum"}

LANGUAGES: tuple[Language, ...] = (
    Language("python", (".py", ".pyi"), "python", {"function_definition": "function", "class_definition": "class"}),
    Language("javascript", (".js", ".mjs", ".cjs"), "javascript", _JS),
    Language("javascriptreact", (".jsx",), "javascript", _JS),
    Language("typescript", (".ts", ".mts", ".cts"), "typescript", _TS),
    Language("typescriptreact", (".tsx",), "tsx", _TS),
    Language("go", (".go",), "go", {"function_declaration": "function", "method_declaration": "method",
                                     "type_declaration": "type"}),
    Language("rust", (".rs",), "rust", {"function_item": "function", "impl_item": "impl", "struct_item": "struct",
                                         "enum_item": "enum", "trait_item": "trait", "mod_item": "module"}),
    Language("java", (".java",), "java", {"class_declaration": "class", "method_declaration": "method",
                                           "interface_declaration": "interface",
                                           "constructor_declaration": "constructor", "enum_declaration": "enum"}),
    Language("c", (".c", ".h"), "c", {"function_definition": "function", "struct_specifier": "struct"}),
    Language("cpp", (".cc", ".cpp", ".cxx", ".hpp", ".hh"), "cpp",
             {"function_definition": "function", "class_specifier": "class", "struct_specifier": "struct"}),
    Language("lua", (".lua",), "lua", {"function_declaration": "function"}),
    Language("ruby", (".rb",)),
    Language("php", (".php",)),
    Language("kotlin", (".kt", ".kts")),
    Language("swift", (".swift",)),
    Language("scala", (".scala",)),
    Language("csharp", (".cs",), neovim="cs"),
    Language("shellscript", (".sh", ".bash"), neovim="sh"),
)
BY_ID = {lang.id: lang for lang in LANGUAGES}
BY_EXTENSION = {ext: lang for lang in LANGUAGES for ext in lang.extensions}
# Definition node types and kinds per tree-sitter grammar.
DEFINITIONS = {lang.grammar: lang.definitions for lang in LANGUAGES if lang.grammar}


def for_path(path: str) -> Language | None:
    """The language of a file name or path by its extension, or None."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return BY_EXTENSION.get(name[dot:].lower()) if dot > 0 else None


def language_id(path: str) -> str:
    """The LSP language id of a file (``plaintext`` when unknown)."""
    lang = for_path(path)
    return lang.id if lang else "plaintext"


def names_with_grammar() -> str:
    """The languages with code actions and hover, for messages (``Python, JavaScript, ...``)."""
    seen: list[str] = []
    for lang in LANGUAGES:
        if lang.grammar and lang.grammar not in ("tsx",) and lang.id not in ("javascriptreact",):
            seen.append({"cpp": "C++", "javascript": "JavaScript", "typescript": "TypeScript"}.get(
                lang.id, lang.id.capitalize()))
    return ", ".join(seen)


# -- the clients' copies ---------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
VSCODE_TS = ROOT / "clients" / "vscode" / "src" / "languages.ts"
VSCODE_PACKAGE = ROOT / "clients" / "vscode" / "package.json"
NEOVIM_LUA = ROOT / "clients" / "neovim" / "lua" / "deepseek" / "languages.lua"
_HEADER = "Generated by `python -m server.languages --write` from server/languages.py: do not edit."


def vscode_ts() -> str:
    ids = ", ".join(f"'{lang.id}'" for lang in LANGUAGES)
    return (f"// {_HEADER}\n\n/** The languages the server serves (completions in all; actions and hover where it has a"
            f" grammar). */\nexport const LANGUAGES: readonly string[] = [{ids}];\n")


def neovim_lua() -> str:
    fts = ", ".join(f"'{lang.neovim or lang.id}'" for lang in LANGUAGES)
    return f"-- {_HEADER}\n-- The filetypes the server serves.\nreturn {{ {fts} }}\n"


def activation_events(existing: list[str]) -> list[str]:
    """package.json's activationEvents: one ``onLanguage`` per language, then the rest as they were."""
    return [f"onLanguage:{lang.id}" for lang in LANGUAGES] + [e for e in existing if not e.startswith("onLanguage:")]


def action_languages_clause() -> str:
    """The ``when`` clause of the editor's context-menu actions: the languages with a grammar."""
    return "editorLangId =~ /^(" + "|".join(lang.id for lang in LANGUAGES if lang.grammar) + ")$/"


def with_action_languages(menus: dict) -> dict:
    """package.json's ``menus`` with each ``editorLangId =~ ...`` clause set to :func:`action_languages_clause`."""
    import re
    clause = action_languages_clause()
    out = {}
    for where, items in menus.items():
        out[where] = [{**item, "when": re.sub(r"editorLangId =~ /\^\([^)]*\)\$/", clause, item["when"])}
                      if "when" in item else item for item in items]
    return out


def write_clients() -> None:
    VSCODE_TS.write_text(vscode_ts(), encoding="utf-8")
    NEOVIM_LUA.write_text(neovim_lua(), encoding="utf-8")
    package = json.loads(VSCODE_PACKAGE.read_text(encoding="utf-8"))
    package["activationEvents"] = activation_events(package.get("activationEvents", []))
    package["contributes"]["menus"] = with_action_languages(package["contributes"]["menus"])
    VSCODE_PACKAGE.write_text(json.dumps(package, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":  # python -m server.languages --write
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m server.languages --write   (regenerates the clients' language lists)")
    write_clients()
