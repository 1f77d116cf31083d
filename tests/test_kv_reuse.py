"""KV-cache reuse with the real default model: shifted runs, gaps, saved states, work ahead.

What the engine promises (server/engine/kv_cache.py): a prompt served from a rearranged cache
gives what the same prompt evaluated from scratch gives: exactly for a pure shift (RoPE
attention depends on relative positions only) and for a restored state; the greedy
continuation for the moves an editor makes (the window slid, lines inserted above the
cursor). bench/editing_session.py measures the rest on a whole session.
"""

import asyncio
import dataclasses
import inspect
import itertools
import threading
import time

import numpy as np
import pytest

from server.completion import CompletionService, Snapshot
from server.config import parse_settings
from server.engine import HOLE, Engine, KvSnapshots, plan_reuse
from server.prompting import Budget, CursorText, TokenCounter, build_fim_prompt, detect_fim_format

from .helpers import CONFIG_PY

pytestmark = pytest.mark.model

# Real code this project did not write: the standard library's textwrap module.
import textwrap  # noqa: E402

SOURCE = inspect.getsource(textwrap)
LINES = SOURCE.split("\n")


def test_plan_reuse_keeps_the_prefix_and_finds_moved_runs_in_order():
    cells = list(range(100))
    # The window slid: tokens 0-9 stay, 10-29 left, 30-99 come 20 earlier, then 5 new ones.
    target = list(range(10)) + list(range(30, 100)) + [500, 501, 502, 503, 504]
    assert plan_reuse(cells, target, 16) == [(0, 0, 10), (10, 30, 70)]
    # Lines inserted before a kept run: the run moves right.
    target = list(range(40)) + [900 + i for i in range(7)] + list(range(40, 100))
    assert plan_reuse(cells, target, 16) == [(0, 0, 40), (47, 40, 60)]
    # A run shorter than the minimum is evaluated; 0 keeps only the common prefix.
    assert plan_reuse(cells, list(range(5)) + [777] + list(range(50, 60)), 16) == [(0, 0, 5)]
    assert plan_reuse(cells, [777] + list(range(1, 100)), 0) == []
    # With FIM markers, code read as prefix is not reused as suffix (the cursor moved up 20 tokens).
    PRE, SUF, MID = 1000, 1001, 1002
    old = [PRE] + list(range(100)) + [SUF] + list(range(100, 140)) + [MID]
    new = [PRE] + list(range(80)) + [SUF] + list(range(80, 140)) + [MID]
    assert plan_reuse(old, new, 16) == [(0, 0, 81), (82, 81, 20), (102, 102, 41)]
    assert plan_reuse(old, new, 16, frozenset({PRE, SUF, MID})) == [(0, 0, 81), (102, 102, 41)]
    # Holes never match.
    assert plan_reuse([1, 2, HOLE, HOLE] + list(range(10, 40)), [1, 2] + list(range(10, 40)), 16) == \
        [(0, 0, 2), (2, 4, 30)]


def test_saved_states_are_evicted_least_recently_used_under_their_budget():
    from server.engine import KvSnapshot
    store = KvSnapshots(250)
    for i in range(3):
        store.add(KvSnapshot([i], b"x" * 100))
    assert [s.cells for s in store] == [[1], [2]] and store.nbytes == 200
    store.add(KvSnapshot([1], b"y" * 100))  # the same cells again: replaced, most recent
    assert [s.cells for s in store] == [[2], [1]]
    store.resize(100)
    assert [s.cells for s in store] == [[1]]


@pytest.fixture(scope="module")
def engine(default_model_path):
    eng = Engine("kv-test")
    eng.load(str(default_model_path), n_ctx=4096, n_threads=2).result()
    yield eng
    eng.shutdown()


def _prompt(model, line: int, text: str = SOURCE) -> list[int]:
    """The FIM prompt with the cursor after the indentation of ``line`` (0-based) of ``text``."""
    fim = detect_fim_format(model)
    model.reuse_markers = frozenset({fim.prefix_id, fim.suffix_id, fim.middle_id})
    lines = text.split("\n")
    offset = sum(len(s) + 1 for s in lines[:line]) + len(lines[line]) - len(lines[line].lstrip())
    return build_fim_prompt(model, detect_fim_format(model), CursorText.at(text, offset), Budget(512, 128)).tokens


def _next_logits(model, prompt: list[int]) -> np.ndarray:
    """Serve ``prompt`` (prefill, then its last token) and return the next token's logits."""
    assert model.prefill(prompt, threading.Event()).done
    model.llm.eval(prompt[-1:])
    logits = np.ctypeslib.as_array(model.llm._ctx.get_logits_ith(-1), shape=(model.llm.n_vocab(),))
    return np.array(logits)


