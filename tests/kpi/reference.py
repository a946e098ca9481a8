"""An independent, simple offline reference for the park KPIs, to check the engine against.

It works on all the raw telemetry of one park at once (as the tests read it back from InfluxDB),
the way the README defines the KPIs rather than the way the engine streams them: undo counter
resets into one cumulative series per device counter, interpolate it at each window boundary,
energy = value at the end - value at the start. Nothing is shared with ``kpi/`` but the rules:

* a window closes when the data passes its end + lateness, so it knows the readings up to then;
* a counter takes part in a window if its first reading is before the end and its last known
  reading + max_gap is after the start; it is complete if its readings reach from start to end
  and no pair longer than max_gap crosses the window's edges; a total is known only if every
  counter taking part is complete;
* a status holds until the next one, for at most max_gap;
* green EV energy per minute (self-sufficiency held to 0-100 %), summed over all the minutes of
  a longer window; the peak of 1h/1d is the highest of all its quarters.

Only Shanghai time (UTC+8, no daylight saving) is supported, which is what the tests simulate.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MINUTE = 60_000
SIZES = {"1m": MINUTE, "15m": 15 * MINUTE, "1h": 60 * MINUTE, "1d": 1440 * MINUTE}
SHANGHAI_OFFSET = 8 * 60 * MINUTE
COUNTERS = {
    ("microgrid", "pv_kwh"): "pv_kwh",
    ("microgrid", "load_kwh"): "load_kwh",
    ("microgrid", "grid_import_kwh"): "grid_import_kwh",
    ("microgrid", "grid_export_kwh"): "grid_export_kwh",
    ("storage", "charged_kwh"): "storage_charged_kwh",
    ("storage", "discharged_kwh"): "storage_discharged_kwh",
    ("site5g", "energy_kwh"): "site5g_energy_kwh",
    ("site5g", "traffic_gb"): "site5g_traffic_gb",
    ("charger", "energy_kwh"): "ev_energy_kwh",
}


def window_start(window: str, ts: int) -> int:
    """Start of the window holding ``ts`` (days at Shanghai midnight)."""
    size = SIZES[window]
    offset = SHANGHAI_OFFSET if window == "1d" else 0
    return (ts + offset) // size * size - offset


@dataclass
class Counter:
    """One device counter: its readings and their reset-adjusted running total."""

    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    gaps: list[tuple[int, int]] | None = None

    def add(self, ts: int, value: float) -> None:
        """Append a reading (in time order; a repeated time is ignored)."""
        if self.times and ts <= self.times[-1]:
            return
        if self.times:
            previous = self.values[-1]
            step = value - previous if value >= previous else max(value, 0.0)
            self.total.append(self.total[-1] + step)
        else:
            self.total.append(0.0)
        self.times.append(ts)
        self.values.append(value)

    def long_pairs(self, max_gap: int) -> list[tuple[int, int]]:
        """Consecutive readings further apart than ``max_gap`` (computed once)."""
        if self.gaps is None:
            times = self.times
            self.gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a > max_gap]
        return self.gaps

    def at(self, ts: int) -> float:
        """The running total at ``ts``, interpolated between the readings around it."""
        i = bisect.bisect_right(self.times, ts) - 1
        if self.times[i] == ts:
            return self.total[i]
        t0, t1 = self.times[i], self.times[i + 1]
        return self.total[i] + (self.total[i + 1] - self.total[i]) * (ts - t0) / (t1 - t0)


def _counter_part(
    counter: Counter, start: int, end: int, known_until: int, max_gap: int
) -> float | bool | None:
    """Energy in [start, end); None if unknown; False if the counter takes no part."""
    known = bisect.bisect_right(counter.times, known_until)
    if known == 0 or counter.times[0] >= end:
        return False
    last = counter.times[known - 1]
    if start >= last + max_gap:
        return False
    if counter.times[0] > start or last < end:
        return None
    for a, b in counter.long_pairs(max_gap):
        if b <= known_until and a < end and b > start and not (start <= a and b <= end):
            return None
    return counter.at(end) - counter.at(start)


def _ratio(top: float | None, bottom: float | None, scale: float = 1.0) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return scale * top / bottom


@dataclass
class ParkData:
    """One park's counters (by total, device, connector) and connector statuses, in time order."""

    counters: dict[tuple[str, str, str], Counter] = field(default_factory=dict)
    statuses: dict[tuple[str, str], list[tuple[int, str]]] = field(default_factory=dict)
    first: int = 0
    newest: int = 0


def _load(rows: Mapping[str, Iterable[Mapping[str, Any]]]) -> ParkData:
    data = ParkData()
    counters: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    statuses: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    times: list[int] = []
    for kind, kind_rows in rows.items():
        for row in sorted(kind_rows, key=lambda r: int(r["time"])):
            ts = int(row["time"])
            times.append(ts)
            device, connector = str(row["device"]), str(row.get("connector") or "")
            for (source_kind, name), total in COUNTERS.items():
                if source_kind == kind and row.get(name) is not None:
                    counters[total, device, connector].add(ts, float(row[name]))
            if kind == "charger" and row.get("status") is not None:
                statuses[device, connector].append((ts, str(row["status"])))
    assert times, "no telemetry"
    data.counters, data.statuses = dict(counters), dict(statuses)
    data.first, data.newest = min(times), max(times)
    return data


