"""An append-only, crash-safe on-disk spool of write batches (InfluxDB line protocol blobs).

While the database is unreachable the writer stage appends each batch and acks its MQTT messages
once `Spool.append` returns; a replayer reads batches back in FIFO order, writes them, commits them.
On disk, in one directory::

    0000000000000001.seg  records back to back: a header ">4sII" (magic b"PWS1", payload length,
    0000000000000002.seg  crc32 of length and payload), then the payload
    cursor                ">4sQQI": magic b"PWC1", segment and offset of the first unconsumed byte,
                          crc32 of the 20 bytes before it
    lock                  flock()ed while a spool has the directory open

Durability: `append` returns only once its record is written and the segment fsynced; a new
segment's directory entry is fsynced before anything is written to it. The cursor is replaced
atomically (temp file, fsync, rename, fsync directory), only after the replayer's write succeeded,
and segments are unlinked only once every record in them has been written to the database. So a
crash anywhere loses no acknowledged record and at worst replays a few again, which InfluxDB
de-duplicates.

A full or failing disk is survived, not fatal: a failed append fails its appenders (who then must
not ack), gives back the space the batch took and seals its segment; a cursor the disk refuses
(ENOSPC) is kept in memory and written at the next commit or at close, while spent segments are
deleted all the same, which is what frees the disk (a crash meanwhile only replays those records
again: a segment is deleted only when all its records are in the database). A torn write or
bit rot fails the magic, length or checksum check: the records before it are kept, the rest of that
segment is reported and skipped. After a restart appends start a fresh segment, never after garbage.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import functools
import itertools
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final, ParamSpec, Self, TypeVar

from collector.durable import fsync_dir, replace_atomically
from parkwatch.errors import SpoolCorrupt, SpoolError, SpoolFull

__all__ = ["Spool", "SpoolPosition", "SpoolRecord", "SpoolStats"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

_HEADER: Final = struct.Struct(">4sII")
_RECORD_MAGIC: Final = b"PWS1"
_CURSOR: Final = struct.Struct(">4sQQ")  # followed by the crc32 of these 20 bytes
_CURSOR_MAGIC: Final = b"PWC1"
_U32: Final = struct.Struct(">I")
_MAX_PAYLOAD: Final = 2**32 - 1  # the header's length field has 32 bits

_Placement = tuple[int, int, int]  # segment, offset, frame length of one written record


@dataclass(frozen=True, slots=True, order=True)
class SpoolPosition:
    """Where a record starts: segment sequence number and byte offset; orders like the FIFO."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled batch, and the position to pass to `Spool.commit` once it has been written."""

    position: SpoolPosition
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool, for metrics and tests."""

    bytes: int  # pending (uncommitted) record bytes on disk, headers included
    segments: int
    records: int  # pending records
    corrupt_tails: int  # torn or corrupt segment tails detected since open
    fsyncs: int  # segment fsyncs since open: far fewer than appends when group commit works


@dataclass(slots=True, eq=False)
class _Segment:
    """The in-memory index of one segment file: where its durable, verified records start."""

    seq: int
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    end: int = 0  # just past the last indexed record
    consumed: int = 0  # the records before this index are committed

    def offset_of(self, index: int) -> int:
        """Start of record ``index``, or `end` past the last one."""
        return self.offsets[index] if index < len(self.offsets) else self.end

    @property
    def done(self) -> bool:
        """Whether every indexed record is committed."""
        return self.consumed == len(self.offsets)


@dataclass(frozen=True, slots=True)
class _Append:
    payload: bytes
    done: asyncio.Future[None]


class Spool:
    """A FIFO of byte batches on disk: durable `append`, lazy `read`, `commit` after replay."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 64 * 2**20) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self._directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._state = "new"  # -> open -> closing -> closed
        self._segments: list[_Segment] = []  # oldest first; only durable records are indexed
        self._cursor = SpoolPosition(0, 0)  # everything before it is consumed
        self._cursor_dirty = False  # the disk refused the cursor: it lags behind `_cursor`
        self._sealed_below = 0  # segments numbered below this get no more appends
        self._pending_bytes = self._pending_records = self._corrupt_tails = 0
        self._reserved = 0  # bytes of appends queued or being written, held against max_bytes
        self._batch: list[_Append] = []  # appends waiting for the next group commit
        self._flushing = False
        self._idle = asyncio.Event()  # set while nothing is queued or being written
        self._idle.set()
        self._not_empty = asyncio.Event()
        self._replay_lock = asyncio.Lock()  # read, commit and close take turns with the files
        self._writer = _SegmentWriter(directory, segment_bytes)
        # One thread owns the segment being appended to, so batches reach it strictly in order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-writer")
        self._lock_fd = -1

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Lock (creating) the directory, validate every segment, start replay at the cursor."""
        if self._state != "new":
            raise SpoolError(f"spool {self._directory} was opened before")
        self._lock_fd = await self._io("locking", _lock_directory, self._directory)
        try:
            self._cursor, self._segments, next_seq, self._corrupt_tails = await self._io(
                "opening", _scan, self._directory
            )
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._writer.next_seq = self._sealed_below = next_seq
        for seg in self._segments:
            self._pending_bytes += seg.end - seg.offset_of(seg.consumed)
            self._pending_records += len(seg.offsets) - seg.consumed
        if self._pending_records:
            self._not_empty.set()
        self._state = "open"

    async def close(self) -> None:
        """Wait until queued appends are durable, then release the files; again, it does nothing."""
        if self._state != "open":
            self._state = "closed" if self._state == "new" else self._state
            return
        self._state = "closing"
        await self._idle.wait()
        async with self._replay_lock:  # let a read or commit in progress finish
            self._state = "closed"
            if self._cursor_dirty:
                await self._persist_cursor(self._cursor)
        self._not_empty.set()  # wake a waiting replayer: it finds the spool closed
        await self._io("closing", self._release)

    async def append(self, payload: bytes) -> None:
        """Store ``payload``; return once it is fsynced. Raise `SpoolFull` at the size bound."""
        self._check_open()
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"a spool record holds at most {_MAX_PAYLOAD} bytes")
        size = _HEADER.size + len(payload)
        if self._pending_bytes + self._reserved + size > self._max_bytes:
            raise SpoolFull(
                f"spool {self._directory}: {self._pending_bytes} bytes pending, {self._reserved} "
                f"being written; {size} more would exceed max_bytes={self._max_bytes}"
            )
        loop = asyncio.get_running_loop()
        append = _Append(payload, loop.create_future())
        self._batch.append(append)
        self._reserved += size
        self._idle.clear()
        if len(self._batch) == 1 and not self._flushing:
            # Flush on the next loop turn, so that appends made in this turn share its fsync.
            loop.call_soon(self._flush)
        await append.done

    async def read(self, max_records: int = 1) -> list[SpoolRecord]:
        """Return up to ``max_records`` of the oldest pending records, without consuming them."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        async with self._replay_lock:
            while True:
                self._check_open()
                plan = list(itertools.islice(self._pending_positions(), max_records))
                if not plan:
                    return []
                records, problem = await self._io("reading", _read_records, self._directory, plan)
                if problem is None or records:
                    return records  # a bad record after good ones is handled on the next read
                # The oldest record went bad after it was verified (bit rot). It can never be
                # replayed: report it and step past it rather than block the replayer forever.
                seg, index = self._locate(plan[0])
                skipped = seg.offset_of(index + 1) - plan[0].offset
                _warn_corrupt(
                    _segment_path(self._directory, seg.seq), problem, plan[0].offset, skipped
                )
                self._corrupt_tails += 1
                await self._commit_locked(plan[0])

    async def commit(self, position: SpoolPosition) -> bool:
        """Consume every record up to and including ``position``; delete spent segments.

        Return whether the cursor is durable. False when the disk refused it (e.g. ENOSPC): the
        records count as consumed all the same (the caller has written them), and the cursor is
        written at the next commit or at close; a crash before that replays them again.
        """
        async with self._replay_lock:
            self._check_open()
            return await self._commit_locked(position)

    @property
    def stats(self) -> SpoolStats:
        """Pending bytes, segments and records, corrupt tails seen, and fsyncs done."""
        return SpoolStats(
            bytes=self._pending_bytes,
            segments=len(self._segments),
            records=self._pending_records,
            corrupt_tails=self._corrupt_tails,
            fsyncs=self._writer.fsyncs,
        )

    @property
    def is_open(self) -> bool:
        """Whether the spool is open (and not closing)."""
        return self._state == "open"

    def empty(self) -> bool:
        """Whether no durable record is waiting to be replayed."""
        return self._pending_records == 0

    async def wait_not_empty(self) -> None:
        """Return once a record is pending (at once if one is); raise `SpoolError` on close."""
        self._check_open()
        await self._not_empty.wait()
        self._check_open()

    def _check_open(self) -> None:
        if self._state != "open":
            raise SpoolError(f"spool {self._directory} is {self._state}, not open")

    async def _io(self, doing: str, func: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        """Run blocking file work off the event loop, translating `OSError` into `SpoolError`."""
        try:
            return await asyncio.to_thread(func, *args, **kw)
        except OSError as exc:
            raise SpoolError(f"spool {self._directory}: {doing} failed: {exc}") from exc

    def _flush(self) -> None:
        """Hand every waiting append to the writer thread, to share one write and one fsync."""
        if self._flushing or not self._batch:
            return
        batch, self._batch = self._batch, []
        self._flushing = True
        written = asyncio.get_running_loop().run_in_executor(
            self._executor, self._writer.write, [a.payload for a in batch]
        )
        written.add_done_callback(functools.partial(self._flushed, batch))

    def _flushed(self, batch: list[_Append], written: asyncio.Future[list[_Placement]]) -> None:
        """Index a durable batch and wake its appenders, or fail them; then start the next batch."""
        self._flushing = False
        self._reserved -= sum(_HEADER.size + len(a.payload) for a in batch)
        error = SpoolError("append cancelled") if written.cancelled() else written.exception()
        if error is None:
            self._index(written.result())
        else:
            # The writer never appends to its segment again: it is sealed, so it can be deleted
            # once replayed (on a full disk that is how space comes back).
            self._sealed_below = max(self._sealed_below, self._writer.next_seq)
        for a in batch:
            if a.done.done():
                continue  # the appender was cancelled; its record may be durable all the same
            if error is None:
                a.done.set_result(None)
            else:
                failure = SpoolError(f"spool {self._directory}: append failed: {error}")
                failure.__cause__ = error
                a.done.set_exception(failure)
        if self._batch:
            self._flush()
        else:
            self._idle.set()

    def _index(self, placements: list[_Placement]) -> None:
        """Make freshly fsynced records readable and count them as pending."""
        for seq, offset, length in placements:
            if not self._segments or self._segments[-1].seq != seq:
                self._segments.append(_Segment(seq))
                self._sealed_below = max(self._sealed_below, seq)
            self._segments[-1].offsets.append(offset)
            self._segments[-1].end = offset + length
            self._pending_bytes += length
            self._pending_records += 1
        self._not_empty.set()

    def _pending_positions(self) -> Iterator[SpoolPosition]:
        for seg in self._segments:
            for index in range(seg.consumed, len(seg.offsets)):
                yield SpoolPosition(seg.seq, seg.offsets[index])

    def _locate(self, position: SpoolPosition) -> tuple[_Segment, int]:
        """The indexed segment and record number at ``position``; `SpoolError` if there is none."""
        for seg in self._segments:
            if seg.seq == position.segment:
                index = bisect.bisect_left(seg.offsets, position.offset)
                if index < len(seg.offsets) and seg.offsets[index] == position.offset:
                    return seg, index
        raise SpoolError(f"spool {self._directory}: no pending record at {position}")

    async def _commit_locked(self, position: SpoolPosition) -> bool:
        if position < self._cursor:
            return not self._cursor_dirty  # committed before: commits are idempotent
        target, index = self._locate(position)
        cursor = SpoolPosition(target.seq, target.offset_of(index + 1))
        durable = await self._persist_cursor(cursor)
        self._cursor = cursor
        for seg in self._segments:
            consumed = index + 1 if seg is target else len(seg.offsets)
            if seg.seq > target.seq or consumed <= seg.consumed:
                continue
            self._pending_bytes -= seg.offset_of(consumed) - seg.offset_of(seg.consumed)
            self._pending_records -= consumed - seg.consumed
            seg.consumed = consumed
        if not self._pending_records:
            self._not_empty.clear()
        # The writer may still be appending to the newest segment; only sealed ones can go.
        spent = [seg for seg in self._segments if seg.done and seg.seq < self._sealed_below]
        if spent:
            self._segments = [seg for seg in self._segments if seg not in spent]
            paths = [_segment_path(self._directory, seg.seq) for seg in spent]
            await self._io("deleting spent segments", _unlink, self._directory, paths)
            if not durable:  # the deleted segments may have made room for it
                durable = await self._persist_cursor(cursor)
        return durable

    async def _persist_cursor(self, cursor: SpoolPosition) -> bool:
        """Write the cursor; on a disk error log it (once per streak) and return False."""
        try:
            await self._io("committing", _write_cursor, self._directory, cursor)
        except SpoolError as exc:
            if not self._cursor_dirty:
                log.warning("%s; consumption kept in memory until the cursor can be written", exc)
            self._cursor_dirty = True
            return False
        self._cursor_dirty = False
        return True

    def _release(self) -> None:
        """Stop the writer thread and close every file (blocking: run it off the loop)."""
        self._executor.shutdown(wait=True)
        self._writer.close()
        os.close(self._lock_fd)  # releases the flock


class _SegmentWriter:
    """Appends batches of records to the newest segment; used only from the writer thread."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self._directory = directory
        self._segment_bytes = segment_bytes
        self.next_seq = 0
        self._seq = 0  # the segment being appended to
        self._file: BinaryIO | None = None  # None: the next write starts a fresh segment
        self._size = 0
        self._created: Path | None = None  # a segment this batch created: it holds nothing acked
        self.fsyncs = 0  # read from the event loop: a plain int is safe to share

    def write(self, payloads: list[bytes]) -> list[_Placement]:
        """Write and fsync every payload as a record; return where each one went."""
        placements: list[_Placement] = []
        self._created = None
        # Where this batch starts in the open segment: a failure cuts the segment back to it.
        start = (self._seq, self._size) if self._file is not None else None
        try:
            for payload in payloads:
                length = _HEADER.size + len(payload)
                if self._file is None or (self._size and self._size + length > self._segment_bytes):
                    self._roll()
                assert self._file is not None
                placements.append((self._seq, self._size, length))
                self._file.write(_HEADER.pack(_RECORD_MAGIC, len(payload), _crc(payload)))
                self._file.write(payload)
                self._size += length
            self._sync()
        except OSError:
            # The segment's tail is unknown now (a failed fsync may even drop written pages):
            # never write after it again. Remove it if it is new, so a full disk is not littered
            # with a segment per retry; else cut off what this batch wrote (space, on a full
            # disk; and no torn record to report at the next open).
            with contextlib.suppress(OSError):
                self.close()
            with contextlib.suppress(OSError):
                if self._created is not None:
                    self._created.unlink()
                elif start is not None and start[0] == self._seq:
                    os.truncate(_segment_path(self._directory, self._seq), start[1])
            raise
        return placements

    def close(self) -> None:
        """Close the current segment; the next write starts a new one."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def _sync(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self.fsyncs += 1

    def _roll(self) -> None:
        self._sync()  # records acked with this batch may sit in the segment being left
        self.close()
        self._seq = self.next_seq
        self.next_seq += 1  # even if creating the file fails: never retry a name that may exist
        self._file = _segment_path(self._directory, self._seq).open("xb")
        self._created = _segment_path(self._directory, self._seq)
        self._size = 0
        fsync_dir(self._directory)  # the file's entry must be durable before its records are


def _warn_corrupt(path: Path, problem: str, offset: int, skipped: int) -> None:
    log.warning(
        "spool segment %s: %s at offset %d; skipping %d bytes", path, problem, offset, skipped
    )


def _crc(payload: bytes) -> int:
    """Checksum over length and payload, so a flipped length bit is caught as well."""
    return zlib.crc32(payload, zlib.crc32(_U32.pack(len(payload))))


def _segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:016d}.seg"


