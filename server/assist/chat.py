"""Chat: a conversation in a session, its prompt laid out so that all but the question can be read ahead.

The prompt, in this order (``chat@v3``):

1. the pack's system text, then what the editor shows, known before the question: the
   current file's part (its lines around the selection, else its start, within
   :data:`FILE_SHARE` of ``chat.contextTokens``), then the selection itself (within
   :data:`KNOWN_SHARE`), last, next to the question that is about it;
2. the conversation so far, in order: its latest whole turns within :data:`HISTORY_SHARE`
   (a follow-up only appends to it);
3. the question's message: the chunks retrieved for it, then the question. The editor sends
   retrieved chunks only with a question asked without a selection
   (:func:`server.lsp.assist.chat_context`): a question about selected code is answered from
   that code, and nothing of its prompt but the question is read after it. A question about
   the workspace is read after it with its chunks: each chunk goes in as its :func:`excerpt`
   (its first line and the lines naming what the question asks about, within
   :data:`EXCERPT_TOKENS`), best first, as many as this machine reads with the question in
   :data:`RETRIEVED_READ_S` at the chat model's measured prompt rate but at least
   :data:`RETRIEVED_MIN` (all within what is left of ``chat.contextTokens``), so that the
   answer starts within ~3 s on 2 cores.

Parts 1 and 2 depend neither on the question nor on each other's size, so the prompt up to
the question's message is the same whether it is built while the user types
(:meth:`ChatTask.chat_ahead`, read into the KV cache by :mod:`.ahead`) or when the question
arrives; only part 3 is read after it. With the question as typed so far (a draft), the chunks
retrieved for it are read ahead too: the question usually finds many of the same ones, and lays
those out first, in the order read ahead (:attr:`ChatTask.ahead_chunks`), so that only the chunks
the draft did not find are read after it. Tokens are counted in the chat model's own tokens.

Threads: a worker thread (it blocks for the generation; the token counts run on the chat
model's owner thread). This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from typing import Callable

from ..text import split_lines
from .generation import OPEN_END, AssistantCore, OnDelta, OnPromptRead
from .packs import load_pack
from .records import AssistError, ContextItem, Reference, Reply
from .store import StoredMessage

KNOWN_SHARE = 0.5     # of chat.contextTokens: the selection
FILE_SHARE = 0.125    # of chat.contextTokens: the current file's part (around the selection, else its start)
HISTORY_SHARE = 0.25  # of chat.contextTokens: the conversation so far (its latest whole turns)
EXCERPT_TOKENS = 48   # at most, of one retrieved chunk: its first line and the lines naming the question's terms
RETRIEVED_READ_S = 2.0  # the question and its chunks: at most what this machine reads in this time,
RETRIEVED_MIN = 3       # but this many chunks at least (the definition and two uses, say)
# Words of a question that name no code: not searched for in a chunk's lines.
QUESTION_WORDS = frozenset("""
a all an and any are as at be by call called calls can class code could defined define defines do does
each explain file for from function functions get gets how i in is it its me method methods module my not
of on or please return returns set show that the their there these this those to use used uses using was
we what when where which who whom why will with work works would you your
""".split())


class ChatTask(AssistantCore):
    """Chat, on top of the core's generation.

    Attributes:
        ahead_chunks: the labels of the retrieved chunks the latest prompt read ahead for a draft
            laid out, in order: a question lays out those it finds too first, in that order, so
            that its prompt starts with what was read ahead.
    """

    ahead_chunks: tuple[str, ...] = ()

    def chat(self, session_id: str | None, message: str, context: list[ContextItem],
             on_delta: OnDelta | None = None, cancel: threading.Event | None = None,
             on_prompt: OnPromptRead | None = None,
             on_references: Callable[[str, list[Reference]], None] | None = None) -> Reply:
        """Answer ``message`` in a session (a new one when None or unknown).

        Args:
            context: pieces most important first: what the editor shows (the selection, the
                current file: ``retrieved`` False) and the chunks found for the question
                (``retrieved`` True); each kind kept within its share of ``context_tokens``
                (see the module's layout), counted in the chat model's own tokens (characters
                / 4 for a remote model).
            on_prompt: the progress of reading a long prompt (see :meth:`_generate`).
            on_references: called once the prompt is laid out, before the model reads it, with
                (session id, the references of the code the answer is given): shown at once.

        Raises:
            AssistError: the message alone is over the budget.
        """
        count = self._counter()
        if count(message) > self.context_tokens:
            raise AssistError(f"the message is about {count(message):,} tokens, over the chat budget of "
                              f"{self.context_tokens:,} (chat.contextTokens). Shorten it or select less.")
        if not session_id or not self.store.has_session(session_id):
            session_id = self.store.new_session(message)
        messages, refs, left = self._known_part(self.store.messages(session_id), context, count)
        question, found_refs, _ = _question(context, message, message, left, count, self.ahead_chunks,
                                            self._read_after(context, background=False))
        messages.append(question)
        refs += found_refs
        pack = load_pack("chat")
        self.store.add_message(session_id, "user", message)
        if on_references is not None:
            on_references(session_id, refs)
        reply = self._generate("chat", messages, pack, session_id, on_delta, cancel=cancel, on_prompt=on_prompt)
        reply.references = refs
        self.store.add_message(session_id, "assistant", reply.text, self.model_name, pack.version, refs)
        return reply

    def chat_ahead(self, session_id: str | None, context: list[ContextItem],
                   draft: str | None = None) -> list[dict[str, str]]:
        """The next question's prompt up to the question (system, what the editor shows, the
        conversation so far), for reading ahead: what :meth:`chat` will put before it.

        Args:
            context: as for :meth:`chat`; items with ``retrieved`` count only with ``draft``.
            draft: the question as typed so far, when the chunks in ``context`` were retrieved
                for it: they are laid out as :meth:`chat` will lay out the chunks retrieved for
                the question (the same, when the draft finds what the question finds), and the
                prompt goes up to where the question starts. Without it, the prompt ends
                before the question's message.
        """
        history = self.store.messages(session_id) if session_id and self.store.has_session(session_id) else []
        count = self._counter(background=True)
        messages, _, left = self._known_part(history, [c for c in context if not c.retrieved], count)
        if draft:
            question, _, self.ahead_chunks = _question(context, draft, OPEN_END, left, count, self.ahead_chunks,
                                                       self._read_after(context, background=True))
            messages.append(question)
        return messages

    def _read_after(self, context: list[ContextItem], background: bool) -> int | None:
        """Tokens this machine reads in :data:`RETRIEVED_READ_S` (None: not known, a remote model,
        or no retrieved chunk in ``context``: then the rate is not asked for)."""
        if not any(c.retrieved for c in context):
            return None
        rate = self._prompt_rate(background)
        return int(rate * RETRIEVED_READ_S) if rate else None

    def _known_part(self, history: list[StoredMessage], context: list[ContextItem],
                    count: Callable[[str], int]) -> tuple[list[dict[str, str]], list[Reference], int]:
        """The system message (with what the editor shows) and the past turns, the references
        they carry, and the tokens left of the budget for the question's message."""
        shown = [c for c in context if not c.retrieved]
        selection = next((c for c in shown if c.selected), None)
        center = selection.reference if selection is not None else None
        blocks: list[str] = []
        refs: list[Reference] = []
        # The file's part first, the selection last: next to the question about it.
        for item in sorted(shown, key=lambda c: c.selected):
            share = KNOWN_SHARE if item.selected else FILE_SHARE
            fitted = _fit(item, int(self.context_tokens * share), count, None if item.selected else center)
            if fitted is None:
                continue
            blocks.append(_block(fitted))
            if fitted.reference is not None:  # the selection's reference first
                refs.insert(0 if item.selected else len(refs), fitted.reference)
        pack = load_pack("chat")
        system = pack.render(context="\n" + "\n".join(blocks) if blocks else "")[0]
        turns = _turns(history)
        history_budget, kept = int(self.context_tokens * HISTORY_SHARE), []
        for turn in reversed(turns):  # the latest whole turns that fit, in order
            n = sum(count(m.text) for m in turn)
            if n > history_budget:
                break
            history_budget -= n
            kept.insert(0, turn)
        past = [{"role": m.role, "content": m.text} for turn in kept for m in turn]
        used = count(system["content"]) + sum(count(m["content"]) for m in past)
        return [system, *past], refs, self.context_tokens - used


