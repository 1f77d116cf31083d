"""Which process writes an index directory: one advisory lock (``writer.lock``, ``flock``).

Several processes (two editor windows on one folder) share one index directory. The one
that holds the lock writes; the others open the same files read-only: they search, never
index, never delete, and may take the lock later, when its holder is gone
(:meth:`index.store.IndexStore.try_become_writer`).

Threads: a :class:`WriterLock` is taken and given back by the thread that owns its store
(the index-writer thread, or the one constructing the store). This module imports nothing
from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.private_files import private_file

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)


class WriterLock:
    """The advisory lock (``flock``, exclusive, never waited for) of the process writing an index directory.

    The lock file is never deleted (deleting a lock file races with other processes taking it).
    The kernel drops the lock when the process dies, however it dies.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; False at once otherwise."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(private_file(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:  # a read-only cache directory: read what is there
            log.warning("cannot open the index lock %s: %s", self.path, e)
            return False
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                import msvcrt
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