def _unlink(directory: Path, paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    fsync_dir(directory)


def _write_cursor(directory: Path, cursor: SpoolPosition) -> None:
    """Replace the cursor file atomically: after a crash it holds the old or the new cursor."""
    body = _CURSOR.pack(_CURSOR_MAGIC, cursor.segment, cursor.offset)
    replace_atomically(directory / "cursor", body + _U32.pack(zlib.crc32(body)))


def _read_cursor(directory: Path) -> SpoolPosition:
    try:
        data = (directory / "cursor").read_bytes()
    except FileNotFoundError:
        return SpoolPosition(0, 0)
    if len(data) == _CURSOR.size + _U32.size:
        magic, seq, offset = _CURSOR.unpack_from(data)
        (crc,) = _U32.unpack_from(data, _CURSOR.size)
        if magic == _CURSOR_MAGIC and crc == zlib.crc32(data[: _CURSOR.size]):
            return SpoolPosition(seq, offset)
    # Atomic renames make this disk damage; replaying everything is the safe answer, since
    # duplicates are harmless and losses are not.
    log.warning("spool cursor in %s is unreadable; replaying every segment", directory)
    return SpoolPosition(0, 0)


def _read_record(f: BinaryIO, offset: int, size: int) -> bytes:
    """Read and verify the record at ``offset``; raise `SpoolCorrupt` saying what is wrong."""
    f.seek(offset)
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise SpoolCorrupt("short header")
    magic, length, crc = _HEADER.unpack(header)
    if magic != _RECORD_MAGIC:
        raise SpoolCorrupt("bad magic")
    if offset + _HEADER.size + length > size:
        raise SpoolCorrupt("short payload")
    payload = f.read(length)
    if _crc(payload) != crc:
        raise SpoolCorrupt("checksum mismatch")
    return payload


def _read_records(
    directory: Path, plan: list[SpoolPosition]
) -> tuple[list[SpoolRecord], str | None]:
    """Read the planned records in order; stop at the first that fails its checks, saying why."""
    records: list[SpoolRecord] = []
    with contextlib.ExitStack() as stack:
        files: dict[int, tuple[BinaryIO, int]] = {}
        for position in plan:
            if position.segment not in files:
                reader = stack.enter_context(_segment_path(directory, position.segment).open("rb"))
                files[position.segment] = (reader, os.fstat(reader.fileno()).st_size)
            f, size = files[position.segment]
            try:
                records.append(SpoolRecord(position, _read_record(f, position.offset, size)))
            except SpoolCorrupt as exc:
                return records, str(exc)
    return records, None


def _lock_directory(directory: Path) -> int:
    """Create the directory if need be and take its lock, so no two spools ever share it."""
    if not directory.exists():
        directory.mkdir(parents=True)
        fsync_dir(directory.parent)  # else a crash could lose the directory with its records
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"spool {directory} is open in another spool or process") from None
    return fd


