"""llama-cpp-python is reached beyond ``Llama``'s public methods from one seam module only.

server/engine/llama_api.py lists what it uses (``PRIVATE_API``). These tests check that every
name on that list exists on real objects of the installed llama-cpp-python, the version
pyproject.toml pins, and that the list covers what the module uses; and, by reading the
source with ``ast``, that no other module of server/ or index/ touches llama-cpp-python's
private attributes, writes ``Llama``'s record of evaluated tokens, imports its private or
low-level modules, calls llama.cpp's low-level functions or patches them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from server.engine import llama_api
from server.engine.load_configs import LOAD_CONFIGS
from server.engine.loading import GENERATE_CONTEXT_PARAMS

ROOT = Path(__file__).resolve().parent.parent
SEAM = ROOT / "server" / "engine" / "llama_api.py"
# Llama's record of what the KV cache holds: written only by the seam, read by anyone.
RECORD = frozenset({"n_tokens", "input_ids", "scores"})


def _private_names() -> frozenset[str]:
    """Every ``_name`` (not dunder) of llama-cpp-python's classes and modules: their attributes,
    and what their own source assigns to ``self._name`` (instance attributes, set in ``__init__``)."""
    import llama_cpp
    from llama_cpp import _internals, llama
    from llama_cpp import llama_cpp as bindings

    names = set()
    for module in (llama_cpp, llama, bindings, _internals):
        names |= set(dir(module))
    for cls in (llama.Llama, _internals.LlamaModel, _internals.LlamaContext, _internals.LlamaBatch,
                _internals.LlamaSampler):
        names |= set(dir(cls))
        for node in ast.walk(ast.parse(inspect.getsource(cls))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return frozenset(n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__")))


def _bindings() -> frozenset[str]:
    """llama.cpp's low-level functions and constants in ``llama_cpp.llama_cpp``."""
    from llama_cpp import llama_cpp as bindings
    return frozenset(n for n in dir(bindings) if n.lower().startswith("llama_"))


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def reaches(source: str, private: frozenset[str], bindings: frozenset[str]) -> list[tuple[int, str]]:
    """Where ``source`` reaches into llama-cpp-python beyond ``Llama``'s public methods: (line, name).

    A private attribute of llama-cpp-python read or written on anything but ``self``; a write to
    ``Llama``'s record (:data:`RECORD`, also by item); an import of ``llama_cpp.llama_cpp`` or of a
    private module; a low-level binding used or patched (``setattr`` included).
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            if node.attr in private and not _is_self(node.value):
                found.append((node.lineno, node.attr))
            elif node.attr in bindings:
                found.append((node.lineno, node.attr))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                while isinstance(target, ast.Subscript):
                    target = target.value
                if isinstance(target, ast.Attribute) and target.attr in RECORD and not _is_self(target.value):
                    found.append((node.lineno, target.attr))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if re.match(r"llama_cpp\.(llama_cpp|_)", alias.name):
                    found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "llama_cpp":
            if re.match(r"llama_cpp\.(llama_cpp|_)", node.module):
                found.append((node.lineno, node.module))
            found += [(node.lineno, f"llama_cpp.{a.name}") for a in node.names
                      if node.module == "llama_cpp" and (a.name == "llama_cpp" or a.name.startswith("_"))]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in bindings | private | RECORD:
            found.append((node.lineno, node.args[1].value))
    return found


def test_the_names_the_seam_uses_exist_in_the_pinned_llama_cpp_python(qwen_vocab):
    pin = re.search(r'"llama-cpp-python==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert version("llama-cpp-python") == pin
    from llama_cpp._internals import LlamaBatch

    llm = qwen_vocab.llm  # a real Llama of the default model (vocab only)
    batch = LlamaBatch(n_tokens=1, embd=0, n_seq_max=1, verbose=False)
    owners = {"Llama": llm, "LlamaContext": llm._ctx, "LlamaModel": llm._model, "LlamaBatch": batch,
              "llama_batch": batch.batch}
    owners |= {name: importlib.import_module(name) for name in llama_api.PRIVATE_API if name.startswith("llama_cpp")}
    assert set(owners) == set(llama_api.PRIVATE_API)
    missing = [f"{owner}.{name}" for owner, names in llama_api.PRIVATE_API.items() for name in names
               if not hasattr(owners[owner], name)]
    assert missing == []
    # ctypes takes a field it does not know as a plain attribute, silently: the patched defaults
    # must name fields the structures have.
    from llama_cpp import llama_cpp as bindings
    model_fields = {f for f, _ in bindings.llama_model_params._fields_}
    context_fields = {f for f, _ in bindings.llama_context_params._fields_}
    assert {k for c in LOAD_CONFIGS for k in c.model_params} <= model_fields
    assert set(GENERATE_CONTEXT_PARAMS) <= context_fields


def test_the_seam_lists_every_name_it_uses():
    listed = {name for names in llama_api.PRIVATE_API.values() for name in names} | set(llama_api.PRIVATE_API)
    used = {name for _, name in reaches(SEAM.read_text(encoding="utf-8"), _private_names(), _bindings())}
    assert {"_ctx", "_model", "n_tokens", "input_ids", "llama_memory_seq_add"} <= used  # the scan sees them
    assert used - listed == set()


def test_no_module_but_the_seam_reaches_into_llama_cpp_python():
    private, bindings = _private_names(), _bindings()
    found = []
    for pkg in ("server", "index"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path != SEAM:
                found += [f"{path.relative_to(ROOT)}:{line}: {name}"
                          for line, name in reaches(path.read_text(encoding="utf-8"), private, bindings)]
    assert found == []


@pytest.mark.parametrize("code, name", [
    ("logits = llm._ctx.get_logits_ith(-1)", "_ctx"),
    ("eos = model.llm._model.token_get_text(2)", "_model"),
    ("llm.n_tokens = base", "n_tokens"),
    ("self.llm.input_ids[:n] = cells", "input_ids"),
    ("from llama_cpp._internals import LlamaBatch", "llama_cpp._internals"),
    ("from llama_cpp import llama_cpp as _ll", "llama_cpp.llama_cpp"),
    ("import llama_cpp.llama_cpp", "llama_cpp.llama_cpp"),
    ("_ll.llama_memory_seq_rm(mem, 0, 0, -1)", "llama_memory_seq_rm"),
    ("setattr(_ll, 'llama_model_default_params', patched)", "llama_model_default_params"),
])
def test_the_scan_finds_each_way_of_reaching_in(code, name):
    assert name in [n for _, n in reaches(code, _private_names(), _bindings())]


def test_the_scan_leaves_a_modules_own_attributes_and_the_public_api_alone():
    code = ("self._model = None\nself.n_tokens = 0\nfrom llama_cpp import Llama, LLAMA_POOLING_TYPE_MEAN\n"
            "n = model.llm.n_tokens\nllm.eval(tokens)\nids = llm.tokenize(b'x', add_bos=False)\n")
    assert reaches(code, _private_names(), _bindings()) == []
