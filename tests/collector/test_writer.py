"""Writer: batching by size and time, retries, bad-line isolation, and the spool that keeps
batches (and order) while the database is down, against a scripted fake ``Sink`` and a real
``Spool`` on disk. Retry waits are recorded by a fake sleep, never measured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from tenacity import AsyncRetrying

from collector.deadletter import DeadLetterFile, run_dead_letters
from collector.messages import DeadLetter, Reason
from collector.metrics import Metrics
from collector.refusals import field_types, series_key
from collector.sink import Sink
from collector.sinkwriter import SinkWriter
from collector.spool import Spool
from collector.writer import Batch, Writer
from parkwatch.errors import (
    FieldTypeConflict,
    SinkMissing,
    SinkRejected,
    SinkUnavailable,
    SpoolError,
    SpoolFull,
)
from parkwatch.points import NO_TICKET, Point
from parkwatch.settings import DeadLetterSettings, WriterSettings
from tests.faults import fill_disk, small_disk
from tests.helpers import until

BASE_MS = 1_700_000_000_000
WAIT = 10.0  # seconds to wait for any one event


class FakeSink:
    """A ``Sink`` whose answers are scripted: queued failures first, then down or up."""

    name = "fake-sink"
    problem: str | None = None

    def __init__(self, *, rejects: Callable[[str], bool] = lambda line: False) -> None:
        self.failures: list[Exception] = []
        """Raised by the next writes, one each, before anything else is considered."""
        self.down = False
        """While true, every write raises ``SinkUnavailable``."""
        self.rejects = rejects
        """A body holding any line this accepts is refused with HTTP 400 (and nothing stored)."""
        self.attempts = 0
        self.written: list[bytes] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def write(self, body: bytes) -> None:
        """Follow the script; store the body when it is accepted."""
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.down:
            raise SinkUnavailable("fake sink is down", status=503, target=self.name)
        if any(self.rejects(line) for line in body.decode().split("\n")):
            raise SinkRejected("fake sink: HTTP 400: bad line", status=400, target=self.name)
        self.written.append(body)

    async def ping(self) -> bool:
        """Up unless scripted down."""
        return not self.down

    async def close(self) -> None:
        """Nothing to release."""

    @property
    def lines(self) -> list[str]:
        """Every line stored, in order."""
        return [line for body in self.written for line in body.decode().split("\n")]


class Settled:
    """The writer's settle callback: records each ticket it is given, in order."""

    def __init__(self) -> None:
        self.tickets: list[int] = []

    def __call__(self, tickets: Iterable[int]) -> None:
        self.tickets.extend(tickets)


def make_points(count: int, *, start: int = 0, bad: Iterable[int] = ()) -> list[Point]:
    """Points with ticket = index; those in ``bad`` carry a line the fake sink refuses."""
    bad = set(bad)
    points = []
    for ticket in range(start, start + count):
        measurement = "bad" if ticket in bad else "m"
        line = f"{measurement},device=d-{ticket % 3},park=p v={ticket}i {BASE_MS + ticket}"
        points.append(Point("p", measurement, f"d-{ticket % 3}", BASE_MS, {}, line, ticket))
    return points


def make_writer(
    sink: Sink,
    settled: Callable[[Iterable[int]], None],
    *,
    spool: Spool | None = None,
    dead: asyncio.Queue[DeadLetter] | None = None,
    metrics: Metrics | None = None,
    **settings: Any,
) -> Writer:
    """A writer with fast retries (the fake sleep makes them instant anyway)."""
    values: dict[str, Any] = {
        "batch_size": 1000,
        "flush_interval_s": 3600,
        "max_concurrent_writes": 2,
        "retry_max_attempts": 3,
        "retry_initial_s": 0.01,
        "retry_max_s": 1.0,
        **settings,
    }
    return Writer(
        WriterSettings(**values),
        sink,
        metrics or Metrics(),
        settle=settled,
        dead_letters=dead if dead is not None else asyncio.Queue(),
        spool=spool,
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make the writer's retry waits instant and record how long each would have been."""
    recorded: list[float] = []
    original = SinkWriter.retrying

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)
        await asyncio.sleep(0)  # still yield, as a real wait would

    def retrying(self: SinkWriter, attempts: int | None = -1) -> AsyncRetrying:
        return original(self, attempts).copy(sleep=fake_sleep)

    monkeypatch.setattr(SinkWriter, "retrying", retrying)
    return recorded


