"""The KPI engine, field by field, on hand-computed fixtures.

Every expected number is worked out by hand in the test (the arithmetic is written out, and the
docstrings say where it comes from), never read back from the engine. ``T`` is a Shanghai
midnight, so it is a boundary of every window kind; times are written as ``T + 30 * S``.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parkwatch.events import KpiRecord
from parkwatch.settings import ParksSettings, load_settings
from simulators.faults import Scenario
from simulators.fleet import FleetSpec
from tests.kpi.feed import MIN, SHANGHAI, KpiFeed, S, T, simulated_points
from tests.kpi.reference import SIZES, reference_kpis

HOUR = 60 * MIN
DAY = 24 * HOUR
FACTOR = 0.55  # the default grid factor (East China grid 2023)
KGCE = 0.1229


def approx(expected: dict[str, float]) -> object:
    """Same keys, values equal up to float rounding."""
    return pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_microgrid_fields_of_one_minute() -> None:
    feed = KpiFeed()
    feed.microgrid("mg-1", T, pv_kwh=100, load_kwh=200, grid_import_kwh=150, grid_export_kwh=10)
    feed.microgrid(
        "mg-1", T + MIN, pv_kwh=106, load_kwh=212, grid_import_kwh=158, grid_export_kwh=11
    )
    feed.close_through(T + MIN)
    # pv 6, load 12, import 8, export 1
    assert feed.fields("1m", T) == approx(
        {
            "pv_kwh": 6,
            "load_kwh": 12,
            "grid_import_kwh": 8,
            "grid_export_kwh": 1,
            "self_consumption_pct": 100 * (6 - 1) / 6,
            "self_sufficiency_pct": 100 * (6 - 1) / 12,
            "emission_factor_kg_per_kwh": FACTOR,
            "co2_kg": 8 * FACTOR,
            "carbon_intensity_kg_per_kwh": 8 * FACTOR / 12,
            "carbon_intensity_t_per_tce": 8 * FACTOR / (12 * KGCE),
        }
    )


def test_the_emission_factor_comes_from_the_parks_profile() -> None:
    parks = ParksSettings.model_validate(
        {"overrides": {"lingang": {"emission_factor_kg_per_kwh": 0.5306}}}
    )
    feed = KpiFeed(parks)
    for park in ("lingang", "other"):
        feed.microgrid("mg-1", T, park=park, grid_import_kwh=0, load_kwh=0)
        feed.microgrid("mg-1", T + MIN, park=park, grid_import_kwh=10, load_kwh=20)
        feed.close_through(T + MIN, park=park)
    assert feed.fields("1m", T, park="lingang")["co2_kg"] == pytest.approx(10 * 0.5306)
    assert feed.fields("1m", T, park="lingang")["emission_factor_kg_per_kwh"] == 0.5306
    assert feed.fields("1m", T, park="other")["co2_kg"] == pytest.approx(10 * 0.55)


def test_the_readmes_parks_configuration_example_configures_the_engine(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- parks-config-example", 1)[1].split("```toml\n", 1)[1]
    config = tmp_path / "parkwatch.toml"
    config.write_text(block.split("```", 1)[0], encoding="utf-8")
    settings = load_settings(config)
    assert settings.parks.display_name("lingang") == "Lingang New Area"
    assert settings.parks.profile("lingang").targets.self_sufficiency_pct_min == 40
    feed = KpiFeed(settings.parks, **settings.kpi.model_dump())
    for park in ("lingang", "caohejing"):
        feed.microgrid("mg-1", T, park=park, grid_import_kwh=0)
        feed.microgrid("mg-1", T + MIN, park=park, grid_import_kwh=100)
        feed.close_through(T + MIN, park=park)
    assert feed.fields("1m", T, park="lingang")["co2_kg"] == pytest.approx(100 * 0.5306)
    assert feed.fields("1m", T, park="caohejing")["co2_kg"] == pytest.approx(100 * 0.55)


def test_a_window_closes_only_once_the_clock_has_passed_its_end_plus_lateness() -> None:
    feed = KpiFeed(lateness_s=30)
    feed.microgrid("mg-1", T, load_kwh=0)
    feed.microgrid("mg-1", T + MIN, load_kwh=5)
    feed.advance(T + MIN + 30 * S)
    assert not feed.emitted("1m", T)
    feed.advance(T + MIN + 30 * S + 1)
    assert feed.fields("1m", T) == {"load_kwh": 5}


def test_readings_off_the_boundaries_are_interpolated() -> None:
    """Readings at -10 s: 0, 20 s: 30, 70 s: 80, 130 s: 110, 190 s: 170.

    The counter at each boundary, linearly between its neighbours: v(0) = 10, v(60) = 30 + 50 *
    40/50 = 70, v(120) = 80 + 30 * 50/60 = 105, v(180) = 110 + 60 * 50/60 = 160; so the minutes
    hold 60, 35 and 55 kWh.
    """
    feed = KpiFeed()
    for at, value in ((-10, 0), (20, 30), (70, 80), (130, 110), (190, 170)):
        feed.microgrid("mg-1", T + at * S, load_kwh=value)
    feed.close_through(T + 3 * MIN)
    assert feed.fields("1m", T) == approx({"load_kwh": 60})
    assert feed.fields("1m", T + MIN) == approx({"load_kwh": 35})
    assert feed.fields("1m", T + 2 * MIN) == approx({"load_kwh": 55})
    # The minute before: the first reading came 50 s into it, the rest is unknown.
    assert not feed.emitted("1m", T - MIN)


def test_a_lost_message_loses_no_energy() -> None:
    """2 kWh every 10 s; the reading at 30 s never arrives: the minute still holds 12 kWh."""
    feed = KpiFeed()
    for at in (0, 10, 20, 40, 50, 60):
        feed.microgrid("mg-1", T + at * S, load_kwh=at / 10 * 2)
    feed.close_through(T + MIN)
    assert feed.fields("1m", T) == approx({"load_kwh": 12})


def test_a_counter_reset_counts_the_new_value_as_the_increase() -> None:
    """100 -> 110 (+10), reset to 5 (+5 since the reset), -> 15 (+10): 25 kWh."""
    feed = KpiFeed()
    for at, value in ((0, 100), (20, 110), (40, 5), (60, 15)):
        feed.microgrid("mg-1", T + at * S, load_kwh=value)
    feed.close_through(T + MIN)
    assert feed.fields("1m", T) == approx({"load_kwh": 25})


def test_a_gap_beyond_max_gap_yields_no_value_around_it_two_microgrids_summed() -> None:
    """mg-1 adds 1 kWh a minute, mg-2 2 kWh a minute; both report on every minute from 0 to 60,
    except that mg-2 is silent from minute 2 to minute 20 (18 min > max_gap 15 min).

    * minutes 0-1 and 20-59: both complete, 1 + 2 = 3 kWh;
    * minutes 2-16: mg-2 is expected (less than 15 min since its last reading) but incomplete:
      no value;
    * minute 17: mg-2 has been silent for 15 min when it closes: it no longer takes part, the
      park total is mg-1's 1 kWh;
    * minutes 18-19: still open when mg-2 returns at minute 20; its pair spans their boundaries
      with a long gap: no value;
    * 15m: the pair spans 00:15, so the first two quarters have no value; the others 45 kWh;
    * 1h: the long pair lies inside the hour, so the hour is exact: 60 + 120 = 180 kWh.
    """
    feed = KpiFeed()
    for minute in range(61):
        feed.microgrid("mg-1", T + minute * MIN, load_kwh=minute)
        if not 2 < minute < 20:
            feed.microgrid("mg-2", T + minute * MIN, load_kwh=2 * minute)
    feed.close_through(T + 60 * MIN)
    for minute in range(60):
        if minute in (0, 1) or minute >= 20:
            assert feed.fields("1m", T + minute * MIN) == approx({"load_kwh": 3}), minute
        elif minute == 17:
            assert feed.fields("1m", T + minute * MIN) == approx({"load_kwh": 1})
        else:
            assert not feed.emitted("1m", T + minute * MIN), minute
    assert not feed.emitted("15m", T)
    assert not feed.emitted("15m", T + 15 * MIN)
    assert feed.fields("15m", T + 30 * MIN) == approx({"load_kwh": 45})
    assert feed.fields("15m", T + 45 * MIN) == approx({"load_kwh": 45})
    assert feed.fields("1h", T) == approx({"load_kwh": 180})
    assert feed.metric("parkwatch_kpi_late_points_total", park="p", window="1m") == 0


def test_a_park_without_pv_omits_the_pv_fields() -> None:
    """No pv_kwh: no self-consumption or self-sufficiency, so no green EV energy either."""
    feed = KpiFeed()
    feed.microgrid("mg-1", T, load_kwh=0, grid_import_kwh=0, grid_export_kwh=0)
    feed.charger("cp-1", 1, T, energy_kwh=0)
    feed.microgrid("mg-1", T + MIN, load_kwh=10, grid_import_kwh=10, grid_export_kwh=0)
    feed.charger("cp-1", 1, T + MIN, energy_kwh=3)
    feed.microgrid("mg-1", T + 2 * MIN, load_kwh=20, grid_import_kwh=20, grid_export_kwh=0)
    feed.charger("cp-1", 1, T + 2 * MIN, energy_kwh=3)
    feed.close_through(T + 2 * MIN)
    assert feed.fields("1m", T) == approx(
        {
            "load_kwh": 10,
            "grid_import_kwh": 10,
            "grid_export_kwh": 0,
            "emission_factor_kg_per_kwh": FACTOR,
            "co2_kg": 10 * FACTOR,
            "carbon_intensity_kg_per_kwh": 10 * FACTOR / 10,
            "carbon_intensity_t_per_tce": 10 * FACTOR / (10 * KGCE),
            "ev_energy_kwh": 3,
        }
    )
    # No EV energy in the second minute: its green energy is known to be zero.
    assert feed.fields("1m", T + MIN)["ev_green_kwh"] == 0
    assert "ev_green_share_pct" not in feed.fields("1m", T + MIN)


def test_storage_and_5g_fields() -> None:
    feed = KpiFeed()
    feed.point("storage", "bess-1", T, charged_kwh=1000, discharged_kwh=500)
    feed.point("storage", "bess-2", T, charged_kwh=10, discharged_kwh=20)
    feed.point("site5g", "gnb-1", T, energy_kwh=50, traffic_gb=1000)
    feed.point("storage", "bess-1", T + MIN, charged_kwh=1004, discharged_kwh=500)
    feed.point("storage", "bess-2", T + MIN, charged_kwh=11, discharged_kwh=23)
    feed.point("site5g", "gnb-1", T + MIN, energy_kwh=50.2, traffic_gb=1004)
    feed.close_through(T + MIN)
    # Round-trip efficiency is a 1d field only.
    assert feed.fields("1m", T) == approx(
        {
            "storage_charged_kwh": 4 + 1,
            "storage_discharged_kwh": 0 + 3,
            "site5g_energy_kwh": 0.2,
            "site5g_traffic_gb": 4,
            "site5g_kwh_per_gb": 0.2 / 4,
        }
    )


def test_ev_energy_is_summed_per_connector() -> None:
    """Two connectors of one charge point, each its own counter: 3 + 2 kWh (not a reset)."""
    feed = KpiFeed()
    feed.charger("cp-1", 1, T, energy_kwh=100)
    feed.charger("cp-1", 2, T, energy_kwh=50)
    feed.charger("cp-1", 1, T + 30 * S, energy_kwh=101)
    feed.charger("cp-1", 2, T + 30 * S, energy_kwh=51)
    feed.charger("cp-1", 1, T + MIN, energy_kwh=103)
    feed.charger("cp-1", 2, T + MIN, energy_kwh=52)
    feed.close_through(T + MIN)
    assert feed.fields("1m", T)["ev_energy_kwh"] == pytest.approx(3 + 2)


def test_ev_utilisation_and_faults_from_connector_time() -> None:
    """Connector 1: Charging from -10 s, Available from 30 s (reported again at 60 s).
    Connector 2: Faulted from -5 s, reported Faulted again at 45 s, then silent.
    max_gap is 120 s, so a status holds at most 120 s after it was reported.

    * [0, 60): c1 Charging 30 s + Available 30 s; c2 Faulted 45 s + 15 s held: 120 s known,
      30 s charging (25 %), 60 s faulted (50 %);
    * [-60, 0): c1 Charging 10 s, c2 Faulted 5 s: 15 s known;
    * [60, 120): c1 Available 60 s (held), c2 Faulted 60 s (held): 0 % and 50 %;
    * [120, 180): c1 held to 180 (60 s Available), c2 held to 165 (45 s Faulted): 45/105;
    * [180, 240): nothing holds any more: no connector-time, no fields, no record.
    """
    feed = KpiFeed(max_gap_s=120)
    feed.charger("cp-1", 1, T - 10 * S, "Charging")
    feed.charger("cp-1", 2, T - 5 * S, "Faulted")
    feed.charger("cp-1", 1, T + 30 * S, "Available")
    feed.charger("cp-1", 2, T + 45 * S, "Faulted")
    feed.charger("cp-1", 1, T + 60 * S, "Available")
    feed.close_through(T + 4 * MIN)
    assert feed.fields("1m", T) == approx(
        {"ev_utilisation_pct": 100 * 30 / 120, "ev_faulted_pct": 100 * 60 / 120}
    )
    assert feed.fields("1m", T - MIN) == approx(
        {"ev_utilisation_pct": 100 * 10 / 15, "ev_faulted_pct": 100 * 5 / 15}
    )
    assert feed.fields("1m", T + MIN) == approx(
        {"ev_utilisation_pct": 0, "ev_faulted_pct": 100 * 60 / 120}
    )
    assert feed.fields("1m", T + 2 * MIN) == approx(
        {"ev_utilisation_pct": 0, "ev_faulted_pct": 100 * 45 / 105}
    )
    assert not feed.emitted("1m", T + 3 * MIN)


def test_green_ev_energy_weighs_each_minute_by_its_self_sufficiency() -> None:
    """Fifteen minutes, readings on every minute.

    * minute 0: pv 18, load 12, import 0: self-sufficiency 150 %, held to 100 %; EV 2 kWh, all
      green: 2 kWh;
    * minute 1: pv 6, load 12, import 6: 50 %; no EV energy: 0 green;
    * minutes 2-14: 50 %, EV 2 kWh: 1 kWh green each, 13 kWh.
    So the quarter has EV 2 + 0 + 13 * 2 = 28 kWh, green 2 + 0 + 13 = 15 kWh; pv 18 + 14 * 6 =
    102, load 15 * 12 = 180, import 14 * 6 = 84, peak demand 84 / 0.25 h.
    """
    feed = KpiFeed()
    pv = load = grid_in = ev = 0.0
    for minute in range(16):
        feed.microgrid(
            "mg-1",
            T + minute * MIN,
            pv_kwh=pv,
            load_kwh=load,
            grid_import_kwh=grid_in,
            grid_export_kwh=0,
        )
        feed.charger("cp-1", 1, T + minute * MIN, energy_kwh=ev)
        pv += 18 if minute == 0 else 6
        load += 12
        grid_in += 0 if minute == 0 else 6
        ev += 0 if minute == 1 else 2
    feed.close_through(T + 15 * MIN)
    first, second, third = (feed.fields("1m", T + m * MIN) for m in range(3))
    assert (first["ev_green_kwh"], first["ev_green_share_pct"]) == pytest.approx((2, 100))
    assert second["ev_green_kwh"] == 0
    assert "ev_green_share_pct" not in second
    assert (third["ev_green_kwh"], third["ev_green_share_pct"]) == pytest.approx((1, 50))
    assert feed.fields("15m", T) == approx(
        {
            "pv_kwh": 102,
            "load_kwh": 180,
            "grid_import_kwh": 84,
            "grid_export_kwh": 0,
            "self_consumption_pct": 100,
            "self_sufficiency_pct": 100 * 102 / 180,
            "emission_factor_kg_per_kwh": FACTOR,
            "co2_kg": 84 * FACTOR,
            "carbon_intensity_kg_per_kwh": 84 * FACTOR / 180,
            "carbon_intensity_t_per_tce": 84 * FACTOR / (180 * KGCE),
            "ev_energy_kwh": 28,
            "ev_green_kwh": 15,
            "ev_green_share_pct": 100 * 15 / 28,
            "peak_demand_kw": 84 / 0.25,
        }
    )


def test_a_minute_without_self_sufficiency_leaves_its_quarter_without_green_energy() -> None:
    """The charger reports the whole quarter (2 kWh a minute), the meter only from minute 1:
    minute 0 has EV energy but no self-sufficiency, so its green share, and with it the
    quarter's, is unknown; the quarter's EV energy (30 kWh) is still known."""
    feed = KpiFeed()
    for minute in range(16):
        feed.charger("cp-1", 1, T + minute * MIN, energy_kwh=2 * minute)
        if minute:
            feed.microgrid(
                "mg-1", T + minute * MIN, pv_kwh=minute, load_kwh=minute, grid_export_kwh=0
            )
    feed.close_through(T + 15 * MIN)
    assert "ev_green_kwh" not in feed.fields("1m", T)
    assert feed.fields("1m", T + MIN)["ev_green_kwh"] == pytest.approx(2)
    quarter = feed.fields("15m", T)
    assert quarter["ev_energy_kwh"] == pytest.approx(30)
    assert "ev_green_kwh" not in quarter
    assert "ev_green_share_pct" not in quarter


def test_peak_demand_is_the_highest_quarter_of_the_hour() -> None:
    """Imports of 10, 40, 20 and 30 kWh in the four quarters: 40, 160, 80, 120 kW; the hour
    peaks at 160 kW. In the next hour the meter is silent from 01:30 to 01:50 (longer than
    max_gap, across 01:45): the two quarters around 01:45 have no value, so neither has the
    hour's peak, while the hour's import is exact (the long pair lies inside it)."""
    feed = KpiFeed()
    grid_in = 0.0
    for minute in range(121):
        if not 90 < minute < 110:  # silent from 01:30 to 01:50
            feed.microgrid("mg-1", T + minute * MIN, grid_import_kwh=grid_in)
        quarter = minute // 15 % 4
        grid_in += (10, 40, 20, 30)[quarter] / 15
    feed.close_through(T + 120 * MIN)
    assert [feed.fields("15m", T + q * 15 * MIN)["peak_demand_kw"] for q in range(4)] == (
        pytest.approx([40, 160, 80, 120])
    )
    assert feed.fields("1h", T)["peak_demand_kw"] == pytest.approx(160)
    assert feed.fields("1h", T)["grid_import_kwh"] == pytest.approx(100)
    second_hour = feed.fields("1h", T + 60 * MIN)
    assert second_hour["grid_import_kwh"] == pytest.approx(100)  # exact: the gap is inside
    assert "peak_demand_kw" not in second_hour


def test_the_1d_window_runs_from_shanghai_midnight_to_midnight() -> None:
    """Readings every 10 min from 00:05 the day before, plus one at its midnight; load rises
    1 kWh a minute until 23:55 (1435), then 30 kWh to 00:05 (1465), so at midnight it reads
    1450 (interpolated). pv, import = load / 2; storage charged load / 10, discharged 0.09 load.

    The day: load 1450, pv 725, import 725, export 0, charged 145, discharged 130.5 (RTE 90 %).
    Quarters import 7.5 kWh (30 kW) except the last (23:45-24:00), 0.5 * (1450 - 1425) = 12.5
    kWh: 50 kW, the day's peak. Readings 10 min apart need a lateness of more than 5 min.
    """
    feed = KpiFeed(lateness_s=600)
    start = T - DAY
    times = [start, *range(start + 5 * MIN, T, 10 * MIN), T + 5 * MIN]
    for at in times:
        load = (at - start) / MIN if at < T else 1465
        feed.microgrid(
            "mg-1",
            at,
            pv_kwh=load / 2,
            load_kwh=load,
            grid_import_kwh=load / 2,
            grid_export_kwh=0,
        )
        feed.point("storage", "bess-1", at, charged_kwh=load / 10, discharged_kwh=0.09 * load)
    feed.close_through(T)
    [day] = [r for r in feed.records if r.window == "1d" and r.start_ms == start]
    assert (day.start_ms, day.end_ms) == (start, T)
    assert datetime.fromtimestamp(day.start_ms / 1000, UTC).hour == 16  # 00:00 +08:00
    assert day.fields == approx(
        {
            "pv_kwh": 725,
            "load_kwh": 1450,
            "grid_import_kwh": 725,
            "grid_export_kwh": 0,
            "self_consumption_pct": 100,
            "self_sufficiency_pct": 100 * 725 / 1450,
            "emission_factor_kg_per_kwh": FACTOR,
            "co2_kg": 725 * FACTOR,
            "carbon_intensity_kg_per_kwh": 725 * FACTOR / 1450,
            "carbon_intensity_t_per_tce": 725 * FACTOR / (1450 * KGCE),
            "storage_charged_kwh": 145,
            "storage_discharged_kwh": 130.5,
            "storage_rte_pct": 100 * 130.5 / 145,
            "peak_demand_kw": 12.5 / 0.25,
        }
    )
    # The hour before midnight: RTE is a daily figure only.
    assert "storage_rte_pct" not in feed.fields("1h", T - 60 * MIN)


def test_the_1d_window_follows_daylight_saving_time() -> None:
    """Berlin springs forward on 2025-03-30: that day has 23 hours (22:00 to 21:00 UTC)."""
    parks = ParksSettings.model_validate({"overrides": {"p": {"timezone": "Europe/Berlin"}}})
    feed = KpiFeed(parks)
    day_start = round(datetime(2025, 3, 29, 23, tzinfo=UTC).timestamp() * 1000)
    day_end = round(datetime(2025, 3, 30, 22, tzinfo=UTC).timestamp() * 1000)
    for at in range(day_start, day_end + 10 * MIN, 10 * MIN):
        feed.microgrid("mg-1", at, load_kwh=(at - day_start) / MIN)
    feed.close_through(day_end)
    [day] = [r for r in feed.records if r.window == "1d" and r.start_ms == day_start]
    assert day.end_ms - day.start_ms == 23 * 60 * MIN
    assert day.fields == approx({"load_kwh": 23 * 60})


def test_late_points_are_counted_not_folded_in() -> None:
    """mg-2's reading of 00:00:30 arrives at 00:02:30, after the minute closed (at 00:02:00+)."""
    feed = KpiFeed()
    feed.microgrid("mg-2", T, load_kwh=0)
    for at in range(0, 151, 30):
        feed.microgrid("mg-1", T + at * S, pv_kwh=at)
    assert feed.fields("1m", T) == {"pv_kwh": 60}  # mg-2 was incomplete: no load
    feed.microgrid("mg-2", T + 30 * S, load_kwh=5)
    assert feed.metric("parkwatch_kpi_late_points_total", park="p", window="1m") == 1
    assert feed.metric("parkwatch_kpi_late_points_total", park="p", window="15m") == 0
    for minute in range(1, 16):
        feed.microgrid("mg-2", T + minute * MIN, load_kwh=5 + minute * 10)
        feed.microgrid("mg-1", T + minute * MIN, pv_kwh=minute * 60)
    feed.close_through(T + 15 * MIN)
    assert len([r for r in feed.records if r.window == "1m" and r.start_ms == T]) == 1
    # The quarter was still open: the late reading's pair is in it (0 -> 155 kWh).
    assert feed.fields("15m", T)["load_kwh"] == pytest.approx(155)


