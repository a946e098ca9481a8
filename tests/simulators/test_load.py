"""Industrial process load."""

from __future__ import annotations

import random
from datetime import datetime

from simulators.load import IndustrialLoad, shift_profile
from simulators.simtime import SHANGHAI, instant_at


def _at(day: int, hour: int) -> float:
    local = datetime(2025, 6, day, hour, tzinfo=SHANGHAI)  # June 23 2025 is a Monday
    return shift_profile(instant_at(round(local.timestamp() * 1000)))


def test_weekday_day_shift_plateau_is_above_nights() -> None:
    assert _at(24, 10) > 0.95
    assert _at(24, 15) > 0.95
    assert _at(24, 3) < 0.5 * _at(24, 10)
    assert _at(24, 23) < 0.5 * _at(24, 10)


def test_weekends_are_lower_than_weekdays() -> None:
    assert _at(28, 10) < 0.6 * _at(24, 10)  # Saturday
    assert _at(29, 15) < 0.6 * _at(24, 15)  # Sunday


def test_noise_wanders_but_load_stays_positive_and_near_profile() -> None:
    load = IndustrialLoad(2000.0)
    rng = random.Random(1)
    local = datetime(2025, 6, 24, 10, tzinfo=SHANGHAI)
    instant = instant_at(round(local.timestamp() * 1000))
    values = [load.step(instant, 10.0, rng) for _ in range(5000)]
    assert all(v > 0 for v in values)
    assert 1800 < sum(values) / len(values) < 2200
    assert len(set(values)) > 100
