"""5G base-station site."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from simulators.simtime import SHANGHAI, Instant, instant_at
from simulators.site5g import Site5G, traffic_profile


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


class NoNoise(random.Random):
    """Draws no traffic noise, so a site's traffic share is the daily profile exactly."""

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        """Always the mean."""
        return mu


# Worked by hand for a Tuesday (2.2 kW idle floor, 2.0 kW more at full traffic; traffic share =
# 0.06 + 0.9 exp(-((h - 11) / 2.5)^2) + 0.8 exp(-((h - 20.5) / 2.2)^2); sleep level 1, 2, 3 below
# 30, 18, 10 % traffic, level 3 only between 01:00 and 06:00; floor kept 100/80/60/40 %):
@pytest.mark.parametrize(
    ("hour", "sleep_level", "power_kw"),
    [
        (3.0, 3, 0.4 * 2.2 + 2.0 * 0.060032),  # share 0.06 + 0.9 e^-10.24: deep sleep
        (8.0, 1, 0.8 * 2.2 + 2.0 * 0.273235),  # share 0.06 + 0.9 e^-1.44
        (11.0, 0, 2.2 + 2.0 * 0.960000),  # the morning peak
        (16.0, 2, 0.6 * 2.2 + 2.0 * 0.088676),  # 0.06 + 0.9 e^-4 + 0.8 e^-4.184: no deep sleep
        (20.5, 0, 2.2 + 2.0 * 0.860000),  # the evening peak
    ],
)
def test_power_is_sleep_floor_plus_a_share_proportional_to_traffic(
    hour: float, sleep_level: int, power_kw: float
) -> None:
    site = Site5G()
    drawn = site.step(_instant(hour), 10.0, NoNoise())
    assert site.sleep_level == sleep_level
    assert drawn == pytest.approx(power_kw, abs=1e-5)


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
    site = Site5G()
    energy = traffic = 0.0
    for k in range(8640):
        instant = _instant(k * 10 / 3600)
        # The energy counter integrates the power the site reports, step by step.
        energy += site.step(instant, 10.0, NoNoise()) * 10 / 3600
        # Without noise the traffic share is the daily profile; the busy hour carries 60 GB.
        traffic += 60.0 * traffic_profile(instant) * 10 / 3600
    assert site.energy_kwh == pytest.approx(energy)
    assert site.traffic_gb == pytest.approx(traffic)
    assert 0 < site.active_ues <= 400
    assert 0 <= site.prb_util_pct <= 100


def test_noise_moves_power_around_the_profile_without_changing_the_floor() -> None:
    rng = random.Random(4)
    noisy = [Site5G().step(_instant(11.0), 10.0, rng) for _ in range(200)]
    assert len(set(noisy)) > 100
    # At the morning peak (share 0.96, no sleep) noise of a few % stays within 2.2-4.2 kW.
    assert all(2.2 <= kw <= 4.2 for kw in noisy)


def test_on_battery_leaves_the_park_and_sleeps_deeper() -> None:
    rng = random.Random(5)
    site = Site5G()
    assert site.step(_instant(11.0), 10.0, rng, on_battery=True) == 0.0
    assert site.on_battery
    assert site.sleep_level >= 1
    assert site.power_kw > 0  # it still consumes, from its own battery
