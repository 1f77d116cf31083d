"""Alternative suggestions for a request the user made: a few distinct ones, ranked by likelihood.

Automatic requests (as you type) get the one greedy suggestion of
:class:`server.completion.CompletionService`. When the user asks (an Invoked request:
VS Code's Alt+] / Alt+[, Neovim's ``<Plug>(deepseek-next)``), this module adds up to
``completion.alternatives - 1`` others:

1. **Prompt.** The pipeline's own FIM prompt for the cursor (same budgets, same
   cross-file context, same token healing), so its KV cache is reused.
2. **Branch once.** Decoding re-spells the healed text as the pipeline does; at the first
   position where the model chooses freely (the token that completes the healed word, or
   the first token when nothing was healed) the most likely tokens each start a branch.
3. **Continue greedily** until the length policy ends the branch (the pipeline's judge),
   a stop token, ``completion.maxTokens`` or the deadline.
4. **Rank** by the summed log-probability of each branch's tokens from the branch point on
   (the part before it is common to all), best first; a branch whose trimmed text equals
   a better one's is dropped, as is an empty one.

Each branch rewinds the KV cache to the branch point (``LoadedModel.rewind``), so only the
branch's own tokens are evaluated. All branches share one
deadline (``completion.manualMaxTimeMs`` from the request's arrival) and stop within one
token when cancelled. Runs on the engine's owner thread; the remote backend has no
alternatives (its server does not expose the logits).

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .completion import CompletionRequest, CompletionService, LocalGenerator, heal
from .config import Settings
from .engine import LoadedModel
from .length import trim

log = logging.getLogger(__name__)

EXTRA_BRANCHES = 2  # first tokens tried beyond the number wanted, for branches that end up the same


@dataclass(frozen=True)
class Alternative:
    """One suggestion of an explicit request.

    Attributes:
        text: what to insert at the cursor (trimmed by the length policy).
        logprob: summed natural-log probability of its tokens from the branch point on.
        tokens: tokens generated for it.
        complete: it ended by itself (policy, stop token, max tokens), not at the deadline.
    """

    text: str
    logprob: float
    tokens: int
    complete: bool


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def branch_decode(model: LoadedModel, prompt: list[int], *, forced: bytes, n: int, max_tokens: int,
                  stop_ids: frozenset[int], judge: Callable[[str], bool], finish: Callable[[str, bool], str],
                  deadline: float, cancel: threading.Event) -> list[Alternative]:
    """Up to ``n`` distinct suggestions from ``prompt``, best first (see the module docstring).

    Args:
        model: the loaded model (call on its engine thread).
        prompt: the FIM prompt's token ids, healed tokens already taken back.
        forced: the bytes the output must begin with (the healed text); not part of the text.
        n: most suggestions returned.
        max_tokens: most tokens per branch.
        stop_ids: tokens that end a branch besides control tokens.
        judge: the text so far (after ``forced``) -> True when the length policy ends it.
        finish: ``(text, complete)`` -> the suggestion shown for it (the policy's final trim).
        deadline: ``time.monotonic()`` after which no more tokens are generated.
        cancel: set from any thread to stop within one token.

    Returns:
        Distinct non-empty suggestions ranked by summed log-probability; fewer than ``n``
        when the deadline came first or the branches agreed.
    """
    n_vocab = model.llm.n_vocab()

    def stopped() -> bool:
        return cancel.is_set() or time.monotonic() > deadline

    def step(tokens: list[int]) -> np.ndarray:
        """Evaluate ``tokens`` after what the KV cache holds; the next token's log-probabilities."""
        return _log_softmax(model.evaluate(tokens))

    if len(prompt) + max_tokens > model.n_ctx or not model.prefill(prompt, cancel).done:
        return []
    logp = step(prompt[-1:])
    # Re-spell the healed text greedily; the branch point is the token that completes it.
    shared: list[int] = []
    spelled = b""
    while True:
        rest = forced[len(spelled):]
        allowed = model.tokens_consistent_with(rest) if rest else list(range(n_vocab))
        completing = [t for t in allowed if model.piece(t).startswith(rest)] if rest else allowed
        if completing or not allowed or stopped():
            break
        token = max(allowed, key=lambda t: logp[t])
        shared.append(token)
        spelled += model.piece(token)
        logp = step([token])
    if stopped() or not completing:
        return []
    base = len(prompt) + len(shared)
    candidates = np.asarray(completing)
    firsts = candidates[np.argsort(-logp[candidates])[: n + EXTRA_BRANCHES]]
    branch_logp = logp
    found: list[Alternative] = []
    seen: set[str] = set()
    for first in firsts.tolist():
        if len(found) >= n or stopped():
            break
        model.rewind(base)  # drop the previous branch's tokens from the KV cache
        raw, out, score, complete = spelled, [first], float(branch_logp[first]), False
        token = first
        while True:
            if token in stop_ids or model.is_special(token):
                out.pop()  # not part of the text; its probability (of ending here) stays in the score
                complete = True
                break
            raw += model.piece(token)
            text = raw[len(forced):].decode("utf-8", "replace")
            if judge(text) or len(out) >= max_tokens:
                complete = True
                break
            if stopped():
                break
            logp = step([token])
            token = int(np.argmax(logp))
            out.append(token)
            score += float(logp[token])
        if model.guard is not None:
            model.guard.decoded()
        if cancel.is_set():
            return []
        shown = finish(raw[len(forced):].decode("utf-8", "replace"), complete)
        if shown.strip() and shown not in seen:
            seen.add(shown)
            found.append(Alternative(shown, score, len(out), complete))
    found.sort(key=lambda a: -a.logprob)
    return found[:n]


def _job(local: LocalGenerator, model: LoadedModel, req: CompletionRequest, settings: Settings, n: int,
         deadline: float, cancel: threading.Event) -> tuple[list[Alternative], bool]:
    """The alternatives for ``req`` on the engine thread: the pipeline's prompt and healing (the local
    generator's, so the KV cache is reused), then :func:`branch_decode`; and whether the search ran
    to its end (not stopped by the deadline or a cancel)."""
    policy = req.policy
    prompt, forced = heal(model, local.fim_prompt(model, req.uri, req.cursor, settings, req.max_tokens))
    max_tokens = min(req.max_tokens, model.n_ctx - len(prompt))
    if max_tokens <= 0:
        return [], True
    t0 = time.monotonic()
    found = branch_decode(model, prompt, forced=forced, n=n, max_tokens=max_tokens, stop_ids=local.fim.stop_ids,
                          judge=lambda text: trim(text, policy)[1],
                          finish=lambda text, complete: trim(text, policy, final=complete)[0],
                          deadline=deadline, cancel=cancel)
    complete = not (cancel.is_set() or time.monotonic() > deadline)
    log.info("alternatives: %d of %d in %.0f ms (%s)%s", len(found), n, (time.monotonic() - t0) * 1000,
             ", ".join(f"{a.logprob:.2f}/{a.tokens} tokens" for a in found),
             "" if complete else "; stopped by the time cap: not remembered as the place's alternatives")
    return found, complete


async def alternatives(service: CompletionService, req: CompletionRequest, settings: Settings, started: float,
                       cancel: threading.Event | None = None, large: bool = False) -> tuple[list[Alternative], bool]:
    """Up to ``completion.alternatives`` distinct suggestions for ``req``, best first.

    Args:
        service: the local completion service (a remote one, without an engine, gets none).
        req: the explicit request (``Suggestion.request`` of the first suggestion).
        settings: budgets, ``completion.alternatives``, ``completion.manualMaxTimeMs``.
        started: ``time.monotonic()`` at the request's arrival; the deadline is the manual
            time cap from then.
        cancel: set to stop the generation (also set when this coroutine is cancelled).
        large: from the larger model (``service.large``, which wrote the first suggestion), not the completion model.

    Returns:
        (the alternatives, complete): [] when alternatives are off, there is no local engine,
        or nothing came in time; ``complete`` is False when the time cap or a cancel stopped
        the search (at a place the KV cache had not read, the first suggestion can take
        nearly all of the cap): such a list is not the place's answer, and asking again
        searches again, from the prompt cached by then.
    """
    n = settings.completion_alternatives
    local = service.large if large else service.local
    if n <= 1 or local is None:
        return [], True
    deadline = started + settings.completion_manual_max_time_ms / 1000
    cancel = cancel or threading.Event()
    job = local.submit(lambda model: _job(local, model, req, settings, n, deadline, cancel))
    service.alternatives_running += 1  # the work ahead waits for them (server.completion.ahead)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        service.alternatives_running -= 1
