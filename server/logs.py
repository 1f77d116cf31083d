"""Logging: stderr and a rotating log file in the user log directory, secrets redacted.

Nothing is ever sent anywhere: logs stay on this machine. stdout is reserved for
JSON-RPC in server mode and for the suggestion in ``deepseek-lsp complete``.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import platformdirs

from .credentials import redact
from .models import APP_NAME

__all__ = ["RedactingFormatter", "log_file", "redact", "set_level", "setup_logging"]


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_file() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME)) / f"{APP_NAME}.log"


def setup_logging(level: str = "info", to_file: bool = True) -> None:
    """Send logs to stderr and (when ``to_file``) to :func:`log_file`, rotating at 2 MB x 3."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler()  # sys.stderr
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    if to_file:
        try:
            path = log_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
            fh.setFormatter(fmt)
            root.addHandler(fh)
        except OSError as e:  # a read-only home must not stop the server
            root.warning("cannot write the log file: %s", e)
    set_level(level)


_crash_log = None  # the file faulthandler writes to; kept open for the life of the process


def enable_crash_log() -> None:
    """Write the stack of every thread to the log file when the process dies in native code.

    llama.cpp runs in this process: a segfault there kills it without a Python traceback.
    ``faulthandler`` still writes one (per thread) to the log file, so the cause can be found.
    """
    import faulthandler
    global _crash_log
    try:
        path = log_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        _crash_log = open(path, "a", encoding="utf-8")
        faulthandler.enable(file=_crash_log, all_threads=True)
    except OSError as e:
        faulthandler.enable()  # stderr, then
        logging.getLogger(__name__).warning("crash stacks go to stderr: cannot open the log file: %s", e)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    # pygls logs every message body at INFO: far too much, and it could hold source code.
    logging.getLogger("pygls").setLevel(logging.WARNING)
