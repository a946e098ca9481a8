"""Writer: points -> batches -> the database, or the spool; then the messages are acked.

Three kinds of task, all owned by the service's TaskGroup:

* ``run_batcher`` cuts the point stream into batches of ``batch_size`` lines, or whatever arrived
  within ``flush_interval_s`` of a batch's first line. The batch queue holds
  ``max_concurrent_writes`` batches; when it is full the batcher blocks, the point queue fills,
  and back-pressure reaches the MQTT reader (nothing is dropped).
* ``run_worker`` (``max_concurrent_writes`` of them) delivers a batch: written with retries
  (collector/sinkwriter.py), or appended to the spool once retries are exhausted or while the
  spool still holds older data (keeping order). Lines the database refuses (known before the
  write, or isolated by bisecting a refused batch) are dead-lettered and the good ones written.
  Only then are the batch's messages acked.
* ``run_replayer`` drains the spool into the database, oldest first, retrying until it succeeds;
  a failing disk (a read, or the cursor on a full disk) is retried, never fatal.

When the spool refuses a batch (full, or its disk failing, e.g. ENOSPC), the batch is held and
retried against the database until it is written; nothing is acked meanwhile, so back-pressure
reaches the broker. Each held batch counts: health is degraded while any is held.

Without a spool the worker retries until the database is back, acking nothing meanwhile: the
broker keeps the messages of our persistent session.

Refusals and spool failures are logged once per ``failure_log_interval_s`` with counts, not once
per line or batch; a cardinality limit comes with an operator hint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from collector.messages import DeadLetter, Reason
from collector.metrics import Metrics
from collector.refusals import Refused
from collector.sink import Sink
from collector.sinkwriter import Rejected, SinkWriter, body
from collector.spool import Spool
from parkwatch.errors import SinkUnavailable, SpoolError, SpoolFull
from parkwatch.points import NO_TICKET, Point
from parkwatch.settings import WriterSettings
from parkwatch.throttle import Throttle

__all__ = ["SERIES_LIMIT_HINT", "Batch", "Writer"]

log = logging.getLogger(__name__)

SERIES_LIMIT_HINT = (
    "InfluxDB refuses new series: its max-series-per-database or max-values-per-tag limit is "
    "reached ([data] in influxdb.conf; InfluxDB 1.6 defaults 1000000 and 100000, 0 disables). "
    "Raise the limit or drop series no longer needed; until then new devices are dead-lettered "
    "as series_limit"
)


@dataclass(slots=True)
class Batch:
    """Points written (or spooled) together."""

    points: list[Point]

    def body(self) -> bytes:
        """Line protocol, one point per line."""
        return body(self.points)


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
        self._metrics = metrics
        self._settle = settle
        self._dead = dead_letters
        self._spool = spool
        self._flush_now = asyncio.Event()
        self._held = 0  # batches the spool refused, held unacked until the database takes them
        self._spool_error = ""
        self._sink_writer = SinkWriter(settings, sink, metrics, spool)
        interval = settings.failure_log_interval_s
        self._spool_log = Throttle(interval)
        self._replay_log = Throttle(interval)
        self._refusal_logs = {reason: Throttle(interval) for reason in Reason.ALL}
        self._waiting: asyncio.Timeout | None = None
        self.batches: asyncio.Queue[Batch] = asyncio.Queue(settings.max_concurrent_writes)
        if spool is not None:  # read at every scrape: right from the start, never stale
            metrics.spool_bytes.set_function(lambda: spool.stats.bytes)
            metrics.spool_segments.set_function(lambda: spool.stats.segments)

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

    async def _write_or_spool(self, batch: Batch) -> tuple[Rejected, bool]:
        """Write the batch, or spool it; return the rejected points and whether it was spooled."""
        spool = self._spool
        if spool is not None and not spool.empty():
            # Older data waits in the spool: queue behind it so each series stays in order.
            return await self._spool_or_hold(batch)
        try:
            return await self._sink_writer.write_isolating(batch.points), False
        except SinkUnavailable as exc:
            if spool is None:
                # No spool: retry until the database is back; nothing is acked meanwhile, so
                # the broker keeps holding the data.
                return await self._sink_writer.write_isolating(batch.points, None), False
            log.warning("database unavailable, spooling %d lines: %s", len(batch.points), exc)
            return await self._spool_or_hold(batch)

    async def _spool_or_hold(self, batch: Batch) -> tuple[Rejected, bool]:
        """Spool the batch; if the spool refuses it (full, or its disk failing), hold it and
        retry the database until it takes the batch. Holding acks nothing, so the workers block,
        the queues fill and the broker keeps every later message: the documented policy, never
        a drop. (Waiting for spool space instead could wait forever: a batch may be larger than
        the whole spool, and a full disk may stay full.)"""
        assert self._spool is not None
        body = batch.body()
        try:
            await self._spool.append(body)
        except SpoolError as exc:
            return await self._hold(batch, len(body), exc), False
        self._metrics.spooled_batches.inc()
        return [], True

    async def _hold(self, batch: Batch, size: int, exc: SpoolError) -> Rejected:
        assert self._spool is not None
        if not isinstance(exc, SpoolFull):
            self._metrics.spool_errors.labels("append").inc()
        if not self._held:  # a new episode: say so at once, then every interval while it lasts
            self._spool_log.restart()
        self._held += 1
        self._metrics.spool_full.set(1)
        self._spool_error = (
            "full: not acking" if isinstance(exc, SpoolFull) else f"failing: not acking: {exc}"
        )
        if self._spool_log.due() is not None:
            what = "spool full" if isinstance(exc, SpoolFull) else f"spool failing ({exc})"
            log.error(
                "%s (%d bytes pending, batch of %d bytes): not acking until the database "
                "takes the data; the broker holds new messages",
                what,
                self._spool.stats.bytes,
                size,
            )
        try:
            return await self._sink_writer.write_isolating(batch.points, None)
        finally:
            self._held -= 1
            if not self._held:
                self._metrics.spool_full.set(0)

    @property
    def spool_full(self) -> bool:
        """Whether a batch is held because the spool refused it (health is degraded then)."""
        return self._held > 0

    @property
    def spool_problem(self) -> str | None:
        """Why batches are held unacked (spool full or failing), or None while none is."""
        return self._spool_error if self._held else None

    @property
    def write_failure(self) -> str | None:
        """For how long and why writes to the database fail, or None while they succeed."""
        return self._sink_writer.write_failure

    # -- dead letters ----------------------------------------------------------------------

    async def _dead_letter(self, rejected: Rejected) -> None:
        by_reason: dict[str, list[Refused]] = {}
        for point, refused in rejected:
            by_reason.setdefault(refused.reason, []).append(refused)
            topic = f"{point.park}/{point.kind}/{point.device}"
            await self._dead.put(
                DeadLetter(
                    topic,
                    point.line.encode(),
                    refused.reason,
                    refused.detail,
                    time.time(),
                    point.ticket,
                )
            )
        for reason, refusals in by_reason.items():
            held_back = self._refusal_logs[reason].due()
            if held_back is None:
                continue
            hint = f" ({SERIES_LIMIT_HINT})" if reason == Reason.SERIES_LIMIT else ""
            log.warning(
                "the database refuses %d lines, dead-lettered as %s (%d such batches not logged "
                "before): %s%s",
                len(refusals),
                reason,
                held_back,
                refusals[0].detail,
                hint,
            )

    # -- spool replay ----------------------------------------------------------------------

    async def run_replayer(self) -> None:
        """Drain the spool into the database, oldest batch first, until cancelled.

        A disk error is logged (once per interval), counted and retried with backoff: the
        records stay in the spool, and a cursor the disk refused is kept in memory.
        """
        spool = self._spool
        if spool is None:
            return
        initial, longest = self._settings.retry_initial_s, self._settings.retry_max_s
        wait = initial
        while spool.is_open:
            try:
                await self._replay_next(spool)
            except SpoolError as exc:
                if not spool.is_open:
                    return  # closed at shutdown
                # Doubled up to the longest, never past it: 2**failures overflowed a float
                # after ~1 030 failures in a row (85 min of a failing disk) and stopped replay.
                wait = min(longest, wait * 2)
                if self._replay_log.due() is not None:
                    log.error("spool replay failing, will retry: %s", exc)  # noqa: TRY400
                await asyncio.sleep(wait)
            else:
                wait = initial

    async def _replay_next(self, spool: Spool) -> None:
        await spool.wait_not_empty()
        try:
            records = await spool.read(1)
        except SpoolError:
            if spool.is_open:
                self._metrics.spool_errors.labels("read").inc()
            raise
        if not records:
            return
        record = records[0]
        points = [_replayed_point(line) for line in record.payload.split(b"\n") if line]
        rejected = await self._sink_writer.write_isolating(points, None)
        await self._dead_letter(rejected)
        try:
            durable = await spool.commit(record.position)
        except SpoolError:
            self._metrics.spool_errors.labels("commit").inc()
            raise
        if not durable:  # consumed all the same; the spool writes the cursor when it can
            self._metrics.spool_errors.labels("commit").inc()
        self._metrics.replayed_points.inc(len(points) - len(rejected))
        self._metrics.points_written.inc(len(points) - len(rejected))


def _replayed_point(line: bytes) -> Point:
    """A spooled line as a point; only ``line`` (and the ticket) matter for writing."""
    text = line.decode()
    measurement = text.split(",", 1)[0].split(" ", 1)[0]
    return Point("", measurement, "", 0, {}, text, NO_TICKET)
