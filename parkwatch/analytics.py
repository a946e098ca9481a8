"""The stateful stage: park clocks, the KPI and rule engines, their journal, and what they emit.

::

    points from the decoder (a batch: whatever has queued up)
      -> journal the batch, fsync                   parkwatch/journal.py: survives kill -9
      -> each point: park clock observes it -> engines advance -> engines apply
           (a status without a ts of its own is placed at the park's clock instead, see below)
           KPI engine (kpi/)   -> KpiRecord  -> the rules engine takes it, and a park_kpi point
           rules engine (rules/) -> AlertTransition -> an alerts point, /api/v1/alerts, and
                                    notify at once (as it is emitted, before the batch moves on)
      -> the batch's points -> writer queue          (unchanged: telemetry is written as it came)
      -> derived points (park_kpi, alerts) -> writer queue, each kept in an outbox until the
         writer has written or spooled it (so a snapshot never forgets an unwritten KPI)

Overflow: this stage blocks when the writer queue is full (back-pressure reaches the broker,
nothing is dropped); the notification hand-off never blocks (``notify.submit`` is synchronous and
bounded on its side). A wall-clock ticker advances silent parks (``state.tick_s``) and writes a
snapshot every ``state.snapshot_interval_s``; both take the same lock as batches, so the
journal's order is the order things happened, and a replay is exact.

A status message without a ``ts`` (a last will; ``Point.ts_from_receipt``) carries only its
receive time, which for a simulated park or a replayed backlog is far from the park's event time:
it does not move the park's clock, the engines get it 1 ms after the park's current clock (after
everything heard before it, never on the same millisecond as the status before it), and it is
written at that time too (its line re-stamped). A park never heard from has no clock yet: its
untimed statuses wait (the latest per device, in the snapshot) and reach the engines at the
clock's first reading; they are written at their receive time meanwhile (an MQTT ack cannot wait).

After a crash, :meth:`Analytics.recover` loads the last snapshot and replays the journal after
it: the engines are deterministic, so they reach the state they had. What they emit on the way
is emitted again: the points are identical (same series and timestamp, InfluxDB keeps one), a
notification may be sent twice (at least once, like every other delivery here).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.lineproto import LineEncoder
from parkwatch.clock import ParkClocks
from parkwatch.errors import StateError
from parkwatch.events import (
    ALERTS_MEASUREMENT,
    KPI_MEASUREMENT,
    AlertState,
    AlertTransition,
    Engine,
    KpiRecord,
    Output,
)
from parkwatch.journal import Recovered, StateJournal
from parkwatch.points import NO_TICKET, FieldValue, Point
from parkwatch.settings import StateSettings
from parkwatch.throttle import Throttle

__all__ = ["ALERTS_MEASUREMENT", "DERIVED_TICKETS", "Analytics", "is_derived_ticket"]

log = logging.getLogger(__name__)

MAX_BATCH: Final = 2000
"""Points journaled and applied together (one fsync)."""
DERIVED_TICKETS: Final = -2
"""Derived points get tickets from here downwards; MQTT tickets are >= 0, NO_TICKET is -1."""
JOURNAL_RETRY_S: Final = (0.1, 5.0)
"""Backoff bounds while the journal cannot be written (the batch is held, nothing acked)."""
ERROR_LOG_INTERVAL_S: Final = 30.0

_ALERT_TAGS: Final = ("alertname", "connector", "device", "kind", "park", "severity")
_FIRE_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 10.0, 30.0
)  # fmt: skip
_NOTIFIED: Final = frozenset({AlertState.FIRING, AlertState.RESOLVED})


def is_derived_ticket(ticket: int) -> bool:
    """Whether ``ticket`` belongs to a point this stage derived (not to an MQTT message)."""
    return ticket <= DERIVED_TICKETS


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.journal_records = Counter(
            "parkwatch_state_journal_records", "Records appended to the state journal.", registry=r
        )
        self.journal_errors = Counter(
            "parkwatch_state_journal_errors", "Failed state journal writes.", registry=r
        )
        self.snapshot_seconds = Histogram(
            "parkwatch_state_snapshot_seconds", "Time to write a state snapshot.", registry=r
        )
        self.snapshot_bytes = Gauge(
            "parkwatch_state_snapshot_bytes", "Size of the last state snapshot.", registry=r
        )
        self.replayed_records = Counter(
            "parkwatch_state_replayed_records",
            "Journal records replayed at start to rebuild the KPI and rule state.",
            registry=r,
        )
        self.engine_errors = Counter(
            "parkwatch_engine_errors",
            "Exceptions raised by an engine while handling one point (the point is skipped).",
            ["engine"],
            registry=r,
        )
        self.outputs = Counter(
            "parkwatch_engine_outputs",
            "KPI records and alert transitions emitted.",
            ["type"],
            registry=r,
        )
        self.outbox = Gauge(
            "parkwatch_derived_points_unwritten",
            "Derived points (park_kpi, alerts) handed to the writer and not yet safe.",
            registry=r,
        )
        self.fire_latency = Histogram(
            "parkwatch_rule_fire_latency_seconds",
            "Seconds from receiving the MQTT message that made an alert fire or resolve to the "
            "transition being emitted (handed to notifications).",
            buckets=_FIRE_BUCKETS,
            registry=r,
        )


class Analytics:
    """Runs the engines over the point stream with durable state; see the module docstring."""

    def __init__(
        self,
        settings: StateSettings,
        engines: Sequence[Engine],
        clocks: ParkClocks,
        registry: CollectorRegistry,
        *,
        listening: Callable[[], bool] = lambda: True,
        notify: Callable[[AlertTransition], None] | None = None,
        recovered: Callable[[], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._engines = list(engines)
        self._clocks = clocks
        self._listening = listening
        self._notify = notify
        self._on_recovered = recovered
        self._wall = wall
        self._journal = StateJournal(settings.directory)
        self._lock = asyncio.Lock()
        self._metrics = _Metrics(registry)
        self._encoder = LineEncoder()
        self._advanced: dict[str, int] = {}  # each park's clock when engines last advanced
        # Untimed statuses of parks without a clock yet: park -> (kind, device) -> the latest.
        self._held: dict[str, dict[tuple[str, str], Point]] = {}
        self._outbox: dict[int, str] = {}  # derived ticket -> line, until written or spooled
        self._next_ticket = DERIVED_TICKETS
        self._observers: list[Callable[[Output], None]] = []
        self._received_at = 0.0  # the receipt of the message being applied (0: none)
        self._error_logs = {engine.name: Throttle(ERROR_LOG_INTERVAL_S) for engine in engines}
        self._last_snapshot = 0.0
        self.journal_ok = True
        """False while the journal cannot be written (health reports it)."""
        self._opened = False
        self._recovered = Recovered()
        self._ready = asyncio.Event()
        self.ticks = 0
        """Wall-clock ticks so far."""

    def observe(self, observer: Callable[[Output], None]) -> None:
        """Call ``observer`` with every KPI record and alert transition (the demo's view)."""
        self._observers.append(observer)

    # -- start and stop -------------------------------------------------------------------

    async def open(self) -> None:
        """Lock and read the state directory (fails fast if another collector holds it)."""
        self._recovered = await self._journal.open()
        self._opened = True

    async def recover(self, out: asyncio.Queue[Point]) -> int:
        """Load the snapshot and replay the journal after it; return the records replayed.

        ``run`` does this first, with the writer already running (replayed outputs go to it),
        then calls ``recovered`` (given to the constructor), before any live point.
        """
        recovered, self._recovered = self._recovered, Recovered()
        last_wall = self._wall()
        if recovered.state is not None:
            last_wall = self._restore(recovered.state)
            for line in recovered.state.get("outbox", []):
                await out.put(self._derived(str(line)))
        for record in recovered.records:
            last_wall = float(record["wall"])
            outputs = self._apply_record(record)
            await self._emit(outputs, out)
        self._metrics.replayed_records.inc(len(recovered.records))
        # Nothing was heard between the last record and now: the clocks must not run over it.
        self._clocks.pause(last_wall)
        if recovered.records:
            log.info(
                "state: rebuilt from snapshot #%d and %d journal records (%d torn tails)",
                recovered.seq,
                len(recovered.records),
                recovered.torn,
            )
        await self.checkpoint()
        if self._on_recovered is not None:
            # Before the first live point: the service seeds the notifications with what fires.
            self._on_recovered()
        self._ready.set()
        return len(recovered.records)

    async def close(self) -> None:
        """Stop the clocks, write a final snapshot, release the journal."""
        if not self._opened:
            return
        async with self._lock:
            self._clocks.pause(self._wall())
        try:
            await self.checkpoint()
        finally:
            self._opened = False
            await self._journal.close()

    # -- the stage ----------------------------------------------------------------------

    async def run(self, inbox: asyncio.Queue[Point], out: asyncio.Queue[Point]) -> None:
        """Recover, then the stage loop: journal, apply, pass on; see the module docstring."""
        await self.recover(out)
        while True:
            batch = [await inbox.get()]
            while len(batch) < MAX_BATCH and not inbox.empty():
                batch.append(inbox.get_nowait())
            async with self._lock:
                wall = self._wall()
                record = {"wall": wall, "listen": self._listening(), "points": _encode(batch)}
                await self._append(record)
                outputs = self._apply_record(record, batch)
            for point in batch:
                if out.full():
                    await out.put(point)
                else:
                    out.put_nowait(point)  # no coroutine while there is room (per point)
            await self._emit(outputs, out)
            for _ in batch:
                inbox.task_done()

    async def run_ticker(self, out: asyncio.Queue[Point]) -> None:
        """Advance silent parks with the wall clock; snapshot now and then."""
        await self._ready.wait()
        while True:
            await asyncio.sleep(self._settings.tick_s)
            self.ticks += 1
            outputs: list[Output] = []
            async with self._lock:
                listen = self._listening()
                if listen or self._clocks.listening:
                    record = {"wall": self._wall(), "listen": listen, "tick": True}
                    await self._append(record)
                    outputs = self._apply_record(record)
            await self._emit(outputs, out)
            if self._wall() - self._last_snapshot >= self._settings.snapshot_interval_s:
                await self.checkpoint()

    async def checkpoint(self) -> None:
        """Write a snapshot of everything (clocks, engines, unwritten derived points)."""
        async with self._lock:
            wall = self._wall()
            started = time.perf_counter()
            state = {
                "wall": wall,
                "listening": self._clocks.listening,
                "clocks": self._clocks.snapshot(wall),
                "advanced": dict(self._advanced),
                "held": _encode([p for held in self._held.values() for p in held.values()]),
                "engines": {engine.name: engine.snapshot() for engine in self._engines},
                "outbox": list(self._outbox.values()),
            }
            size = await self._journal.checkpoint(state, wall)
            self._metrics.snapshot_seconds.observe(time.perf_counter() - started)
            self._metrics.snapshot_bytes.set(size)
            self._last_snapshot = wall

    def settled(self, tickets: Iterable[int]) -> None:
        """Derived points that are now safe (written, spooled or dead-lettered)."""
        outbox = self._outbox
        for ticket in tickets:
            outbox.pop(ticket, None)
        self._metrics.outbox.set(len(outbox))

    # -- applying ---------------------------------------------------------------------------

    def _restore(self, state: dict[str, Any]) -> float:
        wall = float(state["wall"])
        self._clocks.restore(state["clocks"], wall)
        if state.get("listening"):
            self._clocks.resume(wall)
        self._advanced = {park: int(ms) for park, ms in state.get("advanced", {}).items()}
        self._held = {}
        for point in _decode(state.get("held", [])):
            self._hold(point)
        engines = state.get("engines", {})
        for engine in self._engines:
            if engine.name in engines:
                engine.restore(engines[engine.name])
        return wall

    def _apply_record(
        self, record: dict[str, Any], batch: list[Point] | None = None
    ) -> list[Output]:
        """Apply one journal record (live, or replayed: then ``batch`` is decoded from it).

        Untimed statuses placed at their park's clock replace their originals in ``batch``.
        """
        outputs: list[Output] = []
        emit = self._emitter(outputs)
        wall = float(record["wall"])
        clocks = self._clocks
        if record.get("listen", True) != clocks.listening:
            if record.get("listen", True):
                clocks.resume(wall)
            else:
                clocks.pause(wall)
        if record.get("tick"):
            self._tick(wall, emit)
            return outputs
        points = batch if batch is not None else _decode(record.get("points", []))
        held = self._held
        for index, point in enumerate(points):
            self._received_at = point.received_at  # what a transition's latency counts from
            if point.ts_from_receipt:
                clock = clocks.now(point.park, wall)
                if clock is None:
                    self._hold(point)
                    continue
                # Just after everything heard before it: never at the same time as the status
                # before it (InfluxDB would keep one of the two).
                point = point.placed_at(clock + 1)  # noqa: PLW2901 - this point, placed
                if batch is not None:
                    batch[index] = point  # written at the park's clock too
            now = clocks.observe(point.park, point.ts_ms, wall)
            self._advance(point.park, now, emit)
            if held and point.park in held:
                self._release(point.park, now, emit)
            self._apply(point, emit)
        self._received_at = 0.0
        return outputs

    def _tick(self, wall: float, emit: Callable[[Output], None]) -> None:
        clocks = self._clocks
        for park in list(clocks.parks()):
            now = clocks.now(park, wall)
            if now is not None:
                self._advance(park, now, emit)

    def _hold(self, point: Point) -> None:
        """Keep an untimed status of a park without a clock (a later one supersedes it)."""
        self._held.setdefault(point.park, {})[point.device_kind, point.device] = point

    def _release(self, park: str, now: int, emit: Callable[[Output], None]) -> None:
        """The park's clock has started at ``now``: its held statuses reach the engines there."""
        for status in self._held.pop(park).values():
            self._apply(status.placed_at(now), emit)

    def _apply(self, point: Point, emit: Callable[[Output], None]) -> None:
        for engine in self._engines:
            try:
                engine.apply(point, emit)
            except Exception as exc:  # noqa: BLE001 - one bad point or rule must not stop the stage
                self._engine_failed(engine, "apply", point, exc)

    def _advance(self, park: str, now: int, emit: Callable[[Output], None]) -> None:
        if now <= self._advanced.get(park, -1):
            return
        self._advanced[park] = now
        for engine in self._engines:
            try:
                engine.advance(park, now, emit)
            except Exception as exc:  # noqa: BLE001 - counted and logged in _engine_failed
                self._engine_failed(engine, "advance", None, exc)

    def _emitter(self, outputs: list[Output]) -> Callable[[Output], None]:
        engines = self._engines

        def emit(output: Output) -> None:
            outputs.append(output)
            self._announce(output)
            if isinstance(output, KpiRecord):
                for engine in engines:
                    try:
                        engine.take(output, emit)
                    except Exception as exc:  # noqa: BLE001 - counted and logged in _engine_failed
                        self._engine_failed(engine, "take", None, exc)

        return emit

    def _engine_failed(
        self, engine: Engine, doing: str, point: Point | None, exc: Exception
    ) -> None:
        self._metrics.engine_errors.labels(engine.name).inc()
        if self._error_logs[engine.name].due() is not None:
            where = f" on {point.park}/{point.kind}/{point.device}" if point else ""
            log.error(
                "%s engine failed in %s%s (further errors counted in "
                "parkwatch_engine_errors_total, logged at most every %.0f s)",
                engine.name,
                doing,
                where,
                ERROR_LOG_INTERVAL_S,
                exc_info=exc,
            )

    async def _append(self, record: dict[str, Any]) -> None:
        """Journal ``record``, retrying until the disk takes it (nothing moves on meanwhile)."""
        delay = JOURNAL_RETRY_S[0]
        while True:
            try:
                await self._journal.append(record)
            except StateError as exc:
                self._metrics.journal_errors.inc()
                if self.journal_ok:
                    log.error(  # noqa: TRY400 - the message says all; retried below
                        "%s; holding the batch (not acking) and retrying", exc
                    )
                self.journal_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, JOURNAL_RETRY_S[1])
                continue
            if not self.journal_ok:
                log.warning("state journal writable again")
            self.journal_ok = True
            self._metrics.journal_records.inc()
            return

    # -- what the engines emit ----------------------------------------------------------------

    def _announce(self, output: Output) -> None:
        """Hand an output to the observers and, a firing or resolved alert, to notifications.

        At once, as the engine emits it (both hand-offs are synchronous and never block): the
        rest of the batch and a full writer queue (back-pressure) do not delay an alert.
        """
        for observer in self._observers:
            try:
                observer(output)
            except Exception:
                log.exception("output observer failed")
        if isinstance(output, KpiRecord) or output.alert.state not in _NOTIFIED:
            return
        if self._received_at:
            latency = time.time() - self._received_at
            self._metrics.fire_latency.observe(max(0.0, latency))
        if self._notify is not None:
            try:
                self._notify(output)
            except Exception:
                log.exception("notification hand-off failed")

    async def _emit(self, outputs: list[Output], out: asyncio.Queue[Point]) -> None:
        """The outputs' points to the writer (announced already, see ``_announce``)."""
        for output in outputs:
            if isinstance(output, KpiRecord):
                self._metrics.outputs.labels("kpi").inc()
                line = self._kpi_line(output)
                if line is not None:
                    await out.put(self._derived(line))
                continue
            self._metrics.outputs.labels(output.alert.state.value).inc()
            if output.alert.state in _NOTIFIED:
                await out.put(self._derived(self._alert_line(output)))

    def _derived(self, line: str) -> Point:
        ticket = self._next_ticket
        self._next_ticket -= 1
        self._outbox[ticket] = line
        self._metrics.outbox.set(len(self._outbox))
        return Point("", "derived", "", 0, {}, line, ticket)

    def _kpi_line(self, record: KpiRecord) -> str | None:
        fields: dict[str, FieldValue] = {
            name: float(value) for name, value in record.fields.items() if math.isfinite(value)
        }
        if not fields:
            return None
        tags = (("park", record.park), ("window", record.window))
        return self._encoder.encode(KPI_MEASUREMENT, tags, fields, record.start_ms)

    def _alert_line(self, transition: AlertTransition) -> str:
        alert = transition.alert
        labels = alert.labels
        tags = tuple((key, labels[key]) for key in _ALERT_TAGS if labels.get(key))
        fields: dict[str, FieldValue] = {"state": alert.state.value}
        if alert.value is not None and math.isfinite(alert.value):
            fields["value"] = float(alert.value)
        summary = alert.annotations.get("summary")
        if summary:
            fields["summary"] = summary
        return self._encoder.encode(ALERTS_MEASUREMENT, tags, fields, transition.at_ms)


def _encode(points: Sequence[Point]) -> list[list[Any]]:
    """The journal's form of points: just what the engines read (an 8th item, true, marks a
    ``ts_from_receipt`` status; rows without it are timed, as in journals written before it)."""
    return [
        [p.park, p.kind, p.device, p.connector, p.device_kind, p.ts_ms, p.fields]
        if not p.ts_from_receipt
        else [p.park, p.kind, p.device, p.connector, p.device_kind, p.ts_ms, p.fields, True]
        for p in points
    ]


def _decode(rows: list[list[Any]]) -> list[Point]:
    return [
        Point(
            park, kind, device, int(ts), fields, "", NO_TICKET, connector, device_kind, bool(rest)
        )
        for park, kind, device, connector, device_kind, ts, fields, *rest in rows
    ]
