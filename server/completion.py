"""The completion pipeline: a document snapshot in, a suggestion out.

snapshot (text, cursor offset, language) -> length policy (:mod:`server.length`)
-> FIM prompt within the token budget (:mod:`server.prompting`) -> greedy generation
on the engine thread, stopped by the policy, a stop token, cancellation or the time
cap (:mod:`server.engine`) -> final trim.

The same function serves ``textDocument/inlineCompletion``, ``textDocument/completion``
and ``deepseek-lsp complete``. This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .config import Settings
from .engine import Generation, LoadedModel
from .length import LengthPolicy, Mode, decide, trim
from .prompting import Budget, FimFormat, TokenCounter, build_fim_prompt

log = logging.getLogger(__name__)
SINGLE_LINE_MAX_TOKENS = 64  # a line of code is rarely longer; caps a model that will not stop


class Unsuitable(Exception):
    """The document or position gets no suggestion; ``str(e)`` says why (for logs)."""


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of one document at one cursor position.

    Attributes:
        uri: the document's URI (for logs).
        version: the document version the snapshot was taken from.
        text: the whole document.
        offset: the cursor as an index into ``text`` (code points).
        language_id: LSP language id (``python``, ``rust``, ...).
    """

    uri: str
    version: int | None
    text: str
    offset: int
    language_id: str


@dataclass(frozen=True)
class Suggestion:
    """The completion and how it was made.

    Attributes:
        text: what to insert at the cursor ("" for no suggestion).
        policy: the length policy that shaped it.
        generation: timings and token counts.
        prefix_dropped_tokens, suffix_dropped_tokens: context left out by the budget.
    """

    text: str
    policy: LengthPolicy
    generation: Generation
    prefix_dropped_tokens: int
    suffix_dropped_tokens: int


def check_document(text: str, max_file_size_kb: int) -> None:
    """Refuse documents no suggestion should be made for.

    Raises:
        Unsuitable: the text is larger than ``completion.maxFileSizeKb`` or looks binary (NUL bytes).
    """
    if len(text) > max_file_size_kb * 256:  # cheap pre-check: a code point is at most 4 bytes
        size_kb = len(text.encode("utf-8", "replace")) / 1024
        if size_kb > max_file_size_kb:
            raise Unsuitable(f"document is {size_kb:,.0f} KiB, over completion.maxFileSizeKb ({max_file_size_kb})")
    if "\x00" in text:
        raise Unsuitable("document looks binary (it contains NUL characters)")


def complete(model: LoadedModel, fim: FimFormat, counter: TokenCounter, snap: Snapshot,
             settings: Settings, cancel: threading.Event) -> Suggestion:
    """Compute the suggestion for ``snap``. Runs on the engine's owner thread.

    Args:
        model: the loaded model (tokenizer and generator).
        fim: its FIM format.
        counter: token counter bound to ``model``.
        snap: the document snapshot.
        settings: ``completion.*`` budgets and caps.
        cancel: set by another thread to stop within one token.

    Raises:
        Unsuitable: see :func:`check_document`.
    """
    started = time.monotonic()
    check_document(snap.text, settings.completion_max_file_size_kb)
    prefix, suffix = snap.text[: snap.offset], snap.text[snap.offset:]
    policy = decide(prefix, suffix, snap.language_id, settings.completion_max_lines)
    max_tokens = settings.completion_max_tokens if policy.mode is Mode.MULTI_LINE \
        else min(settings.completion_max_tokens, SINGLE_LINE_MAX_TOKENS)
    # The whole prompt plus the output must fit n_ctx: shrink the prefix quota first.
    room = model.n_ctx - max_tokens - 8 - len(fim.bos)
    suffix_budget = min(settings.completion_suffix_tokens, room // 4)
    budget = Budget(min(settings.completion_prefix_tokens, room - suffix_budget), suffix_budget)
    prompt = build_fim_prompt(model, fim, prefix, suffix, budget, counter)
    deadline = started + settings.completion_max_time_ms / 1000
    gen = model.generate(prompt.tokens, max_tokens=max_tokens, cancel=cancel, deadline=deadline,
                         stop_ids=fim.stop_ids, judge=lambda text: trim(text, policy)[1])
    text = "" if gen.finish == "cancelled" else trim(gen.text, policy, final=True)[0]
    log.info("completion %s v%s: %s, %d chars; prompt %d tokens (%d reused, %d evaluated) in %.0f ms; "
             "%d generated, %.0f ms total; finish %s", snap.uri, snap.version, policy.mode.value, len(text),
             gen.prompt_tokens, gen.reused_tokens, gen.evaluated_tokens, gen.prompt_ms, gen.generated_tokens,
             gen.total_ms, gen.finish)
    return Suggestion(text, policy, gen, prompt.prefix_dropped_tokens, prompt.suffix_dropped_tokens)
