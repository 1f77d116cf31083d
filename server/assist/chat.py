"""Chat: a conversation in a session, with context chosen to fit the chat budget.

The pieces a client sends (the selection, the current file, retrieved chunks) and the
past turns worth bringing back (the latest ones, then the older ones that share the most
words with the new message) are kept within ``chat.contextTokens``, counted in the chat
model's own tokens.

Threads: a worker thread (it blocks for the generation; the token counts run on the chat
model's owner thread). This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import threading

from index.lexical import words

from .generation import AssistantCore, OnDelta
from .packs import load_pack
from .records import AssistError, ContextItem, Reply
from .store import StoredMessage

RECENT_TURNS = 2           # chat: the last exchanges always come back ...
RELEVANT_TURNS = 2         # ... plus this many older ones most related to the new message


class ChatTask(AssistantCore):
    """Chat, on top of the core's generation."""

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
