"""One source for the languages the server serves: the clients' lists are generated from it."""

import json

from index.chunking import chunk_file
from index.syntax import enclosing_definition, grammar_for
from server import languages


def test_the_clients_lists_equal_the_servers_table():
    regenerate = "regenerate with `python -m server.languages --write`"
    assert languages.VSCODE_TS.read_text() == languages.vscode_ts(), regenerate
    assert languages.NEOVIM_LUA.read_text() == languages.neovim_lua(), regenerate
    package = json.loads(languages.VSCODE_PACKAGE.read_text())
    assert package["activationEvents"] == languages.activation_events(package["activationEvents"]), regenerate
    menus = package["contributes"]["menus"]
    assert menus == languages.with_action_languages(menus), regenerate
    assert languages.action_languages_clause() in json.dumps(menus)


def test_every_language_with_a_grammar_gets_definitions():
    samples = {"python": ("a.py", "def add(a, b):\n    return a + b\n"),
               "lua": ("a.lua", "local function add(a, b)\n  return a + b\nend\n"),
               "typescriptreact": ("a.tsx", "function add(a: number, b: number) {\n  return a + b;\n}\n"),
               "go": ("a.go", "package m\n\nfunc add(a, b int) int {\n\treturn a + b\n}\n")}
    for lang_id, (name, code) in samples.items():
        assert languages.language_id(name) == lang_id
        found = enclosing_definition(name, code, code.count("\n") - 2)
        assert found is not None and found.name == "add", (lang_id, found)
        assert any(c.symbol == "add" for c in chunk_file(name, code)), lang_id
    assert grammar_for("a.rb") is None and languages.language_id("a.rb") == "ruby"  # completion only
    assert languages.language_id("notes.txt") == "plaintext"
