"""Small tmpfs mounts for tests of what a read-only or full file system does to the collector.

Tests run as root, for whom ``chmod`` cannot make a directory unwritable; a read-only mount can.
Mounting needs CAP_SYS_ADMIN: :func:`tmpfs` raises ``MountUnavailable`` where it is missing, and
callers skip or fall back, saying which.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MountUnavailable(Exception):
    """This process may not mount file systems."""


class TmpfsMount:
    """A mounted tmpfs that can be switched between read-only and writable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _mount(self, *options: str) -> None:
        subprocess.run(
            ["mount", "-o", ",".join(options), str(self.path)], check=True, capture_output=True
        )

    def read_only(self) -> None:
        """Remount read-only: every write under it fails with EROFS."""
        self._mount("remount", "ro")

    def writable(self) -> None:
        """Remount read-write."""
        self._mount("remount", "rw")


@contextmanager
def tmpfs(path: Path, *, size: str = "4m") -> Iterator[TmpfsMount]:
    """Mount a fresh tmpfs at ``path`` (created) for the block; unmount after."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise MountUnavailable(f"cannot mount a tmpfs at {path}: {exc}") from exc
    try:
        yield TmpfsMount(path)
    finally:
        # Lazy: a collector that still holds a file there must not make the unmount fail.
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
