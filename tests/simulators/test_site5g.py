"""5G base-station site."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from simulators.simtime import SHANGHAI, Instant, instant_at
from simulators.site5g import SLEEP_FLOOR_SHARE, Site5G, traffic_profile


def _instant(hour: float, day: int = 24) -> Instant:
    local = datetime(2025, 6, day, tzinfo=SHANGHAI) + timedelta(hours=hour)
    return instant_at(round(local.timestamp() * 1000))


def test_traffic_has_a_daily_double_hump() -> None:
    hours = [h / 4 for h in range(96)]
    share = [traffic_profile(_instant(h)) for h in hours]
    peaks = [hours[i] for i in range(1, len(share) - 1) if share[i - 1] < share[i] >= share[i + 1]]
    assert len(peaks) == 2
    assert 10 <= peaks[0] <= 12
    assert 19.5 <= peaks[1] <= 21.5
    assert min(share) == pytest.approx(
        min(traffic_profile(_instant(h)) for h in (3, 4, 5)), abs=0.02
    )


def test_power_is_sleep_floor_plus_a_share_proportional_to_traffic() -> None:
    rng = random.Random(2)
    for hour in (3.0, 8.0, 11.0, 16.0, 20.5):
        site = Site5G()
        instant = _instant(hour)
        drawn = site.step(instant, 10.0, rng)
        floor = site.idle_kw * SLEEP_FLOOR_SHARE[site.sleep_level]
        assert drawn == pytest.approx(floor + site.dynamic_kw * site.traffic_share)


def test_sleep_cuts_the_floor_at_night_only() -> None:
    rng = random.Random(2)
    night, day = Site5G(), Site5G()
    for _ in range(100):
        night.step(_instant(3.5), 10.0, rng)
        day.step(_instant(11.0), 10.0, rng)
    assert night.sleep_level == 3
    assert day.sleep_level == 0
    assert night.power_kw < 0.6 * day.power_kw
    evening = Site5G()
    evening.step(_instant(23.9), 10.0, rng)
    assert evening.sleep_level <= 2  # deep sleep is kept for the small hours


def test_counters_integrate_power_and_traffic() -> None:
    rng = random.Random(4)
    site = Site5G()
    energy = traffic = 0.0
    for k in range(8640):
        instant = _instant(k * 10 / 3600)
        energy += site.step(instant, 10.0, rng) * 10 / 3600
        traffic += site.peak_gb_per_h * site.traffic_share * 10 / 3600
    assert site.energy_kwh == pytest.approx(energy)
    assert site.traffic_gb == pytest.approx(traffic)
    assert 0 < site.active_ues <= site.max_ues
    assert 0 <= site.prb_util_pct <= 100


def test_on_battery_leaves_the_park_and_sleeps_deeper() -> None:
    rng = random.Random(5)
    site = Site5G()
    assert site.step(_instant(11.0), 10.0, rng, on_battery=True) == 0.0
    assert site.on_battery
    assert site.sleep_level >= 1
    assert site.power_kw > 0  # it still consumes, from its own battery
