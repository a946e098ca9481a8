"""Battery storage: dispatch rule, SOC limits, losses, temperatures."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.simtime import SHANGHAI, TouPeriod, instant_at
from simulators.storage import Battery, dispatch_request

NOON = instant_at(round(datetime(2025, 6, 23, 12, tzinfo=SHANGHAI).timestamp() * 1000))


def test_dispatch_stores_pv_surplus_first() -> None:
    assert dispatch_request(TouPeriod.PEAK, 300.0, 500.0, 2) == -150.0
    assert dispatch_request(TouPeriod.FLAT, 3000.0, 500.0, 2) == -500.0


def test_dispatch_charges_in_valley_and_shaves_peak_without_exporting() -> None:
    assert dispatch_request(TouPeriod.VALLEY, -800.0, 500.0, 1) < 0
    assert dispatch_request(TouPeriod.PEAK, -800.0, 500.0, 1) == 500.0
    assert dispatch_request(TouPeriod.PEAK, -300.0, 500.0, 2) == 150.0  # never beyond the deficit
    assert dispatch_request(TouPeriod.FLAT, -800.0, 500.0, 1) == 0.0


@settings(max_examples=50, deadline=None)
@given(
    requests=st.lists(st.floats(min_value=-3000, max_value=3000), min_size=1, max_size=200),
    soc=st.floats(min_value=10, max_value=90),
    dt_s=st.sampled_from([1.0, 10.0, 60.0, 900.0]),
)
def test_soc_stays_within_limits_and_counters_only_grow(
    requests: list[float], soc: float, dt_s: float
) -> None:
    battery = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=soc)
    rng = random.Random(0)
    charged = discharged = 0.0
    for request in requests:
        power = battery.step(request, NOON, dt_s, rng)
        assert abs(power) <= battery.rated_kw
        assert battery.soc_min_pct <= battery.soc_pct <= battery.soc_max_pct
        assert battery.charged_kwh >= charged
        assert battery.discharged_kwh >= discharged
        charged, discharged = battery.charged_kwh, battery.discharged_kwh


def test_round_trip_loses_about_eta_squared() -> None:
    battery = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=10.0)
    rng = random.Random(0)
    while battery.soc_pct < battery.soc_max_pct:
        battery.step(-500.0, NOON, 10.0, rng)
    while battery.soc_pct > battery.soc_min_pct:
        battery.step(500.0, NOON, 10.0, rng)
    efficiency = battery.discharged_kwh / battery.charged_kwh
    # 95 % one way, 95 % back (the default efficiencies): 0.95 x 0.95.
    assert efficiency == pytest.approx(0.9025, rel=0.01)
    # The SOC window 10-90 % of 1000 kWh at 98 % health is 784 kWh in the cells, which took
    # 784 / 0.95 = 825.3 kWh from the AC side.
    assert battery.charged_kwh == pytest.approx(825.3, rel=0.01)


def test_limits_stop_power_at_full_and_empty() -> None:
    rng = random.Random(0)
    full = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=90.0)
    assert full.step(-500.0, NOON, 10.0, rng) == 0.0
    empty = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=10.0)
    assert empty.step(500.0, NOON, 10.0, rng) == 0.0


def test_overheating_cells_are_derated_by_the_bms() -> None:
    battery = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=50.0)
    rng = random.Random(0)
    for _ in range(6 * 60 * 3):  # three hours of 10 s steps
        battery.step(0.0, NOON, 10.0, rng, extra_heat_c=40.0)
    assert battery.cell_temp_max_c > 55.0  # the BMS derating limit (a Battery default)
    assert battery.step(500.0, NOON, 10.0, rng) == 0.0


def test_cells_look_like_lfp() -> None:
    battery = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=50.0)
    assert 3.0 < battery.cell_v_mean < 3.4
    assert battery.cell_temp_min_c < battery.cell_temp_max_c
    resting = Battery(capacity_kwh=1000.0, rated_kw=500.0, soc_pct=50.0)
    resting.step(0.0, NOON, 10.0, random.Random(0))
    battery.step(-500.0, NOON, 10.0, random.Random(0))
    # 10 s of charging add 0.13 % SOC (a few tenths of a millivolt of open-circuit voltage);
    # the current's IR drop lifts the terminal voltage far more than that.
    assert battery.soc_pct == pytest.approx(50.13, abs=0.01)
    assert battery.cell_v_mean > resting.cell_v_mean + 0.01