def test_a_redelivered_or_older_reading_does_not_count_twice() -> None:
    feed = KpiFeed()
    for at, value in ((0, 0), (30, 10), (60, 20), (30, 10), (60, 20), (10, 99), (90, 30)):
        feed.microgrid("mg-1", T + at * S, load_kwh=value)
    feed.microgrid("mg-1", T + 120 * S, load_kwh=40)
    feed.close_through(T + 2 * MIN)
    assert feed.fields("1m", T) == approx({"load_kwh": 20})
    assert feed.fields("1m", T + MIN) == approx({"load_kwh": 20})
    assert feed.metric("parkwatch_kpi_stale_readings_total", park="p") == 3


def test_status_points_and_unknown_kinds_are_ignored() -> None:
    feed = KpiFeed()
    feed.point("device_status", "mg-1", T, online=False)
    feed.point("weather", "w-1", T, pv_kwh=5)
    assert feed.engine.snapshot()["parks"] == {}


def test_a_restored_engine_continues_exactly_where_the_snapshot_was_taken() -> None:
    def day_of_readings(feed: KpiFeed, minutes: range) -> None:
        for minute in minutes:
            at = T + minute * MIN + 7 * S  # off the boundaries
            feed.microgrid("mg-1", at, pv_kwh=minute * 1.1, load_kwh=minute * 2.3)
            feed.charger("cp-1", 1, at, "Charging" if minute % 7 else "Faulted", energy_kwh=minute)

    straight = KpiFeed()
    day_of_readings(straight, range(200))
    before = KpiFeed()
    day_of_readings(before, range(97))
    after = before.reborn()
    day_of_readings(after, range(97, 200))
    assert before.records + after.records == straight.records
    assert len(straight.records) > 200
    assert after.engine.snapshot() == straight.engine.snapshot()


