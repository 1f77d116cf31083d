"""Explain and hover: what a piece of code does, at length in the panel or in one line.

Threads: both block for a generation: call them from a worker thread (hover with its own
short time cap). This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import ast
import json
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout

from ..text import split_lines
from .generation import AssistantCore, OnDelta
from .packs import load_pack
from .records import AssistError, CodeSpan, Reference, Reply


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


HOVER_MAX_TOKENS = 40  # a hover's answer: one short sentence
HOVER_CODE_CHARS = 450  # of the definition, at most, in a hover's prompt (~110 tokens, read in ~1.5 s on 2 cores)
HOVER_MIN_S = 0.3      # a hover that waited for the answer written ahead, in vain, asks itself only with this much left
# Hover answers being written ahead, by model and prompt: their whole text, or None when stopped.
_HOVERS: dict[str, Future[str | None]] = {}
_HOVERS_LOCK = threading.Lock()


class ExplainTasks(AssistantCore):
    """Explain (a session in the store, streamed) and hover (one line, cached, or None when late)."""

    def explain(self, span: CodeSpan, on_delta: OnDelta | None = None, cancel: threading.Event | None = None) -> Reply:
        """Explain ``span``, streamed: its heading (``**`name`** in `file`, lines a-b``) first, then
        the model's text. The whole prompt is known from the span (:meth:`explain_messages`), so it
        can be read ahead while the code-action menu is open."""
        pack = load_pack("explain")
        sid = self.store.new_session(f"Explain {span.symbol or span.path.name}")
        where = f"{span.path.name}:{span.start_line + 1}-{span.end_line + 1}"
        question = f"Explain `{span.symbol or span.path.name}` ({where})"
        self.store.add_message(sid, "user", question)
        # The answer always names the code it is about, whatever the model writes; shown at once.
        heading = f"**`{span.symbol}`** in `{span.path.name}`, lines {span.start_line + 1}-{span.end_line + 1}\n\n" \
            if span.symbol else f"`{span.path.name}`, lines {span.start_line + 1}-{span.end_line + 1}\n\n"
        if on_delta is not None:
            on_delta(sid, heading)
        reply = self._generate("explain", self.explain_messages(span), pack, sid, on_delta, cancel=cancel)
        reply.text = heading + reply.text
        reply.references = [Reference(span.path, span.start_line, span.end_line)]
        self.store.add_message(sid, "assistant", reply.text, self.model_name, pack.version, reply.references)
        return reply

    def explain_messages(self, span: CodeSpan) -> list[dict[str, str]]:
        """Explain's prompt for ``span`` (the pack's system text, then the code)."""
        return load_pack("explain").render(symbol=span.symbol or "this code", path=span.path.name,
                                           start_line=str(span.start_line + 1), end_line=str(span.end_line + 1),
                                           language=span.language, code=span.code)

    def hover(self, symbol: str, language: str, code: str, time_cap_s: float,
              cancel: threading.Event | None = None, background: bool = False) -> str | None:
        """A one-line explanation, from the cache or the model within ``time_cap_s``; None if late.

        ``background``: written ahead where the cursor rests, into the response cache, so the
        hover that follows shows it at once; any other request stops it (see ``_generate``). A
        hover of the same definition while its answer is written ahead waits for that answer
        (within its cap) instead of stopping it and starting again."""
        pack = load_pack("hover")
        messages = self.hover_messages(symbol, language, code)
        key = json.dumps([self.model_name, messages])
        with _HOVERS_LOCK:
            ahead = _HOVERS.get(key) if not background else None
            if background:
                _HOVERS[key] = mine = Future()
        if ahead is not None:
            t0 = time.monotonic()
            try:
                if (text := ahead.result(time_cap_s)) is not None:
                    return text
            except FuturesTimeout:
                return None
            time_cap_s -= time.monotonic() - t0  # it was stopped: ask, if there is time left
            if time_cap_s < HOVER_MIN_S:
                return None
        text, whole = None, False
        try:
            reply = self._generate("hover", messages, pack, None, None, max_tokens=HOVER_MAX_TOKENS,
                                   time_cap_s=time_cap_s, cancel=cancel, background=background)
            text, whole = reply.text or None, reply.finish not in ("cancelled", "timeout")
        except AssistError:
            pass
        finally:
            if background:
                with _HOVERS_LOCK:
                    if _HOVERS.get(key) is mine:
                        del _HOVERS[key]
                mine.set_result(text if whole else None)
        return text

    @staticmethod
    def hover_messages(symbol: str, language: str, code: str) -> list[dict[str, str]]:
        """Hover's prompt: the pack's system text, then the definition of ``symbol``: its first
        whole lines within :data:`HOVER_CODE_CHARS` (what it is for shows in its signature,
        docstring and first lines; the prompt is read in the ~2 s the pointer rests)."""
        if len(code) > HOVER_CODE_CHARS:
            code = code[:code.rfind("\n", 0, HOVER_CODE_CHARS) + 1 or HOVER_CODE_CHARS].rstrip() + "\n    ..."
        return load_pack("hover").render(symbol=symbol, language=language, code=code)
