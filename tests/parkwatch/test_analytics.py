"""The stateful stage: journal before ack, deterministic replay after a crash, the outbox.

The engines here are small fakes of the ``Engine`` protocol (the real KPI and rule engines have
their own tests); what is under test is the stage around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from parkwatch.analytics import Analytics, is_derived_ticket
from parkwatch.clock import ParkClocks
from parkwatch.events import (
    Alert,
    AlertState,
    AlertTransition,
    Emit,
    KpiRecord,
)
from parkwatch.points import Point
from parkwatch.settings import StateSettings
from tests.helpers import until

MINUTE = 60_000


class MinuteCounter:
    """Counts points per park and event-time minute; emits a KPI record as each minute closes."""

    name = "counter"

    def __init__(self, clocks: ParkClocks) -> None:
        self.clocks = clocks
        self.counts: dict[str, dict[int, int]] = defaultdict(dict)
        self.late = 0

    def apply(self, point: Point, emit: Emit) -> None:
        minute = point.ts_ms // MINUTE
        counts = self.counts[point.park]
        if counts and minute < max(counts):
            self.late += 1  # a minute already closed
            return
        counts[minute] = counts.get(minute, 0) + 1

    def advance(self, park: str, now_ms: int, emit: Emit) -> None:
        counts = self.counts[park]
        for minute in sorted(m for m in counts if (m + 1) * MINUTE <= now_ms):
            if minute == max(counts):
                counts[minute + 1] = 0  # keep a marker so later points of it count as late
            emit(KpiRecord(park, "1m", minute * MINUTE, (minute + 1) * MINUTE,
                           {"points": float(counts.pop(minute))}))  # fmt: skip

    def take(self, record: KpiRecord, emit: Emit) -> None:
        """Not interested in KPI records."""

    def snapshot(self) -> dict[str, Any]:
        return {"counts": {p: {str(m): n for m, n in c.items()} for p, c in self.counts.items()},
                "late": self.late}  # fmt: skip

    def restore(self, data: dict[str, Any]) -> None:
        self.counts = defaultdict(dict)
        for park, counts in data["counts"].items():
            self.counts[park] = {int(m): n for m, n in counts.items()}
        self.late = data["late"]


class Threshold:
    """Fires while a minute's KPI count exceeds 3; the rules engine in miniature."""

    name = "threshold"

    def __init__(self) -> None:
        self.firing: set[str] = set()

    def apply(self, point: Point, emit: Emit) -> None:
        if point.fields.get("boom"):
            raise RuntimeError("a rule bug")

    def advance(self, park: str, now_ms: int, emit: Emit) -> None:
        """No timers."""

    def take(self, record: KpiRecord, emit: Emit) -> None:
        high = record.fields["points"] > 3
        if high == (record.park in self.firing):
            return
        state = AlertState.FIRING if high else AlertState.RESOLVED
        (self.firing.add if high else self.firing.discard)(record.park)
        labels = {"alertname": "Busy", "park": record.park, "severity": "warning"}
        alert = Alert(labels, {"summary": f"{record.fields['points']:.0f} points"}, state,
                      record.fields["points"], record.start_ms)  # fmt: skip
        previous = AlertState.PENDING if high else AlertState.FIRING
        emit(AlertTransition(alert, previous, record.end_ms))

    def snapshot(self) -> dict[str, Any]:
        return {"firing": sorted(self.firing)}

    def restore(self, data: dict[str, Any]) -> None:
        self.firing = set(data["firing"])


