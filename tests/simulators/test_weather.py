"""Shanghai sun, clouds and air temperature."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest

from simulators.simtime import SHANGHAI, instant_at
from simulators.weather import CloudProcess, ambient_temp_c, clear_sky_ghi, solar_declination_deg


def _day(year: int, month: int, day: int, step_min: int = 5) -> list[tuple[float, float]]:
    """(local hour, clear-sky GHI) over one local day."""
    start = datetime(year, month, day, tzinfo=SHANGHAI)
    out = []
    for k in range(0, 24 * 60, step_min):
        instant = instant_at(round((start + timedelta(minutes=k)).timestamp() * 1000))
        out.append((instant.hour, clear_sky_ghi(instant)))
    return out


def _daylight(day: list[tuple[float, float]]) -> tuple[float, float]:
    lit = [h for h, ghi in day if ghi > 0]
    return lit[0], lit[-1]


def test_declination_peaks_at_solstices() -> None:
    assert solar_declination_deg(172) == pytest.approx(23.45, abs=0.1)
    assert solar_declination_deg(355) == pytest.approx(-23.45, abs=0.1)


@pytest.mark.parametrize(("month", "day"), [(3, 20), (6, 21), (9, 23), (12, 21)])
def test_sun_is_down_at_night_and_peaks_near_solar_noon(month: int, day: int) -> None:
    profile = _day(2025, month, day)
    assert all(ghi == 0 for h, ghi in profile if h < 4.5 or h > 19.5)
    noon_hour = max(profile, key=lambda p: p[1])[0]
    # Shanghai lies east of the UTC+8 meridian: solar noon is 11:40-12:05 local.
    assert 11.5 <= noon_hour <= 12.25


def test_summer_days_are_longer_than_winter_days() -> None:
    summer_rise, summer_set = _daylight(_day(2025, 6, 21))
    winter_rise, winter_set = _daylight(_day(2025, 12, 21))
    assert 4.5 < summer_rise < 5.5
    assert 6.5 < winter_rise < 7.3
    assert 18.5 < summer_set < 19.5
    assert 16.6 < winter_set < 17.5
    # About 14.1 h against 10.2 h of daylight.
    assert (summer_set - summer_rise) - (winter_set - winter_rise) > 3.5


def test_midsummer_noon_is_near_one_sun() -> None:
    noon = max(ghi for _, ghi in _day(2025, 6, 21))
    assert 950 < noon < 1100


def test_cloud_cover_is_bounded_and_persistent() -> None:
    rng = random.Random(7)
    clouds = CloudProcess()
    series = []
    for _ in range(20_000):
        clouds.step(rng, 10.0)
        series.append(clouds.cover)
    assert all(0.0 <= c <= 1.0 for c in series)
    mean = sum(series) / len(series)
    lag1 = sum((a - mean) * (b - mean) for a, b in itertools.pairwise(series))
    var = sum((a - mean) ** 2 for a in series)
    # White noise would have no correlation from one 10 s step to the next; clouds persist.
    assert lag1 / var > 0.95
    assert 0.0 < clouds.transmission <= 1.0


def test_summer_is_warmer_than_winter_and_afternoons_than_dawns() -> None:
    def temp(month: int, hour: int) -> float:
        local = datetime(2025, month, 15, hour, tzinfo=SHANGHAI)
        return ambient_temp_c(instant_at(round(local.timestamp() * 1000)))

    assert temp(7, 14) > temp(1, 14) + 15
    assert temp(7, 14) > temp(7, 5)
