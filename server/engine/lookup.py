"""Prompt-lookup drafting: guess the next tokens of an answer from the text it came from.

A rewrite, a test file or an answer quoting code repeats long runs of its prompt. When the
last few tokens written also occur earlier (in the prompt or the answer so far), the tokens
that followed them there are a likely continuation. The model checks such a draft in one
batch (:meth:`server.engine.model.LoadedModel.generate` with ``lookup``): on a CPU a batch
of k tokens costs about k prompt tokens, far less than k tokens written one at a time, and
greedy decoding keeps only the drafted tokens it would have written anyway, so the answer is
the same, sooner. (Prompt lookup decoding, Saxena 2023; llama.cpp's ``lookup`` example.)

Pure Python, no llama.cpp: any thread.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

NGRAM_MAX = 3   # the longest run of last tokens looked up
NGRAM_MIN = 3   # ... and the shortest: a pair matches too often for its draft to pay (measured below)
# Tokens drafted at most. On a 2-core CPU a batched token costs about half a written one (not a
# tenth, as on a GPU), so a wrong draft is dear: with pairs and 8 tokens, Refactor wrote 0.93x
# and Write tests 0.78x as fast; with runs of 3 and 4 tokens, 1.32x and 1.11x
# (python bench/lookup_drafting.py --functions 3 --max-tokens 150, the 1.5B model).
DRAFT_MAX = 4


class NgramIndex:
    """Where each run of NGRAM_MIN..NGRAM_MAX tokens last occurred in a growing token sequence.

    Args:
        tokens: the sequence so far (the prompt).
    """

    def __init__(self, tokens: Iterable[int]):
        self.tokens: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}  # n-gram -> the position just after its latest occurrence
        for t in tokens:
            self.add(t)

    def add(self, token: int) -> None:
        """Append ``token``; the runs it ends are recorded (after :meth:`draft` can see them)."""
        seq = self.tokens
        seq.append(token)
        end = len(seq)
        for n in range(NGRAM_MIN, NGRAM_MAX + 1):
            if end > n:  # the run ending just before this token: its continuation now exists
                self._last[tuple(seq[end - 1 - n:end - 1])] = end - 1

    def draft(self, k: int = DRAFT_MAX) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the sequence's last
        NGRAM_MAX (else fewer, down to NGRAM_MIN) tokens; empty when none occurred before."""
        seq = self.tokens
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if len(seq) <= n:
                continue
            at = self._last.get(tuple(seq[-n:]))
            if at is not None:
                return seq[at:at + k]
        return []


class Drafter:
    """Drafting in one generation: the tokens drafted and evaluated after the last one taken.

    Args:
        kv: the model's :class:`server.engine.kv_cache.KvCache`, holding ``prompt`` (all of it).
        prompt: the prompt's tokens, where drafts are first looked up.

    Attributes:
        drafted, accepted: tokens drafted, and of those the ones the model wrote as well.
    """

    def __init__(self, kv: Any, prompt: Sequence[int]):
        self.kv, self.index, self.base = kv, NgramIndex(prompt), len(prompt)
        self._pending: list[tuple[int, Any]] = []  # drafted tokens in the cache, with the logits after each
        self.drafted = self.accepted = 0

    def next(self, token: int):
        """The logits after ``token``, just taken (not in the cache unless it was drafted): those
        of the draft when it was drafted; else evaluated, with a new draft when there is one."""
        self.index.add(token)
        written = len(self.index.tokens) - self.base  # output tokens so far, ``token`` included
        if self._pending:
            drafted, after = self._pending.pop(0)
            if drafted == token:
                self.accepted += 1
                return after
            self.kv.rewind(self.base + written - 1)  # the draft from here on was wrong
            self._pending = []
        draft = self.index.draft()
        if not draft:
            return self.kv.evaluate([token])
        self.drafted += len(draft)
        logits, *rest = self.kv.evaluate([token, *draft], each=True)
        self._pending = list(zip(draft, rest))
        return logits

    def close(self) -> None:
        """Drafted tokens left unused leave the cache (so may the last token taken)."""
        if self._pending:
            self.kv.rewind(self.base + max(len(self.index.tokens) - self.base - 1, 0))


__all__ = ["DRAFT_MAX", "NGRAM_MAX", "NGRAM_MIN", "Drafter", "NgramIndex"]
