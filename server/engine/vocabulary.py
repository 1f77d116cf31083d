"""A model's vocabulary: text to tokens and back, and the tables of tokens sampling constrains.

:class:`ModelVocabulary` implements the ``server.prompting.Vocabulary`` protocol (tokenize,
detokenize, is_special) and builds, once and on first use, the sorted table of every token's
piece (the bytes it stands for) that token healing and the first-line rules look up: the
tokens consistent with a given head, the line-break, blank and control tokens.

Use it only on the owner thread of its model.
"""

from __future__ import annotations

import bisect
from typing import Any, Sequence

from .llama_api import Native


class ModelVocabulary:
    """The vocabulary of one loaded ``Llama`` (``llm``), with its piece tables."""

    def __init__(self, llm: Any, native: Native):
        self.llm = llm
        self._native = native
        self._piece_index: tuple | None = None
        self._break_ids: list[int] | None = None
        self._blank_ids: list[int] | None = None
        self._control_ids: list[int] | None = None

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        if not text:
            return []
        return self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=add_special, special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens), special=True).decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for, whole (empty for control tokens). Not ``Llama.detokenize``,
        which gives b"" for a piece over 32 bytes (Qwen2.5 has 240 such tokens: runs of spaces,
        separator lines), so a suggestion would silently lose them."""
        return self._native.piece(token)

    def is_special(self, token: int) -> bool:
        """True for control and user-defined (added) tokens, False for ordinary text pieces."""
        return self._native.is_special(token)

    def is_eog(self, token: int) -> bool:
        """True for the model's end-of-generation tokens (end of text, end of turn...)."""
        return self._native.is_eog(token)

    def token_text(self, token: int) -> str:
        """The vocabulary's text of ``token``: special tokens by their name (``<|endoftext|>``)."""
        return self._native.token_text(token)

    def _pieces(self) -> tuple[list[bytes], list[int], dict[bytes, list[int]]]:
        """All token pieces, sorted (with their ids), and ids by piece. Built once, ~0.5 s."""
        if self._piece_index is None:
            n = self.llm.n_vocab()
            pairs = sorted((p, t) for t in range(n) if (p := self.piece(t)))
            by_piece: dict[bytes, list[int]] = {}
            for p, t in pairs:
                by_piece.setdefault(p, []).append(t)
            self._piece_index = ([p for p, _ in pairs], [t for _, t in pairs], by_piece)
        return self._piece_index

    def tokens_consistent_with(self, head: bytes) -> list[int]:
        """Tokens whose piece starts with ``head``, or is a non-empty head of ``head``.

        These are the tokens an output that must begin with ``head`` may start with.
        """
        pieces, ids, by_piece = self._pieces()
        out = []
        i = bisect.bisect_left(pieces, head)
        while i < len(pieces) and pieces[i].startswith(head):
            out.append(ids[i])
            i += 1
        for k in range(1, len(head)):
            out.extend(by_piece.get(head[:k], ()))
        return out

    def line_break_tokens(self) -> list[int]:
        """Tokens whose piece holds a line break, and the control tokens (empty pieces) that
        end or restructure text (end of text, FIM markers...). Built once with the piece index."""
        if self._break_ids is None:
            pieces, ids, _ = self._pieces()
            self._break_ids = [t for p, t in zip(pieces, ids) if b"\n" in p or b"\r" in p] + self.control_tokens()
        return self._break_ids

    def control_tokens(self) -> list[int]:
        """Tokens without a text piece: end of text, FIM markers and the other control tokens. Built once."""
        if self._control_ids is None:
            _, ids, _ = self._pieces()
            have_piece = set(ids)
            self._control_ids = [t for t in range(self.llm.n_vocab()) if t not in have_piece]
        return self._control_ids

    def blank_tokens(self) -> list[int]:
        """Tokens whose piece is only spaces and tabs. Built once."""
        if self._blank_ids is None:
            pieces, ids, _ = self._pieces()
            self._blank_ids = [t for p, t in zip(pieces, ids) if not p.strip(b" \t")]
        return self._blank_ids
