"""The type-through cache: suggestions already made, by anchor, served again without the model.

Event loop only. An entry remembers what the model wrote after some typed text at one
anchor (the text above the cursor's line and from the cursor on); when the user has since
typed the start of that suggestion, the rest is served with no model call. The alternatives
shown for an explicit request are kept beside the entries, so accepting part of one is served
the same way.
"""

from __future__ import annotations

from collections import OrderedDict

from ..prompting import CursorText
from .parts import CACHE_ENTRIES, Entry
from .request import CompletionRequest


class SuggestionCache:
    """Entries by anchor key (LRU, CACHE_ENTRIES each) and the alternatives shown at each key."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()
        self._others: OrderedDict[tuple, list[Entry]] = OrderedDict()  # alternatives shown, by anchor
        self._partial: set[tuple] = set()  # ... of those, lists the time cap cut short

    def get(self, key: tuple) -> Entry | None:
        """The entry at ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple, entry: Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > CACHE_ENTRIES:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry (the alternatives stay)."""
        self._entries.clear()

    def remember(self, req: CompletionRequest, texts: list[str], complete: bool = True, large: bool = False) -> None:
        """Keep the suggestions shown for ``req`` (final, trimmed); ``complete``: their search ran to its end;
        ``large``: the larger model wrote them."""
        cursor, policy = req.cursor, req.policy
        self._others[req.key] = [Entry(cursor.typed, t, [], True, policy.mode, 0, 0, policy=policy, large=large)
                                 for t in texts]
        self._others.move_to_end(req.key)
        if complete:
            self._partial.discard(req.key)
        else:
            self._partial.add(req.key)
        while len(self._others) > CACHE_ENTRIES:
            self._partial.discard(self._others.popitem(last=False)[0])

    def remembered(self, req: CompletionRequest, large: bool = False) -> list[str] | None:
        """The complete list :meth:`remember` kept for exactly this cursor position (written by the larger
        model, ``large``, or by the completion model), or None."""
        others = self._others.get(req.key)
        if not others or others[0].typed != req.cursor.typed or req.key in self._partial or others[0].large != large:
            return None  # a list the time cap cut short is searched for again
        return [e.text for e in others]

    def offered(self, key: tuple, entry: Entry) -> bool:
        """True when ``entry`` was offered with alternatives (at the same place, by :meth:`remember`)."""
        others = self._others.get(key)
        return bool(others) and others[0].typed == entry.typed

    def typed_through(self, key: tuple, cursor: CursorText) -> tuple[tuple, Entry, str] | None:
        """A complete cached suggestion the user has typed or accepted part of: its key, it, and what is left.

        Covers what the anchor lookup cannot: a part that ends on another line (a
        line or a word accepted across a newline, so the anchor moved down) and a part
        after which the length policy changed (a multi-line block whose first word was
        accepted). The rest is what was shown, minus what is now in the document.
        """
        above, typed = cursor.above, cursor.typed
        entries = [(k, e) for k, e in reversed(self._entries.items())]
        entries += [(k, e) for k, others in reversed(self._others.items()) for e in others]
        for k, entry in entries:
            if k[1:] != key[1:] or not entry.complete or (shown := entry.shown()) is None:
                continue
            full = entry.typed + shown
            if k == key:  # same line: the policy changed, the suggestion did not
                if typed != entry.typed and typed.startswith(entry.typed) and full.startswith(typed):
                    return k, entry, full[len(typed):]
                continue
            # Accepted up to a newline m of the suggestion: ``above`` ends with full[:m + 1].
            m = full.find("\n")
            while m >= 0:
                head = full[:m + 1]
                if above.endswith(head) and hash(above[:len(above) - len(head)]) == k[0] \
                        and full.startswith(typed, m + 1):
                    return k, entry, full[m + 1 + len(typed):]
                m = full.find("\n", m + 1)
        return None