@contextlib.asynccontextmanager
async def running(*stages: Coroutine[Any, Any, None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run stage loops as tasks; cancel them on exit and re-raise anything they died of."""
    tasks = [asyncio.create_task(stage) for stage in stages]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError
            ):
                raise outcome


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    """A real spool in a temp dir."""
    async with Spool(tmp_path / "spool", max_bytes=2**20, segment_bytes=2**16) as opened:
        yield opened


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric's current value (0 when never set)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def body_of(points: list[Point]) -> bytes:
    """The body a batch of these points is written as."""
    return Batch(points).body()


# -- batching --------------------------------------------------------------------------------------


async def test_batches_are_cut_at_batch_size_in_arrival_order() -> None:
    writer = make_writer(FakeSink(), Settled(), batch_size=3)
    points: asyncio.Queue[Point] = asyncio.Queue()
    for point in make_points(6):
        points.put_nowait(point)
    async with running(writer.run_batcher(points)):
        first = await asyncio.wait_for(writer.batches.get(), WAIT)
        second = await asyncio.wait_for(writer.batches.get(), WAIT)
        await asyncio.wait_for(points.join(), WAIT)  # every point handed on is marked done
    assert [p.ticket for p in first.points] == [0, 1, 2]
    assert [p.ticket for p in second.points] == [3, 4, 5]


async def test_a_partial_batch_is_cut_once_the_flush_interval_has_passed() -> None:
    writer = make_writer(FakeSink(), Settled(), batch_size=100, flush_interval_s=0.05)
    points: asyncio.Queue[Point] = asyncio.Queue()
    first, second = make_points(2), make_points(3, start=2)
    async with running(writer.run_batcher(points)):
        for point in first:
            points.put_nowait(point)
        cut = await asyncio.wait_for(writer.batches.get(), WAIT)
        for point in second:
            points.put_nowait(point)
        next_cut = await asyncio.wait_for(writer.batches.get(), WAIT)
    assert cut.points == first  # far below batch_size: only the interval can have cut it
    assert next_cut.points == second


async def test_a_full_batch_queue_blocks_the_batcher_so_points_wait_unconsumed() -> None:
    writer = make_writer(FakeSink(), Settled(), batch_size=1, max_concurrent_writes=1)
    points: asyncio.Queue[Point] = asyncio.Queue()
    for point in make_points(4):
        points.put_nowait(point)
    async with running(writer.run_batcher(points)) as (batcher,):
        # One batch queued, one in the batcher's hands blocked on the full queue, two waiting.
        await until(lambda: points.qsize() == 2, what="batcher blocked", alive=batcher)
        assert writer.batches.full()
        assert [p.ticket for p in (await writer.batches.get()).points] == [0]
        await until(lambda: points.qsize() == 1, what="batcher moved on", alive=batcher)


# -- delivery --------------------------------------------------------------------------------------


async def test_a_batch_is_written_in_one_request_and_its_messages_settled(
    sleeps: list[float],
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    writer = make_writer(sink, settled, metrics=metrics)
    batch = make_points(5)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sink.written == [body_of(batch)]
    assert settled.tickets == [0, 1, 2, 3, 4]
    assert sleeps == []
    assert sample(metrics, "parkwatch_points_written_total") == 5
    assert sample(metrics, "parkwatch_sink_up") == 1


async def test_unavailable_sink_is_retried_until_it_succeeds_and_acks_are_settled_once(
    sleeps: list[float], spool: Spool
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    sink.failures = [SinkUnavailable("timeout"), SinkUnavailable("HTTP 503", status=503)]
    writer = make_writer(sink, settled, spool=spool, metrics=metrics, retry_max_attempts=3)
    batch = make_points(4)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sink.attempts == 3
    assert sink.written == [body_of(batch)]
    assert settled.tickets == [0, 1, 2, 3]
    assert len(sleeps) == 2
    assert spool.empty()  # the retries succeeded, so nothing was spooled
    assert sample(metrics, "parkwatch_write_errors_total", kind="unavailable") == 2
    assert sample(metrics, "parkwatch_sink_up") == 1


async def test_backoff_without_retry_after_stays_within_the_configured_maximum(
    sleeps: list[float],
) -> None:
    sink = FakeSink()
    sink.failures = [SinkUnavailable("down")] * 5
    writer = make_writer(sink, Settled(), retry_max_attempts=6, retry_max_s=0.5)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(make_points(1)))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert len(sleeps) == 5
    assert all(0 <= wait <= 0.5 for wait in sleeps)


@pytest.mark.parametrize(
    ("retry_after", "expected_wait"),
    [(7.0, 7.0), (0.0, 0.0), (1000.0, 12.0)],  # capped at 12 x retry_max_s (1.0 here)
)
async def test_retry_after_from_the_sink_is_the_wait_before_the_next_attempt(
    sleeps: list[float], retry_after: float, expected_wait: float
) -> None:
    sink, settled = FakeSink(), Settled()
    sink.failures = [SinkUnavailable("HTTP 429", status=429, retry_after=retry_after)]
    writer = make_writer(sink, settled, retry_max_s=1.0)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(make_points(2)))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sleeps == [expected_wait]
    assert settled.tickets == [0, 1]


async def test_a_refused_batch_is_bisected_so_good_lines_are_written_and_bad_ones_dead_lettered(
    sleeps: list[float], tmp_path: Path
) -> None:
    sink = FakeSink(rejects=lambda line: line.startswith("bad,"))
    settled, metrics = Settled(), Metrics()
    dead: asyncio.Queue[DeadLetter] = asyncio.Queue()
    writer = make_writer(sink, settled, dead=dead, metrics=metrics)
    dead_file = DeadLetterFile(DeadLetterSettings(path=tmp_path / "dead.jsonl"))
    batch = make_points(50, bad=(17, 38))
    good_lines = [p.line for p in batch if p.ticket not in (17, 38)]

    async with running(writer.run_worker(), run_dead_letters(dead_file, dead, settled, metrics)):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
        await asyncio.wait_for(dead.join(), WAIT)

    assert Counter(sink.lines) == Counter(good_lines)  # each of the 48 written exactly once
    assert sorted(settled.tickets) == list(range(50))  # 48 by the writer, 2 by the dead letters
    assert len(settled.tickets) == 50
    assert sleeps == []  # a refusal is not retried
    records = [orjson.loads(line) for line in dead_file.path.read_bytes().splitlines()]
    assert {record["reason"] for record in records} == {Reason.REJECTED_BY_SINK}
    assert sorted(record["payload"] for record in records) == sorted(
        p.line for p in batch if p.ticket in (17, 38)
    )
    assert sample(metrics, "parkwatch_points_written_total") == 48
    assert sample(metrics, "parkwatch_dead_letters_total", reason=Reason.REJECTED_BY_SINK) == 2
    assert sample(metrics, "parkwatch_write_errors_total", kind="rejected") > 0


async def test_dead_letters_from_a_refused_batch_carry_the_tickets_of_the_bad_points(
    sleeps: list[float],
) -> None:
    sink = FakeSink(rejects=lambda line: line.startswith("bad,"))
    settled = Settled()
    dead: asyncio.Queue[DeadLetter] = asyncio.Queue()
    writer = make_writer(sink, settled, dead=dead)
    batch = make_points(8, bad=(0, 7))
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    letters = [dead.get_nowait() for _ in range(dead.qsize())]
    assert sorted(letter.ticket for letter in letters) == [0, 7]
    assert {letter.reason for letter in letters} == {Reason.REJECTED_BY_SINK}
    assert all(b"HTTP 400" in letter.detail.encode() for letter in letters)
    assert sorted(settled.tickets) == [1, 2, 3, 4, 5, 6]


async def test_retries_exhausted_send_the_batch_to_the_spool_and_its_messages_are_acked(
    sleeps: list[float], spool: Spool
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    sink.down = True
    writer = make_writer(sink, settled, spool=spool, metrics=metrics, retry_max_attempts=2)
    batch = make_points(3)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sink.attempts == 2
    assert sink.written == []
    assert settled.tickets == [0, 1, 2]
    assert spool.stats.records == 1
    assert sample(metrics, "parkwatch_spooled_batches_total") == 1
    assert sample(metrics, "parkwatch_sink_up") == 0
    assert (await spool.read(1))[0].payload == body_of(batch)


async def test_the_replayer_writes_a_spooled_batch_once_the_sink_recovers(
    sleeps: list[float], spool: Spool
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    sink.down = True
    writer = make_writer(sink, settled, spool=spool, metrics=metrics, retry_max_attempts=2)
    batch = make_points(3)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert spool.stats.records == 1

    # Still down for three more attempts: the replayer keeps retrying, then gets through.
    sink.down = False
    sink.failures = [SinkUnavailable("still down")] * 3
    async with running(writer.run_replayer()) as (replayer,):
        await until(spool.empty, what="spool drained", alive=replayer)
    assert sink.attempts == 2 + 4
    assert sink.written == [body_of(batch)]
    assert settled.tickets == [0, 1, 2]  # replaying acks nothing again
    assert sample(metrics, "parkwatch_replayed_points_total") == 3


async def test_while_the_spool_holds_data_new_batches_are_spooled_behind_it_in_order(
    sleeps: list[float], spool: Spool
) -> None:
    sink, settled = FakeSink(), Settled()
    sink.down = True
    writer = make_writer(sink, settled, spool=spool, retry_max_attempts=2)
    older, newer = make_points(3), make_points(2, start=3)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(older))
        await asyncio.wait_for(writer.batches.join(), WAIT)
        sink.down = False  # the database is back, but older data waits in the spool
        await writer.batches.put(Batch(newer))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sink.attempts == 2  # the newer batch never went to the sink directly
    assert settled.tickets == [0, 1, 2, 3, 4]
    assert spool.stats.records == 2

    async with running(writer.run_replayer()) as (replayer,):
        await until(spool.empty, what="spool drained", alive=replayer)
    assert sink.written == [body_of(older), body_of(newer)]


async def test_a_full_spool_holds_the_acks_until_the_database_takes_the_batch(
    sleeps: list[float], tmp_path: Path
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    sink.down = True
    first, second = make_points(3), make_points(3, start=3)
    # Room for one batch (a record is a 12-byte header plus the body), not for two.
    room = 12 + len(body_of(first)) + 8
    async with Spool(tmp_path / "small-spool", max_bytes=room) as small:
        writer = make_writer(sink, settled, spool=small, metrics=metrics, retry_max_attempts=2)
        async with running(writer.run_worker(), writer.run_worker()) as workers:
            await writer.batches.put(Batch(first))
            await until(lambda: settled.tickets == [0, 1, 2], what="first batch spooled")
            await writer.batches.put(Batch(second))
            await until(lambda: writer.spool_full, what="spool full", alive=workers[0])
            assert settled.tickets == [0, 1, 2]  # the second batch is not acked
            assert sample(metrics, "parkwatch_spool_full") == 1

            sink.down = False
            async with running(writer.run_replayer()) as (replayer,):
                await until(
                    lambda: len(settled.tickets) == 6 and small.empty() and len(sink.written) == 2,
                    what="both batches written",
                    alive=replayer,
                )
    assert settled.tickets == [0, 1, 2, 3, 4, 5]  # acks still go out in arrival order
    # The held batch goes straight to the database once it is back, possibly before the
    # replayer writes the older spooled one: InfluxDB orders points by time, not by arrival.
    assert sorted(sink.written) == sorted([body_of(first), body_of(second)])
    assert not writer.spool_full
    assert sample(metrics, "parkwatch_spool_full") == 0


async def test_without_a_spool_the_worker_retries_until_the_sink_is_back_before_acking(
    sleeps: list[float],
) -> None:
    sink, settled = FakeSink(), Settled()
    sink.failures = [SinkUnavailable("down")] * 5
    writer = make_writer(sink, settled, retry_max_attempts=2)
    batch = make_points(2)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(batch))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sink.attempts == 6  # far more than retry_max_attempts
    assert sink.written == [body_of(batch)]
    assert settled.tickets == [0, 1]


async def test_bad_lines_in_a_replayed_batch_are_dead_lettered_without_a_ticket(
    sleeps: list[float], spool: Spool
) -> None:
    sink = FakeSink(rejects=lambda line: line.startswith("bad,"))
    dead: asyncio.Queue[DeadLetter] = asyncio.Queue()
    writer = make_writer(sink, Settled(), spool=spool, dead=dead)
    batch = make_points(4, bad=(2,))
    await spool.append(body_of(batch))
    async with running(writer.run_replayer()) as (replayer,):
        await until(spool.empty, what="spool drained", alive=replayer)
    assert Counter(sink.lines) == Counter(p.line for p in batch if p.ticket != 2)
    letter = dead.get_nowait()
    assert letter.ticket == NO_TICKET
    assert letter.reason == Reason.REJECTED_BY_SINK
    assert letter.payload == batch[2].line.encode()
    assert dead.empty()


# -- regression tests of fixed bugs ----------------------------------------------------------------


class _FailingSpool:
    """A spool whose reads fail ``failures`` times (a failing disk), then it is closed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.is_open = True

    async def wait_not_empty(self) -> None:
        """Always something to replay."""

    async def read(self, count: int) -> list[object]:
        """Fail; close after the last failure, as a shutdown would."""
        self.failures -= 1
        if self.failures == 0:
            self.is_open = False
        raise SpoolError("spool: reading failed: [Errno 5] Input/output error")


async def test_the_replayer_outlasts_any_number_of_failures_at_the_longest_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the wait was retry_initial_s * 2**failures, which no float holds past ~1 030
    failures in a row: OverflowError, and the replayer was gone for good."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)  # the one the writer calls
    spool = _FailingSpool(1_200)
    writer = make_writer(FakeSink(), Settled(), spool=cast(Spool, spool))
    await asyncio.wait_for(writer.run_replayer(), WAIT)
    assert spool.failures == 0
    assert waits[:3] == [0.02, 0.04, 0.08]  # retry_initial_s 0.01, doubled
    assert max(waits) == 1.0  # retry_max_s
    assert len(waits) == 1_199  # every failure but the one at shutdown


async def test_flush_cuts_a_batch_that_is_waiting_for_more_points_at_once() -> None:
    writer = make_writer(FakeSink(), Settled(), batch_size=100, flush_interval_s=3600)
    points: asyncio.Queue[Point] = asyncio.Queue()
    async with running(writer.run_batcher(points)) as (batcher,):
        points.put_nowait(make_points(1)[0])
        await until(points.empty, what="point taken", alive=batcher)
        writer.flush()
        batch = await asyncio.wait_for(writer.batches.get(), 1.0)
    assert len(batch.points) == 1


async def test_spooled_points_count_as_written_once_when_the_replayer_writes_them(
    sleeps: list[float], spool: Spool
) -> None:
    sink, metrics = FakeSink(), Metrics()
    sink.down = True
    writer = make_writer(sink, Settled(), spool=spool, metrics=metrics, retry_max_attempts=1)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(make_points(3)))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sample(metrics, "parkwatch_points_written_total") == 0
    sink.down = False
    async with running(writer.run_replayer()) as (replayer,):
        await until(spool.empty, what="spool drained", alive=replayer)
    assert sample(metrics, "parkwatch_points_written_total") == 3


async def test_the_replayer_survives_the_database_going_away_in_the_middle_of_a_bisect(
    sleeps: list[float], tmp_path: Path
) -> None:
    sink, settled = FakeSink(), Settled()
    points = make_points(4)
    # The whole record is refused (400), then the database is gone for longer than the
    # bounded retry budget while its first half is retried.
    sink.failures = [SinkRejected("HTTP 400", status=400)] + [SinkUnavailable("down")] * 6
    async with Spool(tmp_path / "spool", max_bytes=2**20) as spool:
        await spool.append(body_of(points))
        writer = make_writer(sink, settled, spool=spool, retry_max_attempts=2)
        async with running(writer.run_replayer()) as (replayer,):
            await until(spool.empty, what="record replayed and committed", alive=replayer)
    assert sink.written == [body_of(points[:2]), body_of(points[2:])]
    assert sink.attempts == 1 + 6 + 1 + 1


# -- what the README promises about a full spool -----------------------------------------------


class CountingSpool(Spool):
    """A real spool that counts the appends it refused as full."""

    refused = 0

    async def append(self, payload: bytes) -> None:
        """Append, counting a refusal."""
        try:
            await super().append(payload)
        except SpoolFull:
            self.refused += 1
            raise


def spool_full_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The writer's ERROR lines about a full spool, in order."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "collector.writer" and r.levelno == logging.ERROR and "spool full" in r.message
    ]


