"""Reading the assistant's next prompt ahead, from what the editor says the user is about to ask.

Signals (docs/PROTOCOL.md, "Reading ahead"):

- ``deepseek/assistAhead {task, uri, range?, position?, sessionId?, draft?}``, a notification:
  ``chat`` when the chat panel opens or gets focus, whenever the selection changes while it is
  open, and when the user pauses while typing the question (``draft``: the text so far; the
  chunks retrieved for it are read too): the next question's prompt up to the question;
  ``explain`` for a range or the definition around a position; ``hover`` for the name at a
  position (Neovim sends it where the cursor rests).
- ``textDocument/codeAction`` at a cursor or a selection (VS Code asks at every cursor move):
  Explain's prompt for the code the menu's actions are about.

Each signal replaces the previous one and is acted on after the editor has been quiet for
:data:`AHEAD_REST_S` (a hover signal at once: the clients send it where the cursor has
rested). A hover's answer is short (one sentence): it is written ahead too, into the
response cache, so that the hover that follows shows it at once (a hover that comes while it
is written waits for it); any other request of the assistant, and a newer signal, stop it
within one token. Reading ahead never loads a
model, except for ``chat`` (the user opened the panel). The reading itself is
:class:`server.assist.ahead.PromptReader`'s, on the chat engine, giving way to every request
and suggestion.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from ..assist import AssistError
from ..engine.schedule import ASSISTANT, SCHEDULE
from .convert import plain
from .state import DeepseekLanguageServer

log = logging.getLogger(__name__)

ASSIST_AHEAD = "deepseek/assistAhead"
AHEAD_REST_S = 0.4  # the editor quiet this long: the user has stopped there
TASKS = ("chat", "explain", "hover")
HOVER_AHEAD_CAP_S = 30.0  # longest a hover's answer is written ahead


def assist_ahead(ls: DeepseekLanguageServer, params: Any) -> None:
    """``deepseek/assistAhead``: read the prompt of the request the user is about to make."""
    p = plain(params)
    if not isinstance(p, dict) or p.get("task") not in TASKS or not isinstance(p.get("uri"), str):
        log.debug("assistAhead ignored: expected {task: chat|explain|hover, uri, range?, position?, draft?}, got %r",
                  p)
        return
    if p["task"] != "hover":  # the chat panel, the menu: the user turned to the assistant (a resting cursor did not)
        SCHEDULE.want(ASSISTANT)
    soon(ls, p)


async def code_action(ls: DeepseekLanguageServer,
                      params: types.CodeActionParams) -> list[types.CodeAction] | None:
    """``textDocument/codeAction``: the menu's actions (:func:`server.lsp.assist.code_action`);
    the menu may be opened, so Explain's prompt for the code they are about is read meanwhile,
    when the assistant is loaded."""
    from . import assist

    actions = await assist.code_action(ls, params)
    explain = next((a.command for a in actions or () if a.command is not None
                    and a.command.command == "deepseek.explain" and a.command.arguments), None)
    if explain is not None and ls.assist.ahead(ls.settings) is not None:
        arg = plain(explain.arguments[0])  # {uri, range}: exactly what Explain will be asked for
        soon(ls, {"task": "explain", "uri": arg["uri"], "range": arg["range"]})
    return actions


def soon(ls: DeepseekLanguageServer, p: dict[str, Any]) -> None:
    """Read for ``p`` once the editor has been quiet for AHEAD_REST_S (a newer signal replaces it)."""
    if not ls.settings.chat_read_ahead:
        return
    if ls.ahead_task is not None and not ls.ahead_task.done():
        ls.ahead_task.cancel()
    ls.ahead_cancel.set()  # an answer being written ahead for the previous signal stops
    ls.ahead_cancel = threading.Event()
    ls.ahead_task = asyncio.ensure_future(_after_rest(ls, p, ls.ahead_cancel))


async def _after_rest(ls: DeepseekLanguageServer, p: dict[str, Any], cancel: threading.Event) -> None:
    # A hover signal is sent where the cursor has rested already (VS Code 500 ms, Neovim CursorHold).
    await asyncio.sleep(0 if p["task"] == "hover" else AHEAD_REST_S)
    try:
        await read(ls, p, cancel)
    except (AssistError, JsonRpcException) as e:  # nothing to read there: the request will say why
        log.debug("nothing read ahead for %s: %s", p.get("task"), e)


async def read(ls: DeepseekLanguageServer, p: dict[str, Any], cancel: threading.Event) -> None:
    """Build the prompt ``p`` is about, as the request will, and hand it to the reader; for a
    hover, write its short answer too, into the response cache (``cancel`` stops it).

    Raises:
        JsonRpcException / AssistError: the position or range names no code (nothing read).
    """
    from . import assist  # the handlers' own span and context, so the prompt is the request's

    task = p["task"]
    if task == "chat":
        assistant = await assist._assistant(ls)  # the panel is open: the model may load now
    elif ls.assist.ahead(ls.settings) is None:
        return
    else:
        assistant = ls.assist.assistant
    reader = ls.assist.ahead(ls.settings)
    if reader is None or assistant is None:
        return
    loop = asyncio.get_running_loop()
    if task == "chat":
        sid = p.get("sessionId") if isinstance(p.get("sessionId"), str) else None
        draft = p.get("draft").strip() if isinstance(p.get("draft"), str) else ""
        context = await assist.chat_context(ls, p, draft)  # with a draft: the chunks the question will likely find
        draft = draft if any(c.retrieved for c in context) else ""
        messages = await loop.run_in_executor(None, assistant.chat_ahead, sid, context, draft or None)
    elif task == "explain":
        if not isinstance(p.get("range"), dict):
            position = p.get("position") or {}
            p = {**p, "range": {"start": position, "end": position}}
        messages = assistant.explain_messages(await assist._span(ls, p))
    else:
        card = await assist.hover_target(ls, p["uri"], p.get("position"))
        if card is None:
            return
        note = await loop.run_in_executor(None, functools.partial(
            assistant.hover, card.symbol, card.language, card.code, HOVER_AHEAD_CAP_S, cancel, background=True))
        reader.answers += note is not None and not cancel.is_set()
        return
    reader.read(messages)
