"""The engine with the real default model: reuse, cancellation, time caps."""

import threading
import time

import pytest

from server.engine import Engine
from server.prompting import Budget, build_fim_prompt, detect_fim_format

pytestmark = pytest.mark.model

PREFIX = "def fibonacci(n):\n    if n < 2:\n        return n\n    return "
SUFFIX = "\n\n\nprint(fibonacci(10))\n"


@pytest.fixture(scope="module")
def engine(default_model_path):
    eng = Engine("test")
    eng.load(str(default_model_path), n_ctx=2048, n_threads=2).result()
    yield eng
    eng.shutdown()


def _prompt(model, prefix=PREFIX, suffix=SUFFIX):
    fim = detect_fim_format(model)
    return fim, build_fim_prompt(model, fim, prefix, suffix, Budget(1500, 400)).tokens


def test_greedy_fim_completes_and_repeats_identically_from_the_kv_cache(engine):
    def run(model):
        fim, tokens = _prompt(model)
        first = model.generate(tokens, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                               stop_ids=fim.stop_ids, judge=lambda t: "\n" in t)
        again = model.generate(tokens, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 60,
                               stop_ids=fim.stop_ids, judge=lambda t: "\n" in t)
        return first, again
    first, again = engine.submit(run).result()
    assert first.text.split("\n")[0].strip() == "fibonacci(n - 1) + fibonacci(n - 2)"
    assert again.text == first.text  # the same answer when the whole prompt is already cached
    assert again.reused_tokens == again.prompt_tokens - 1 and again.evaluated_tokens == 1
    assert first.finish == "complete"


def test_cancel_stops_prompt_processing_within_a_chunk(engine):
    code = "".join(f"def handler_{i}(request):\n    return respond(request, {i})\n\n" for i in range(120))

    def run(model):
        _, tokens = _prompt(model, code, "")
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        return model.generate(tokens, max_tokens=16, cancel=cancel, deadline=time.monotonic() + 60)
    gen = engine.submit(run).result()
    assert gen.finish == "cancelled" and gen.generated_tokens == 0
    assert gen.prompt_tokens > 1000  # ~6 s of prompt processing on 2 cores
    assert gen.total_ms < 0.3 * 1000 + 1500  # stopped long before the whole prompt was processed


def test_time_cap_ends_generation_as_timeout(engine):
    def run(model):
        _, tokens = _prompt(model, "# a long list\nitems = [\n", "")
        return model.generate(tokens, max_tokens=2000 - len(tokens), cancel=threading.Event(),
                              deadline=time.monotonic() + 0.5)
    gen = engine.submit(run).result()
    assert gen.finish == "timeout" and gen.total_ms < 0.5 * 1000 + 700
