"""The completion service with the real default model: caches, continuation, gates, debounce."""

import asyncio
import math

import pytest

from server.completion import CompletionRequest, CompletionService, Snapshot
from server.config import parse_settings
from server.engine import Engine
from server.prompting import TokenCounter, detect_fim_format

from .helpers import CONFIG_PY

INDENT = " " * 16  # the body of the for loop in CONFIG_PY
LINE = INDENT + "result[key.strip()] = value.strip()"
FILE = CONFIG_PY


def snap_typing(typed: str, version: int = 1) -> Snapshot:
    """The file with LINE replaced by ``typed`` and the cursor after it."""
    text = FILE.replace(LINE, typed)
    offset = FILE.index(LINE) + len(typed)
    return Snapshot("file:///tmp/config.py", version, text, offset, "python")


@pytest.fixture(scope="module")
def service(default_model_path):
    engine = Engine("service-test")
    model = engine.load(str(default_model_path), n_ctx=2048, n_threads=2).result()
    fim = detect_fim_format(model)
    yield CompletionService(engine, fim, TokenCounter(model))
    engine.shutdown()


pytestmark = pytest.mark.model


def settings(**values):
    return parse_settings({k.replace("_", "."): v for k, v in values.items()})[0]


async def test_type_through_serves_the_rest_without_the_model(service):
    s = settings()
    first = await service.suggest(snap_typing(INDENT + "result["), s, manual=True)
    assert first is not None and first.source == "model" and len(first.text) > 4
    answers = service.model_answers
    # The user types the first four characters of the suggestion: the rest comes from the cache.
    typed = INDENT + "result[" + first.text[:4]
    second = await service.suggest(snap_typing(typed, 2), s, manual=False)
    assert second.source == "cache" and second.latency_ms < 50
    assert typed + second.text == INDENT + "result[" + first.text
    assert service.model_answers == answers  # no model call
    # An exact repeat is a cache hit too.
    again = await service.suggest(snap_typing(INDENT + "result[", 3), s, manual=True)
    assert again.source == "cache" and again.text == first.text


async def test_a_time_capped_answer_is_continued_on_the_next_keystroke(service):
    typed = INDENT + "key, _, v"
    warm = await service.suggest(snap_typing(typed), settings(), manual=True)  # the prompt is read; KV cache warm
    service.cache.clear()
    # A cap of about three tokens' time on this machine (60 ms on the reference machine): cut, not empty.
    g = warm.generation
    per_token_ms = (g.total_ms - g.prompt_ms) / max(1, g.generated_tokens)
    cap_ms = max(60, int(3 * per_token_ms))
    first = await service.suggest(snap_typing(typed, 2), settings(completion_autoMaxTimeMs=cap_ms,
                                                                  completion_debounceMinMs=0), manual=False)
    assert first is not None and first.generation.finish == "timeout" and first.text
    more = await service.suggest(snap_typing(typed + first.text[0], 3),
                                 settings(completion_autoMaxTimeMs=5000, completion_debounceMinMs=0), manual=False)
    assert more.source == "continued"
    assert more.generation.reused_tokens == more.generation.prompt_tokens - 1  # nothing re-read
    assert (typed + first.text[0] + more.text).startswith(typed + first.text)
    # Its confidence covers the part written before the cap too: every token of both generations.
    entry = service.cache.get(more.request.key)
    assert len(entry.logprobs) == len(entry.ends) == entry.generated > more.generation.generated_tokens
    assert list(entry.ends) == sorted(entry.ends) and entry.ends[-1] == len(entry.text)


