"""Tests for collector.spool on real files: FIFO, cursor, crashes, corruption, bound, batching."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.spool import Spool, SpoolPosition, SpoolRecord
from parkwatch.errors import SpoolError, SpoolFull
from tests.faults import fill_disk, small_disk

HEADER = 12  # bytes of record header on disk: magic, length, crc32
WAIT = 10.0  # seconds an awaited event may take before the test fails
BIG = 2**30


def payload(i: int, size: int = 100) -> bytes:
    """A recognisable payload of exactly ``size`` bytes."""
    return f"record {i:04d} ".encode().ljust(size, b".")


def segment_files(directory: Path) -> list[Path]:
    """The segment files in ``directory``, oldest first."""
    return sorted(directory.glob("*.seg"))


async def read_all(spool: Spool) -> list[SpoolRecord]:
    """Every pending record, without consuming any."""
    return await spool.read(max_records=1_000_000)


async def payloads(spool: Spool) -> list[bytes]:
    """The payloads of every pending record."""
    return [record.payload for record in await read_all(spool)]


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place, as bit rot would."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """Where the spool lives; it does not exist yet, so `open` must create it."""
    return tmp_path / "spool"


async def test_append_read_commit_is_fifo(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        assert spool.empty()
        assert await spool.read() == []
        for i in range(3):
            await spool.append(payload(i))
        assert not spool.empty()
        first_two = await spool.read(2)
        assert [r.payload for r in first_two] == [payload(0), payload(1)]
        assert await spool.read(2) == first_two  # reading does not consume
        assert first_two[0].position < first_two[1].position

        await spool.commit(first_two[0].position)
        assert await payloads(spool) == [payload(1), payload(2)]
        assert spool.stats.records == 2
        assert spool.stats.bytes == 2 * (HEADER + 100)

        await spool.commit(first_two[0].position)  # committing again changes nothing
        assert spool.stats.records == 2
        last = (await read_all(spool))[-1]
        await spool.commit(last.position)
        assert spool.empty()
        assert await spool.read() == []
        assert spool.stats.bytes == spool.stats.records == 0


async def test_close_and_reopen_replays_from_the_cursor(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        for i in range(5):
            await spool.append(payload(i))
        records = await spool.read(2)
        await spool.commit(records[1].position)

    async with Spool(directory, max_bytes=BIG) as spool:
        assert await payloads(spool) == [payload(i) for i in range(2, 5)]
        assert spool.stats.records == 3
        assert spool.stats.bytes == 3 * (HEADER + 100)
        await spool.append(payload(5))
        # After a restart appends start a new segment rather than continue an old one.
        assert len(segment_files(directory)) == 2
        assert await payloads(spool) == [payload(i) for i in range(2, 6)]


CHILD = """
import asyncio, sys
from pathlib import Path
from collector.spool import Spool

async def appender(spool, task):
    n = 0
    while True:
        await spool.append(f"{task} {n} ".encode().ljust(3000, b"."))
        print(task, n, flush=True)  # only once append returned: this record must survive
        n += 1

async def main():
    async with Spool(Path(sys.argv[1]), max_bytes=2**30, segment_bytes=64 * 1024) as spool:
        await asyncio.gather(*(appender(spool, task) for task in range(8)))

asyncio.run(main())
"""


def test_sigkill_mid_stream_loses_no_acknowledged_record(directory: Path) -> None:
    # The real proof: a process appending from 8 tasks is killed with SIGKILL at an arbitrary
    # point; every record whose append returned must be replayed, and in order.
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    try:
        lines = [child.stdout.readline() for _ in range(600)]
        child.kill()  # SIGKILL: no cleanup runs in the child
        lines += child.stdout.read().splitlines(keepends=True)
    finally:
        child.kill()
        child.wait()
        errors = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    complete = [line.split() for line in lines if line.endswith("\n")]  # the last may be cut
    assert len(complete) >= 600, errors
    acked = {(int(task), int(n)) for task, n in complete}

    async def recover() -> list[bytes]:
        async with Spool(directory, max_bytes=BIG) as spool:
            return await payloads(spool)

    recovered = [(int(p.split()[0]), int(p.split()[1])) for p in asyncio.run(recover())]
    assert acked <= set(recovered)
    for task in range(8):
        # Each task appended sequentially, so its records form a gapless prefix, in order.
        numbers = [n for t, n in recovered if t == task]
        assert numbers == list(range(len(numbers)))
    assert len(segment_files(directory)) > 2  # it was killed across segment rollovers


FAILING_CHILD = """
import asyncio, resource, signal, sys
from pathlib import Path
from parkwatch.errors import SpoolError
from collector.spool import Spool