def test_state_stays_bounded_and_silent_devices_are_forgotten() -> None:
    """Three days of one meter every 10 s, plus a device that stops after the first hour."""
    feed = KpiFeed()
    feed.microgrid("mg-gone", T, load_kwh=0)
    feed.microgrid("mg-gone", T + 60 * MIN, load_kwh=60)
    most_accs = 0
    for n, at in enumerate(range(T, T + 3 * DAY, 10 * S)):
        feed.microgrid("mg-1", at, load_kwh=(at - T) / S)
        if n % 97 == 0:
            state = feed.engine.snapshot()["parks"]["p"]
            most_accs = max(most_accs, *(len(s["accs"]) for s in state["series"].values()))
    state = feed.engine.snapshot()["parks"]["p"]
    assert most_accs <= 3  # open windows: the current one and those within the lateness
    assert [track[1] for track in state["tracks"]] == ["mg-1"]  # mg-gone was forgotten
    assert feed.metric("parkwatch_kpi_tracked_counters") == 1


def test_a_long_silence_emits_nothing_and_keeps_nothing() -> None:
    """A park silent for 30 days: its clock jumps, nothing empty is written, little is kept."""
    feed = KpiFeed()
    feed.microgrid("mg-1", T, load_kwh=0)
    feed.microgrid("mg-1", T + MIN, load_kwh=1)
    feed.advance(T + 30 * DAY)
    assert all(record.fields for record in feed.records)
    assert {r.window for r in feed.records} == {"1m"}  # only the minute it was complete in
    state = feed.engine.snapshot()["parks"]["p"]
    assert state["tracks"] == []
    assert all(len(series["accs"]) <= 1 for series in state["series"].values())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_per_window_energies_sum_to_the_increase_for_any_batches_and_closing(
    data: st.DataObject,
) -> None:
    """One counter over an hour: readings at its start and end and at random instants, at least
    one a minute (so every window sees its next reading within the lateness) and mostly off the
    boundaries (so pairs are split), random increases, fed in random batches; after each batch
    the clock moves anywhere up to the newest reading + lateness (what silence may do), and the
    engine may be restarted from its snapshot. Each window kind's records add up to the
    counter's increase over the hour."""
    inner = data.draw(st.lists(st.integers(1, HOUR - 1), max_size=40, unique=True))
    offset = data.draw(st.integers(0, MIN - 1))
    times = sorted({0, *range(offset, HOUR, MIN), *inner, HOUR})
    steps = data.draw(
        st.lists(
            st.floats(0, 50, allow_nan=False), min_size=len(times) - 1, max_size=len(times) - 1
        )
    )
    values = [0.0]
    for step in steps:
        values.append(values[-1] + step)
    cuts = data.draw(st.lists(st.integers(1, len(times) - 1), unique=True, max_size=8))
    bounds = [0, *sorted(cuts), len(times)]
    feed = KpiFeed()
    records: list[KpiRecord] = []
    for low, high in itertools.pairwise(bounds):
        for at, value in zip(times[low:high], values[low:high], strict=True):
            feed.microgrid("mg-1", T + at, load_kwh=value)
        newest = T + times[high - 1]
        feed.advance(data.draw(st.integers(newest, newest + 60 * S)))
        if data.draw(st.booleans()):
            records += feed.records
            feed = feed.reborn()
    feed.close_through(T + HOUR)
    records += feed.records
    for window, count in (("1m", 60), ("15m", 4), ("1h", 1)):
        energies = [
            r.fields["load_kwh"]
            for r in records
            if r.window == window and T <= r.start_ms < T + HOUR
        ]
        assert len(energies) == count
        assert math.fsum(energies) == pytest.approx(values[-1], rel=1e-9, abs=1e-6)