async def test_a_model_suggestion_says_how_sure_the_model_was_of_the_text_shown(service):
    s = settings()
    service.cache.clear()
    # Half a word whose rest is all but certain: the model is sure of it.
    sure = await service.suggest(snap_typing(INDENT + "result[key.strip()] = value.st", 5), s, manual=True)
    assert sure is not None and sure.source == "model" and sure.text.startswith("rip()")
    c, gen = sure.confidence, sure.generation
    assert len(gen.logprobs) == len(gen.tokens) == len(gen.ends) and all(lp <= 0 for lp in gen.logprobs)
    assert 0 < c.least <= c.mean <= 1 and c.least <= c.first <= 1 and 1 <= c.tokens <= len(gen.tokens)
    assert c.mean > 0.5, c
    assert service.stats().last_confidence == c  # deepseek.status completion.lastConfidence
    # The same place again: a cache hit, as sure as before; one character typed along: what is left.
    again = await service.suggest(snap_typing(INDENT + "result[key.strip()] = value.st", 6), s, manual=True)
    assert again.source == "cache" and again.confidence == c
    along = await service.suggest(snap_typing(INDENT + "result[key.strip()] = value.str", 7), s, manual=False)
    assert along.source == "cache" and along.confidence is not None and along.confidence.tokens <= c.tokens
    assert sure.asked and along.asked  # the rest of a suggestion the user asked for


async def test_an_automatic_suggestion_the_model_is_unsure_of_is_not_shown(service):
    service.cache.clear()
    typed = INDENT + "result[key.strip()] = value.st"
    everything = settings(completion_debounceMinMs=0, completion_minConfidence=0)
    shown = await service.suggest(snap_typing(typed, 8), everything, manual=False)
    assert shown is not None and shown.text and shown.confidence.least < 1
    quiet = service.quiet_answers
    # The same place with a threshold above the model's least sure token: nothing is shown.
    strict = settings(completion_debounceMinMs=0, completion_minConfidence=int(100 * shown.confidence.least) + 1)
    assert await service.suggest(snap_typing(typed, 9), strict, manual=False) is None
    assert service.quiet_answers == quiet + 1
    # A request the user makes is always answered, and the rest of that suggestion stays shown as they type it.
    asked = await service.suggest(snap_typing(typed, 10), strict, manual=True)
    assert asked.text == shown.text and asked.asked
    rest = await service.suggest(snap_typing(typed + shown.text[:1], 11), strict, manual=False)
    assert rest is not None and rest.text == shown.text[1:]


def test_confidence_counts_the_tokens_that_write_the_part_shown():
    from server.completion import Confidence

    logprobs, ends = (-0.1, -2.0, -0.5), (3, 5, 9)  # three tokens writing "abc", "de", "fghi"
    c = Confidence.of(logprobs, ends, 3, 9)  # the second and third write characters 3-9
    assert c.tokens == 2 and c.first == round(math.exp(-2.0), 4) and c.least == c.first
    assert c.mean == round(math.exp(-1.25), 4)
    assert Confidence.of(logprobs, ends, 4, 6).tokens == 2  # a token writing any character of the part counts
    assert Confidence.of(logprobs, ends, 9, 12) is None and Confidence.of((), (), 0, 3) is None


async def test_automatic_requests_skip_busy_lines_but_manual_ones_answer(service):
    s = settings()
    text = FILE.replace("    return result", "    return ; result, value, handle")
    offset = text.index("    return ") + len("    return ")
    snap = Snapshot("file:///tmp/busy.py", 1, text, offset, "python")
    assert await service.suggest(snap, s, manual=False) is None  # 19 non-blank characters right of the cursor
    assert await service.suggest(snap, s, manual=True) is not None


async def test_superseded_generation_returns_nothing(service):
    s = settings(completion_debounceMinMs=0)
    old = asyncio.ensure_future(service.suggest(snap_typing(INDENT + "x"), s, manual=False))
    await asyncio.sleep(0.05)
    new = await service.suggest(snap_typing(INDENT + "resu", 2), s, manual=False)
    assert await old is None
    assert new is not None and new.text


def test_debounce_follows_typing_speed_within_its_bounds():
    svc = CompletionService(None, None, None)  # the debounce needs no model
    s = settings(completion_debounceMinMs=30, completion_debounceMaxMs=300)
    assert svc.debounce_ms("u", s) == 30  # nothing known yet: the floor
    for i in range(6):
        svc.pace.keystroke("u", 10.0 + i * 0.1)  # 100 ms between keystrokes
    svc.generation_ms = 400.0  # the model is slower than the typing: wait about one interval
    assert 100 <= svc.debounce_ms("u", s) <= 120
    svc.generation_ms = 50.0  # the model is faster than the typing: no point waiting
    assert svc.debounce_ms("u", s) == 30
    for i in range(6):
        svc.pace.keystroke("v", 20.0 + i * 0.9)  # slow typing, slow model: capped by the ceiling
    svc.generation_ms = 5000.0
    assert svc.debounce_ms("v", s) == 300


