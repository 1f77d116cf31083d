"""Prompt-lookup drafting: the n-gram index, and the same greedy answer with the real model, sooner."""

from __future__ import annotations

import threading
import time

import pytest

from server.engine.lookup import DRAFT_MAX, NgramIndex


def test_the_draft_is_what_followed_the_latest_earlier_occurrence_of_the_last_tokens():
    index = NgramIndex([1, 2, 3, 4, 5, 6, 9, 2, 3, 7, 8])
    assert index.draft() == []                 # (7, 8) and (3, 7, 8) never occurred before
    index.add(1)
    index.add(2)
    index.add(3)                               # ... 1, 2, 3: occurred at the start
    assert index.draft() == [4, 5, 6, 9, 2, 3, 7, 8][:DRAFT_MAX]
    assert index.draft(8) == [4, 5, 6, 9, 2, 3, 7, 8]
    index.add(7)                               # 2, 3, 7 occurred later than 2, 3, 4: the latest wins
    assert index.draft(3) == [8, 1, 2]
    index.add(5)                               # 3, 7, 5 never; 7, 5 never; nothing to draft
    assert index.draft() == []


def test_only_runs_of_three_are_looked_up():
    index = NgramIndex([10, 11, 12, 13])
    index.add(99)
    index.add(11)
    index.add(12)                              # 99, 11, 12 never occurred; a pair matches too often to pay
    assert index.draft(2) == []
    index.add(13)                              # 11, 12, 13 did: 99 followed it
    assert index.draft(2) == [99, 11]


@pytest.mark.model
def test_drafting_writes_the_same_rewrite_in_fewer_steps(default_model_path):
    from server.engine import Engine

    engine = Engine("lookup-test")
    model = engine.load(str(default_model_path), n_ctx=4096, n_threads=2).result()
    code = ("def total_price(items, tax_rate):\n    total = 0\n    for item in items:\n"
            "        total = total + item.price * item.quantity\n    total = total + total * tax_rate\n"
            "    return total\n")
    # (Greedy with and without drafting agree but where two tokens are nearly tied: a batch is
    # evaluated with other kernels, which round differently. "Rename `total` to `amount`" alone
    # leaves the function's own name at a tie of 0.06 between ` amount` and ` total`.)
    prompt = model.tokenize(f"<|im_start|>user\nIn this function, rename the local variable `total` to `amount`; "
                            f"keep the function's name:\n```python\n{code}```<|im_end|>\n<|im_start|>assistant\n"
                            "```python\n", add_special=False, parse_special=True)
    try:
        def write(lookup: bool):
            return engine.submit(lambda m: m.generate(prompt, max_tokens=80, cancel=threading.Event(),
                                                      deadline=time.monotonic() + 300, lookup=lookup)).result()
        plain, drafted = write(False), write(True)
        assert drafted.text == plain.text and "amount" in plain.text
        assert plain.drafted_tokens == 0 and drafted.drafted_tokens > 0
        # Much of the rewrite repeats the prompt: many drafted tokens were the model's own.
        assert drafted.accepted_tokens >= 10, (drafted.drafted_tokens, drafted.accepted_tokens)
        # The cache holds the prompt and the answer, nothing of a draft left unused.
        cells = engine.submit(lambda m: m.kv.live_cells()).result()
        assert cells == (prompt + drafted.tokens)[:len(cells)] and len(cells) >= len(prompt) + len(drafted.tokens) - 1
    finally:
        engine.submit(lambda m: m.close()).result()
        engine.shutdown()