def _question(context: list[ContextItem], asked: str, message: str, left: int, count: Callable[[str], int],
              first: tuple[str, ...] = (), after: int | None = None
              ) -> tuple[dict[str, str], list[Reference], tuple[str, ...]]:
    """The question's message: the retrieved chunks of ``context`` (each its :func:`excerpt` for
    ``asked``) that fit in ``left`` tokens and, but for the first :data:`RETRIEVED_MIN`, in
    ``after`` (what is read after the question), besides ``asked`` (those labelled in ``first``
    first, in that order, then the others in theirs), then ``message``; their references; and
    their labels."""
    rank = {label: i for i, label in enumerate(first)}
    found, refs, labels = [], [], []
    terms = question_terms(asked)
    left -= count(asked)
    spare = left if after is None else min(left, after - count(asked))  # what is left to read after it
    for item in sorted((c for c in context if c.retrieved), key=lambda c: rank.get(c.label, len(rank))):
        block = _block(excerpt(item, terms, EXCERPT_TOKENS, count))
        n = count(block)
        if n <= left and (n <= spare or len(found) < RETRIEVED_MIN):
            spare -= n
            left -= n
            found.append(block)
            labels.append(item.label)
            if item.reference is not None:
                refs.append(item.reference)
    return load_pack("chat").render(retrieved="\n".join(found), message=message)[1], refs, tuple(labels)


def question_terms(question: str) -> list[str]:
    """The names a question asks about: its `backticked` names when it has any, else its words
    that are not :data:`QUESTION_WORDS` (3 characters or more), in order, without repeats."""
    ticked = [w for m in re.findall(r"`([^`\n]+)`", question) for w in re.findall(r"[A-Za-z_][\w.]*", m)]
    words = ticked or [w for w in re.findall(r"[A-Za-z_][\w.]*", question)
                       if len(w) >= 3 and w.lower() not in QUESTION_WORDS]
    return list(dict.fromkeys(part for w in words for part in w.split(".") if part))


