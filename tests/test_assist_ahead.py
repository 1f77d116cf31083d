"""The assistant's prompts laid out stable first and read ahead, with the real model (the default 0.5B
as the chat model: the layout and the KV cache work the same with the 1.5B)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from server.assist import AssistStore, CodeSpan, ContextItem, Reference
from server.assist.ahead import PromptReader, SystemStates
from server.assist.chat import EXCERPT_TOKENS, RETRIEVED_MIN, excerpt, question_terms
from server.assist.explain import HOVER_CODE_CHARS
from server.assist.tasks import Assistant
from server.engine import Engine
from server.engine.schedule import ASSISTANT, EDITOR, SCHEDULE

from .helpers import CONFIG_PY

CODE = CONFIG_PY


@pytest.fixture(scope="module")
def engine(default_model_path):
    engine = Engine("chat", foreground=False)
    engine.load(str(default_model_path), n_ctx=4096, n_threads=2).result()
    engine.submit(lambda m: m.snapshots.resize(64 * 2**20)).result()
    yield engine
    engine.shutdown()


@pytest.fixture
def assistant(engine, tmp_path):
    a = Assistant(engine, "qwen", AssistStore(tmp_path / "a.sqlite"), max_tokens=8)
    engine.submit(lambda m: m.clear_cache()).result()
    return a


def shown(path: Path) -> list[ContextItem]:
    """What the editor shows: a selection and the current file, as the LSP handler sends them."""
    lines = CODE.splitlines()
    return [ContextItem(f"Selected code from {path.name} (lines 1-6)", "\n".join(lines[:6]), Reference(path, 0, 5),
                        selected=True),
            ContextItem(f"The current file, {path.name}", CODE, Reference(path, 0, len(lines) - 1))]


def test_a_question_read_ahead_reads_only_its_own_message(assistant, tmp_path):
    context = shown(tmp_path / "config.py")
    reader = PromptReader(assistant)
    ahead = reader.read(assistant.chat_ahead(None, context)).result()
    assert ahead.done and ahead.evaluated > 100
    reply = assistant.chat(None, "What does read_config return?", context)
    question = len(assistant.engine.submit(lambda m: m.tokenize("What does read_config return?")).result())
    assert 0 < reply.read_tokens <= question + 12  # the question and the template's few tokens around it
    assert reply.prompt_tokens > ahead.tokens

    # A follow-up appends to the conversation: read ahead again (as the panel does after an answer).
    ahead = reader.read(assistant.chat_ahead(reply.session_id, context)).result()
    assert ahead.done and ahead.reused >= reply.prompt_tokens - 2  # the first exchange stays in the cache
    follow = assistant.chat(reply.session_id, "And when the file is missing?", context)
    assert follow.read_tokens <= 20 and follow.prompt_tokens > reply.prompt_tokens


def test_without_reading_ahead_the_whole_prompt_is_read_after_the_question(assistant, tmp_path):
    reply = assistant.chat(None, "What does read_config return?", shown(tmp_path / "config.py"))
    assert reply.read_tokens >= reply.prompt_tokens - 1 > 100


def test_the_retrieved_chunks_come_after_what_the_editor_shows(assistant, tmp_path):
    context = shown(tmp_path / "config.py")
    found = ContextItem("From src/other.py (lines 1-2)", "def other():\n    return 42\n",
                        Reference(tmp_path / "other.py", 0, 1), retrieved=True)
    before = assistant.chat_ahead(None, [*context, found])
    assert before == assistant.chat_ahead(None, context)  # the question's chunks are not known before it
    assert "read_config" in before[0]["content"] and "other()" not in before[0]["content"]
    reply = assistant.chat(None, "What does other return?", [found, *context])
    assert Reference(tmp_path / "other.py", 0, 1) in reply.references


def test_a_file_too_big_for_the_budget_sends_its_part_around_the_selection(assistant, tmp_path):
    big = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(400))
    path = tmp_path / "big.py"
    sel = ContextItem("Selected code from big.py (lines 601-602)", "def f200(x):\n    return x + 200",
                      Reference(path, 600, 601), selected=True)
    file = ContextItem("The current file, big.py", big, Reference(path, 0, big.count("\n")))
    system = assistant.chat_ahead(None, [sel, file])[0]["content"]
    assert "def f199(" in system and "def f201(" in system  # the lines around the selection
    assert "def f0(" not in system and "def f399(" not in system
    assert "The current file, big.py (lines " in system
    # The selected lines are sent once, as the selection, last: next to the question about them.
    assert system.count("def f200(") == 1 and "... (lines 601-602: the selected code, below)" in system
    assert system.index("def f201(") < system.index("Selected code from big.py") < system.index("def f200(")


def test_the_file_part_is_kept_small_so_it_is_read_before_the_question(assistant, tmp_path):
    big = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(400))
    path = tmp_path / "big.py"
    file = ContextItem("The current file, big.py", big, Reference(path, 0, big.count("\n")))
    count = assistant._counter()
    system = assistant.chat_ahead(None, [file])[0]["content"]
    assert "def f0(" in system and "def f399(" not in system  # no selection: the file's start (its imports)
    assert count(system) <= assistant.context_tokens * 0.125 + 150


def test_explain_read_ahead_leaves_one_token_to_read_and_its_heading_streams_first(assistant, tmp_path):
    (tmp_path / "config.py").write_text(CODE)
    span = CodeSpan(tmp_path / "config.py", CODE, 0, 5, "python", "read_config", 1)
    ahead = PromptReader(assistant).read(assistant.explain_messages(span)).result()
    assert ahead.done
    deltas = []
    reply = assistant.explain(span, lambda sid, d: deltas.append(d))
    assert reply.read_tokens <= 2
    assert deltas[0] == "**`read_config`** in `config.py`, lines 1-6\n\n"


def test_a_request_stops_reading_ahead_within_a_chunk(assistant, tmp_path):
    context = shown(tmp_path / "config.py")
    long_context = [ContextItem("Selected code from long.py", "\n".join(f"x{i} = {i}" for i in range(300)),
                                Reference(tmp_path / "long.py", 0, 299), selected=True)]
    reader = PromptReader(assistant)
    pending = reader.read(assistant.chat_ahead(None, long_context))
    time.sleep(0.3)  # it is reading
    reply = assistant.chat(None, "What does read_config return?", context)
    ahead = pending.result()
    assert not ahead.done and ahead.why == "superseded"
    assert reply.text


def test_reading_ahead_waits_while_a_suggestion_is_made(assistant, tmp_path):
    reader = PromptReader(assistant)
    hold, started = threading.Event(), threading.Event()

    def suggestion():  # a completion model's job, as the completion engine marks it
        with SCHEDULE.foreground():
            started.set()
            hold.wait(10)
    t = threading.Thread(target=suggestion)
    t.start()
    started.wait(5)
    pending = reader.read(assistant.chat_ahead(None, shown(tmp_path / "config.py")))
    time.sleep(1.0)
    assert reader.evaluated == 0 and not pending.done()  # nothing read while the suggestion is made
    released = time.monotonic()
    hold.set()
    t.join()
    ahead = pending.result()
    assert ahead.done and ahead.evaluated > 100 and time.monotonic() >= released


def _editor_work_ahead(cancel: threading.Event, started: threading.Event) -> threading.Thread:
    """The completion model's reading ahead at a cursor, as its engine marks it: it runs until
    its cancel event is set (as a prefill looks at it between chunks)."""
    def work():
        with SCHEDULE.ahead(cancel):
            started.set()
            cancel.wait(20)
    t = threading.Thread(target=work)
    t.start()
    assert started.wait(5)
    return t


def test_the_editors_work_ahead_holds_reading_ahead_back_until_the_user_turns_to_the_assistant(assistant, tmp_path):
    SCHEDULE.want(EDITOR)  # a cursor move
    cancel, started = threading.Event(), threading.Event()
    t = _editor_work_ahead(cancel, started)
    try:
        reader = PromptReader(assistant)
        pending = reader.read(assistant.chat_ahead(None, shown(tmp_path / "config.py")))
        time.sleep(1.0)
        assert reader.evaluated == 0 and not pending.done() and not cancel.is_set()  # one prompt read at a time
        SCHEDULE.want(ASSISTANT)  # the chat panel opened
        assert cancel.is_set()  # the editor's work ahead stops (within a chunk)
        ahead = pending.result(timeout=120)
        assert ahead.done and ahead.evaluated > 100
    finally:
        cancel.set()
        t.join()
        SCHEDULE.want(EDITOR)


def test_a_request_of_the_assistant_stops_the_editors_work_ahead(assistant, tmp_path):
    SCHEDULE.want(EDITOR)
    cancel, started = threading.Event(), threading.Event()
    t = _editor_work_ahead(cancel, started)
    try:
        reply = assistant.chat(None, "What does read_config return?", shown(tmp_path / "config.py"))
        assert cancel.is_set() and reply.text  # the request did not wait for speculative work
        assert SCHEDULE.wanted() == ASSISTANT
    finally:
        cancel.set()
        t.join()
        SCHEDULE.want(EDITOR)


def test_system_texts_states_are_saved_on_disk_and_restored_without_reading(engine, tmp_path):
    folder = tmp_path / "states"
    first = Assistant(engine, "qwen", AssistStore(tmp_path / "a.sqlite"), max_tokens=8)
    engine.submit(lambda m: m.snapshots.resize(0)).result()  # forget what other tests kept
    engine.submit(lambda m: m.snapshots.resize(64 * 2**20)).result()
    PromptReader(first, SystemStates(folder)).warm().result()
    files = sorted(folder.glob("*.kv"))
    assert len(files) == 5 and all(f.stat().st_size > 1000 for f in files)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    engine.submit(lambda m: (m.snapshots.resize(0), m.snapshots.resize(64 * 2**20), m.clear_cache())).result()
    before = {f: f.stat().st_mtime_ns for f in files}
    PromptReader(first, SystemStates(folder)).warm().result()  # a restart: read from disk
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert engine.submit(lambda m: len(m.snapshots)).result() == 5
    reply = first.hover("read_config", "python", CODE, 60.0)
    assert reply


def test_a_draft_question_reads_the_chunks_retrieved_for_it_too(assistant, tmp_path):
    # A workspace question: the chunks found for the draft are read while the user types;
    # when the question finds the same ones, only the question is left to read. RETRIEVED_MIN chunks:
    # those always go in; more only within what this machine reads in RETRIEVED_READ_S (a slow or
    # busy machine takes fewer).
    context = shown(tmp_path / "config.py")
    found = [ContextItem(f"From src/m{i}.py (lines 1-3)", f"def helper_{i}(x):\n    'Scale x.'\n    return x * {i}\n",
                         Reference(tmp_path / f"m{i}.py", 0, 2), retrieved=True) for i in range(RETRIEVED_MIN)]
    messages = assistant.chat_ahead(None, [*context, *found], draft="which helper scales")
    assert f"helper_{RETRIEVED_MIN - 1}" in messages[-1]["content"] and messages[-1]["role"] == "user"
    ahead = PromptReader(assistant).read(messages).result()
    assert ahead.done
    question = "which helper scales by two?"
    reply = assistant.chat(None, question, [*context, *found])
    n = len(assistant.engine.submit(lambda m: m.tokenize(question)).result())
    assert 0 < reply.read_tokens <= n + 6, (reply.read_tokens, n)


def test_the_question_lays_out_first_the_chunks_its_draft_read_ahead(assistant, tmp_path):
    # The finished question ranks the chunks differently and finds one the draft did not: those
    # read ahead keep their place, so only the new chunk and the question are read after it.
    context = shown(tmp_path / "config.py")

    def chunk(i: int) -> ContextItem:
        return ContextItem(f"From src/m{i}.py (lines 1-3)", f"def helper_{i}(x):\n    'Scale x.'\n    return x * {i}\n",
                           Reference(tmp_path / f"m{i}.py", 0, 2), retrieved=True)
    ahead = PromptReader(assistant).read(
        assistant.chat_ahead(None, [*context, chunk(0), chunk(1), chunk(2)], draft="which helper")).result()
    assert ahead.done and assistant.ahead_chunks == tuple(chunk(i).label for i in (0, 1, 2))
    question = "which helper scales by five?"
    reply = assistant.chat(None, question, [*context, chunk(2), chunk(5), chunk(0)])
    count = assistant._counter()
    new = count(question) + count(f"{chunk(5).label}:\n```\n{chunk(5).text.rstrip()}\n```\n")
    assert 0 < reply.read_tokens <= new + 8, (reply.read_tokens, new)
    assert [r.path.name for r in reply.references if r.path.name.startswith("m")] == ["m0.py", "m2.py", "m5.py"]


def test_a_hover_waits_for_its_answer_being_written_ahead_instead_of_stopping_it(engine, tmp_path):
    # The pointer rests on a name: its one-line answer is written ahead. The hover that comes
    # before it is done takes that answer when it is, instead of stopping it and writing again.
    a = Assistant(engine, "qwen", AssistStore(tmp_path / "h.sqlite"), max_tokens=8)
    engine.submit(lambda m: m.clear_cache()).result()
    ahead: list[str | None] = []
    writer = threading.Thread(target=lambda: ahead.append(a.hover("read_config", "python", CODE, 60.0,
                                                                  threading.Event(), background=True)))
    writer.start()
    time.sleep(0.2)  # it is reading the prompt
    shown = a.hover("read_config", "python", CODE, 60.0)
    writer.join()
    assert shown and ahead == [shown]
    assert not [r for r in a.store.metric_rows() if r.task == "hover"]  # the request wrote nothing itself


def test_a_hover_prompt_holds_the_first_lines_of_a_long_definition():
    long = "def f(x):\n" + "".join(f"    x = x + {i}  # step {i}\n" for i in range(200))
    code = Assistant.hover_messages("f", "python", long)[1]["content"]
    assert "x = x + 1  #" in code and "# step 199" not in code and code.rstrip("`\n").endswith("    ...")
    assert len(code) < HOVER_CODE_CHARS + 200


def test_a_long_retrieved_chunk_goes_in_as_the_lines_that_name_what_the_question_asks_about(assistant, tmp_path):
    # A workspace question's chunks are read after it is asked: each is cut to its first line and the
    # lines naming the question's terms, so that the answer starts within seconds.
    body = "\n".join(f"    step_{i} = prepare(value, {i})" for i in range(60))
    text = f"def convert(value):\n{body}\n    result = frobnicate(\n        step_59)\n    return result\n"
    long = ContextItem("From src/conv.py (lines 10-73)", text, Reference(tmp_path / "conv.py", 9, 72), retrieved=True)
    short = ContextItem("From src/m.py (lines 1-2)", "def frobnicate(x):\n    return x\n",
                        Reference(tmp_path / "m.py", 0, 1), retrieved=True)
    count = assistant._counter()
    cut = excerpt(long, question_terms("Where is `frobnicate` used?"), EXCERPT_TOKENS, count)
    assert cut.label == long.label and cut.reference == long.reference
    assert count(f"{cut.label}:\n```\n{cut.text}\n```\n") <= EXCERPT_TOKENS
    lines = cut.text.splitlines()
    # The call and its arguments' line (it opens a call), the first line: the function it is in.
    call = lines.index("    result = frobnicate(")
    assert lines[0] == "def convert(value):" and lines[call + 1] == "        step_59)"
    assert "    ..." in lines[1:call] and "step_30 " not in cut.text
    assert excerpt(short, ["frobnicate"], EXCERPT_TOKENS, count) == short  # a chunk that fits goes in whole

    # In the question's prompt, whether laid out ahead for a draft or for the question itself.
    messages = assistant.chat_ahead(None, [long, short], draft="Where is `frobnicate`")
    assert cut.text in messages[-1]["content"] and short.text.strip() in messages[-1]["content"]
    reply = assistant.chat(None, "Where is `frobnicate` used?", [long, short])
    assert reply.prompt_tokens < count(text) and Reference(tmp_path / "conv.py", 9, 72) in reply.references


def test_a_workspace_question_reads_after_it_what_this_machine_reads_in_two_seconds(assistant, tmp_path):
    # Its chunks can only be read once it is asked: as many as the measured prompt rate reads in
    # RETRIEVED_READ_S go in, best first, but never fewer than RETRIEVED_MIN.
    chunks = [ContextItem(f"From src/m{i}.py (lines 1-30, `f{i}`)",
                          f"def f{i}(x):\n" + "".join(f"    x = helper(x, {j})\n" for j in range(30)),
                          Reference(tmp_path / f"m{i}.py", 0, 29), retrieved=True) for i in range(6)]

    def asked_at(rate: float) -> list[str]:
        assistant.engine.submit(lambda m: setattr(m, "prompt_rate", rate)).result()
        reply = assistant.chat(None, "Where is `helper` used?", chunks)
        return [r.path.name for r in reply.references]
    measured = assistant.engine.submit(lambda m: m.prompt_rate).result()
    try:
        slow, fast = asked_at(40.0), asked_at(2000.0)  # 80 tokens in 2 s; then all of them
    finally:
        assistant.engine.submit(lambda m: setattr(m, "prompt_rate", measured)).result()
    assert slow == [f"m{i}.py" for i in range(RETRIEVED_MIN)]
    assert fast == [f"m{i}.py" for i in range(6)]


def test_the_terms_of_a_question_are_its_code_names():
    assert question_terms("Where is `format_filename` used?") == ["format_filename"]
    assert question_terms("What does `click.echo` do, and who calls it?") == ["click", "echo"]
    assert question_terms("where is the config parser used?") == ["config", "parser"]
    assert question_terms("What does this do?") == []


def test_reading_ahead_gives_the_owner_thread_to_a_job_queued_behind_it(assistant, tmp_path):
    """The larger model's fill-in-the-middle read at the cursor (work ahead on a second context of the
    chat engine) runs after one chunk of the assistant's reading ahead, not after all of it; the
    reading then goes on where it stopped. Reading ahead never makes the engine busy for a request."""
    engine = assistant.engine
    engine.open_second(1024).result()
    long_context = [ContextItem("Selected code from long.py", "\n".join(f"x{i} = {i}" for i in range(300)),
                                Reference(tmp_path / "long.py", 0, 299), selected=True)]
    reader = PromptReader(assistant)
    pending = reader.read(assistant.chat_ahead(None, long_context))
    time.sleep(0.5)  # it is reading (about 2,400 tokens)
    assert not engine.busy  # an explicit request would not wait for it
    ran_while_reading = engine.lane().submit(lambda m: not pending.done(), ahead=threading.Event()).result(60)
    assert ran_while_reading
    ahead = pending.result(timeout=180)
    assert ahead.done and ahead.why == "" and ahead.evaluated > 1000  # not superseded: the job was work ahead too


def test_a_closed_reader_reads_no_more_and_its_running_reading_ends(assistant, tmp_path):
    """The host closes the reader when its model is replaced or the server stops."""
    context = shown(tmp_path / "config.py")
    reader = PromptReader(assistant, SystemStates(tmp_path / "kv-states"))
    running = reader.read(assistant.chat_ahead(None, context))
    reader.close()
    assert running.result(timeout=60).why in ("superseded", "")  # ended at its next look (or had finished)
    assert reader.read(assistant.chat_ahead(None, context)) is None and reader.warm() is None