# A real write error: past RLIMIT_FSIZE, write() fails with EFBIG (once SIGXFSZ is ignored).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

async def main():
    async with Spool(Path(sys.argv[1]), max_bytes=2**30, segment_bytes=15_000) as spool:
        for i in range(5):
            await spool.append(b"ok %d " % i + bytes(988))
        # 8000 bytes fit the segment but not the file size limit: a partial write, then EFBIG.
        # The next batch starts a new segment, fails in it too, and removes it.
        for size in (8_000, 11_000):
            try:
                await spool.append(b"lost " + bytes(size))
            except SpoolError:
                print("failed", size, flush=True)
        await spool.append(b"ok 5 " + bytes(988))
        assert spool.stats.records == 6, spool.stats

asyncio.run(main())
"""


def test_a_failed_write_fails_its_appends_and_is_never_written_after(directory: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", FAILING_CHILD, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[:2] == ["failed 8000", "failed 11000"]
    # Segment 1 holds five good records, cut back to them after the failed batch (no torn tail,
    # no space taken on a full disk); 2 was created by a failing batch and removed; the next
    # record started segment 3 rather than append to a segment whose tail failed.
    names = [p.name for p in segment_files(directory)]
    assert names == ["0000000000000001.seg", "0000000000000003.seg"]

    async def recover() -> tuple[list[bytes], int]:
        async with Spool(directory, max_bytes=BIG) as spool:
            return await payloads(spool), spool.stats.corrupt_tails

    recovered, corrupt_tails = asyncio.run(recover())
    assert [p[:5] for p in recovered] == [b"ok %d " % i for i in range(6)]
    assert corrupt_tails == 0


@pytest.mark.parametrize(("keep", "problem"), [(5, "short header"), (50, "short payload")])
async def test_torn_tail_keeps_earlier_records_and_is_reported(
    directory: Path, caplog: pytest.LogCaptureFixture, keep: int, problem: str
) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        for i in range(3):
            await spool.append(payload(i))
    [segment] = segment_files(directory)
    torn_at = 2 * (HEADER + 100)
    with segment.open("r+b") as f:
        f.truncate(torn_at + keep)  # the last append was cut short by a crash

    with caplog.at_level(logging.WARNING, logger="collector.spool"):
        async with Spool(directory, max_bytes=BIG) as spool:
            assert spool.stats.corrupt_tails == 1
            assert spool.stats.records == 2
            assert await payloads(spool) == [payload(0), payload(1)]
            await spool.append(payload(3))
            assert await payloads(spool) == [payload(0), payload(1), payload(3)]
    assert f"{segment}: {problem} at offset {torn_at}; skipping {keep} bytes" in caplog.text
    # The new record went to a fresh segment, not after the torn one.
    assert [p.name for p in segment_files(directory)] == [segment.name, "0000000000000002.seg"]
    assert segment.stat().st_size == torn_at + keep


@pytest.mark.parametrize(
    ("field", "at", "problem"),
    [
        ("magic", 0, "bad magic"),
        ("length, high byte", 4, "short payload"),
        ("length, low byte", 7, "checksum mismatch"),
        ("checksum", 8, "checksum mismatch"),
        ("payload", HEADER + 50, "checksum mismatch"),
    ],
)
async def test_corrupt_record_in_the_middle_skips_to_the_next_segment(
    directory: Path, caplog: pytest.LogCaptureFixture, field: str, at: int, problem: str
) -> None:
    frame = HEADER + 100
    async with Spool(directory, max_bytes=BIG, segment_bytes=3 * frame) as spool:
        for i in range(6):
            await spool.append(payload(i))
    first, _ = segment_files(directory)
    flip_byte(first, frame + at)  # the second of three records in the older segment

    with caplog.at_level(logging.WARNING, logger="collector.spool"):
        async with Spool(directory, max_bytes=BIG, segment_bytes=3 * frame) as spool:
            assert spool.stats.corrupt_tails == 1, field
            # The record after the bad one cannot be trusted to be framed right: skipped too.
            assert await payloads(spool) == [payload(i) for i in (0, 3, 4, 5)]
            assert spool.stats.records == 4
            assert spool.stats.bytes == 4 * frame
    assert f"{first}: {problem} at offset {frame}; skipping {2 * frame} bytes" in caplog.text


async def test_corruption_after_open_is_detected_when_read(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        for i in range(4):
            await spool.append(payload(i))
        [segment] = segment_files(directory)
        flip_byte(segment, 0 * (HEADER + 100) + HEADER + 1)  # record 0's payload
        flip_byte(segment, 2 * (HEADER + 100) + HEADER + 1)  # record 2's payload
        with caplog.at_level(logging.WARNING, logger="collector.spool"):
            # A bad oldest record is reported and stepped over; reading stops before a later one.
            assert [r.payload for r in await spool.read(4)] == [payload(1)]
            assert spool.stats.corrupt_tails == 1
            await spool.commit((await spool.read())[0].position)
            assert [r.payload for r in await spool.read(4)] == [payload(3)]
        assert spool.stats.corrupt_tails == 2
        assert spool.stats.records == 1
    assert caplog.text.count("checksum mismatch") == 2


async def test_spool_full_at_the_bound_writes_nothing(directory: Path) -> None:
    frame = HEADER + 100
    async with Spool(directory, max_bytes=3 * frame) as spool:
        for i in range(3):
            await spool.append(payload(i))
        sizes = [p.stat().st_size for p in segment_files(directory)]
        with pytest.raises(SpoolFull):
            await spool.append(payload(3))
        assert [p.stat().st_size for p in segment_files(directory)] == sizes
        assert spool.stats.records == 3
        assert spool.stats.bytes == 3 * frame

        # Committing frees room. Appends in flight count against the bound too.
        await spool.commit((await spool.read())[0].position)
        results = await asyncio.gather(
            spool.append(payload(4)), spool.append(payload(5)), return_exceptions=True
        )
        assert results[0] is None
        assert isinstance(results[1], SpoolFull)
        assert await payloads(spool) == [payload(1), payload(2), payload(4)]


async def fill_spool(spool: Spool, size: int) -> int:
    """Append ``size``-byte records until the disk refuses one; return how many it took."""
    count = 0
    while True:
        try:
            await spool.append(payload(count, size))
        except SpoolError as exc:
            error = str(exc)
            break
        count += 1
    assert "No space left on device" in error
    return count


async def test_a_full_disk_fails_appends_but_commits_go_on_and_free_the_space(
    tmp_path: Path,
) -> None:
    # A real full filesystem (ENOSPC), not the spool's own bound: max_bytes is far away.
    with small_disk(tmp_path / "disk", "256k") as disk:
        directory = disk / "spool"
        async with Spool(directory, max_bytes=BIG, segment_bytes=2**16) as spool:
            appended = await fill_spool(spool, 8000)
            assert appended > 5
            fill_disk(disk / "filler")  # not even room for the cursor now
            records = await read_all(spool)
            assert [r.payload for r in records] == [payload(i, 8000) for i in range(appended)]

            durable = [await spool.commit(record.position) for record in records]
            assert durable[0] is False  # the cursor could not be written...
            assert spool.empty()  # ...yet the records count as replayed,
            assert segment_files(directory) == []  # so their segments went, freeing the disk,
            assert durable[-1] is True  # and then the cursor could be written.
            (disk / "filler").unlink()
            await spool.append(b"after the disk was full")
        async with Spool(directory, max_bytes=BIG) as reopened:
            assert await payloads(reopened) == [b"after the disk was full"]
            assert reopened.stats.corrupt_tails == 0


async def test_a_cursor_the_full_disk_refused_is_written_at_close(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "256k") as disk:
        directory = disk / "spool"
        async with Spool(directory, max_bytes=BIG, segment_bytes=2**20) as spool:
            appended = await fill_spool(spool, 8000)
            filler = disk / "filler"
            fill_disk(filler)
            records = await read_all(spool)
            # The segment still holds records to replay: it stays, so does the full disk, and
            # the cursor is kept in memory.
            assert await spool.commit(records[1].position) is False
            filler.unlink()
        async with Spool(directory, max_bytes=BIG) as reopened:
            # Had close not written the cursor, records 0 and 1 would be replayed again.
            assert await payloads(reopened) == [payload(i, 8000) for i in range(2, appended)]


async def test_segments_roll_over_and_consumed_ones_are_deleted(directory: Path) -> None:
    frame = HEADER + 100
    async with Spool(directory, max_bytes=BIG, segment_bytes=2 * frame + 50) as spool:
        await asyncio.gather(*(spool.append(payload(i)) for i in range(6)))
        assert len(segment_files(directory)) == 3  # two records fit in each
        assert spool.stats.fsyncs == 3  # one batch, but each segment it filled is fsynced
        assert spool.stats.segments == 3
        records = await spool.read(6)
        assert [(r.position.segment, r.position.offset) for r in records] == [
            (1, 0), (1, frame), (2, 0), (2, frame), (3, 0), (3, frame),
        ]  # fmt: skip

        await spool.commit(records[2].position)
        assert [p.name for p in segment_files(directory)] == [
            "0000000000000002.seg",
            "0000000000000003.seg",
        ]
        await spool.commit(records[5].position)
        # The newest segment is still being appended to, so it stays until the writer moves on.
        assert [p.name for p in segment_files(directory)] == ["0000000000000003.seg"]
        assert spool.stats.segments == 1
        assert spool.stats.records == 0

        await spool.append(payload(6))
        [record] = await spool.read()
        assert record.position.segment == 4
        await spool.commit(record.position)
        assert [p.name for p in segment_files(directory)] == ["0000000000000004.seg"]

    async with Spool(directory, max_bytes=BIG) as spool:
        assert segment_files(directory) == []  # all consumed: deleted on open
        assert spool.empty()
    async with Spool(directory, max_bytes=BIG) as spool:
        # Only the cursor is left; numbering must continue past it, or this record would
        # count as consumed on the next open.
        await spool.append(payload(7))
        assert await payloads(spool) == [payload(7)]
    async with Spool(directory, max_bytes=BIG) as spool:
        assert await payloads(spool) == [payload(7)]


async def test_concurrent_appends_share_one_fsync(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        # Appends started in the same loop turn form one batch: one write and one fsync.
        await asyncio.gather(*(spool.append(payload(i)) for i in range(64)))
        assert spool.stats.fsyncs == 1
        assert spool.stats.records == 64

        for i in range(64, 72):  # one appender awaiting each append: an fsync apiece
            await spool.append(payload(i))
        assert spool.stats.fsyncs == 9
        assert await payloads(spool) == [payload(i) for i in range(72)]


async def test_wait_not_empty_wakes_on_append_and_on_close(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        waiter = asyncio.ensure_future(spool.wait_not_empty())
        await asyncio.sleep(0)  # a yield, not a delay: let the waiter start waiting
        assert not waiter.done()
        await spool.append(payload(0))
        async with asyncio.timeout(WAIT):
            await waiter
        await spool.wait_not_empty()  # returns at once while something is pending

        await spool.commit((await spool.read())[0].position)
        waiter = asyncio.ensure_future(spool.wait_not_empty())
        await asyncio.sleep(0)
        assert not waiter.done()
    with pytest.raises(SpoolError):
        async with asyncio.timeout(WAIT):
            await waiter


async def test_calls_after_close_raise(directory: Path) -> None:
    spool = Spool(directory, max_bytes=BIG)
    await spool.open()
    await spool.append(payload(0))
    [record] = await spool.read()
    await spool.close()
    await spool.close()  # closing twice is harmless
    with pytest.raises(SpoolError):
        await spool.append(payload(1))
    with pytest.raises(SpoolError):
        await spool.read()
    with pytest.raises(SpoolError):
        await spool.commit(record.position)
    with pytest.raises(SpoolError):
        await spool.wait_not_empty()
    with pytest.raises(SpoolError):
        await spool.open()


async def test_a_directory_is_used_by_one_spool_at_a_time(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG):
        with pytest.raises(SpoolError, match="open in another"):
            await Spool(directory, max_bytes=BIG).open()
    async with Spool(directory, max_bytes=BIG) as spool:  # the lock went with the first
        assert spool.empty()


async def test_committing_an_older_position_never_moves_the_cursor_back(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        for i in range(3):
            await spool.append(payload(i))
        records = await spool.read(3)
        await spool.commit(records[1].position)
        await spool.commit(records[0].position)  # a late duplicate commit: a no-op
        assert spool.stats.records == 1
    async with Spool(directory, max_bytes=BIG) as spool:
        assert await payloads(spool) == [payload(2)]


async def test_commit_of_an_unknown_position_raises(directory: Path) -> None:
    async with Spool(directory, max_bytes=BIG) as spool:
        await spool.append(payload(0))
        [record] = await spool.read()
        bogus = SpoolPosition(record.position.segment, record.position.offset + 1)
        with pytest.raises(SpoolError, match="no pending record"):
            await spool.commit(bogus)
        assert spool.stats.records == 1


# Property: any interleaving of appends, reads, commits and reopens replays exactly what was
# appended, in order, minus what was committed.


@dataclass(frozen=True)
class Append:
    """Append these payloads concurrently (one batch), in this order."""

    payloads: list[bytes]


@dataclass(frozen=True)
class ReadCommit:
    """Read up to ``count`` records, then commit the ``commit``-th of them (0: none)."""

    count: int
    commit: int


@dataclass(frozen=True)
class Reopen:
    """Close the spool and open a new one on the same directory."""


operations = st.lists(
    st.one_of(
        st.builds(Append, st.lists(st.binary(max_size=80), min_size=1, max_size=4)),
        st.builds(ReadCommit, st.integers(1, 4), st.integers(0, 4)),
        st.builds(Reopen),
    ),
    max_size=25,
)


async def run_operations(
    directory: Path, segment_bytes: int, steps: list[Append | ReadCommit | Reopen]
) -> None:
    """Apply ``steps`` to a spool and to a list, checking they agree after each step."""
    pending: list[bytes] = []  # the model: appended, not yet committed, in order
    spool = Spool(directory, max_bytes=BIG, segment_bytes=segment_bytes)
    await spool.open()
    try:
        for step in steps:
            match step:
                case Append(payloads=batch):
                    await asyncio.gather(*(spool.append(p) for p in batch))
                    pending.extend(batch)
                case ReadCommit(count=count, commit=commit):
                    records = await spool.read(count)
                    assert [r.payload for r in records] == pending[:count]
                    if commit and records:
                        upto = min(commit, len(records))
                        await spool.commit(records[upto - 1].position)
                        del pending[:upto]
                case Reopen():
                    await spool.close()
                    spool = Spool(directory, max_bytes=BIG, segment_bytes=segment_bytes)
                    await spool.open()
            assert spool.stats.records == len(pending)
            assert spool.stats.bytes == sum(HEADER + len(p) for p in pending)
            assert spool.empty() == (not pending)
        assert await payloads(spool) == pending
        await spool.close()
        spool = Spool(directory, max_bytes=BIG, segment_bytes=segment_bytes)
        await spool.open()
        assert await payloads(spool) == pending
        assert spool.stats.corrupt_tails == 0
    finally:
        await spool.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations, segment_bytes=st.sampled_from([40, 150, 2**20]))
def test_any_interleaving_replays_appended_minus_committed(
    steps: list[Append | ReadCommit | Reopen], segment_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_operations(Path(tmp) / "spool", segment_bytes, steps))
