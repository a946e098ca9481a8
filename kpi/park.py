"""One park's KPI state: its devices' counters, its connectors, and its four window series.

How a device enters a window's park total (decided here, documented in the README):

* A device counter is *expected* in a window if its first reading is before the window's end and
  the window starts less than ``max_gap`` after its last reading. A device that stops reporting
  so stops taking part ``max_gap`` after its last reading; one that is never heard from again is
  forgotten once that is before every open window.
* An expected counter is *complete* if its readings reach from the window's start to its end:
  first reading at or before the start, last at or after the end, no long gap across a boundary.
* A total (``pv_kwh``, ``ev_energy_kwh``, ...) is the sum over the expected counters if all of
  them are complete; if any is not, the total is unknown and every field built on it is left
  out. A total no counter is expected in is absent (a park without PV has no ``pv_kwh``).
* A connector's status holds until its next status, for at most ``max_gap``; connector-time
  with no known status counts neither way.

A window closes once the park's clock has passed its end plus ``lateness``; the series close in
order (``1m`` first), so a ``15m`` window closes after its minutes and takes their green EV
energy, and ``1h``/``1d`` take their quarters' peak demand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kpi.counters import CHARGING, FAULTED, Connector, Track, increase
from kpi.formulas import ENERGY_TOTALS, WindowTotals, kpi_fields
from kpi.series import Series, WindowAcc
from kpi.windows import window_kinds
from parkwatch.events import KpiRecord

__all__ = ["ParkKpis"]

MINUTE_MS = 60_000
QUARTER_MS = 900_000


class ParkKpis:
    """The KPI state of one park; see the module docstring."""

    __slots__ = (
        "_tracked",
        "connectors",
        "devices",
        "emission_factor",
        "horizon",
        "lateness_ms",
        "max_gap_ms",
        "newest_cursor",
        "next_due",
        "park",
        "series",
    )

    def __init__(
        self,
        park: str,
        *,
        timezone: str,
        emission_factor: float,
        lateness_ms: int,
        max_gap_ms: int,
        first_ts: int,
    ) -> None:
        self.park = park
        self.emission_factor = emission_factor
        self.lateness_ms = lateness_ms
        self.max_gap_ms = max_gap_ms
        # Windows a little older than the first reading are open too: other devices' readings
        # of the same moment may arrive in any order.
        self.series = [Series(kind, first_ts - lateness_ms) for kind in window_kinds(timezone)]
        self.devices: dict[tuple[str, str], dict[str, Track]] = {}
        """(device, connector) -> park total -> the counter."""
        self.connectors: dict[tuple[str, str], Connector] = {}
        """(device, connector) -> its status."""
        self.horizon = 0
        """No device is expected and no status holds from here on (the last reading + max_gap)."""
        self.next_due = 0
        self.newest_cursor = 0
        """The latest start of an open window: a reading before it is late for some kind."""
        self._tracked = 0  # counters + connectors: /metrics reads it, so counted, not summed
        self._plan()

    # -- taking readings ----------------------------------------------------------------------

    def take_counters(
        self, device: str, connector: str, ts: int, readings: list[tuple[str, float]]
    ) -> bool:
        """A device's counter readings at ``ts`` as (park total, value); whether any was new."""
        tracks = self.devices.get((device, connector))
        if tracks is None:
            tracks = self.devices[device, connector] = {}
        fresh = False
        pairs: dict[int, list[tuple[str, float]]] = {}  # by the previous reading's time
        for total, value in readings:
            track = tracks.get(total)
            if track is None:
                tracks[total] = Track(ts, ts, value)
                self._tracked += 1
                fresh = True
                continue
            if ts <= track.last_ts:
                continue  # a duplicate or an older reading: its pair has been counted
            gained = increase(track.value, value)
            amounts = pairs.get(track.last_ts)
            if amounts is None:
                pairs[track.last_ts] = [(total, gained)]
            else:
                amounts.append((total, gained))
            track.last_ts, track.value = ts, value
            fresh = True
        for t0, amounts in pairs.items():
            long_gap = ts - t0 > self.max_gap_ms
            for series in self.series:
                series.add_pair(t0, ts, amounts, long_gap)
        if fresh and ts + self.max_gap_ms > self.horizon:
            self.horizon = ts + self.max_gap_ms
        return fresh

    def take_status(self, device: str, connector: str, ts: int, status: str) -> bool:
        """A connector's status at ``ts``; whether it was new."""
        key = (device, connector)
        previous = self.connectors.get(key)
        if previous is None:
            self.connectors[key] = Connector(status, ts)
            self._tracked += 1
        elif ts <= previous.since:
            return False
        else:
            held_until = min(ts, previous.since + self.max_gap_ms)
            for series in self.series:
                series.add_status(previous.since, held_until, previous.status)
            previous.status, previous.since = status, ts
        self.horizon = max(self.horizon, ts + self.max_gap_ms)
        return True

    def tracked(self) -> int:
        """Device counters and connectors held."""
        return self._tracked

    def _count_tracked(self) -> None:
        self._tracked = sum(len(tracks) for tracks in self.devices.values()) + len(self.connectors)

    def late_windows(self, ts: int) -> list[str]:
        """The window kinds whose window holding ``ts`` has closed already."""
        return [series.name for series in self.series if ts < series.cursor]

    # -- closing windows -------------------------------------------------------------------

    def close_due(self, now: int, emit: Callable[[KpiRecord], None]) -> None:
        """Close every window whose end plus lateness the clock ``now`` has passed (called
        once ``now`` is past ``next_due``: ``KpiEngine.advance`` checks that first)."""
        limit = now - self.lateness_ms  # due: end < limit
        for series in self.series:
            while series.cursor_end < limit:
                if series.cursor not in series.accs and series.cursor >= self.horizon:
                    # Nothing to report until the next window that received something.
                    target = series.kind.start_of(limit - 1)
                    first = series.first_acc_start()
                    if first is not None:
                        target = min(target, first)
                    if target > series.cursor:
                        series.skip_to(target)
                        continue
                self._close(series, emit)
        self._forget_silent()
        self._plan()

    def _plan(self) -> None:
        self.next_due = min(series.cursor_end for series in self.series) + self.lateness_ms
        self.newest_cursor = max(series.cursor for series in self.series)

    def _close(self, series: Series, emit: Callable[[KpiRecord], None]) -> None:
        start, end, acc = series.step()
        totals = self._totals(start, end, acc, series.name)
        fields = kpi_fields(series.name, totals, self.emission_factor)
        if series.name == "1m":
            green = fields.get("ev_green_kwh")
            if green is not None:
                for larger in self.series[1:]:
                    target = larger.acc_at(start)
                    if target is not None:
                        target.green_kwh += green
                        target.green_minutes += 1
        elif series.name == "15m":
            peak = fields.get("peak_demand_kw")
            if peak is not None:
                for larger in self.series[2:]:
                    target = larger.acc_at(start)
                    if target is not None:
                        target.peak_kw = max(target.peak_kw, peak)
                        target.peak_quarters += 1
        if fields:
            emit(KpiRecord(self.park, series.name, start, end, fields))

    def _totals(self, start: int, end: int, acc: WindowAcc | None, window: str) -> WindowTotals:
        unknown = set(acc.unknown) if acc is not None else set()
        expected: set[str] = set()
        gap = self.max_gap_ms
        for tracks in self.devices.values():
            for total, track in tracks.items():
                if track.first_ts >= end or start >= track.last_ts + gap:
                    continue
                expected.add(total)
                if track.first_ts > start or track.last_ts < end:
                    unknown.add(total)
        sums = acc.sums if acc is not None else {}
        energy = {
            total: sums.get(total, 0.0)
            for total in ENERGY_TOTALS
            if total in expected and total not in unknown
        }
        charging, faulted, known = (
            (acc.charging_ms, acc.faulted_ms, acc.known_ms) if acc is not None else (0, 0, 0)
        )
        # The open status of each connector holds into this window (for at most max_gap).
        for connector in self.connectors.values():
            held = min(end, connector.since + self.max_gap_ms) - max(start, connector.since)
            if held > 0:
                known += held
                if connector.status == CHARGING:
                    charging += held
                elif connector.status == FAULTED:
                    faulted += held
        green = peak = None
        if acc is not None and window != "1m":
            if acc.green_minutes == (end - start) // MINUTE_MS:
                green = acc.green_kwh
            if window != "15m" and acc.peak_quarters == (end - start) // QUARTER_MS:
                peak = acc.peak_kw
        return WindowTotals(energy, charging, faulted, known, green, peak)

    def _forget_silent(self) -> None:
        """Forget devices and connectors whose last reading + max_gap is before every open window.

        Run at every clock move that closes something, so a replay forgets at the same moments.
        """
        oldest = min(series.cursor for series in self.series) - self.max_gap_ms
        if any(t.last_ts <= oldest for tracks in self.devices.values() for t in tracks.values()):
            kept = (
                (key, {total: t for total, t in tracks.items() if t.last_ts > oldest})
                for key, tracks in self.devices.items()
            )
            self.devices = {key: tracks for key, tracks in kept if tracks}
            self._count_tracked()
        if any(connector.since <= oldest for connector in self.connectors.values()):
            self.connectors = {k: c for k, c in self.connectors.items() if c.since > oldest}
            self._count_tracked()

    # -- state -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The park's state as JSON-able data."""
        return {
            "horizon": self.horizon,
            "tracks": [
                [total, device, connector, t.first_ts, t.last_ts, t.value]
                for (device, connector), tracks in self.devices.items()
                for total, t in tracks.items()
            ],
            "connectors": [
                [device, connector, c.status, c.since]
                for (device, connector), c in self.connectors.items()
            ],
            "series": {series.name: series.to_json() for series in self.series},
        }

    def load(self, data: dict[str, Any]) -> None:
        """Replace the state with ``to_json`` data."""
        self.horizon = int(data["horizon"])
        self.devices = {}
        for total, device, connector, first, last, value in data["tracks"]:
            tracks = self.devices.setdefault((str(device), str(connector)), {})
            tracks[str(total)] = Track(int(first), int(last), float(value))
        self.connectors = {
            (str(device), str(connector)): Connector(str(status), int(since))
            for device, connector, status, since in data["connectors"]
        }
        for series in self.series:
            series.load(data["series"][series.name])
        self._count_tracked()
        self._plan()