def _energy(
    data: ParkData, start: int, end: int, known_until: int, max_gap: int
) -> dict[str, float]:
    energy: dict[str, float] = {}
    unknown: set[str] = set()
    for (total, _, _), counter in data.counters.items():
        part = _counter_part(counter, start, end, known_until, max_gap)
        if part is None:
            unknown.add(total)
        elif part is not False:
            energy[total] = energy.get(total, 0.0) + part
    return {total: value for total, value in energy.items() if total not in unknown}


def _status_ms(
    data: ParkData, start: int, end: int, known_until: int, max_gap: int
) -> tuple[int, int, int]:
    """Connector-time in Charging, in Faulted, and with a known status."""
    charging = faulted = known = 0
    for changes in data.statuses.values():
        # The statuses known at the close that can overlap [start, end).
        last = bisect.bisect_right(changes, (known_until, "~"))
        low = max(0, bisect.bisect_left(changes, (start - max_gap, "")) - 1)
        for i in range(low, last):
            ts, status = changes[i]
            until = ts + max_gap
            if i + 1 < last:
                until = min(until, changes[i + 1][0])
            overlap = min(until, end) - max(ts, start)
            if overlap > 0:
                known += overlap
                charging += overlap if status == "Charging" else 0
                faulted += overlap if status == "Faulted" else 0
    return charging, faulted, known


def _roll_up(
    window: str,
    start: int,
    end: int,
    fields: dict[str, float],
    *,
    green: dict[int, float | None],
    peaks: dict[int, float | None],
) -> None:
    """Green EV energy from all the minutes within, the peak from all the quarters within."""
    if window == "1m":
        green[start] = fields.get("ev_green_kwh")
        return
    if window == "15m":
        peaks[start] = fields.get("peak_demand_kw")
    minutes = [green.get(m) for m in range(start, end, MINUTE)]
    if "ev_energy_kwh" in fields and all(g is not None for g in minutes):
        fields["ev_green_kwh"] = sum(g for g in minutes if g is not None)
        if fields["ev_energy_kwh"]:
            fields["ev_green_share_pct"] = 100 * fields["ev_green_kwh"] / fields["ev_energy_kwh"]
    quarters = [peaks.get(q) for q in range(start, end, 15 * MINUTE)]
    if window != "15m" and all(p is not None for p in quarters):
        fields["peak_demand_kw"] = max(p for p in quarters if p is not None)


def reference_kpis(
    rows: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    lateness_ms: int = 60_000,
    max_gap_ms: int = 900_000,
    factor: float = 0.55,
) -> dict[tuple[str, int], dict[str, float]]:
    """KPI fields by (window, start) for one park's rows by kind (``time`` in epoch ms), for
    every window the data closes (its end + lateness before the newest reading)."""
    data = _load(rows)
    results: dict[tuple[str, int], dict[str, float]] = {}
    green: dict[int, float | None] = {}  # by minute start
    peaks: dict[int, float | None] = {}  # by quarter start
    for window, size in SIZES.items():
        start = window_start(window, data.first)
        while start + size + lateness_ms < data.newest:
            end = start + size
            known_until = end + lateness_ms
            energy = _energy(data, start, end, known_until, max_gap_ms)
            status_ms = _status_ms(data, start, end, known_until, max_gap_ms)
            fields = _fields(window, energy, status_ms, factor)
            _roll_up(window, start, end, fields, green=green, peaks=peaks)
            if fields:
                results[window, start] = fields
            start = end
    return results


def _fields(
    window: str,
    energy: dict[str, float],
    status_ms: tuple[int, int, int],
    factor: float,
) -> dict[str, float]:
    pv, load = energy.get("pv_kwh"), energy.get("load_kwh")
    grid_in, grid_out = energy.get("grid_import_kwh"), energy.get("grid_export_kwh")
    ev = energy.get("ev_energy_kwh")
    on_site = None if pv is None or grid_out is None else pv - grid_out
    co2 = None if grid_in is None else grid_in * factor
    self_sufficiency = _ratio(on_site, load, 100)
    fields: dict[str, float | None] = dict(energy)
    fields["self_consumption_pct"] = _ratio(on_site, pv, 100)
    fields["self_sufficiency_pct"] = self_sufficiency
    fields["co2_kg"] = co2
    fields["emission_factor_kg_per_kwh"] = None if co2 is None else factor
    fields["carbon_intensity_kg_per_kwh"] = _ratio(co2, load)
    fields["carbon_intensity_t_per_tce"] = _ratio(co2, None if load is None else 0.1229 * load)
    if window == "1d":
        charged = energy.get("storage_charged_kwh")
        fields["storage_rte_pct"] = _ratio(energy.get("storage_discharged_kwh"), charged, 100)
    fields["site5g_kwh_per_gb"] = _ratio(
        energy.get("site5g_energy_kwh"), energy.get("site5g_traffic_gb")
    )
    charging, faulted, known = status_ms
    fields["ev_utilisation_pct"] = _ratio(charging, known, 100)
    fields["ev_faulted_pct"] = _ratio(faulted, known, 100)
    if window == "1m" and ev is not None:
        if ev == 0:
            fields["ev_green_kwh"] = 0.0
        elif self_sufficiency is not None:
            green = ev * min(1.0, max(0.0, self_sufficiency / 100))
            fields["ev_green_kwh"] = green
            fields["ev_green_share_pct"] = 100 * green / ev
    if window == "15m" and grid_in is not None:
        fields["peak_demand_kw"] = grid_in * 4
    return {name: value for name, value in fields.items() if value is not None}
