"""What the decode loop does to the logits before it picks a token, and the text it builds.

Each constraint is a function ``(generated, logits) -> logits``: ``generated`` the tokens
sampled so far, ``logits`` the model's scores for the next one (float32, one per vocabulary
entry; never changed in place). :func:`constraints` chains them in the order
:meth:`server.engine.LoadedModel.generate` applies them:

1. **margins**: note how sure the model is (best logit minus second best) before any constraint;
2. **forcing** (token healing): the output must begin with given bytes;
3. **text first**: the first line must hold text before a line break or the end of text, and
   the first content token may not be one of those already rejected.

:class:`HealedText` turns the sampled pieces into the output's text, the forced bytes left out.

Use them only on the owner thread of the model.
"""

from __future__ import annotations

import codecs
from typing import Any, Callable, Sequence

from .vocabulary import ModelVocabulary

Constraint = Callable[[Sequence[int], Any], Any]  # (generated tokens, logits) -> logits (numpy float32)


def margins(into: list[float]) -> Constraint:
    """A constraint that changes nothing and appends to ``into`` the gap between the two best logits (nats)."""
    import numpy as np

    def record(generated, logits):
        top = np.partition(logits, -2)[-2:]
        into.append(float(top[1] - top[0]))
        return logits
    return record


def forcing(vocab: ModelVocabulary, head: bytes) -> Constraint:
    """A constraint that makes the output begin with ``head`` (token healing).

    While the output so far is shorter than ``head``, only tokens consistent with the
    rest of ``head`` may be sampled; after that it changes nothing.
    """
    import numpy as np

    state = {"done": 0, "allowed": None}

    def process(generated, logits):
        if state["done"] != len(generated) or state["allowed"] is None:
            text = b"".join(vocab.piece(int(t)) for t in generated)
            rest = head[len(text):] if head.startswith(text) else b""
            state["done"] = len(generated)
            state["allowed"] = vocab.tokens_consistent_with(rest) if rest else []
        if not state["allowed"]:
            return logits
        masked = np.full_like(logits, -np.inf)
        masked[state["allowed"]] = logits[state["allowed"]]
        return masked
    return process


def text_first(vocab: ModelVocabulary, forced: bytes, banned_first: frozenset[int],
               breaks_first: bool = False) -> Constraint:
    """A constraint that makes the first line of the output (after ``forced``) hold some text.

    Until a non-blank character is out, no line break, end of text or control token may be
    sampled, nor any of ``banned_first``. With ``breaks_first`` the text may begin on a later
    line (the body after a block opener): only the end of text and control tokens are masked
    until then.
    """
    import numpy as np

    breaks = np.array(vocab.control_tokens() if breaks_first else vocab.line_break_tokens(), dtype=np.int64)
    blanks = np.array(vocab.blank_tokens(), dtype=np.int64)
    banned = np.array(sorted(banned_first), dtype=np.int64)

    def process(generated, logits):
        text = b"".join(vocab.piece(int(t)) for t in generated)
        if text[len(forced):].strip():
            return logits
        logits = logits.copy()
        logits[breaks] = -np.inf
        if forced and len(text) >= len(forced) and not breaks_first:
            logits[blanks] = -np.inf  # the typed indentation is there: now the line's text
        if len(banned):
            logits[banned] = -np.inf
        return logits
    return process


def constraints(vocab: ModelVocabulary, *, forced: bytes = b"", first_line_text: bool = False,
                banned_first: frozenset[int] = frozenset(), breaks_first: bool = False,
                record: list[float] | None = None) -> Constraint:
    """The constraints of one generation, chained (see the module docstring for their order).

    Args:
        forced: bytes the output must begin with (empty: no forcing).
        first_line_text: apply :func:`text_first` (also applied when ``banned_first`` is not empty).
        banned_first: tokens that may not bring the first text.
        breaks_first: with :func:`text_first`, the text may begin after line breaks.
        record: a list to append each token's margin to (None: not recorded).
    """
    chain = ([margins(record)] if record is not None else []) + ([forcing(vocab, forced)] if forced else []) + (
        [text_first(vocab, forced, banned_first, breaks_first)] if first_line_text or banned_first else [])

    def apply(generated, logits):
        for constraint in chain:
            logits = constraint(generated, logits)
        return logits
    return apply


class HealedText:
    """The text of the sampled pieces, as UTF-8, without the ``forced`` bytes they begin with."""

    def __init__(self, forced: bytes):
        self.forced = forced
        self.text = ""
        self._raw = b""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, piece: bytes) -> str:
        """Append one token's piece; the text so far (an incomplete character waits for the next piece)."""
        if len(self._raw) < len(self.forced):  # still re-spelling the healed text
            self._raw += piece
            piece = self._raw[len(self.forced):] if len(self._raw) > len(self.forced) else b""
        self.text += self._decoder.decode(piece)
        return self.text

    def final(self) -> str:
        """The whole text (an incomplete last character replaced)."""
        self.text += self._decoder.decode(b"", final=True)
        return self.text
