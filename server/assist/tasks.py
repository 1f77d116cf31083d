"""Explain, refactor, write tests, hover and chat: the tasks behind code actions and the panel.

The model answers through its own chat template (read from the GGUF, rendered by
llama-cpp-python's Jinja2 formatter) on a chat model of its own (``chatModel``, or a
second instance of the completion model: the weights are memory-mapped and shared, and
the completion model's KV cache is left alone), or on an OpenAI-compatible server.
Replies stream through a callback. Every task blocks for the length of a generation:
call them from a worker thread, never from the event loop.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable

from index.chunking import chunk_file
from index.lexical import words
from index.syntax import parseable_prefix, syntax_errors

from ..engine import Engine, LoadedModel
from ..text import split_lines
from .expected import expected_from_code
from .packs import PromptPack, load_pack
from .records import AssistError, CodeSpan, ContextItem, RefactorResult, Reference, Reply, TestsResult, Verification
from .store import AssistStore, StoredMessage
from .testrun import as_test_run
from .verify import mutation_score, verify_rewrite

log = logging.getLogger(__name__)

OnDelta = Callable[[str, str], None]  # (session id, text delta); called from the engine thread
OnProgress = Callable[[str], None]    # a step of a long task ("round 2 of 3: running the tests"); worker thread
REPAIR_ROUNDS = 2          # write-tests: how many times tests that fail or catch nothing go back to the model
TEST_MAX_TOKENS = 512      # write-tests: longest test module the model may write, in tokens
MAX_TEST_FUNCTIONS = 6     # write-tests: generation stops when the model starts a seventh test (or repeats one)
TEST_NAME = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(test\w*)[ \t]*\(", re.M)
RECENT_TURNS = 2           # chat: the last exchanges always come back ...
RELEVANT_TURNS = 2         # ... plus this many older ones most related to the new message
FENCE = re.compile(r"```[\w+#.-]*\n(.*?)```", re.S)


# -- code helpers ----------------------------------------------------------------------------
def code_block(reply: str) -> str | None:
    """The (longest) fenced code block of a model reply, or None.

    An answer cut off by the token limit has an opening fence and no closing one: then
    everything after the opening fence counts (see :func:`parseable_prefix`).
    """
    blocks = FENCE.findall(reply)
    if blocks:
        return max(blocks, key=len)
    opening = list(re.finditer(r"```[\w+#.-]*\n", reply))
    return reply[opening[-1].end():] if opening else None


def python_tests(code: str, symbol: str, import_line: str) -> str:
    """Tests must test the real code: drop top-level copies of ``symbol`` and import it instead."""
    tree = ast.parse(code)
    lines = split_lines(code, keepends=True)
    for node in reversed(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == symbol:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            del lines[start:node.end_lineno]
    code = "".join(lines)
    if import_line not in code:
        code = import_line + "\n" + code
    return code


def enough_tests(text: str) -> bool:
    """The stop rule of test generation: the model has begun a test beyond MAX_TEST_FUNCTIONS, or one it wrote."""
    return len(without_extra_tests(text)) < len(text)


def without_extra_tests(text: str) -> str:
    """``text`` up to the line where a test beyond MAX_TEST_FUNCTIONS, or a repeated test name, begins."""
    seen: set[str] = set()
    for m in TEST_NAME.finditer(text):
        if m.group(1) in seen or len(seen) == MAX_TEST_FUNCTIONS:
            return text[:text.rfind("\n", 0, m.start()) + 1]
        seen.add(m.group(1))
    return text


def drop_tests(code: str, names: set[str]) -> str:
    """``code`` without its top-level test functions (and test-class methods) called ``names``."""
    tree = ast.parse(code)
    lines = split_lines(code, keepends=True)
    spans = []
    for node in tree.body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        for fn in members:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name in names:
                spans.append((min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1, fn.end_lineno))
    for start, end in sorted(spans, reverse=True):
        del lines[start:end]
    return "".join(lines)


def docstring_and_signature(language: str, code: str) -> tuple[str, str]:
    """The definition's first line(s) up to its body, and its docstring / leading comment."""
    lines = split_lines(code)
    sig = []
    for line in lines:
        sig.append(line)
        if line.rstrip().endswith((":", "{")) or ")" in line and language != "python":
            break
    doc = ""
    if language == "python":
        try:
            node = ast.parse(code.lstrip() if not code.startswith((" ", "\t")) else "if 1:\n" + code).body[0]
            if isinstance(node, ast.If):
                node = node.body[0]
            doc = ast.get_docstring(node) or ""
        except (SyntaxError, IndexError):
            doc = ""
    return "\n".join(sig).strip(), doc


