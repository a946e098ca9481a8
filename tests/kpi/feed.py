"""Drive a KpiEngine as the analytics stage does: the park clock observes, advance, then apply."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson
from prometheus_client import CollectorRegistry

from collector.decode import Decoder
from collector.messages import RawMessage
from collector.metrics import Metrics
from kpi import KpiEngine
from parkwatch.clock import ParkClocks
from parkwatch.events import KpiRecord, Output
from parkwatch.points import Point
from parkwatch.settings import IngestSettings, KpiSettings, ParksSettings
from simulators.faults import Scenario
from simulators.fleet import FleetSpec
from simulators.generate import iter_messages

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
T: Final = round(datetime(2025, 6, 21, tzinfo=SHANGHAI).timestamp() * 1000)
"""2025-06-21 00:00 in Shanghai (a local midnight, so a boundary of every window kind)."""
S: Final = 1000
MIN: Final = 60 * S


class KpiFeed:
    """A KpiEngine with its own clocks and registry; records what it emits."""

    def __init__(self, parks: ParksSettings | None = None, **kpi: Any) -> None:
        self.clocks = ParkClocks()  # never resumed: a park's clock is its newest ts
        self.registry = CollectorRegistry()
        self.settings = KpiSettings(**kpi)
        self.parks = parks or ParksSettings()
        self.engine = KpiEngine(self.settings, self.parks, self.clocks, self.registry)
        self.records: list[KpiRecord] = []
        self._advanced: dict[str, int] = {}

    def point(
        self,
        kind: str,
        device: str,
        ts: int,
        *,
        park: str = "p",
        connector: str = "",
        **fields: Any,
    ) -> None:
        """One validated reading."""
        now = self.clocks.observe(park, ts, 0.0)
        self.advance(now, park=park)
        point = Point(park, kind, device, ts, fields, "", 0, connector)
        self.engine.apply(point, self._emit)

    def microgrid(self, device: str, ts: int, *, park: str = "p", **counters: Any) -> None:
        """A microgrid reading."""
        self.point("microgrid", device, ts, park=park, **counters)

    def charger(
        self, device: str, connector: int, ts: int, status: str | None = None, **fields: Any
    ) -> None:
        """One connector's reading."""
        if status is not None:
            fields["status"] = status
        fields["connector_id"] = connector
        self.point("charger", device, ts, connector=str(connector), **fields)

    def advance(self, now: int, *, park: str = "p") -> None:
        """The park's clock reads ``now`` (only moves forward, as the stage guarantees)."""
        if now > self._advanced.get(park, -1):
            self._advanced[park] = now
            self.engine.advance(park, now, self._emit)

    def _emit(self, output: Output) -> None:
        assert isinstance(output, KpiRecord)
        self.records.append(output)

    def close_through(self, end: int, *, park: str = "p") -> None:
        """Move the clock just past ``end`` + lateness: every window ending by ``end`` closes."""
        self.advance(end + round(self.settings.lateness_s * 1000) + 1, park=park)

    def fields(self, window: str, start: int, *, park: str = "p") -> dict[str, float]:
        """The fields of the one record of that window (fails if there is none or several)."""
        found = [r for r in self.records if (r.park, r.window, r.start_ms) == (park, window, start)]
        assert len(found) == 1, f"{len(found)} records for {park} {window} @ {start - T} ms"
        return dict(found[0].fields)

    def emitted(self, window: str, start: int, *, park: str = "p") -> bool:
        """Whether a record of that window was emitted."""
        return any((r.park, r.window, r.start_ms) == (park, window, start) for r in self.records)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the engine's registry (0 when absent)."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def reborn(self) -> KpiFeed:
        """A new engine restored from this one's snapshot through JSON (as after a restart)."""
        twin = KpiFeed(self.parks, **self.settings.model_dump())
        twin.engine.restore(orjson.loads(orjson.dumps(self.engine.snapshot())))
        twin._advanced = dict(self._advanced)
        twin.clocks.restore(self.clocks.snapshot(0.0), 0.0)
        return twin


def simulated_points(
    fleet: FleetSpec,
    seed: int,
    start: datetime,
    duration_s: float,
    scenario: Scenario | None = None,
) -> Iterator[Point]:
    """The simulators' messages as the collector's decoder turns them into points."""
    decoder = Decoder(IngestSettings(max_past_s=1e10, max_future_s=1e10), Metrics())
    for ticket, (topic, payload) in enumerate(
        iter_messages(fleet, seed, start, duration_s, scenario=scenario)
    ):
        point = decoder.decode(RawMessage(topic, payload, 0.0, ticket))
        assert isinstance(point, Point), point
        yield point