class Wall:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """An Analytics stage with fake engines, its queues, and a consumer in the writer's place."""

    def __init__(self, directory: Path, wall: Wall, *, settle: bool = True) -> None:
        self.clocks = ParkClocks()
        self.counter = MinuteCounter(self.clocks)
        self.threshold = Threshold()
        self.notified: list[AlertTransition] = []
        self.stage = Analytics(
            StateSettings(directory=directory, tick_s=0.01, snapshot_interval_s=3600),
            [self.counter, self.threshold],
            self.clocks,
            CollectorRegistry(),
            notify=self.notified.append,
            wall=wall,
        )
        self.inbox: asyncio.Queue[Point] = asyncio.Queue(100)
        self.out: asyncio.Queue[Point] = asyncio.Queue(1000)
        self.written: list[Point] = []
        self.settle = settle

    async def consume(self) -> None:
        while True:
            point = await self.out.get()
            self.written.append(point)
            if self.settle and is_derived_ticket(point.ticket):
                self.stage.settled([point.ticket])
            self.out.task_done()

    @contextlib.asynccontextmanager
    async def running(self, *, ticker: bool = False, crash: bool = False) -> AsyncIterator[Rig]:
        """Run the stage; at the end close it, or with ``crash`` just stop (as kill -9 would)."""
        await self.stage.open()
        tasks = [asyncio.create_task(self.stage.run(self.inbox, self.out)),
                 asyncio.create_task(self.consume())]  # fmt: skip
        if ticker:
            tasks.append(asyncio.create_task(self.stage.run_ticker(self.out)))
        try:
            await until(self.stage._ready.is_set, what="recovered")
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if crash:
                self.stage._journal._close()  # only the flock and fd a dead process would drop
            else:
                await self.stage.close()

    async def feed(self, points: list[Point]) -> None:
        for point in points:
            await self.inbox.put(point)
        await self.inbox.join()
        await self.out.join()

    def lines(self, measurement: str) -> list[str]:
        return [p.line for p in self.written if p.line.startswith(measurement + ",")]


def reading(park: str, ts_ms: int, ticket: int = 0, **fields: Any) -> Point:
    return Point(park, "microgrid", "mg-1", ts_ms, {"pv_kw": 1.0, **fields}, f"t {ts_ms}", ticket)