def _greedy(model, prompt: list[int]) -> str:
    """The first line of text the model writes greedily: what a single-line suggestion shows."""
    fim = detect_fim_format(model)
    text = model.generate(prompt, max_tokens=24, cancel=threading.Event(), deadline=time.monotonic() + 120,
                          stop_ids=fim.stop_ids, judge=lambda t: "\n" in t.strip("\n")).text
    return text.strip("\n").split("\n")[0]


def test_a_shifted_cache_gives_the_logits_of_the_same_prompt_evaluated_from_scratch(engine):
    def run(model):
        prompt = _prompt(model, 120)
        model.clear_cache()
        fresh = _next_logits(model, prompt)
        # The same tokens evaluated 300 positions further on, nothing before them, then shifted home.
        model.clear_cache()
        model.kv.cells = [HOLE] * 300
        for start in range(0, len(prompt) - 1, 64):
            model.kv.decode_at(prompt[start:min(start + 64, len(prompt) - 1)], 300 + start)
            model.kv.cells += prompt[start:min(start + 64, len(prompt) - 1)]
        prep = model.prefill(prompt, threading.Event())
        shifted = _next_logits(model, prompt)
        return fresh, shifted, prep
    fresh, shifted, prep = engine.submit(run).result()
    assert prep.done and prep.shifted == prep.reused > 300 and prep.evaluated == 0
    assert int(np.argmax(shifted)) == int(np.argmax(fresh))
    # f16 keys rotated twice: the same distribution within a small tolerance.
    assert np.max(np.abs(shifted - fresh)) < 0.05 * (fresh.max() - fresh.min())


def test_a_chunk_stopped_part_way_keeps_nothing_of_it_and_reading_on_gives_the_fresh_logits(engine):
    """``KvCache.abort_when`` (a background model's "a suggestion began") stops a chunk inside
    llama.cpp's decode; what the cache then holds serves the rest of the prompt exactly as a
    fresh read does. A chunk whose decode applies a pending shift is never stopped (a K-shift
    stopped part way would later rotate some layers twice): it is applied with one token."""
    def run(model):
        prompt = _prompt(model, 200)
        moved = prompt[:1] + [11] * 7 + prompt[1:129]  # 7 tokens inserted near the start
        model.clear_cache()
        fresh = _next_logits(model, prompt)
        model.clear_cache()
        fresh_moved = _next_logits(model, moved)
        model.clear_cache()

        def in_the_second_chunk() -> bool:
            return len(model.kv.cells) - model.kv.cells.count(HOLE) >= 64
        model.kv.abort_when = in_the_second_chunk
        try:
            stopped = model.prefill(prompt, stopped=lambda: "yield" if in_the_second_chunk() else "")
            kept = list(model.kv.cells)
        finally:
            model.kv.abort_when = None
        read_on = model.prefill(prompt)
        logits = _next_logits(model, prompt)
        model.clear_cache()
        model.prefill(prompt[:129])
        model.kv.abort_when = lambda: True
        looks = itertools.count()
        try:  # (stopped gives up after 20 looks: a stopped K-shift would be retried for ever)
            stopped_moved = model.prefill(moved, stopped=lambda: "" if next(looks) < 20 else "yield")
        finally:
            model.kv.abort_when = None
        shifted = model.prefill(moved)
        return (fresh, stopped, kept, read_on, logits, stopped_moved, shifted, fresh_moved, _next_logits(model, moved),
                prompt)
    fresh, stopped, kept, read_on, logits, stopped_moved, shifted, fresh_moved, moved_logits, prompt = \
        engine.submit(run).result()
    assert not stopped.done and stopped.evaluated == 64
    assert kept[:64] == prompt[:64] and set(kept[64:]) == {HOLE}
    assert read_on.done and read_on.reused == 64
    assert int(np.argmax(logits)) == int(np.argmax(fresh))
    assert np.max(np.abs(logits - fresh)) < 1e-3 * (fresh.max() - fresh.min())
    # The shift was applied with the gap's first token (never stopped), the rest of the gap stopped.
    assert not stopped_moved.done and stopped_moved.shifted >= 100 and stopped_moved.evaluated == 0
    assert shifted.done and shifted.reused == 128 and shifted.evaluated == 7
    assert int(np.argmax(moved_logits)) == int(np.argmax(fresh_moved))
    assert np.max(np.abs(moved_logits - fresh_moved)) < 0.05 * (fresh_moved.max() - fresh_moved.min())


# Moves in real code this project did not write (click's core.py): (from line, to line), up and down.
JUMPS = [(1054, 1033), (284, 278), (1480, 1503), (307, 327), (116, 138), (2504, 2541)]


