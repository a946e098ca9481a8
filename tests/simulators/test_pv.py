"""The park's PV array."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from simulators.pv import PvArray
from simulators.simtime import SHANGHAI, instant_at
from simulators.weather import CloudProcess


def _run(array: PvArray, step_s: float = 60.0) -> list[tuple[float, float]]:
    rng = random.Random(3)
    start = datetime(2025, 6, 23, tzinfo=SHANGHAI)
    out = []
    for k in range(int(86400 / step_s)):
        instant = instant_at(round((start + timedelta(seconds=k * step_s)).timestamp() * 1000))
        out.append((instant.hour, array.step(instant, step_s, rng)))
    return out


def test_clear_sky_output_is_a_bell_scaled_by_capacity() -> None:
    array = PvArray(1000.0, clouds=CloudProcess(cover=0.0, mean=0.0, stationary_sd=0.0))
    day = _run(array)
    assert all(kw == 0 for h, kw in day if h < 4.5 or h > 19.5)
    peak_hour, peak_kw = max(day, key=lambda p: p[1])
    assert 11.5 <= peak_hour <= 12.25
    # Haurwitz clear sky slightly exceeds 1000 W/m2 at a high summer sun.
    assert 0.7 * 1000 < peak_kw <= 1.1 * 1000 * 0.82  # performance ratio 0.82 (the default)
    morning = dict(day)
    assert morning[8.0] < morning[10.0] < peak_kw


def test_clouds_cut_output_but_never_below_zero() -> None:
    clear = PvArray(1000.0, clouds=CloudProcess(cover=0.0, mean=0.0, stationary_sd=0.0))
    cloudy = PvArray(1000.0, clouds=CloudProcess(cover=1.0, mean=1.0, stationary_sd=0.0))
    clear_kwh = sum(kw for _, kw in _run(clear)) / 60
    cloudy_kwh = sum(kw for _, kw in _run(cloudy)) / 60
    assert 0 < cloudy_kwh < 0.3 * clear_kwh
    assert all(kw >= 0 for _, kw in _run(PvArray(1000.0)))
