"""The CPU schedule's rules for the assistant's reading ahead (no model: the schedule is plain state)."""

from __future__ import annotations

import threading
import time

from server.engine.schedule import ASSISTANT, EDITOR, TYPING_PAUSE_S, CpuSchedule


def test_reading_ahead_waits_for_a_suggestion_the_editors_work_ahead_and_a_pause_after_typing():
    s = CpuSchedule()
    assert not s.reading_ahead_waits()
    with s.foreground():
        assert s.reading_ahead_waits()  # a suggestion, whoever the user turned to
        s.want(ASSISTANT)
        assert s.reading_ahead_waits()
    s.want(EDITOR)
    cancel = threading.Event()
    with s.ahead(cancel):
        assert s.reading_ahead_waits()  # the editor's work ahead, the user in the editor
        s.want(ASSISTANT)
        assert cancel.is_set() and not s.reading_ahead_waits()  # turning to the assistant stops it
    s.want(EDITOR)
    s.typed()
    assert s.reading_ahead_waits()  # typing in the editor: the assistant's model rests
    s.want(ASSISTANT)
    assert not s.reading_ahead_waits()  # ... unless the user turned to the assistant since
    s.want(EDITOR)
    s._typed_at = time.monotonic() - TYPING_PAUSE_S - 0.01
    assert not s.reading_ahead_waits()  # a pause in the typing: it reads on
