"""Folders and files only their owner may read: the workspace index and the assistant's database.

Both hold the user's code and conversations, so their folders are 0700 and their files 0600,
whatever the umask. An SQLite database is created (or tightened) here before SQLite opens
it: SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions. Folders and
files left wider by older versions are tightened when opened; one that belongs to another
user (which only the owner or root may chmod) is left as it is, with a warning.

This module imports nothing from pygls or lsprotocol.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700   # rwx for the owner only
PRIVATE_FILE_MODE = 0o600  # rw for the owner only


def private_dir(path: Path) -> Path:
    """Create the folder ``path`` (and its missing parents) and make it 0700.

    Parents that already exist are left as they are; missing ones are created with the
    umask's permissions (``~/.cache`` is not ours to close).

    Raises:
        OSError: the folder cannot be created (a file in the way, a read-only file system).
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path, create: bool = True) -> Path:
    """Make the file ``path`` 0600, creating it empty when it does not exist (unless not ``create``).

    Errors (a read-only folder, another user's file) are logged, not raised: the caller's
    own open of the file says what is wrong, if anything.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE) if create else None
    except OSError as e:
        log.debug("cannot create %s: %s", path, e)
        fd = None
    if fd is not None:
        os.close(fd)
    if create or path.exists():
        _tighten(path, PRIVATE_FILE_MODE)
    return path


def private_sqlite(path: Path) -> Path:
    """Create (or tighten) an SQLite database file and its ``-wal``/``-shm`` files left from an
    earlier run, 0600, before SQLite opens it (SQLite then creates the side files 0600 too)."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        private_file(Path(f"{path}{suffix}"), create=False)
    return path


def _tighten(path: Path, mode: int) -> None:
    try:
        if os.stat(path).st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("cannot make %s private (mode %o): %s", path, mode, e)


__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_dir", "private_file", "private_sqlite"]
