"""The decode loop: read the prompt into the KV cache, then evaluate, constrain, pick, stop or
append, one token at a time (greedy), with prompt-lookup drafting where asked.

Owner thread of the model (:class:`server.engine.Engine`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import sampling
from .lookup import Drafter

TOP_K = 40  # with a temperature, tokens are drawn from the 40 most likely (no long tail of nonsense)


def _draw(logits, temperature: float, rng):
    """One token id drawn from the TOP_K highest ``logits`` with probabilities softmax(logits / temperature)."""
    import numpy as np

    top = np.argpartition(logits, -TOP_K)[-TOP_K:]
    scaled = (logits[top] - logits[top].max()) / temperature
    p = np.exp(scaled)
    return int(top[rng.choice(len(top), p=p / p.sum())])


@dataclass
class Generation:
    """What one generation produced and what it cost.

    Attributes:
        text: the raw generated text (before length control's final trim).
        finish: why it ended: ``stop`` (end-of-text or a stop token), ``complete``
            (the judge saw the end), ``max_tokens``, ``cancelled`` or ``timeout``.
        tokens: the generated token ids.
        prompt_tokens: tokens in the prompt.
        reused_tokens: prompt tokens found in the KV cache (no evaluation needed).
        generated_tokens: tokens sampled.
        prompt_ms: time to the first sampled token (prompt processing), ms.
        total_ms: whole generation, ms.
        margins: with ``record_margins``, for each of ``tokens``, how sure the model was there:
            its best logit minus its second best (before any constraint), in nats; else empty.
        drafted_tokens, accepted_tokens: prompt-lookup drafting's figures (``lookup``).
        logprobs: for each of ``tokens``, its log-probability (natural log) under the model's
            distribution there, among the tokens the constraints allowed (given the text token
            healing re-spells): how likely the model found what it wrote.
        ends: for each of ``tokens``, the length of ``text`` (characters) once it was added.
    """

    text: str
    finish: str
    tokens: list[int]
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    prompt_ms: float
    total_ms: float
    margins: tuple[float, ...] = ()
    drafted_tokens: int = 0   # with ``lookup``: tokens drafted from earlier text and checked in a batch
    accepted_tokens: int = 0  # ... of which the model would have written (the output has them)
    logprobs: tuple[float, ...] = ()
    ends: tuple[int, ...] = ()

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens



def generate(model: Any, prompt: list[int], *, max_tokens: int, cancel: threading.Event, deadline: float,
             stop_ids: frozenset[int] = frozenset(),
             judge: Callable[[str], bool] | None = None, forced: bytes = b"",
             text_first: bool = False, banned_first: frozenset[int] = frozenset(),
             record_margins: bool = False, breaks_first: bool = False,
             on_prompt: Callable[[int, int], None] | None = None, lookup: bool = False,
             temperature: float = 0.0, seed: int = 0) -> Generation:
    """Greedy generation from ``prompt`` (token ids) until a stop condition, with ``model``'s
    KV cache, vocabulary and threads (a :class:`server.engine.model.LoadedModel`); sampled
    instead with a ``temperature``.

    Args:
        prompt: the prompt's token ids; must be shorter than ``n_ctx - max_tokens``.
        max_tokens: most tokens to sample.
        cancel: set from any thread to stop within one token.
        deadline: ``time.monotonic()`` value after which generation stops (finish ``timeout``).
        stop_ids: tokens that end the output besides the model's end-of-generation tokens.
        judge: called with the text so far (after ``forced``) after each token; True means complete.
        forced: bytes the output must begin with (token healing: the text of prompt tokens
            taken back so the model can re-spell them its own way). They are not part of
            the returned text.
        text_first: the output's first line must hold text (a line is known to be missing:
            no end of text or line break before a non-blank character).
        banned_first: tokens that may not bring the output's first text (after ``forced``
            and any indentation): the first content tokens of candidates already rejected,
            so the next best one comes out.
        breaks_first: with ``text_first``, the text may begin after line breaks (the end of
            a block opener whose body is empty: the body is known to be missing).
        record_margins: keep, for every sampled token, the gap between the model's two
            best logits there (``Generation.margins``; about 0.5 ms a token).
        on_prompt: called while the prompt is read, after each chunk, with (tokens read
            so far, tokens to read): progress for a long prompt.
        lookup: draft the next tokens from earlier text (:mod:`server.engine.lookup`) and
            check them in one batch: the same output (greedy), sooner where the answer
            repeats its prompt (a rewrite, tests). Ignored with a ``temperature``.
        temperature: 0 (greedy), or each token is drawn from the TOP_K most likely ones
            (after the constraints), with probabilities softmax(logits / temperature): another
            answer to the same prompt (the agent's retry after a failed step).
        seed: the draws' seed (the same seed and prompt give the same answer).

    Raises:
        ValueError: the prompt does not fit the context window.
    """
    import numpy as np

    if len(prompt) + max_tokens > model.n_ctx:
        raise ValueError(f"prompt of {len(prompt)} tokens + {max_tokens} to generate exceeds n_ctx {model.n_ctx}")
    t0 = time.monotonic()

    steps = 0

    def stopped() -> str:
        nonlocal steps
        if model.yield_to is not None:
            model.yield_to()
        steps += 1
        if steps % 16 == 0:  # a long answer follows the machine's load as it goes
            model.fit_threads()
        return "cancelled" if cancel.is_set() or model.kv.closing else "timeout" if time.monotonic() > deadline else ""

    # Read the prompt into the KV cache, all but its last token, reusing what the cache holds.
    prep = model.kv.prefill(prompt, stopped=stopped, chunk=model.prefill_chunk, progress=on_prompt)
    if not prep.done:
        ms = (time.monotonic() - t0) * 1000
        return Generation("", stopped(), [], len(prompt), prep.reused, 0, ms, ms)
    margins: list[float] = []
    constrain = sampling.constraints(model.vocab, forced=forced, first_line_text=text_first,
                                     banned_first=banned_first, breaks_first=breaks_first,
                                     record=margins if record_margins else None)
    out: list[int] = []
    logprobs: list[float] = []
    ends: list[int] = []
    text = sampling.HealedText(forced)
    finish, first_at = "", 0.0
    drafter = Drafter(model.kv, prompt) if lookup and temperature <= 0 else None
    rng = np.random.default_rng(seed) if temperature > 0 else None
    # The last prompt token is always evaluated again: its logits are the first token's.
    logits = model.kv.evaluate(prompt[-1:])
    while True:
        # Constrain the logits: token healing, text on the first line (margins noted before).
        logits = constrain(out, logits)
        # Pick the most likely token (greedy), or draw one of the TOP_K most likely (a temperature).
        token = int(np.argmax(logits)) if rng is None else _draw(logits, temperature, rng)
        # Cancelled or out of time: stop without it.
        if finish := stopped():
            break
        first_at = first_at or time.monotonic()
        # The end of text or a stop token ends the output; it is not part of it.
        if token in stop_ids or model.vocab.is_eog(token):
            finish = "stop"
            break
        # Append it; the text grows by its piece (the healed bytes left out).
        out.append(token)
        # Its log-probability among the tokens the constraints allow (about 0.15 ms on a 152k vocabulary).
        top = float(logits[token])
        logprobs.append(-float(np.log(np.exp(logits - top).sum())))
        ends.append(len(text.add(model.vocab.piece(token))))
        # The judge (the length policy) or the token budget may end the output here.
        if judge is not None and judge(text.text):
            finish = "complete"
            break
        if len(out) >= max_tokens:
            finish = "max_tokens"
            break
        # Evaluate it: the logits of the next token (drafting: known already, or with a draft's).
        logits = drafter.next(token) if drafter is not None else model.kv.evaluate([token])
    if drafter is not None:
        drafter.close()
    if model.guard is not None:
        model.guard.decoded()
    now = time.monotonic()
    return Generation(text.final(), finish, out, len(prompt), prep.reused, len(out),
                      ((first_at or now) - t0) * 1000, (now - t0) * 1000, tuple(margins[:len(out)]),
                      drafter.drafted if drafter else 0, drafter.accepted if drafter else 0,
                      tuple(logprobs), tuple(ends))