def test_only_alternatives_found_to_the_end_are_reused_at_their_place():
    # At a place the KV cache had not read, the first suggestion can spend nearly all of
    # completion.manualMaxTimeMs: the alternatives then get none and the list is cut short.
    # Asking again there must search again (the prompt is cached by then), not repeat the stub.
    svc = CompletionService(None, None, None)  # what is remembered needs no model
    s = settings()
    req = CompletionRequest.of(snap_typing(INDENT + "result["), s, manual=True, check=False)
    svc.cache.remember(req, ["key.strip()] = value.strip()"], complete=False)
    assert svc.cache.remembered(req) is None
    svc.cache.remember(req, ["key.strip()] = value.strip()", "key] = value"], complete=True)
    assert svc.cache.remembered(req) == ["key.strip()] = value.strip()", "key] = value"]
    other = CompletionRequest.of(snap_typing(INDENT + "result[k"), s, manual=True, check=False)
    assert svc.cache.remembered(other) is None  # another place


def test_chat_counts_its_budget_in_its_own_model_s_tokens_on_that_model_s_thread(service, tmp_path):
    # Counting with the completion model from an assistant thread used a model a settings
    # change could unload meanwhile (a native crash): the assistant counts with its own.
    import threading

    from server.assist import AssistStore
    from server.assist.tasks import Assistant

    engine = service.local.engine
    assistant = Assistant(engine, "qwen", AssistStore(tmp_path / "a.sqlite"))
    count = assistant._counter()
    text = "def read_config(path):\n    return json.load(open(path))\n"
    threads = []
    expected = engine.submit(lambda m: (threads.append(threading.current_thread()), len(m.tokenize(text)))[1]).result()
    seen = []
    original = type(engine).submit

    def spy(self, job):
        return original(self, lambda m: (seen.append(threading.current_thread()), job(m))[1])
    try:
        type(engine).submit = spy
        assert count(text) == expected > 5
    finally:
        type(engine).submit = original
    assert seen and all(t is threads[0] for t in seen)  # the model's owner thread, never the caller's
    assert Assistant(None, "remote", AssistStore(tmp_path / "b.sqlite"))._counter()("abcd" * 10) == 11


async def test_explicit_requests_go_to_the_larger_model_with_a_kv_cache_of_its_own(default_model_path):
    """completion.manualModel: the larger model (here a second context on the same weights, as the chat
    model's is) writes Invoked requests and their cache entries; automatic ones stay with the
    completion model; ``small`` keeps everything there; the type-through cache serves both."""
    from server.completion import LocalGenerator
    from server.completion.large import LargerModel

    engine = Engine("large-test")
    model = engine.load(str(default_model_path), n_ctx=2048, n_threads=2).result()
    fim, counter = detect_fim_format(model), TokenCounter(model)
    svc = CompletionService(engine, fim, counter)
    engine.open_second(2048).result()
    svc.larger = LargerModel(LocalGenerator(engine.lane(), fim, counter), "the same model")
    try:
        s = parse_settings({"completion.manualModel": "large"})[0]
        auto = await svc.suggest(snap_typing(INDENT + "result["), s, manual=False)
        assert auto is not None and not auto.large and svc.last_model == "small"
        manual = await svc.suggest(snap_typing(INDENT + "result[", 2), s, manual=True)
        assert manual.large and manual.source == "model"  # not the completion model's cached answer
        assert svc.larger.answers == 1 and svc.stats().last_model == "large" and svc.stats().large_model
        assert svc.large.prompt_tokens > 0 and svc.stats().large_rate
        typed = INDENT + "result[" + manual.text[:3]
        through = await svc.suggest(snap_typing(typed, 3), s, manual=False)
        assert through.source == "cache" and through.large
        assert typed + through.text == INDENT + "result[" + manual.text
        small_only = parse_settings({"completion.manualModel": "small"})[0]
        small = await svc.suggest(snap_typing(INDENT + "key, _", 4), small_only, manual=True)
        assert small is not None and not small.large and svc.larger.answers == 1, (small.source, small.text)
    finally:
        engine.shutdown()
