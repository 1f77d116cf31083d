"""The engine with the real default model: reuse, cancellation, time caps."""

import threading
import time

import pytest

from server.completion import healing_tokens
from server.engine import Engine
from server.prompting import Budget, CursorText, build_fim_prompt, detect_fim_format

pytestmark = pytest.mark.model

ABOVE = "def fibonacci(n):\n    if n < 2:\n        return n\n"
TYPED = "    return "
SUFFIX = "\n\n\nprint(fibonacci(10))\n"


@pytest.fixture(scope="module")
def engine(default_model_path):
    eng = Engine("test")
    eng.load(str(default_model_path), n_ctx=2048, n_threads=2).result()
    yield eng
    eng.shutdown()


def _prompt(model, above=ABOVE, typed=TYPED, suffix=SUFFIX):
    fim = detect_fim_format(model)
    return fim, build_fim_prompt(model, fim, CursorText(above, typed, suffix), Budget(1500, 400)).tokens


def test_greedy_fim_completes_and_repeats_identically_from_the_kv_cache(engine):
    def run(model):
        fim, tokens = _prompt(model)
        first = model.generate(tokens, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                               stop_ids=fim.stop_ids, judge=lambda t: "\n" in t)
        again = model.generate(tokens, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                               stop_ids=fim.stop_ids, judge=lambda t: "\n" in t)
        return first, again
    first, again = engine.submit(run).result()
    assert first.text.split("\n")[0].replace(" ", "") == "fibonacci(n-1)+fibonacci(n-2)"
    assert again.text == first.text  # the same answer when the whole prompt is already cached
    assert again.reused_tokens == again.prompt_tokens - 1 and again.evaluated_tokens == 1
    assert first.finish == "complete"


def test_cancel_stops_prompt_processing_within_a_chunk(engine):
    code = "".join(f"def handler_{i}(request):\n    return respond(request, {i})\n\n" for i in range(120))

    def run(model):
        _, tokens = _prompt(model, code, "", "")
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        return model.generate(tokens, max_tokens=16, cancel=cancel, deadline=time.monotonic() + 60)
    gen = engine.submit(run).result()
    assert gen.finish == "cancelled" and gen.generated_tokens == 0
    assert gen.prompt_tokens > 1000  # ~6 s of prompt processing on 2 cores
    assert gen.total_ms < 0.3 * 1000 + 1500  # stopped long before the whole prompt was processed


def test_time_cap_ends_generation_as_timeout(engine):
    def run(model):
        _, tokens = _prompt(model, "# a long list\nitems = [\n", "", "")
        return model.generate(tokens, max_tokens=2000 - len(tokens), cancel=threading.Event(),
                              deadline=time.monotonic() + 0.5)
    gen = engine.submit(run).result()
    assert gen.finish == "timeout" and gen.total_ms < 0.5 * 1000 + 700


def test_token_healing_respells_a_word_cut_in_the_middle(engine):
    def run(model):
        fim, tokens = _prompt(model, typed="    return fibonacci(n - 1) + fibo")
        n = healing_tokens([model.piece(t) for t in tokens[-4:]])
        head = b"".join(model.piece(t) for t in tokens[-n:])  # the partial word, taken back
        assert head.strip() == b"fibo"
        healed = model.generate(tokens[:-n], max_tokens=16, cancel=threading.Event(),
                                deadline=time.monotonic() + 60, stop_ids=fim.stop_ids,
                                judge=lambda t: "\n" in t, forced=head)
        return healed
    healed = engine.submit(run).result()
    assert healed.text.split("\n")[0] == "nacci(n - 2)"


def test_tokens_consistent_with_a_head(engine):
    def run(model):
        ids = model.tokens_consistent_with(b"na")
        pieces = {model.piece(t) for t in ids}
        return pieces
    pieces = engine.submit(run).result()
    assert b"na" in pieces and b"n" in pieces and b"name" in pieces
    assert all(p.startswith(b"na") or b"na".startswith(p) for p in pieces)


def test_text_first_writes_a_line_and_banned_first_gives_the_next_candidate(engine):
    # An empty, indented line between two lines that need nothing: left alone, the model may
    # end at once or start a new line; a manual request there must get a line of text.
    above, typed, suffix = "def f(x):\n    y = x + 1\n", "    ", "\n    return y\n"

    def run(model):
        fim, tokens = _prompt(model, above, typed, suffix)
        n_heal = healing_tokens([model.piece(t) for t in tokens[-1:]])
        forced = b"".join(model.piece(t) for t in tokens[-n_heal:])
        prompt = tokens[:-n_heal]

        def gen(**kw):
            return model.generate(prompt, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                                  stop_ids=fim.stop_ids, judge=lambda t: "\n" in t, forced=forced, **kw)
        first = gen(text_first=True)
        content = next(t for t in first.tokens if model.piece(t).strip())
        second = gen(text_first=True, banned_first=frozenset({content}))
        return model, first, content, second
    model, first, content, second = engine.submit(run).result()
    assert forced_text_ok(first.text) and forced_text_ok(second.text), (first.text, second.text)
    assert next(t for t in second.tokens if model.piece(t).strip()) != content
    assert second.text.split("\n")[0] != first.text.split("\n")[0]


def forced_text_ok(text: str) -> bool:
    """The first line holds text and does not add indentation to the typed indentation."""
    line = text.split("\n")[0]
    return bool(line.strip()) and not line[:1].isspace()
