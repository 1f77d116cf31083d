"""Imports go one way: no cycle between modules of server/ and index/, no private name across packages."""

import ast
from pathlib import Path

from .module_graph import cycles, load

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycles_and_no_private_names_across_packages():
    mods = load(ROOT)
    assert len(mods) > 20
    assert cycles(mods) == []
    assert [f"{m.name}: {p}" for m in mods.values() for p in m.private] == []
    assert [f"{m.name}: {u}" for m in mods.values() for u in m.unresolved] == []


def test_the_domain_never_imports_the_lsp_layer():
    mods = load(ROOT)
    lsp = {name for name in mods if name.startswith("server.lsp.")}
    for name, mod in mods.items():
        if name in lsp or name in ("server.cli", "server.__main__"):
            continue
        assert not mod.imports & lsp, f"{name} imports {mod.imports & lsp}"
        tree = ast.parse(mod.path.read_text(encoding="utf-8"))
        external = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        external |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not external & {"pygls", "lsprotocol"}, f"{name} imports {external & {'pygls', 'lsprotocol'}}"
