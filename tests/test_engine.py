"""The engine with the real default model: reuse, cancellation, time caps."""

import functools
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


def _empty_line(model):
    """An empty, indented line between two lines that need nothing, as a manual request sees it:
    the healed (forced) bytes, and a one-line greedy generation there taking ``generate``'s options."""
    fim, tokens = _prompt(model, "def f(x):\n    y = x + 1\n", "    ", "\n    return y\n")
    n_heal = healing_tokens([model.piece(t) for t in tokens[-1:]])
    prompt = tokens[:-n_heal]

    def gen(**kw):
        return model.generate(prompt, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                              stop_ids=fim.stop_ids, judge=lambda t: "\n" in t, **kw)
    return b"".join(model.piece(t) for t in tokens[-n_heal:]), gen


def test_text_first_writes_a_line_and_banned_first_gives_the_next_candidate(engine):
    # An empty, indented line between two lines that need nothing: left alone, the model may
    # end at once or start a new line; a manual request there must get a line of text.
    def run(model):
        forced, gen = _empty_line(model)
        gen = functools.partial(gen, forced=forced)
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


def test_a_rejected_candidate_branches_where_the_model_was_least_sure(engine):
    """Margins come one per token; the next candidate keeps the rejected one's text up to its
    least sure token of the first line and takes another token there."""
    from server.completion import least_sure

    def run(model):
        forced, gen = _empty_line(model)
        gen = functools.partial(gen, text_first=True)
        first = gen(forced=forced, record_margins=True)
        at, token = least_sure(model, first, len(forced))
        second = gen(forced=at, banned_first=frozenset({token}))
        return model, forced, first, at, token, second
    model, forced, first, at, token, second = engine.submit(run).result()
    assert len(first.margins) == len(first.tokens) and all(m >= 0 for m in first.margins)
    pieces = [model.piece(t) for t in first.tokens]
    i = next(i for i, t in enumerate(first.tokens) if t == token and b"".join(pieces[:i]) == at)
    line = b"".join(pieces).split(b"\n")[0]
    assert at.startswith(forced) and len(at) < len(line)  # a place inside the first line
    free = [m for j, m in enumerate(first.margins) if len(b"".join(pieces[:j])) >= len(forced)
            and b"".join(pieces[:j + 1])[len(forced):].strip() and b"\n" not in b"".join(pieces[:j + 1]).lstrip()]
    assert first.margins[i] == min(free)
    # The next candidate: the same bytes up to there (forced), then another token.
    done, after = b"", None
    for t in second.tokens:
        if len(done) >= len(at):
            after = t
            break
        done += model.piece(t)
    assert done.startswith(at) and (after != token or len(done) > len(at))
    assert b"".join(model.piece(t) for t in second.tokens).split(b"\n")[0] != line


def test_at_the_end_of_an_opener_the_text_may_start_on_the_next_line_but_must_come(engine):
    above, typed, suffix = "def visit(node):\n    for child in node.children:", "", "\n\n\ndef other():\n    pass\n"

    def run(model):
        fim, tokens = _prompt(model, above, typed, suffix)
        return model.generate(tokens, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                              stop_ids=fim.stop_ids, judge=lambda t: t.strip() and t.strip().count("\n") >= 1,
                              text_first=True, breaks_first=True)
    gen = engine.submit(run).result()
    assert gen.finish != "stop" or gen.text.strip(), gen.text  # no end of text before some text


def test_a_shutdown_stops_the_running_prompt_read_at_its_next_chunk(default_model_path):
    """Shutting an engine down while a job reads a long prompt (the assistant's warm-up, a read
    ahead) ends that job at its next chunk: no thread keeps a core busy after the server has gone."""
    eng = Engine("shutdown-test")
    eng.load(str(default_model_path), n_ctx=2048, n_threads=2).result()
    code = "".join(f"def handler_{i}(request):\n    return respond(request, {i})\n\n" for i in range(120))
    started = threading.Event()

    def run(model):
        _, tokens = _prompt(model, code, "", "")
        started.set()
        return model.prefill(tokens, stopped=lambda: "")  # nothing of its own stops it
    job = eng.submit(run)
    assert started.wait(60)
    time.sleep(0.3)
    eng.shutdown()
    prep = job.result(timeout=30)  # a whole read is ~25 s on a slow 2-core machine; a chunk well under 1 s
    assert not prep.done and prep.evaluated < 1000


def test_token_pieces_are_whole_however_long(engine):
    # Llama.detokenize gives b"" for a piece over 32 bytes: generated text lost deep indentation
    # and separator lines. Every piece of a tokenized text must give the text back.
    text = "x = 1\n" + " " * 40 + "# " + "-" * 70 + "\n" + " " * 64 + "return x\n"

    def pieces(model):
        tokens = model.tokenize(text, add_special=False)
        return tokens, b"".join(model.piece(t) for t in tokens)
    tokens, joined = engine.submit(pieces).result()
    assert joined.decode() == text
    assert any(len(engine.submit(lambda m, t=t: m.piece(t)).result()) > 32 for t in tokens)


def test_a_second_context_shares_the_weights_and_keeps_a_kv_cache_of_its_own(default_model_path):
    """The larger model's fill-in-the-middle beside its chat (completion.manualModel): a second context
    on the same weights answers as the first, neither evicts the other's cache, and it costs its KV
    cache, not the weights again."""
    import psutil

    eng = Engine("second-test", foreground=False)
    eng.load(str(default_model_path), n_ctx=2048, n_threads=1).result()
    try:
        rss = psutil.Process().memory_info().rss
        eng.open_second(2048).result()
        added = psutil.Process().memory_info().rss - rss
        assert added < 0.5 * default_model_path.stat().st_size, added  # the KV cache, not the weights

        other = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"

        def run(model):
            fim, tokens = _prompt(model)
            return model.generate(tokens, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                                  stop_ids=fim.stop_ids, judge=lambda t: "\n" in t)

        def run_other(model):
            fim, tokens = _prompt(model, other, "        ", "")
            return model.generate(tokens, max_tokens=16, cancel=threading.Event(), deadline=time.monotonic() + 60,
                                  stop_ids=fim.stop_ids)
        first = eng.submit(run).result()
        second = eng.submit(run, second=True).result()
        assert second.text == first.text and second.reused_tokens == 0  # its own cache, empty until now
        eng.lane().submit(run_other).result()  # the second context reads another prompt...
        again = eng.submit(run).result()  # ... and the first still holds its own
        assert again.text == first.text and again.reused_tokens == again.prompt_tokens - 1
        assert eng.busy is False
        eng.unload().result()  # closes the second context first, then the model
        assert eng.second is None and eng.model is None
        with pytest.raises(RuntimeError):
            eng.submit(run, second=True).result()
    finally:
        eng.shutdown()


def test_a_temperature_draws_other_answers_and_a_seed_repeats_one(engine):
    """The agent's retry after a failed step: another answer to the same prompt, reproducibly."""
    def run(model):
        fim, tokens = _prompt(model, typed="    ")

        def gen(**kw):
            return model.generate(tokens, max_tokens=12, cancel=threading.Event(), deadline=time.monotonic() + 60,
                                  stop_ids=fim.stop_ids, **kw).text
        return gen(), [gen(temperature=1.0, seed=s) for s in range(6)], gen(temperature=1.0, seed=3)
    greedy, drawn, again = engine.submit(run).result()
    assert any(d != greedy for d in drawn), (greedy, drawn)
    assert again == drawn[3]