# -- the assistant ---------------------------------------------------------------------------
class Assistant:
    """The tasks, on top of a chat model's :class:`Engine`.

    Args:
        engine: owner thread of the chat model (loaded).
        model_name: stored with each answer and in the cache key.
        store: conversations, cache, metrics.
        max_tokens: longest reply.
        context_tokens: budget for everything sent with a chat message (file, selection,
            retrieved chunks, past turns), in tokens.
    """

    def __init__(self, engine: Engine | None, model_name: str, store: AssistStore, max_tokens: int = 512,
                 context_tokens: int = 2048, time_cap_s: float = 120.0, remote=None):
        self.engine, self.model_name, self.store = engine, model_name, store
        self.max_tokens, self.context_tokens, self.time_cap_s = max_tokens, context_tokens, time_cap_s
        self.remote = remote  # an OpenAIBackend: chat goes to /v1/chat/completions instead of `engine`
        self.sandbox = "bubblewrap"  # tests.sandbox: how generated tests are run (server.assist.testrun)

    def _counter(self) -> Callable[[str], int]:
        """Counts tokens with the chat model's own tokenizer, on its owner thread (never another model's,
        which a settings change may unload meanwhile); characters / 4 without a local model."""
        engine = self.engine
        if engine is None:
            return lambda text: len(text) // 4 + 1

        @functools.lru_cache(maxsize=1024)
        def count(text: str) -> int:
            return engine.submit(lambda model: len(model.tokenize(text))).result()
        return count

    # -- generation ------------------------------------------------------------------------
    def _format(self, model: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = model.metadata.get("tokenizer.chat_template")
        if not template:
            raise AssistError(f"{self.model_name} has no chat template; set chatModel to an instruct model")
        llm = model.llm
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        prompt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        return model.tokenize(prompt, add_special=False, parse_special=True)

    def _generate(self, task: str, messages: list[dict[str, str]], pack: PromptPack, session_id: str | None,
                  on_delta: OnDelta | None, max_tokens: int | None = None, time_cap_s: float | None = None,
                  cancel: threading.Event | None = None, use_cache: bool = True,
                  stop: Callable[[str], bool] | None = None) -> Reply:
        """Run one chat completion (blocking, call from a worker thread), with cache and metrics.

        ``stop`` is called with the text so far after each token; True ends the answer there.
        """
        key = hashlib.sha256(json.dumps([task, self.model_name, pack.version, messages]).encode()).hexdigest()
        t0 = time.monotonic()
        if use_cache and (hit := self.store.cached(key)) is not None:
            if on_delta:
                on_delta(session_id or "", hit)
            self.store.metric(task, self.model_name, (time.monotonic() - t0) * 1000, 0, 0, True)
            return Reply(hit, session_id, True, pack.version, finish="cache")
        cancel = cancel or threading.Event()
        sent = [0]

        def stream(text: str) -> bool:
            if on_delta and len(text) > sent[0]:
                on_delta(session_id or "", text[sent[0]:])
                sent[0] = len(text)
            return stop is not None and stop(text)

        def job(model: LoadedModel):
            tokens = self._format(model, messages)
            budget = max_tokens or self.max_tokens
            if len(tokens) + budget > model.n_ctx:
                raise AssistError(f"the request is {len(tokens):,} tokens; with {budget} for the answer it does "
                                  "not fit "
                                  f"the model's context of {model.n_ctx:,}. Select less code or raise model.nCtx.")
            return len(tokens), model.generate(tokens, max_tokens=budget, cancel=cancel,
                                               deadline=time.monotonic() + (time_cap_s or self.time_cap_s),
                                               judge=stream)
        if self.remote is not None:
            from ..remote import BackendUnavailable
            try:
                result = self.remote.chat(messages, max_tokens=max_tokens or self.max_tokens, cancel=cancel,
                                          cap_s=time_cap_s or self.time_cap_s, on_text=stream)
            except BackendUnavailable as e:
                raise AssistError(str(e)) from None
            text, finish, n_prompt, n_out = result.text.strip(), result.finish, 0, 0
        else:
            n_prompt, gen = self.engine.submit(job).result()
            text, finish, n_out = gen.text.strip(), gen.finish, gen.generated_tokens
        if finish not in ("cancelled", "timeout") and text:
            self.store.cache(key, text)
        self.store.metric(task, self.model_name, (time.monotonic() - t0) * 1000, n_prompt, n_out, False)
        return Reply(text, session_id, False, pack.version, prompt_tokens=n_prompt, output_tokens=n_out,
                     finish=finish)

    def answer(self, task: str, messages: list[dict[str, str]], pack: PromptPack, on_text: Callable[[str], None],
               max_tokens: int | None = None, cancel: threading.Event | None = None) -> Reply:
        """Answer a conversation a client built itself (the OpenAI-compatible endpoint). Blocks.

        Args:
            task: the task it is recorded under in the metrics (``chat``, ``explain``...).
            messages: ``[{"role", "content"}]``, the pack's system message already first.
            pack: the prompt pack whose version is recorded and cached with the answer.
            on_text: called with each piece of the answer as it is generated (engine thread).
            max_tokens: longest answer (default ``chat.maxTokens``).

        Raises:
            AssistError: the conversation does not fit the model's context, or the model has no
                chat template, or the remote server is unavailable.
        """
        return self._generate(task, messages, pack, None, lambda _sid, delta: on_text(delta), max_tokens=max_tokens,
                              cancel=cancel)

    # -- tasks -----------------------------------------------------------------------------
    def explain(self, span: CodeSpan, on_delta: OnDelta | None = None, cancel: threading.Event | None = None) -> Reply:
        pack = load_pack("explain")
        sid = self.store.new_session(f"Explain {span.symbol or span.path.name}")
        where = f"{span.path.name}:{span.start_line + 1}-{span.end_line + 1}"
        question = f"Explain `{span.symbol or span.path.name}` ({where})"
        self.store.add_message(sid, "user", question)
        messages = pack.render(symbol=span.symbol or "this code", path=span.path.name,
                               start_line=str(span.start_line + 1),
                               end_line=str(span.end_line + 1), language=span.language, code=span.code)
        reply = self._generate("explain", messages, pack, sid, on_delta, cancel=cancel)
        # The answer always names the code it is about, whatever the model wrote.
        heading = f"**`{span.symbol}`** in `{span.path.name}`, lines {span.start_line + 1}-{span.end_line + 1}\n\n" \
            if span.symbol else f"`{span.path.name}`, lines {span.start_line + 1}-{span.end_line + 1}\n\n"
        reply.text = heading + reply.text
        reply.references = [Reference(span.path, span.start_line, span.end_line)]
        self.store.add_message(sid, "assistant", reply.text, self.model_name, pack.version, reply.references)
        return reply

    def refactor(self, span: CodeSpan, instruction: str = "", root: Path | None = None, trusted: bool = False,
                 cancel: threading.Event | None = None, on_progress: OnProgress | None = None) -> RefactorResult:
        """The rewritten code for the span, or None with the reason it is refused.

        A rewrite that parses and keeps the definition's name is then run (Python, a trusted
        workspace ``root``, a sandbox): the workspace's tests of the function and checks
        derived from it, against the original and the rewrite (:func:`verify_rewrite`). A
        rewrite that changes behaviour is refused; one that could not be run is returned
        with ``verification.verdict == "unverified"`` and the reason.
        """
        say = on_progress or (lambda message: None)
        pack = load_pack("refactor")
        messages = pack.render(path=span.path.name, language=span.language, code=span.code,
                               instruction=(f"Instruction: {instruction.strip()}" if instruction.strip() else
                                            "Make it clearer and simpler."))
        budget = max(self.max_tokens, len(span.code) // 2 + 128)  # room for the whole rewrite
        say("writing the rewrite")
        reply = self._generate("refactor", messages, pack, None, None, max_tokens=budget, cancel=cancel)
        new = code_block(reply.text)
        if new is None:
            return RefactorResult(None, "the model's answer held no code block", reply)
        if "```" not in reply.text[reply.text.find("```") + 3:]:
            return RefactorResult(None, f"the answer was cut off after {budget} tokens; nothing was changed", reply)
        new = _drop_redefinitions(span, new)
        new = _match_indent(span.code, new)
        lines = split_lines(span.text, keepends=True)
        after = "".join(lines[:span.start_line]) + new + "".join(lines[span.end_line + 1:])
        before_errors, after_errors = syntax_errors(span.language, span.text), syntax_errors(span.language, after)
        if after_errors > before_errors:
            return RefactorResult(None, f"the rewritten code does not parse ({after_errors - before_errors} new "
                                        "syntax error(s)); nothing was changed", reply)
        if new.strip() == span.code.strip():
            return RefactorResult(None, "the model proposed no change", reply)
        if span.symbol and not re.search(rf"\b{re.escape(span.symbol)}\b", new):
            return RefactorResult(None, f"the rewrite no longer defines `{span.symbol}`, which other code may "
                                        "call; nothing was changed", reply)
        if cancel is not None and cancel.is_set():
            return RefactorResult(None, "cancelled", reply)
        if root is None or not trusted:
            verification = Verification("unverified", "not verified: running the workspace's code needs a trusted "
                                                      "workspace")
        elif self.sandbox == "off":
            verification = Verification("unverified", "not verified: tests.sandbox is off")
        else:
            say("running the code: original and rewrite")
            verification = verify_rewrite(root, span, after, cancel, self.sandbox)
        if verification.verdict == "changed":
            return RefactorResult(None, f"not applied: {verification.summary}", reply, verification)
        return RefactorResult(new, "", reply, verification)

    def write_tests(self, span: CodeSpan, root: Path, test_path: Path, cancel: threading.Event | None = None,
                    on_progress: OnProgress | None = None) -> TestsResult:
        """Tests for the span (``code`` None when refused, with the reason).

        Python: pytest in the sandbox, on the function as it is and on mutants of it
        (:func:`mutation_score`). The tests are kept when they all pass and catch at least one
        mutant (or no mutant can be made); tests that fail on the code as it is are dropped
        when others pass; otherwise the failures, or a mutant no test caught, go back to the
        model, up to REPAIR_ROUNDS times. Other languages: written, parsed, not run.
        """
        say = on_progress or (lambda message: None)
        pack = load_pack("tests")
        framework = {"python": "pytest", "javascript": "Jest", "typescript": "Jest", "go": "Go's testing package",
                     "rust": "Rust's #[test]", "java": "JUnit 5"}.get(span.language, "the usual framework")
        rel = span.path.resolve().relative_to(root.resolve()) if span.path.resolve().is_relative_to(root.resolve()) \
            else Path(span.path.name)
        module = ".".join(rel.with_suffix("").parts)
        import_line = f"from {module} import {span.symbol}" if span.language == "python" and span.symbol \
            else f"import {module}"
        feedback, run, code, score, refusal = "", None, None, None, ""
        corrected: list = []  # the expected values of the kept candidate that came from the code
        rounds = REPAIR_ROUNDS + 1
        for round_no in range(rounds):
            messages = pack.render(framework=framework, symbol=span.symbol or "this code", path=str(rel),
                                   import_line=import_line, language=span.language, code=span.code, feedback=feedback,
                                   max_tests=str(MAX_TEST_FUNCTIONS - 1))
            if cancel is not None and cancel.is_set():
                return TestsResult(None, run, round_no, "cancelled", score)
            say(f"round {round_no + 1} of {rounds}: writing tests")
            reply = self._generate("tests", messages, pack, None, None, use_cache=round_no == 0, cancel=cancel,
                                   max_tokens=TEST_MAX_TOKENS, stop=enough_tests)
            candidate, corrected = code_block(reply.text), []
            if candidate is None:
                feedback = "\nYour answer had no fenced code block. Answer with the test module in one code block."
                continue
            candidate = parseable_prefix(span.language, without_extra_tests(candidate))
            if span.language == "python" and candidate:
                try:
                    candidate = python_tests(candidate, span.symbol, import_line)
                except SyntaxError:
                    candidate = ""
            if not candidate or (span.language == "python" and "def test" not in candidate):
                feedback = ("\nYour answer had no complete test function. Write short test functions named "
                            f"test_..., that import `{span.symbol}` (do not copy it).")
                continue
            if span.language != "python":
                return TestsResult(candidate, None, round_no + 1, "")
            say(f"round {round_no + 1} of {rounds}: running the tests")
            result, score = mutation_score(root, span, test_path.name, candidate, cancel, self.sandbox)
            run = as_test_run(result)
            if run.ran and run.failed and run.reason != "cancelled" and span.symbol:
                # A wrong expected value is the usual failure: take it from the code as it is (see expected.py).
                say(f"round {round_no + 1} of {rounds}: taking the expected values from the code")
                fixed, found = expected_from_code(root, test_path.name, candidate, span.symbol, cancel, self.sandbox)
                if found:
                    say(f"round {round_no + 1} of {rounds}: running the tests again")
                    result, score = mutation_score(root, span, test_path.name, fixed, cancel, self.sandbox)
                    candidate, run, corrected = fixed, as_test_run(result), found
            if run.ran and run.passed and run.failed and run.reason != "cancelled":
                # Keep what is right: drop the tests that fail on the code as it is, run the rest again.
                pruned = drop_tests(candidate, {name.rsplit("::", 1)[-1] for name in run.failed})
                say(f"round {round_no + 1} of {rounds}: running the tests that passed")
                result, score = mutation_score(root, span, test_path.name, pruned, cancel, self.sandbox)
                candidate, run = pruned, as_test_run(result)
            code = candidate
            if not run.ran or run.reason == "cancelled":  # nothing to judge them by
                return TestsResult(code, run, round_no + 1, "", score if run.ran else None)
            if run.ok and (score.caught or score.reason or not score.tried):
                return TestsResult(code, run, round_no + 1, "", score, [str(c) for c in corrected])
            if run.ok:
                survivor = score.survivors[0]
                refusal = (f"the tests pass but catch none of the {score.tried} deliberately broken copies of "
                           f"`{span.symbol}` (e.g. {survivor.description}); not written")
                feedback = (f"\nThese tests pass, but they also pass when `{span.symbol}` is broken like this "
                            f"({survivor.description}):\n```python\n{survivor.source}```\nAdd a test that fails on "
                            f"this broken version and passes on the real code. The tests so far:\n```python\n{code}```")
            else:
                refusal = "the tests fail on the code as it is; not written"
                feedback = (f"\nThese tests failed:\n```\n{run.output[-2000:]}\n```\nFix the tests (the code under "
                            f"test is right unless a test shows a real bug):\n```python\n{code}\n```")
        if code is None:
            return TestsResult(None, None, rounds, "the model did not produce tests that parse")
        return TestsResult(None, run, rounds, refusal, score)

    def hover(self, symbol: str, language: str, code: str, time_cap_s: float,
              cancel: threading.Event | None = None) -> str | None:
        """A one-line explanation, from the cache or the model within ``time_cap_s``; None if late."""
        pack = load_pack("hover")
        messages = pack.render(symbol=symbol, language=language, code=code[:4000])
        try:
            reply = self._generate("hover", messages, pack, None, None, max_tokens=60, time_cap_s=time_cap_s,
                                   cancel=cancel)
        except AssistError:
            return None
        return reply.text or None

    def chat(self, session_id: str | None, message: str, context: list[ContextItem],
             on_delta: OnDelta | None = None, cancel: threading.Event | None = None) -> Reply:
        """Answer ``message`` in a session (a new one when None or unknown).

        Args:
            context: pieces most important first (the selection, the current file, retrieved
                chunks); kept within the ``context_tokens`` budget in that order, counted in
                the chat model's own tokens (characters / 4 for a remote model).

        Raises:
            AssistError: the message alone is over the budget.
        """
        count = self._counter()
        if count(message) > self.context_tokens:
            raise AssistError(f"the message is about {count(message):,} tokens, over the chat budget of "
                              f"{self.context_tokens:,} (chat.contextTokens). Shorten it or select less.")
        pack = load_pack("chat")
        if not session_id or not self.store.has_session(session_id):
            session_id = self.store.new_session(message)
        history = self.store.messages(session_id)
        budget = self.context_tokens - count(message)
        chosen_turns = []
        for turn in _relevant_turns(history, message):
            n = sum(count(m.text) for m in turn)
            if n <= budget:
                chosen_turns.append(turn)
                budget -= n
        parts, refs = [], []
        for item in context:
            block = f"{item.label}:\n```\n{item.text.rstrip()}\n```\n"
            n = count(block)
            if n > budget:
                continue
            budget -= n
            parts.append(block)
            if item.reference is not None:
                refs.append(item.reference)
        system, user = pack.render(context="\n".join(parts), message=message)
        past = [{"role": m.role, "content": m.text} for turn in sorted(chosen_turns, key=lambda t: t[0].timestamp)
                for m in turn]
        self.store.add_message(session_id, "user", message)
        reply = self._generate("chat", [system, *past, user], pack, session_id, on_delta, cancel=cancel)
        reply.references = refs
        self.store.add_message(session_id, "assistant", reply.text, self.model_name, pack.version, refs)
        return reply


def _relevant_turns(history: list[StoredMessage], message: str) -> list[list[StoredMessage]]:
    """Past exchanges to bring back: the most recent ones, then the older ones sharing the most
    words with the new message. Never the whole history of a long conversation."""
    turns, current = [], []
    for m in history:
        if m.role == "user" and current:
            turns.append(current)
            current = []
        current.append(m)
    if current:
        turns.append(current)
    recent, older = turns[-RECENT_TURNS:], turns[:-RECENT_TURNS]
    want = set(words(message).split())

    def overlap(turn: list[StoredMessage]) -> float:
        have = set(words(" ".join(m.text for m in turn)).split())
        return len(want & have) / (1 + len(have)) ** 0.5
    ranked = sorted((t for t in older if overlap(t) > 0), key=overlap, reverse=True)[:RELEVANT_TURNS]
    return recent[::-1] + ranked


def _drop_redefinitions(span: CodeSpan, new: str) -> str:
    """Remove from a rewrite any top-level definition of a name defined elsewhere in the file, and
    the names of its top-level imports that the file already binds.

    A small model likes to append its own versions of the helpers it saw, or imports of
    names the module already has; applied, they would shadow the real ones.
    """
    lines = split_lines(span.text, keepends=True)
    blank = "\n" * (span.end_line - span.start_line + 1)
    rest = "".join(lines[:span.start_line]) + blank + "".join(lines[span.end_line + 1:])
    elsewhere = {c.symbol for c in chunk_file(span.path.name, rest) if c.symbol and c.kind != "lines"} - {span.symbol}
    new_lines = split_lines(new, keepends=True)
    drop: set[int] = set()
    for c in chunk_file(span.path.name, new):
        if c.symbol in elsewhere and not new_lines[c.start_line][:1].isspace():
            first = c.start_line
            while first > 0 and new_lines[first - 1].lstrip().startswith("@"):
                first -= 1  # its decorators go too
            drop.update(range(first, c.end_line + 1))
    # An import of a name the file already binds: redundant, or it shadows the file's own (a model
    # that writes `from itertools import accumulate` above its rewrite replaces toolz's accumulate).
    replace: dict[int, str] = {}
    try:
        bound = _bound_names(ast.parse(rest))
        new_tree = ast.parse(new)
    except SyntaxError:
        bound, new_tree = set(), None
    for node in new_tree.body if new_tree is not None else []:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.end_lineno is not None:
            keep = [a for a in node.names if (a.asname or a.name).split(".")[0] not in bound]
            if len(keep) < len(node.names):
                drop.update(range(node.lineno - 1, node.end_lineno))
                if keep:
                    node.names = keep
                    replace[node.lineno - 1] = ast.unparse(node) + "\n"
    kept = "".join(replace.get(i, line) for i, line in enumerate(new_lines) if i not in drop or i in replace)
    return re.sub(r"\n{3,}$", "\n", kept)


def _bound_names(tree: ast.Module) -> set[str]:
    """Names a module's top-level statements bind: definitions, imports, assignments."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _match_indent(original: str, new: str) -> str:
    """Re-indent ``new`` to the original's first-line indentation; end with a newline."""
    import textwrap
    first = next((ln for ln in split_lines(original) if ln.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    body = textwrap.indent(textwrap.dedent(new), indent, lambda ln: bool(ln.strip()))
    return body if body.endswith("\n") else body + "\n"
