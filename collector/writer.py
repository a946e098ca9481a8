"""Writer: points -> batches -> the database, or the spool; then the messages are acked.

Three kinds of task, all owned by the service's TaskGroup:

* ``run_batcher`` cuts the point stream into batches of ``batch_size`` lines, or whatever arrived
  within ``flush_interval_s`` of a batch's first line. The batch queue holds
  ``max_concurrent_writes`` batches; when it is full the batcher blocks, the point queue fills,
  and back-pressure reaches the MQTT reader (nothing is dropped).
* ``run_worker`` (``max_concurrent_writes`` of them) delivers a batch: written with retries
  (jittered exponential backoff, ``Retry-After`` honoured), or appended to the spool once retries
  are exhausted or while the spool still holds older data (keeping order). A batch the database
  refuses (HTTP 400) is bisected until the bad lines are isolated; those are dead-lettered and
  the good ones written. Only then are the batch's messages acked.
* ``run_replayer`` drains the spool into the database, oldest first, retrying until it succeeds.

When the spool is full, a batch that does not fit is held and retried against the database
until it is written; nothing is acked meanwhile, so back-pressure reaches the broker.

Without a spool the worker retries until the database is back, acking nothing meanwhile: the
broker keeps the messages of our persistent session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from collector.messages import DeadLetter, Reason
from collector.metrics import Metrics
from collector.sink import Sink
from collector.spool import Spool
from parkwatch.errors import SinkRejected, SinkUnavailable, SpoolFull
from parkwatch.points import NO_TICKET, Point
from parkwatch.settings import WriterSettings

__all__ = ["Batch", "Writer"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """Points written (or spooled) together."""

    points: list[Point]

    def body(self) -> bytes:
        """Line protocol, one point per line."""
        return _body(self.points)


def _body(points: Sequence[Point]) -> bytes:
    """The write body for ``points``: their lines, newline-separated."""
    return "\n".join(point.line for point in points).encode()


class Writer:
    """Batches points and delivers them durably; see the module docstring."""

    def __init__(
        self,
        settings: WriterSettings,
        sink: Sink,
        metrics: Metrics,
        *,
        settle: Callable[[Iterable[int]], None],
        dead_letters: asyncio.Queue[DeadLetter],
        spool: Spool | None = None,
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._metrics = metrics
        self._settle = settle
        self._dead = dead_letters
        self._spool = spool
        self._flush_now = asyncio.Event()
        self._spool_full = False
        self._waiting: asyncio.Timeout | None = None
        self.batches: asyncio.Queue[Batch] = asyncio.Queue(settings.max_concurrent_writes)

    # -- batching --------------------------------------------------------------------------

    def flush(self) -> None:
        """Cut the current batch now (shutdown), even if the batcher is waiting for points."""
        self._flush_now.set()
        if self._waiting is not None:
            self._waiting.reschedule(asyncio.get_running_loop().time())

    async def run_batcher(self, points: asyncio.Queue[Point]) -> None:
        """Cut ``points`` into batches by size and by time."""
        size, interval = self._settings.batch_size, self._settings.flush_interval_s
        loop = asyncio.get_running_loop()
        while True:
            batch = [await points.get()]
            deadline = loop.time() + interval
            while len(batch) < size and not self._flush_now.is_set():
                if not points.empty():
                    batch.append(points.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining) as self._waiting:
                        batch.append(await points.get())
                except TimeoutError:
                    break
                finally:
                    self._waiting = None
            await self.batches.put(Batch(batch))
            for _ in batch:
                points.task_done()
            if points.empty():
                self._flush_now.clear()

    # -- delivery --------------------------------------------------------------------------

    async def run_worker(self) -> None:
        """Deliver batches until cancelled."""
        while True:
            batch = await self.batches.get()
            try:
                await self._deliver(batch)
            finally:
                self.batches.task_done()

    async def _deliver(self, batch: Batch) -> None:
        rejected, spooled = await self._write_or_spool(batch)
        if not spooled:  # spooled points are counted when the replayer writes them
            self._metrics.points_written.inc(len(batch.points) - len(rejected))
        await self._dead_letter(rejected)
        bad_tickets = {point.ticket for point, _ in rejected}
        self._settle(point.ticket for point in batch.points if point.ticket not in bad_tickets)

    async def _write_or_spool(self, batch: Batch) -> tuple[list[tuple[Point, str]], bool]:
        """Write the batch, or spool it; return the rejected points and whether it was spooled."""
        spool = self._spool
        if spool is not None and not spool.empty():
            # Older data waits in the spool: queue behind it so each series stays in order.
            return await self._spool_or_hold(batch)
        try:
            return await self._write_isolating(batch.points), False
        except SinkUnavailable as exc:
            if spool is None:
                # No spool: retry until the database is back; nothing is acked meanwhile, so
                # the broker keeps holding the data.
                return await self._write_isolating(batch.points, None), False
            log.warning("database unavailable, spooling %d lines: %s", len(batch.points), exc)
            return await self._spool_or_hold(batch)

    async def _spool_or_hold(self, batch: Batch) -> tuple[list[tuple[Point, str]], bool]:
        """Spool the batch; if the spool is full, hold it and retry the database until it
        takes the batch. Holding acks nothing, so the workers block, the queues fill and the
        broker keeps every later message: the documented policy, never a drop. (Waiting for
        spool space instead could wait forever: a batch may be larger than the whole spool.)"""
        assert self._spool is not None
        body = batch.body()
        try:
            await self._spool.append(body)
        except SpoolFull:
            if not self._metrics_spool_full(True):
                log.error(  # noqa: TRY400 - an expected state, a traceback would be noise
                    "spool full (%d bytes pending, batch of %d bytes): not acking until the "
                    "database takes the data; the broker holds new messages",
                    self._spool.stats.bytes,
                    len(body),
                )
            rejected = await self._write_isolating(batch.points, None)
            self._metrics_spool_full(False)
            return rejected, False
        self._metrics_spool_full(False)
        self._metrics.spooled_batches.inc()
        self._update_spool_gauges()
        return [], True

    def _metrics_spool_full(self, full: bool) -> bool:
        """Set the spool-full gauge; return whether it was already set."""
        was = self._spool_full
        self._spool_full = full
        self._metrics.spool_full.set(1 if full else 0)
        return was

    def _update_spool_gauges(self) -> None:
        if self._spool is not None:
            stats = self._spool.stats
            self._metrics.spool_bytes.set(stats.bytes)
            self._metrics.spool_segments.set(stats.segments)

    @property
    def spool_full(self) -> bool:
        """Whether the spool refused data (health is degraded then)."""
        return self._spool_full

    # -- writing with retries and bad-line isolation ----------------------------------------

    def _retrying(self, attempts: int | None = -1) -> AsyncRetrying:
        """Retries for ``SinkUnavailable``; ``attempts=None`` retries forever."""
        settings = self._settings
        backoff = wait_random_exponential(
            multiplier=settings.retry_initial_s, max=settings.retry_max_s
        )

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            if isinstance(error, SinkUnavailable) and error.retry_after is not None:
                return min(error.retry_after, settings.retry_max_s * 12)
            return float(backoff(state))

        if attempts == -1:
            attempts = settings.retry_max_attempts
        return AsyncRetrying(
            stop=stop_never if attempts is None else stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception_type(SinkUnavailable),
            before_sleep=self._count_unavailable,
            reraise=True,
        )

    def _count_unavailable(self, state: RetryCallState) -> None:
        self._metrics.write_errors.labels("unavailable").inc()
        self._metrics.sink_up.set(0)

    async def _write(self, body: bytes, lines: int, retrying: AsyncRetrying) -> None:
        async for attempt in retrying:
            with attempt:
                started = time.perf_counter()
                await self._sink.write(body)
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                self._metrics.batch_lines.observe(lines)
                self._metrics.sink_up.set(1)

    async def _write_isolating(
        self, points: Sequence[Point], attempts: int | None = -1
    ) -> list[tuple[Point, str]]:
        """Write ``points``; on a rejection, bisect; return the rejected points with the reason.

        ``attempts`` as for ``_retrying``, and the same for every half: a caller that retries
        forever must not see ``SinkUnavailable`` because the database went away mid-bisect.
        """
        try:
            await self._write(_body(points), len(points), self._retrying(attempts))
        except SinkRejected as exc:
            self._metrics.write_errors.labels("rejected").inc()
            self._metrics.sink_up.set(1)  # the database answered: it is up
            if len(points) == 1:
                return [(points[0], str(exc))]
            middle = len(points) // 2
            # Bisecting re-sends lines a partial write may have stored: harmless, same points.
            left = await self._write_isolating(points[:middle], attempts)
            right = await self._write_isolating(points[middle:], attempts)
            return left + right
        return []

    async def _dead_letter(self, rejected: list[tuple[Point, str]]) -> None:
        for point, reason in rejected:
            log.warning("database rejected a line: %s", reason)
            topic = f"{point.park}/{point.kind}/{point.device}"
            await self._dead.put(
                DeadLetter(
                    topic,
                    point.line.encode(),
                    Reason.REJECTED_BY_SINK,
                    reason,
                    time.time(),
                    point.ticket,
                )
            )

    # -- spool replay ----------------------------------------------------------------------

    async def run_replayer(self) -> None:
        """Drain the spool into the database, oldest batch first, until cancelled."""
        spool = self._spool
        if spool is None:
            return
        while True:
            await spool.wait_not_empty()
            records = await spool.read(1)
            if not records:
                continue
            record = records[0]
            points = [_replayed_point(line) for line in record.payload.split(b"\n") if line]
            rejected = await self._write_isolating(points, None)
            await self._dead_letter(rejected)
            await spool.commit(record.position)
            self._metrics.replayed_points.inc(len(points) - len(rejected))
            self._metrics.points_written.inc(len(points) - len(rejected))
            self._update_spool_gauges()


def _replayed_point(line: bytes) -> Point:
    """A spooled line as a point; only ``line`` (and the ticket) matter for writing."""
    text = line.decode()
    measurement = text.split(",", 1)[0].split(" ", 1)[0]
    return Point("", measurement, "", 0, {}, text, NO_TICKET)