def stream(park: str, start_ms: int, per_minute: list[int]) -> list[Point]:
    """``per_minute[i]`` points in minute i, evenly spread."""
    return [
        reading(park, start_ms + i * MINUTE + k * (MINUTE // count))
        for i, count in enumerate(per_minute)
        for k in range(count)
    ]


async def test_points_pass_through_and_kpis_and_alerts_follow(tmp_path: Path) -> None:
    async with Rig(tmp_path, Wall()).running() as rig:
        points = [*stream("p", 0, [2, 5, 1]), reading("p", 3 * MINUTE)]
        await rig.feed(points)
    telemetry = [p for p in rig.written if not is_derived_ticket(p.ticket)]
    assert telemetry == points  # the same objects, in order
    assert rig.lines("park_kpi") == [
        "park_kpi,park=p,window=1m points=2.0 0",
        "park_kpi,park=p,window=1m points=5.0 60000",
        "park_kpi,park=p,window=1m points=1.0 120000",
    ]
    assert rig.lines("alerts") == [
        'alerts,alertname=Busy,park=p,severity=warning state="firing",value=5.0,'
        'summary="5 points" 120000',
        'alerts,alertname=Busy,park=p,severity=warning state="resolved",value=1.0,'
        'summary="1 points" 180000',
    ]
    assert [t.alert.state for t in rig.notified] == [AlertState.FIRING, AlertState.RESOLVED]


async def test_a_crash_rebuilds_the_same_state_from_snapshot_and_journal(tmp_path: Path) -> None:
    wall = Wall()
    first = stream("p", 0, [3, 4, 2, 6]) + stream("q", 0, [1, 1])
    second = stream("p", 4 * MINUTE, [2, 7]) + stream("q", 2 * MINUTE, [5])
    reference = Rig(tmp_path / "reference", wall)
    async with reference.running():
        await reference.feed(first)
        await reference.feed(second)

    crashed = Rig(tmp_path / "state", wall)
    async with crashed.running(crash=True):
        await crashed.feed(first)
        await crashed.stage.checkpoint()
        await crashed.feed(second)
    # The process died; a new one recovers from the same directory.

    restarted = Rig(tmp_path / "state", wall)
    async with restarted.running():
        assert restarted.counter.snapshot() == reference.counter.snapshot()
        assert restarted.threshold.snapshot() == reference.threshold.snapshot()
        assert restarted.clocks.snapshot(wall.now) == reference.clocks.snapshot(wall.now)
    # Replay re-emitted what the journal held after the snapshot: identical lines.
    assert set(restarted.lines("park_kpi")) <= set(crashed.lines("park_kpi"))
    assert restarted.lines("park_kpi")


async def test_kpis_not_yet_written_survive_a_restart(tmp_path: Path) -> None:
    wall = Wall()
    lost = Rig(tmp_path, wall, settle=False)  # the writer never confirms: crash before writing
    async with lost.running(crash=True):
        await lost.feed(stream("p", 0, [2, 1]))
        await lost.stage.checkpoint()
    assert lost.lines("park_kpi") == ["park_kpi,park=p,window=1m points=2.0 0"]

    again = Rig(tmp_path, wall)
    async with again.running():
        await until(lambda: bool(again.lines("park_kpi")), what="the KPI re-emitted")
    assert again.lines("park_kpi") == lost.lines("park_kpi")


async def test_silent_parks_advance_with_ticks_while_listening(tmp_path: Path) -> None:
    wall = Wall()
    listening = {"on": False}
    rig = Rig(tmp_path, wall)
    rig.stage._listening = lambda: listening["on"]
    async with rig.running(ticker=True):
        await rig.feed([reading("p", 10_000)])
        wall.now += 120  # two minutes pass, but nobody is listening
        await until(lambda: rig.stage.ticks >= 3, what="a few ticks")
        assert rig.clocks.now("p", wall.now) == 10_000
        assert rig.lines("park_kpi") == []
        listening["on"] = True
        await until(lambda: rig.clocks.listening, what="listening")
        wall.now += 60
        await until(lambda: bool(rig.lines("park_kpi")), what="minute 0 closed by silence")
    assert rig.lines("park_kpi") == ["park_kpi,park=p,window=1m points=1.0 0"]


async def test_an_engine_error_costs_one_point_not_the_stage(tmp_path: Path) -> None:
    async with Rig(tmp_path, Wall()).running() as rig:
        await rig.feed([reading("p", 1_000, boom=True), reading("p", 2_000)])
        assert len([p for p in rig.written if p.ticket == 0]) == 2  # both still written
        assert rig.counter.counts["p"] == {0: 2}


@pytest.mark.parametrize("fails", [1, 3])
async def test_a_journal_that_cannot_be_written_holds_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: int
) -> None:
    """Nothing moves towards the writer (and so the ack) until its journal record is durable."""
    async with Rig(tmp_path, Wall()).running() as rig:
        journal = rig.stage._journal
        real_write = journal._write
        failures = {"left": fails}

        def flaky(line: bytes) -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise OSError(28, "No space left on device")
            real_write(line)

        monkeypatch.setattr(journal, "_write", flaky)
        await rig.inbox.put(reading("p", 1_000))
        await until(lambda: not rig.stage.journal_ok, what="the failure noticed")
        assert rig.written == []  # held
        await until(lambda: len(rig.written) == 1, what="written once the disk takes it")
        assert rig.stage.journal_ok


async def test_an_alert_is_notified_as_it_fires_even_while_the_writer_queue_is_full(
    tmp_path: Path,
) -> None:
    """Writer back-pressure (a full queue towards the writer) must not hold a notification
    back, and the time from the message's receipt to the transition is measured."""
    clocks = ParkClocks()
    registry = CollectorRegistry()
    notified: list[AlertTransition] = []
    stage = Analytics(
        StateSettings(directory=tmp_path, snapshot_interval_s=3600),
        [MinuteCounter(clocks), Threshold()],
        clocks,
        registry,
        notify=notified.append,
        wall=Wall(),
    )
    inbox: asyncio.Queue[Point] = asyncio.Queue(100)
    out: asyncio.Queue[Point] = asyncio.Queue(1)
    await stage.open()
    running = asyncio.create_task(stage.run(inbox, out))
    try:
        await until(stage._ready.is_set, what="recovered")
        out.put_nowait(reading("p", 0))  # the writer is stuck: nothing leaves this queue
        received = time.time() - 0.5
        for point in stream("p", 0, [5, 1]):
            inbox.put_nowait(dataclasses.replace(point, received_at=received))
        await until(lambda: bool(notified), what="the alert notified", alive=running)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await stage.close()
    assert [t.alert.state for t in notified] == [AlertState.FIRING]
    assert out.full()
    count = registry.get_sample_value("parkwatch_rule_fire_latency_seconds_count")
    total = registry.get_sample_value("parkwatch_rule_fire_latency_seconds_sum")
    assert count == 1
    assert total is not None
    assert 0.5 <= total < 60