def excerpt(item: ContextItem, terms: list[str], budget: int, count: Callable[[str], int]) -> ContextItem:
    """``item`` (a retrieved chunk) whole when it fits in ``budget`` tokens, else its excerpt: its
    first line (the definition it is in), each line naming one of ``terms`` (whole words, any
    case; with the next line when it ends a header or opens a call: a definition's docstring, a
    call's arguments), then the lines after the first line while they fit; left-out lines are marked ``...``. The label
    (the chunk's path and lines) and the reference stay the chunk's, so an excerpt of the same
    chunk for the same terms is the same text (read ahead for a draft, it is still in the KV cache).
    """
    if count(_block(item)) <= budget:
        return item
    lines = split_lines(item.text)
    named = re.compile(r"\b(?:" + "|".join(map(re.escape, terms)) + r")\b", re.I) if terms else None
    wanted = [0]
    for i, line in enumerate(lines):
        if named is not None and named.search(line):  # and the next line of a header or an open call
            wanted += [i, i + 1] if line.rstrip().endswith((":", "(", "[", "{", ",")) else [i]
    wanted += range(1, len(lines))
    ratio = max(len(item.text), 1) / max(count(item.text), 1)  # characters per token in this text
    chars = int(budget * ratio * 0.9) - len(item.label) - 16
    kept: list[int] = []  # in the order they were chosen: the last chosen is the first to go
    size = 0
    for i in dict.fromkeys(i for i in wanted if i < len(lines) and lines[i].strip()):
        if size + len(lines[i]) + 1 > chars and kept:  # too long: a shorter line may still fit
            continue
        kept.append(i)
        size += len(lines[i]) + 1
    while True:
        part = replace(item, text=_elided(lines, sorted(kept)))
        if count(_block(part)) <= budget or len(kept) <= 1:
            return part
        kept.pop()


def _elided(lines: list[str], kept: list[int]) -> str:
    """The ``kept`` lines (sorted indexes), and a ``...`` line where lines were left out,
    indented as the first of them that is not blank."""
    out: list[str] = []
    for n, i in enumerate([*kept, len(lines)]):
        gap = [line for line in lines[(kept[n - 1] + 1 if n else 0):i] if line.strip()]
        if gap:
            out.append(re.match(r"\s*", gap[0]).group() + "...")
        if i < len(lines):
            out.append(lines[i])
    return "\n".join(out)


def _block(item: ContextItem) -> str:
    return f"{item.label}:\n```\n{item.text.rstrip()}\n```\n"


def _fit(item: ContextItem, budget: int, count: Callable[[str], int],
         selection: Reference | None) -> ContextItem | None:
    """``item`` within ``budget`` tokens, or None when not even a few lines fit.

    A file's text (its reference spans it) that holds ``selection`` leaves the selected lines
    out (one line says where they were: they are sent as the selection) and keeps the lines
    nearest them; another item is sent whole, or its lines from the start. The label and the
    reference say which lines went in.
    """
    ref = item.reference
    base = ref.start_line if ref is not None else 0
    # (first document line, last document line, text) of each line that may go in.
    lines = [(base + i, base + i, t) for i, t in enumerate(split_lines(item.text))]
    mid = 0
    holds = ref is not None and selection is not None and selection.path == ref.path \
        and ref.start_line <= selection.start_line <= selection.end_line <= ref.end_line
    if holds:
        a, b = selection.start_line, selection.end_line
        mid = a - base
        lines[mid:b - base + 1] = [(a, b, f"... (lines {a + 1}-{b + 1}: the selected code, below)")]
    elif count(_block(item)) <= budget:
        return item
    if ref is None or len(lines) < 2 or budget < 64:
        return None
    ratio = max(len(item.text), 1) / max(count(item.text), 1)  # characters per token in this text
    chars = int(budget * ratio * 0.9)
    for _ in range(6):
        lo = hi = mid
        size = len(lines[mid][2]) + 1
        while size < chars and (lo > 0 or hi < len(lines) - 1):
            if hi < len(lines) - 1:
                hi += 1
                size += len(lines[hi][2]) + 1
            if lo > 0 and size < chars:
                lo -= 1
                size += len(lines[lo][2]) + 1
        first, last = lines[lo][0], lines[hi][1]
        label = item.label.split(" (lines ")[0] + f" (lines {first + 1}-{last + 1})"
        part = replace(item, label=label, text="\n".join(t for _, _, t in lines[lo:hi + 1]),
                       reference=Reference(ref.path, first, last))
        if count(_block(part)) <= budget:
            return part
        chars = int(chars * 0.8)
    return None


def _turns(history: list[StoredMessage]) -> list[list[StoredMessage]]:
    """The conversation as turns: a user message and the answers after it."""
    turns: list[list[StoredMessage]] = []
    for m in history:
        if m.role == "user" or not turns:
            turns.append([])
        turns[-1].append(m)
    return turns