def test_the_engine_agrees_with_the_offline_reference_on_a_simulated_day_with_faults() -> None:
    """A simulated park for a day: a storage unit offline for 20 min (a long gap), a 5G site
    for 5 min (a short one), a meter counter reset, a charger faulted for 40 min. Every window
    the data closes has the same fields as the offline reference computes (tests/kpi/reference.py:
    interpolated boundary values of reset-adjusted counters, no streaming)."""
    fleet = FleetSpec.model_validate(
        {
            "step_s": 30,
            "intervals_s": {"microgrid": 30, "storage": 30, "site5g": 30, "charger": 30},
            "parks": [{"id": "lingang", "storage": {"count": 2}, "charger": {"count": 2}}],
        }
    )
    scenario = Scenario.model_validate(
        {
            "faults": [
                {"fault": "offline", "device": "lingang/storage/bess-01", "at": "3h",
                 "duration": "20m"},
                {"fault": "offline", "device": "lingang/site5g/gnb-01", "at": "5h",
                 "duration": "5m"},
                {"fault": "counter_reset", "device": "lingang/microgrid/mg-01", "at": "7h"},
                {"fault": "charger_faulted", "device": "lingang/charger/cp-01", "at": "9h",
                 "duration": "40m"},
            ]
        }
    )  # fmt: skip
    start = datetime(2025, 6, 20, tzinfo=SHANGHAI)
    points = list(simulated_points(fleet, 5, start, 86400 + 600, scenario))
    feed = KpiFeed()
    rows: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        feed.point(p.kind, p.device, p.ts_ms, park=p.park, connector=p.connector, **p.fields)
        row = {"time": p.ts_ms, "device": p.device, "connector": p.connector, **p.fields}
        rows.setdefault(p.kind, []).append(row)
    newest = max(p.ts_ms for p in points)
    closed = {
        (r.window, r.start_ms): dict(r.fields)
        for r in feed.records
        if r.start_ms + SIZES[r.window] + 60 * S < newest
    }
    expected = reference_kpis(rows)
    assert closed.keys() == expected.keys()
    for key, fields in expected.items():
        assert closed[key] == pytest.approx(fields, rel=1e-9, abs=1e-9), key
    day = closed["1d", T - DAY]
    assert "ev_faulted_pct" in day
    assert day["ev_faulted_pct"] > 0
    # The storage gap and the reset leave some windows without a value, not all.
    assert 0 < sum("storage_charged_kwh" not in f for k, f in closed.items() if k[0] == "1m") < 60


