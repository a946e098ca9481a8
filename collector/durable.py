"""Durable file updates, shared by the spool, the retained-message ledger and the state journal.

A rename or a new file is durable only once its directory is fsynced too; a file replaced in
place is torn by a crash mid-write, so it is written beside and renamed over the old one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_dir", "replace_atomically"]


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (new, renamed, deleted files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, body: bytes) -> None:
    """Replace ``path`` by ``body``: after a crash it holds the old or the new content.

    Written to ``<name>.tmp`` and fsynced, renamed over ``path``, the directory fsynced. A
    temporary file a failed write left is removed: what it holds is worthless, and on a full
    disk it takes space.
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    temporary.replace(path)
    fsync_dir(path.parent)