def test_after_jumps_within_a_file_the_reused_cache_mostly_writes_what_a_fresh_one_does(engine):
    import click.core
    text = inspect.getsource(click.core)

    def run(model):
        model.snapshots.resize(0)
        fim = detect_fim_format(model)
        out = []
        for old, new in JUMPS:
            before = _at(model, fim, text, old, None)
            target = _at(model, fim, text, new, before.start_line)  # the window start kept, as the service does
            model.clear_cache()
            fresh = _greedy(model, target.tokens)
            model.clear_cache()
            _greedy(model, before.tokens)
            prep = model.prefill(target.tokens, threading.Event())
            out.append((fresh, _greedy(model, target.tokens), prep, len(target.tokens)))
        return out
    results = engine.submit(run).result()
    assert all(prep.done for *_, prep, _ in results)
    # A good part of the prompts was not evaluated again ...
    assert sum(prep.evaluated for *_, prep, _ in results) < 0.75 * sum(n for *_, n in results)
    assert all(prep.reused > 0 for *_, prep, _ in results)
    # ... and the suggestion is the one a fresh read gives, but for an occasional one (a kept run's
    # vectors were computed after other code: bench/editing_session.py measures that exact match holds).
    agree = sum(fresh == reused for fresh, reused, *_ in results)
    assert agree >= len(JUMPS) - 1, [(f, r) for f, r, *_ in results if f != r]


def _at(model, fim, text: str, line: int, keep_start: int | None):
    lines = text.split("\n")
    offset = sum(len(s) + 1 for s in lines[:line]) + len(lines[line]) - len(lines[line].lstrip()) \
        + len(lines[line].strip()) // 3  # a third of the line typed
    model.reuse_markers = frozenset({fim.prefix_id, fim.suffix_id, fim.middle_id})
    return build_fim_prompt(model, fim, CursorText.at(text, offset), Budget(512, 128), keep_start=keep_start)


def test_lines_accepted_above_the_cursor_shift_the_suffix_right(engine):
    line = 320
    without = "\n".join(LINES[:line] + LINES[line + 2:])  # the two lines not written yet

    def run(model):
        model.snapshots.resize(0)
        before = _prompt(model, line, without)
        after = _prompt(model, line + 2, SOURCE)  # accepted: the cursor is two lines down
        model.clear_cache()
        _greedy(model, before)
        return model.prefill(after, threading.Event()), len(after)
    prep, n = engine.submit(run).result()
    # The code below the cursor moved right by the two lines: kept, shifted; the two lines are read.
    assert prep.done and prep.shifted > 100 and prep.evaluated < 100 and prep.reused == n - 1 - prep.evaluated


def test_a_saved_state_round_trips_and_coming_back_restores_it(engine):
    import click.core
    other = inspect.getsource(click.core)

    def run(model):
        model.snapshots.resize(256 * 2**20)
        here = _prompt(model, 200)
        model.clear_cache()
        first = _next_logits(model, here)
        saved = model.save_state()
        model.clear_cache()
        model.restore_state(saved)
        again = _next_logits(model, here)
        # Another file overwrites the cache; coming back restores the state saved on the way out.
        _greedy(model, _prompt(model, 700, other))
        back = model.prefill(here, threading.Event())
        return first, again, back, len(model.snapshots), len(here)
    first, again, back, kept, n = engine.submit(run).result()
    assert np.array_equal(first, again)
    assert back.restored and back.evaluated == 0 and back.reused == n - 1
    assert kept >= 1  # the other file's state was saved in turn