def test_the_tracked_gauge_counts_what_is_held_through_new_devices_forgetting_and_restore() -> None:
    """``parkwatch_kpi_tracked_counters`` is kept as a count (read at every scrape): it must
    equal what the state holds as devices come, go silent and are forgotten, and after a
    restore."""

    def held(feed: KpiFeed) -> int:
        parks = feed.engine.snapshot()["parks"].values()
        return sum(len(p["tracks"]) + len(p["connectors"]) for p in parks)

    feed = KpiFeed()
    feed.microgrid("mg-gone", T, load_kwh=0, pv_kwh=0)
    feed.charger("cp-1", 1, T, "Charging", energy_kwh=0)
    feed.charger("cp-1", 2, T, "Available", energy_kwh=0)
    assert feed.metric("parkwatch_kpi_tracked_counters") == held(feed) == 6
    for n, at in enumerate(range(T, T + 2 * DAY, 60 * S)):  # mg-gone and cp-1 are forgotten
        feed.microgrid("mg-1", at, load_kwh=(at - T) / S)
        if n % 97 == 0:
            assert feed.metric("parkwatch_kpi_tracked_counters") == held(feed)
    assert feed.metric("parkwatch_kpi_tracked_counters") == held(feed) == 1
    reborn = feed.reborn()
    assert reborn.metric("parkwatch_kpi_tracked_counters") == held(reborn) == 1
