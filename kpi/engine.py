"""The KPI engine: park green KPIs per window, streaming, from counters, in event time.

It implements :class:`parkwatch.events.Engine`; :mod:`parkwatch.analytics` feeds it every
validated point and every move of a park's clock, journals its inputs and snapshots its state, so
it must be deterministic: no wall clock, no randomness, every container in insertion order, and a
snapshot that is plain JSON (floats round-trip exactly). State is one :class:`~kpi.park.ParkKpis`
per park, bounded by the park's devices and open windows, never by time.

Metrics: ``parkwatch_kpi_late_points_total{park,window}`` counts readings whose window of that
kind had closed when they arrived (their energy is not folded in);
``parkwatch_kpi_stale_readings_total{park}`` counts readings no newer than the device's last one
(redelivered or reordered: ignored, never counted twice).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from kpi.counters import COUNTER_SOURCES
from kpi.park import ParkKpis
from parkwatch.clock import ParkClocks
from parkwatch.events import Emit, KpiRecord
from parkwatch.points import Point
from parkwatch.settings import KpiSettings, ParksSettings

__all__ = ["KpiEngine"]

log = logging.getLogger(__name__)

SNAPSHOT_VERSION: Final = 1


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.late = Counter(
            "parkwatch_kpi_late_points",
            "Readings that arrived after their KPI window had closed (not folded in).",
            ["park", "window"],
            registry=registry,
        )
        self.stale = Counter(
            "parkwatch_kpi_stale_readings",
            "Readings no newer than the device's last one (redelivered or reordered; ignored).",
            ["park"],
            registry=registry,
        )
        self.tracked = Gauge(
            "parkwatch_kpi_tracked_counters",
            "Device counters and charger connectors the KPI engine keeps state for.",
            registry=registry,
        )


class KpiEngine:
    """Park KPIs over ``1m``, ``15m``, ``1h`` and ``1d`` windows; see the module docstring."""

    name = "kpi"

    def __init__(
        self,
        settings: KpiSettings,
        parks: ParksSettings,
        clocks: ParkClocks,
        registry: CollectorRegistry,
    ) -> None:
        self._profiles = parks
        # Windows move only with the clock readings ``advance`` is given; the shared clocks are
        # kept for the Engine contract (engines are built with them).
        self._clocks = clocks
        self._lateness_ms = round(settings.lateness_s * 1000)
        self._max_gap_ms = round(settings.max_gap_s * 1000)
        self._parks: dict[str, ParkKpis] = {}
        self._metrics = _Metrics(registry)
        self._metrics.tracked.set_function(self.tracked)  # counted when scraped, not per point

    # -- the Engine protocol ---------------------------------------------------------------

    def apply(self, point: Point, emit: Emit) -> None:
        """Take in one reading: its counters and, for a charger connector, its status."""
        sources = COUNTER_SOURCES.get(point.kind)
        if sources is None:
            return  # device_status points and unknown kinds carry no counters
        fields = point.fields
        readings: list[tuple[str, float]] = []
        for field, total in sources:
            value = fields.get(field)
            if type(value) is float:  # the decoder's counters: tested first, cheapest
                if -math.inf < value < math.inf:
                    readings.append((total, value))
            elif isinstance(value, int) and not isinstance(value, bool) and math.isfinite(value):
                readings.append((total, float(value)))  # absent, text or a bool: not a count
        status = fields.get("status") if point.kind == "charger" else None
        if not readings and not isinstance(status, str):
            return
        ts = point.ts_ms
        park = self._parks.get(point.park)
        if park is None:
            park = self._parks[point.park] = self._new_park(point.park, ts)
        fresh = False
        if readings:
            fresh = park.take_counters(point.device, point.connector, ts, readings)
        if isinstance(status, str):
            fresh = park.take_status(point.device, point.connector, ts, status) or fresh
        if not fresh:
            self._metrics.stale.labels(point.park).inc()
            return
        if ts < park.newest_cursor:  # late for one window kind at least
            for window in park.late_windows(ts):
                self._metrics.late.labels(point.park, window).inc()

    def advance(self, park: str, now_ms: int, emit: Emit) -> None:
        """Close the park's windows whose end plus lateness ``now_ms`` has passed."""
        state = self._parks.get(park)
        if state is None or now_ms <= state.next_due:
            return
        state.close_due(now_ms, emit)

    def take(self, record: KpiRecord, emit: Emit) -> None:
        """KPI records of other engines are of no use here."""

    def snapshot(self) -> dict[str, Any]:
        """Every park's state as JSON-able data."""
        return {
            "version": SNAPSHOT_VERSION,
            "parks": {name: park.to_json() for name, park in self._parks.items()},
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with a ``snapshot`` (an unknown version starts empty)."""
        self._parks = {}
        if data.get("version") != SNAPSHOT_VERSION:
            log.warning("KPI state of an unknown version %r: starting afresh", data.get("version"))
            return
        for name, state in data["parks"].items():
            park = self._new_park(name, 0)
            park.load(state)
            self._parks[name] = park

    # -- helpers ---------------------------------------------------------------------------

    def tracked(self) -> int:
        """Device counters and connectors held in memory, over all parks."""
        return sum(park.tracked() for park in self._parks.values())

    def _new_park(self, park: str, first_ts: int) -> ParkKpis:
        profile = self._profiles.profile(park)
        return ParkKpis(
            park,
            timezone=profile.timezone,
            emission_factor=profile.emission_factor_kg_per_kwh,
            lateness_ms=self._lateness_ms,
            max_gap_ms=self._max_gap_ms,
            first_ts=first_ts,
        )