def _scan(directory: Path) -> tuple[SpoolPosition, list[_Segment], int, int]:
    """Index every segment from the cursor on and delete the spent ones.

    Returns the cursor, the segments with pending records, the next sequence number and the
    number of corrupt tails found.
    """
    cursor = _read_cursor(directory)
    names = (p.stem for p in directory.glob("*.seg"))
    seqs = sorted(int(n) for n in names if len(n) == 16 and n.isascii() and n.isdecimal())
    segments: list[_Segment] = []
    spent: list[Path] = []
    corrupt = 0
    for seq in seqs:
        seg, path = _Segment(seq), _segment_path(directory, seq)
        if seq >= cursor.segment:  # those before the cursor are consumed: skip reading them
            corrupt += _index_segment(path, seg)
            if seq == cursor.segment:
                seg.consumed = bisect.bisect_left(seg.offsets, cursor.offset)
        # Appends never continue an old segment, so one with nothing pending is spent.
        if seg.done:
            spent.append(path)
        else:
            segments.append(seg)
    if spent:
        _unlink(directory, spent)
    # Sequence numbers must rise past the cursor, or new records would count as consumed.
    return cursor, segments, max([cursor.segment, *seqs]) + 1, corrupt


def _index_segment(path: Path, seg: _Segment) -> bool:
    """Index a segment's valid records; a bad one ends the trusted part. True if one was found."""
    size = path.stat().st_size
    with path.open("rb") as f:
        while seg.end < size:
            try:
                _read_record(f, seg.end, size)
            except SpoolCorrupt as exc:
                _warn_corrupt(path, str(exc), seg.end, size - seg.end)
                return True
            seg.offsets.append(seg.end)
            seg.end = f.tell()
    return False
