"""Each park's KPIs so far today, from the ``1m`` records as they close (the demo's live view).

A ``1d`` record exists only once the day is over; this adds up the day's closed minutes instead.
Only minutes that know both the load and the grid import are added, and the PV and export only
if every one of them knew those too, so all of today's figures cover the same minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from kpi.formulas import WindowTotals, kpi_fields
from parkwatch.events import KpiRecord
from parkwatch.settings import ParksSettings

__all__ = ["Today", "TodaySoFar"]

_ALWAYS = ("load_kwh", "grid_import_kwh")
_PV = ("pv_kwh", "grid_export_kwh")


@dataclass(slots=True)
class Today:
    """One park's day so far."""

    day: date
    minutes: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    pv_minutes: int = 0


class TodaySoFar:
    """Adds up each park's closed ``1m`` records of its current local day."""

    def __init__(self, parks: ParksSettings) -> None:
        self._profiles = parks
        self._zones: dict[str, ZoneInfo] = {}
        self._days: dict[str, Today] = {}

    def take(self, record: KpiRecord) -> None:
        """Take in a KPI record (only ``1m`` ones count)."""
        fields = record.fields
        if record.window != "1m" or not all(name in fields for name in _ALWAYS):
            return
        zone = self._zones.get(record.park)
        if zone is None:
            zone = self._zones[record.park] = ZoneInfo(self._profiles.profile(record.park).timezone)
        day = datetime.fromtimestamp(record.start_ms / 1000, zone).date()
        today = self._days.get(record.park)
        if today is None or day > today.day:
            today = self._days[record.park] = Today(day)
        elif day < today.day:
            return  # a minute of a day that is over
        today.minutes += 1
        names = _ALWAYS + _PV if all(name in fields for name in _PV) else _ALWAYS
        today.pv_minutes += names != _ALWAYS
        for name in names:
            today.sums[name] = today.sums.get(name, 0.0) + fields[name]

    def fields(self, park: str) -> dict[str, float]:
        """Today's KPI fields so far for ``park`` (the 1d formulas over its closed minutes)."""
        today = self._days.get(park)
        if today is None:
            return {}
        energy = dict(today.sums)
        if today.pv_minutes != today.minutes:
            for name in _PV:
                energy.pop(name, None)
        factor = self._profiles.profile(park).emission_factor_kg_per_kwh
        return kpi_fields("1d", WindowTotals(energy), factor)

    def day(self, park: str) -> date | None:
        """The local date ``park``'s figures are for."""
        today = self._days.get(park)
        return None if today is None else today.day
