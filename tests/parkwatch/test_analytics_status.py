"""Status messages without a ``ts`` of their own (a last will, the bare words online/offline).

The decoder stamps them with the receive time; for a simulated park a day in the past (the demo)
or a replayed backlog that time is far ahead of the park's event time. Such a point must not move
the park's clock (that would close every KPI window early and make every device stale at once):
the analytics stage places it at the park's clock. Real decoder, real KPI and rule engines (the
shipped pack), the real analytics stage; no servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from collector.decode import Decoder
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.analytics import Analytics, is_derived_ticket
from parkwatch.clock import ParkClocks
from parkwatch.events import AlertState, AlertTransition, KpiRecord, Output
from parkwatch.points import STATUS_MEASUREMENT, Point
from parkwatch.service import build_engines
from parkwatch.settings import load_settings
from tests.helpers import until

PARK = "lingang"
WALL_S = 1_780_000_000.0  # the wall clock while the test runs (it does not move)
MINUTE = 60_000
SIM_START = (round(WALL_S * 1000) - 86_400_000) // MINUTE * MINUTE  # a day in the past
STEP = 10_000


class Stage:
    """The analytics stage with the service's engines, fed through the real decoder."""

    def __init__(self, directory: Path) -> None:
        self.settings = load_settings(
            None,
            ingest={"max_past_s": 10 * 86_400.0},
            state={"directory": directory, "tick_s": 3600, "snapshot_interval_s": 3600},
        )
        self.clocks = ParkClocks()
        self.registry = CollectorRegistry()
        engines = build_engines(self.settings, self.clocks, self.registry)
        self.analytics = Analytics(
            self.settings.state, engines, self.clocks, self.registry, wall=lambda: WALL_S
        )
        self.outputs: list[Output] = []
        self.analytics.observe(self.outputs.append)
        self.decoder = Decoder(self.settings.ingest, Metrics(), clock=lambda: WALL_S)
        self.inbox: asyncio.Queue[Point] = asyncio.Queue()
        self.out: asyncio.Queue[Point] = asyncio.Queue()
        self.written: list[Point] = []
        self._ticket = 0

    @contextlib.asynccontextmanager
    async def running(self, *, crash: bool = False) -> AsyncIterator[Stage]:
        """Run the stage; at the end close it, or with ``crash`` just stop (as kill -9 would)."""
        await self.analytics.open()
        tasks = [
            asyncio.create_task(self.analytics.run(self.inbox, self.out)),
            asyncio.create_task(self._consume()),
        ]
        try:
            await until(self.analytics._ready.is_set, what="recovered")
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if crash:
                self.analytics._journal._close()
            else:
                await self.analytics.close()

    async def _consume(self) -> None:
        while True:
            point = await self.out.get()
            self.written.append(point)
            if is_derived_ticket(point.ticket):
                self.analytics.settled([point.ticket])
            self.out.task_done()

    async def receive(self, topic: str, payload: bytes) -> None:
        """One MQTT message, received now (``WALL_S``), through the decoder and the stage."""
        self._ticket += 1
        point = self.decoder.decode(RawMessage(f"parks/{topic}", payload, WALL_S, self._ticket))
        assert isinstance(point, Point), point
        await self.inbox.put(point)
        await self.inbox.join()
        await self.out.join()

    async def readings(self, start_ms: int, end_ms: int, *, charger: bool = True) -> None:
        """Every device of the park reporting every 10 s of simulated time in [start, end)."""
        for ts in range(start_ms, end_ms, STEP):
            minutes = (ts - SIM_START) / MINUTE
            await self.receive(
                f"{PARK}/microgrid/mg-01/telemetry",
                orjson.dumps(
                    {
                        "ts": ts,
                        "pv_kw": 60.0,
                        "load_kw": 120.0,
                        "pv_kwh": 1000 + minutes,
                        "load_kwh": 2000 + 2 * minutes,
                        "grid_import_kwh": 500 + minutes,
                        "grid_export_kwh": 100.0,
                        "frequency_hz": 50.0,
                    }
                ),
            )
            await self.receive(
                f"{PARK}/storage/bess-01/telemetry",
                orjson.dumps({"ts": ts, "soc_pct": 55.0, "cell_temp_max_c": 30.0}),
            )
            if charger:
                await self.receive(
                    f"{PARK}/charger/cp-01/telemetry",
                    orjson.dumps({"ts": ts, "status": "Available", "connector_id": 1}),
                )

    async def last_will(self, device: str = "cp-01") -> None:
        """The broker publishes the charger's last will: no ts, received now."""
        await self.receive(f"{PARK}/charger/{device}/status", b'{"online": false}')

    def transitions(self, name: str) -> list[AlertTransition]:
        return [o for o in self.outputs if isinstance(o, AlertTransition) and o.alert.name == name]

    def kpi_ends(self) -> list[int]:
        return [o.end_ms for o in self.outputs if isinstance(o, KpiRecord)]

    def late_points(self) -> float:
        late = 0.0
        for metric in self.registry.collect():
            if metric.name == "parkwatch_kpi_late_points":
                late += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return late

    def status_lines(self) -> list[str]:
        return [p.line for p in self.written if p.kind == STATUS_MEASUREMENT]


