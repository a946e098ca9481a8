"""Today's KPIs so far, from closed 1-minute records (the demo's live view)."""

from __future__ import annotations

import pytest

from kpi.today import TodaySoFar
from parkwatch.events import KpiRecord
from parkwatch.settings import ParksSettings
from tests.kpi.feed import MIN, T

MICROGRID = {"pv_kwh": 6.0, "load_kwh": 12.0, "grid_import_kwh": 8.0, "grid_export_kwh": 1.0}


def minute(start: int, **fields: float) -> KpiRecord:
    return KpiRecord("p", "1m", start, start + MIN, fields)


def test_the_days_closed_minutes_are_added_up() -> None:
    today = TodaySoFar(ParksSettings())
    today.take(minute(T - MIN, **MICROGRID, co2_kg=999.0))  # yesterday 23:59 Shanghai
    today.take(minute(T, **MICROGRID))
    today.take(minute(T + MIN, pv_kwh=2.0, load_kwh=8.0, grid_import_kwh=6.0, grid_export_kwh=0.0))
    today.take(minute(T + 2 * MIN, pv_kwh=2.0))  # no load: left out
    today.take(KpiRecord("p", "15m", T, T + 15 * MIN, {"load_kwh": 1000.0}))  # not a minute
    fields = today.fields("p")
    # pv 8, export 1, load 20, import 14
    assert fields["self_sufficiency_pct"] == pytest.approx(100 * (8 - 1) / 20)
    assert fields["co2_kg"] == pytest.approx(14 * 0.55)
    assert fields["carbon_intensity_t_per_tce"] == pytest.approx(14 * 0.55 / (20 * 0.1229))
    assert today.day("p") is not None
    assert str(today.day("p")) == "2025-06-21"
    today.take(minute(T - 5 * MIN, **MICROGRID))  # a minute of yesterday, late: ignored
    assert today.fields("p") == fields


def test_without_pv_in_every_minute_there_is_no_self_sufficiency() -> None:
    today = TodaySoFar(ParksSettings())
    today.take(minute(T, **MICROGRID))
    today.take(minute(T + MIN, load_kwh=10.0, grid_import_kwh=10.0))
    fields = today.fields("p")
    assert "self_sufficiency_pct" not in fields
    assert fields["co2_kg"] == pytest.approx(18 * 0.55)
    assert today.fields("unknown") == {}