async def test_a_full_spool_logs_one_error_per_episode_not_one_per_batch(
    sleeps: list[float], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three batches held at once by a full spool make one ERROR line; the next episode, after
    the database took everything, makes one more."""
    caplog.set_level(logging.INFO, logger="collector.writer")
    sink, settled = FakeSink(), Settled()
    room = 12 + len(body_of(make_points(3))) + 8  # one batch fits, two do not
    async with CountingSpool(tmp_path / "small-spool", max_bytes=room) as small:
        writer = make_writer(
            sink, settled, spool=small, retry_max_attempts=2, max_concurrent_writes=3
        )
        workers = [writer.run_worker() for _ in range(3)]
        async with running(*workers, writer.run_replayer()) as tasks:

            async def episode(number: int) -> None:
                sink.down = True
                start = (number - 1) * 12
                await writer.batches.put(Batch(make_points(3, start=start)))
                await until(lambda: small.stats.records == 1, what="a batch spooled")
                refused_before = small.refused
                for n in range(3):
                    await writer.batches.put(Batch(make_points(3, start=start + 3 + 3 * n)))
                await until(
                    lambda: small.refused >= refused_before + 3,
                    what="three batches refused by the full spool",
                    alive=tasks[0],
                )
                assert len(spool_full_errors(caplog)) == number
                assert writer.spool_full

                sink.down = False  # the episode ends: everything is written, the spool drains
                await until(
                    lambda: len(settled.tickets) == 12 * number and small.empty(),
                    what=f"episode {number} written and acked",
                    alive=tasks[0],
                )
                assert not writer.spool_full

            await episode(1)
            await episode(2)
    errors = spool_full_errors(caplog)
    assert len(errors) == 2
    assert all("not acking" in message for message in errors)
    assert sorted(settled.tickets) == list(range(24))


# -- the spool refusing batches: held, counted per batch -------------------------------------------


async def test_a_small_batch_spooled_while_a_large_one_is_held_keeps_the_spool_full_signal(
    sleeps: list[float], tmp_path: Path
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    sink.down = True
    large, small = make_points(40), make_points(2, start=40)
    room = 12 + len(body_of(small)) + 8  # the small batch fits the spool, the large one never
    async with Spool(tmp_path / "small-spool", max_bytes=room) as tight:
        writer = make_writer(sink, settled, spool=tight, metrics=metrics, retry_max_attempts=2)
        async with running(writer.run_worker(), writer.run_worker()) as workers:
            await writer.batches.put(Batch(large))
            await until(lambda: writer.spool_full, what="large batch held", alive=workers[0])
            await writer.batches.put(Batch(small))
            await until(lambda: tight.stats.records == 1, what="small batch spooled")
            await until(lambda: settled.tickets == [40, 41], what="small batch acked")
            # The large batch is still held and unacked: the signal must stay on.
            assert writer.spool_full
            assert writer.spool_problem == "full: not acking"
            assert sample(metrics, "parkwatch_spool_full") == 1

            sink.down = False
            await until(lambda: len(settled.tickets) == 42, what="held batch written")
    assert not writer.spool_full
    assert sample(metrics, "parkwatch_spool_full") == 0


async def test_spool_gauges_show_pending_data_from_the_start(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool", max_bytes=2**20) as spool:
        await spool.append(body_of(make_points(3)))
        await spool.append(body_of(make_points(3, start=3)))
    # A restart with data pending and the database still down: nothing appended or replayed.
    async with Spool(tmp_path / "spool", max_bytes=2**20) as reopened:
        metrics = Metrics()
        make_writer(FakeSink(), Settled(), spool=reopened, metrics=metrics)
        assert sample(metrics, "parkwatch_spool_bytes") == reopened.stats.bytes > 0
        assert sample(metrics, "parkwatch_spool_segments") == 1


async def test_a_full_disk_under_the_spool_holds_the_batch_instead_of_killing_the_worker(
    sleeps: list[float], tmp_path: Path
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    sink.down = True
    batch = make_points(200)
    with small_disk(tmp_path / "disk", "64k") as disk:
        async with Spool(disk / "spool", max_bytes=2**30) as spool:
            fill_disk(disk / "filler")
            writer = make_writer(sink, settled, spool=spool, metrics=metrics, retry_max_attempts=1)
            async with running(writer.run_worker()) as (worker,):
                await writer.batches.put(Batch(batch))
                await until(lambda: writer.spool_full, what="batch held", alive=worker)
                assert "No space left on device" in (writer.spool_problem or "")
                assert settled.tickets == []  # held: not acked
                assert sample(metrics, "parkwatch_spool_errors_total", op="append") >= 1
                sink.down = False
                await asyncio.wait_for(writer.batches.join(), WAIT)
    assert settled.tickets == list(range(200))
    assert sink.written == [body_of(batch)]
    assert not writer.spool_full


async def test_the_replayer_drains_a_spool_whose_disk_is_full(
    sleeps: list[float], tmp_path: Path
) -> None:
    sink, metrics = FakeSink(), Metrics()
    with small_disk(tmp_path / "disk", "256k") as disk:
        async with Spool(disk / "spool", max_bytes=2**30) as spool:
            bodies: list[bytes] = []
            with contextlib.suppress(SpoolError):
                while True:
                    body = body_of(make_points(100, start=100 * len(bodies)))
                    await spool.append(body)
                    bodies.append(body)
            fill_disk(disk / "filler")  # no room left even for the cursor
            writer = make_writer(sink, Settled(), spool=spool, metrics=metrics)
            points = 100 * len(bodies)
            async with running(writer.run_replayer()) as (replayer,):
                # Not spool.empty(): it turns true inside the last commit, before the replayer
                # has counted anything.
                await until(
                    lambda: sample(metrics, "parkwatch_points_written_total") == points,
                    what="every spooled point written",
                    alive=replayer,
                )
            assert spool.empty()
    assert sink.written == bodies
    assert sample(metrics, "parkwatch_spool_errors_total", op="commit") >= 1


# -- what the database refuses is learnt ----------------------------------------------------------


class TypedFakeSink(FakeSink):
    """Refuses as InfluxDB 1.x does: lines that give a stored field another type, and lines of
    series in ``refused_series``; stores the other lines of the request all the same (partial
    write) and names the first conflict and the number dropped in the error."""

    def __init__(self, stored: dict[tuple[str, str], str]) -> None:
        super().__init__()
        self.stored = stored
        self.refused_series: set[str] = set()
        self.requests = 0

    async def write(self, body: bytes) -> None:
        """Store the acceptable lines; raise like InfluxDB if any was refused."""
        self.requests += 1
        conflicts: list[FieldTypeConflict] = []
        limited = 0
        good = []
        for line in body.decode().split("\n"):
            measurement = line.split(",", 1)[0]
            if series_key(line) in self.refused_series:
                limited += 1
                continue
            clash = [
                FieldTypeConflict(measurement, name, self.stored[measurement, name])
                for name, kind in field_types(line).items()
                if self.stored.get((measurement, name), kind) != kind
            ]
            if clash:
                conflicts.append(clash[0])
            else:
                good.append(line)
        if good:
            self.written.append("\n".join(good).encode())
        if conflicts or limited:
            raise SinkRejected(
                f"HTTP 400: partial write dropped={len(conflicts) + limited}",
                status=400,
                dropped=len(conflicts) + limited,
                conflict=conflicts[0] if conflicts else None,
                limit=None if conflicts else "max-values-per-tag",
            )


def mode_points(count: int, *, start: int = 0, every: int = 10) -> list[Point]:
    """Points with a float field ``mode``; every ``every``-th one gives it as a boolean."""
    points = []
    for ticket in range(start, start + count):
        value = "true" if ticket % every == 0 else f"{ticket}.5"
        line = f"m,device=d-{ticket % 3},park=p mode={value} {BASE_MS + ticket}"
        points.append(Point("p", "m", f"d-{ticket % 3}", BASE_MS, {}, line, ticket))
    return points


async def test_a_learnt_field_type_takes_every_conflicting_line_out_before_the_write(
    sleeps: list[float],
) -> None:
    sink, settled, metrics = TypedFakeSink({("m", "mode"): "float"}), Settled(), Metrics()
    dead: asyncio.Queue[DeadLetter] = asyncio.Queue()
    writer = make_writer(sink, settled, dead=dead, metrics=metrics)
    first, second = mode_points(200), mode_points(200, start=200)
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(first))
        await asyncio.wait_for(writer.batches.join(), WAIT)
        # One refusal taught the type: the 20 conflicting lines went out at once, not by
        # bisection (which costs ~2 log2(200) requests per bad line).
        assert sink.requests == 2
        await writer.batches.put(Batch(second))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert sink.requests == 3  # the second batch: screened, written in one request
    letters = [dead.get_nowait() for _ in range(dead.qsize())]
    assert sorted(letter.ticket for letter in letters) == list(range(0, 400, 10))
    assert {letter.reason for letter in letters} == {Reason.REJECTED_BY_SINK}
    assert "holds float" in letters[-1].detail
    assert sorted(settled.tickets) == [t for t in range(400) if t % 10]
    assert sample(metrics, "parkwatch_write_requests_total") == 3
    assert sample(metrics, "parkwatch_points_written_total") == 360


async def test_a_series_refused_by_a_limit_is_remembered_and_a_refused_request_not_bisected(
    sleeps: list[float],
) -> None:
    sink, metrics = TypedFakeSink({}), Metrics()
    dead: asyncio.Queue[DeadLetter] = asyncio.Queue()
    writer = make_writer(sink, Settled(), dead=dead, metrics=metrics)
    new_device = [p for p in make_points(30) if p.device == "d-1"]
    sink.refused_series = {series_key(new_device[0].line)}
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(new_device))  # every line refused: no bisecting
        await asyncio.wait_for(writer.batches.join(), WAIT)
        assert sink.requests == 1
        await writer.batches.put(Batch(make_points(30, start=30)))
        await asyncio.wait_for(writer.batches.join(), WAIT)
        # The series was refused whole, so it is remembered: its lines never reach the sink.
        assert sink.requests == 2
    letters = [dead.get_nowait() for _ in range(dead.qsize())]
    assert len(letters) == 20
    assert {letter.reason for letter in letters} == {Reason.SERIES_LIMIT}
    assert sample(metrics, "parkwatch_write_errors_total", kind="rejected") == 1


async def test_a_request_of_only_refused_series_is_split_by_series_and_each_one_learnt(
    sleeps: list[float],
) -> None:
    """A batch holding nothing but two new devices' lines is refused whole, the answer naming
    one of them: each series is sent on its own once, so both are learnt (before, neither was,
    and each later batch of theirs cost a refused request)."""
    sink, metrics = TypedFakeSink({}), Metrics()
    dead: asyncio.Queue[DeadLetter] = asyncio.Queue()
    writer = make_writer(sink, Settled(), dead=dead, metrics=metrics)
    new_devices = [p for p in make_points(30) if p.device != "d-0"]
    sink.refused_series = {series_key(p.line) for p in new_devices}
    assert len(sink.refused_series) == 2
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(new_devices))
        await asyncio.wait_for(writer.batches.join(), WAIT)
        assert sink.requests == 3  # the batch, then each series on its own
        await writer.batches.put(Batch([p for p in make_points(30, start=30) if p.device != "d-0"]))
        await asyncio.wait_for(writer.batches.join(), WAIT)
        assert sink.requests == 3  # both remembered: nothing reached the sink
    letters = [dead.get_nowait() for _ in range(dead.qsize())]
    assert len(letters) == 40
    assert {letter.reason for letter in letters} == {Reason.SERIES_LIMIT}


# -- writes failing: health, metrics and logs ------------------------------------------------------


async def test_failing_writes_are_reported_until_one_succeeds_and_logged_once_per_interval(
    sleeps: list[float], spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    sink, settled, metrics = FakeSink(), Settled(), Metrics()
    missing = SinkMissing("HTTP 404: database not found", what="database", status=404)
    sink.failures = [missing] * 6
    writer = make_writer(
        sink, settled, spool=spool, metrics=metrics, retry_max_attempts=2,
        failure_log_interval_s=3600,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="collector.sinkwriter")
    assert writer.write_failure is None
    async with running(writer.run_worker()):
        await writer.batches.put(Batch(make_points(3)))
        await asyncio.wait_for(writer.batches.join(), WAIT)
    assert spool.stats.records == 1
    assert "writes failing for" in (writer.write_failure or "")
    assert "database not found" in (writer.write_failure or "")
    assert sample(metrics, "parkwatch_sink_up") == 0
    async with running(writer.run_replayer()) as (replayer,):
        await until(spool.empty, what="replayed once the database is back", alive=replayer)
    assert writer.write_failure is None
    assert sample(metrics, "parkwatch_writes_failing_seconds") == 0
    assert sample(metrics, "parkwatch_write_errors_total", kind="database_not_found") == 6
    failing = [r for r in caplog.records if "failing for" in r.getMessage()]
    assert len(failing) == 1  # six failures, one line: the interval is an hour
    assert failing[0].levelno == logging.ERROR
    assert "create_database" in failing[0].getMessage()  # the hint for a missing database
    assert any("succeed again" in r.getMessage() for r in caplog.records)