async def test_a_last_will_leaves_a_simulated_parks_clock_where_it_is(tmp_path: Path) -> None:
    stage = Stage(tmp_path)
    will_at = SIM_START + 10 * MINUTE
    async with stage.running():
        await stage.readings(SIM_START, will_at)
        clock_before = stage.clocks.now(PARK, WALL_S)
        assert clock_before == will_at - STEP
        await stage.last_will()
        # Still the simulated day, not the wall time the will was received at: the will is
        # placed 1 ms after the last reading.
        placed = clock_before + 1
        assert stage.clocks.now(PARK, WALL_S) == placed
        await stage.readings(will_at, will_at + 3 * MINUTE, charger=False)
        last_reading = will_at + 3 * MINUTE - STEP

    # The charger alone is offline, at once and at the park's clock.
    offline = stage.transitions("DeviceOffline")
    assert [(t.alert.labels["device"], t.alert.state) for t in offline] == [
        ("cp-01", AlertState.FIRING)
    ]
    assert offline[0].at_ms == placed
    # No KPI window closed before its time, so none of the later readings was late.
    assert stage.kpi_ends()
    assert max(stage.kpi_ends()) <= last_reading
    assert stage.late_points() == 0
    # Written at the park's clock as well (a dashboard's last("online") stays in order).
    assert stage.status_lines() == [
        f"{STATUS_MEASUREMENT},device=cp-01,kind=charger,park={PARK} online=false {placed}"
    ]


async def test_untimed_statuses_of_a_park_without_a_clock_wait_for_its_first_reading(
    tmp_path: Path,
) -> None:
    stage = Stage(tmp_path)
    async with stage.running():
        await stage.last_will()  # before anything else from the park (a retained will)
        assert stage.clocks.now(PARK, WALL_S) is None  # no clock started at the receive time
        assert stage.transitions("DeviceOffline") == []
        await stage.readings(SIM_START, SIM_START + 2 * MINUTE, charger=False)
    offline = stage.transitions("DeviceOffline")
    assert [(t.alert.labels["device"], t.at_ms) for t in offline] == [("cp-01", SIM_START)]
    assert stage.late_points() == 0
    # Written when it came (the ack could not wait for the park's clock).
    assert stage.status_lines()[0].endswith(f" {round(WALL_S * 1000)}")


async def test_held_statuses_survive_a_restart_and_a_crash(tmp_path: Path) -> None:
    for crash in (False, True):
        directory = tmp_path / f"crash-{crash}"
        first = Stage(directory)
        async with first.running(crash=crash):
            await first.last_will()
        again = Stage(directory)
        async with again.running():
            await again.readings(SIM_START, SIM_START + MINUTE, charger=False)
        offline = again.transitions("DeviceOffline")
        assert [(t.alert.labels["device"], t.at_ms) for t in offline] == [("cp-01", SIM_START)]


async def test_a_replayed_journal_places_the_will_where_the_live_run_did(
    tmp_path: Path,
) -> None:
    live = Stage(tmp_path)
    async with live.running(crash=True):
        await live.readings(SIM_START, SIM_START + 2 * MINUTE)
        await live.last_will()
    replayed = Stage(tmp_path)
    async with replayed.running():
        pass
    assert [(t.alert.state, t.at_ms) for t in replayed.transitions("DeviceOffline")] == [
        (t.alert.state, t.at_ms) for t in live.transitions("DeviceOffline")
    ]
    assert replayed.clocks.snapshot(WALL_S) == live.clocks.snapshot(WALL_S)


async def test_a_will_right_after_a_birth_is_written_after_it_not_over_it(tmp_path: Path) -> None:
    """Both in one batch (one wall time): at the park's clock the will would share the birth's
    millisecond, and InfluxDB would keep only one of the two points."""
    stage = Stage(tmp_path)
    topic = f"parks/{PARK}/charger/cp-01/status"
    async with stage.running():
        for ticket, payload in enumerate(
            [orjson.dumps({"online": True, "ts": SIM_START}), b"offline"], start=1
        ):
            point = stage.decoder.decode(RawMessage(topic, payload, WALL_S, ticket))
            assert isinstance(point, Point)
            stage.inbox.put_nowait(point)
        await stage.inbox.join()
        await stage.out.join()
    times = [int(line.rsplit(" ", 1)[1]) for line in stage.status_lines()]
    assert times == [SIM_START, SIM_START + 1]


def test_placing_a_point_re_stamps_its_line() -> None:
    line = f"{STATUS_MEASUREMENT},device=cp\\ 1,kind=charger,park=p online=false 1780000000000"
    point = Point("p", STATUS_MEASUREMENT, "cp 1", 1_780_000_000_000, {"online": False}, line, 7,
                  device_kind="charger", ts_from_receipt=True)  # fmt: skip
    placed = point.placed_at(1_700_000_000_000)
    assert placed.line == line.replace("1780000000000", "1700000000000")
    assert (placed.ts_ms, placed.ticket, placed.ts_from_receipt) == (1_700_000_000_000, 7, False)