async def test_work_ahead_reads_a_new_place_prepares_after_an_accept_and_a_keystroke_stops_it(default_model_path):
    engine = Engine("kv-ahead-test")
    model = engine.load(str(default_model_path), n_ctx=2048, n_threads=2).result()
    service = CompletionService(engine, detect_fim_format(model), TokenCounter(model))
    settings = parse_settings({})[0]
    try:
        line = CONFIG_PY.index("result[key.strip()]")
        text = CONFIG_PY[:line] + "result[" + CONFIG_PY[CONFIG_PY.index("\n", line):]
        snap = Snapshot("file:///w/config.py", 1, text, line + len("result["), "python")
        # The cursor went to a new place (the editor asked for code actions there) and the user
        # looks: the prompt there is read ahead; the first suggestion reads only its last token.
        service.prefill_at(snap, settings)
        while service._idle_tasks:
            await asyncio.sleep(0.05)
        shown = await service.suggest(snap, settings, manual=True)
        assert shown is not None and shown.text and shown.source == "model"
        assert shown.generation.evaluated_tokens <= 1 + 4  # the last prompt token (+ healed tokens)
        # The user pauses: the suggestion after accepting this one and pressing Enter is prepared.
        service.prefetch_after(snap, shown.text, settings)
        while service._idle_tasks:
            await asyncio.sleep(0.05)
        assert service.prefetched == 1
        line = text[text.rfind("\n", 0, snap.offset) + 1:snap.offset] + shown.text
        enter = shown.text + "\n" + line[:len(line) - len(line.lstrip())]
        accepted = Snapshot(snap.uri, 2, text[:snap.offset] + enter + text[snap.offset:],
                            snap.offset + len(enter), "python")
        answers = service.model_answers
        after = await service.suggest(accepted, settings, manual=False)
        assert after is not None and after.source == "cache" and service.model_answers == answers

        # Work ahead that a keystroke finds running is stopped: the keystroke's request is answered.
        service.prefetch_after(accepted, "\n" + " " * 16 + "if key:\n" + " " * 20 + "pass", settings)
        while not any(f.idle for f in service._flights.values()):
            await asyncio.sleep(0.01)
        ahead = next(f for f in service._flights.values() if f.idle)
        typed = Snapshot(snap.uri, 3, text[:snap.offset] + "k" + text[snap.offset:], snap.offset + 1, "python")
        answer = await service.suggest(typed, settings, manual=True)
        assert ahead.cancel.is_set() and await ahead.future is None
        assert answer is not None and answer.text  # (the type-through cache has it: "k" began "key]")
    finally:
        engine.shutdown()


def _typing_at(uri: str, version: int, line: int, chars: int) -> Snapshot:
    """textwrap.py with the start of ``line`` typed (``chars`` characters after its indentation)."""
    indent = len(LINES[line]) - len(LINES[line].lstrip())
    typed = LINES[line][:indent + chars]
    text = "\n".join(LINES[:line] + [typed] + LINES[line + 1:])
    return Snapshot(uri, version, text, len("\n".join(LINES[:line])) + 1 + len(typed), "python")


async def test_a_place_the_cache_has_not_seen_gets_a_shorter_window_first_and_the_whole_prompt_after_a_pause(
        default_model_path):
    engine = Engine("kv-cold-test")
    model = engine.load(str(default_model_path), n_ctx=4096, n_threads=2).result()
    service = CompletionService(engine, detect_fim_format(model), TokenCounter(model))
    # Every automatic suggestion shown, however sure the model was (minConfidence 0): this checks the windows.
    settings = parse_settings({"completion": {"coldPromptMs": 2000, "autoMaxTimeMs": 3000, "minConfidence": 0}})[0]
    uri = "file:///w/textwrap.py"
    lines = [i for i, s in enumerate(LINES) if i > 150 and len(s.strip()) > 30 and not s.strip().startswith("#")]
    snap = _typing_at(uri, 1, lines[100], 5)
    try:
        model.prompt_rate = 100.0  # tokens/s: 2 s read 200 tokens, far less than the whole prompt
        first = await service.suggest(snap, settings, manual=False)
        assert first is not None and first.generation is not None and uri in service.local.cut
        assert service.stats().short_windows == 1
        cursor = CursorText.at(snap.text, snap.offset)
        whole = engine.submit(lambda m: service.local.fim_prompt(m, uri, cursor, settings,
                                                                 settings.completion_max_tokens, whole=True)).result()
        assert 128 <= first.generation.prompt_tokens <= 200 + 32 + 16 < len(whole.tokens) - 400

        # The user pauses on the suggestion: after the one that follows an accept is prepared,
        # the whole prompt at this place is read, exactly; the next request there uses it.
        model.prompt_rate = 100.0
        service.prefetch_after(snap, first.text, settings)
        while service._idle_tasks:
            await asyncio.sleep(0.05)
        assert engine.submit(lambda m: m.cached_tokens(whole.tokens)).result() == len(whole.tokens) - 1
        model.prompt_rate = 100.0
        service.cache.clear()  # (the suggestion cache would answer the same place without the model)
        again = await service.suggest(dataclasses.replace(snap, version=2), settings, manual=False)
        assert again is not None and again.source == "model" and uri not in service.local.cut
        assert again.generation.prompt_tokens >= len(whole.tokens) - 8 and again.generation.evaluated_tokens <= 8

        # A request the user makes and waits for always reads the whole prompt; 0 turns the
        # shorter window off.
        manual = await service.suggest(_typing_at(uri, 3, lines[10], 5), settings, manual=True)
        assert manual is not None and manual.generation.prompt_tokens > 400 and uri not in service.local.cut
        off = parse_settings({"completion": {"coldPromptMs": 0, "minConfidence": 0}})[0]
        auto = await service.suggest(_typing_at(uri, 4, lines[40], 5), off, manual=False)
        assert auto is not None and auto.generation.prompt_tokens > 400 and uri not in service.local.cut
    finally:
        engine.shutdown()
