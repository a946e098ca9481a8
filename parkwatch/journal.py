"""The durable state of the KPI and rule stages: a journal of their inputs plus snapshots.

A message is acked only once its point is safe; for the stateful stages, "safe" also means that
its effect on their state survives a crash (``kill -9`` included). So the analytics stage
appends every batch it is about to apply to this journal and waits for the fsync before the
batch moves on towards the writer (and so towards the ack). Now and then it writes a full
snapshot of the state and starts a new journal file. After a crash, the state is the snapshot
plus a replay of the journal records written after it, which the engines, being deterministic,
turn into the same state they had.

On disk, in ``state.directory``::

    snapshot.json                       {"version", "seq", "wall", "state"}: replaced atomically
    journal-0000000000000042.log        records from seq 42 on, one per line:
                                        "<crc32 of the JSON, 8 hex digits> <JSON>\\n"
    lock                                flock()ed while a collector uses the directory

Each journal file is only ever appended to by the process that created it; a new process starts a
new file, never writing after a torn tail. A torn or corrupt line ends what is trusted of its
file: it can only be the last record, which was never fsynced, so its points were never passed
on, never acked, and the broker redelivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, ParamSpec, TypeVar

import orjson

from collector.durable import fsync_dir, replace_atomically
from parkwatch.errors import StateError

__all__ = ["Recovered", "StateJournal"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

SNAPSHOT_VERSION: Final = 1
_SNAPSHOT: Final = "snapshot.json"
_PREFIX: Final = "journal-"
_SUFFIX: Final = ".log"


@dataclass(slots=True)
class Recovered:
    """What was found on open: the last snapshot's state (or None) and the records after it."""

    state: dict[str, Any] | None = None
    seq: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0
    """Torn or corrupt journal tails skipped (each one at most an un-fsynced record)."""


class StateJournal:
    """Append-only journal with snapshots; blocking file work runs in a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd = -1
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._seq = 0  # of the last record written (or recovered)

    async def open(self) -> Recovered:
        """Lock the directory, read the snapshot and the journal after it, start a new file."""
        return await self._io("opening", self._open)

    async def append(self, record: dict[str, Any]) -> int:
        """Write ``record`` (a JSON-able dict; ``seq`` is added) durably; return its seq."""
        self._seq += 1
        record["seq"] = self._seq
        line = _frame(record)
        await self._io("appending to", self._write, line)
        return self._seq

    async def checkpoint(self, state: dict[str, Any], wall: float) -> int:
        """Write ``state`` as the snapshot (as of the last record), then drop older journals."""
        body = orjson.dumps(
            {"version": SNAPSHOT_VERSION, "seq": self._seq, "wall": wall, "state": state}
        )
        await self._io("writing a snapshot in", self._checkpoint, body)
        return len(body)

    async def close(self) -> None:
        """Close the journal file and release the lock."""
        await self._io("closing", self._close)

    async def _io(self, doing: str, func: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        try:
            return await asyncio.to_thread(func, *args, **kw)
        except OSError as exc:
            raise StateError(f"state {self.directory}: {doing} failed: {exc}") from exc

    # -- blocking parts (worker thread) ------------------------------------------------------

    def _open(self) -> Recovered:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"state directory {self.directory} is in use by another collector "
                "(give each collector its own state.directory)"
            ) from None
        self._lock_fd = fd
        recovered = self._read_snapshot()
        for path in self._journals():
            records, torn = _read_journal(path)
            recovered.torn += torn
            recovered.records += [r for r in records if r["seq"] > recovered.seq]
        recovered.records.sort(key=lambda r: int(r["seq"]))
        self._seq = max([recovered.seq, *(int(r["seq"]) for r in recovered.records)])
        self._start_file()
        return recovered

    def _read_snapshot(self) -> Recovered:
        path = self.directory / _SNAPSHOT
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return Recovered()
        except orjson.JSONDecodeError:
            # Replaced atomically, so this is disk damage: replay every journal there is.
            log.error(  # noqa: TRY400 - a known condition; the traceback says nothing more
                "state snapshot %s is unreadable; starting from the journals alone", path
            )
            return Recovered()
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            log.error("state snapshot %s has an unknown format; ignoring it", path)
            return Recovered()
        return Recovered(state=data["state"], seq=int(data["seq"]))

    def _journals(self) -> list[Path]:
        paths = [p for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}") if _first_seq(p) >= 0]
        return sorted(paths, key=_first_seq)

    def _start_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._path = self.directory / f"{_PREFIX}{self._seq + 1:016d}{_SUFFIX}"
        self._file = self._path.open("ab")
        fsync_dir(self.directory)

    def _write(self, line: bytes) -> None:
        if self._file is None:
            if self._lock_fd < 0:
                raise OSError("journal is closed")
            self._start_file()  # the last write failed: never write after its torn tail
        assert self._file is not None
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
            raise

    def _checkpoint(self, body: bytes) -> None:
        replace_atomically(self.directory / _SNAPSHOT, body)
        self._start_file()
        for path in self._journals():
            if path != self._path:
                path.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


def _frame(record: dict[str, Any]) -> bytes:
    body = orjson.dumps(record)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _first_seq(path: Path) -> int:
    digits = path.name[len(_PREFIX) : -len(_SUFFIX)]
    return int(digits) if digits.isdecimal() else -1


def _read_journal(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of one journal file; stops at the first torn or corrupt line."""
    records: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            record = _unframe(line)
            if record is None:
                log.warning(
                    "state journal %s: line %d is torn or corrupt; skipping the rest of the file",
                    path,
                    number,
                )
                return records, 1
            records.append(record)
    return records, 0


def _unframe(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    with contextlib.suppress(ValueError):
        if int(line[:8], 16) == zlib.crc32(body):
            record = orjson.loads(body)
            if isinstance(record, dict) and isinstance(record.get("seq"), int):
                return record
    return None
