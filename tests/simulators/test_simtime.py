"""Simulated time: Shanghai calendar facts, tariff periods, pacing."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from simulators.simtime import SHANGHAI, Pacer, TouPeriod, default_start, instant_at, tou_period


@pytest.mark.parametrize(
    ("hour", "period"),
    [
        (0.0, TouPeriod.VALLEY),
        (5.99, TouPeriod.VALLEY),
        (6.0, TouPeriod.FLAT),
        (7.99, TouPeriod.FLAT),
        (8.0, TouPeriod.PEAK),
        (10.99, TouPeriod.PEAK),
        (11.0, TouPeriod.FLAT),
        (18.5, TouPeriod.PEAK),
        (21.0, TouPeriod.FLAT),
        (22.0, TouPeriod.VALLEY),
        (23.99, TouPeriod.VALLEY),
    ],
)
def test_tou_periods_follow_shanghai_industrial_tariff(hour: float, period: TouPeriod) -> None:
    assert tou_period(hour) is period


def test_instant_is_in_shanghai_local_time() -> None:
    local = datetime(2025, 6, 23, 9, 30, tzinfo=SHANGHAI)  # a Monday
    instant = instant_at(round(local.timestamp() * 1000))
    assert instant.hour == pytest.approx(9.5)
    assert instant.weekday == 0
    assert instant.is_workday
    assert instant.day_of_year == 174
    assert instant.period is TouPeriod.PEAK
    assert not instant_at(
        round(datetime(2025, 6, 28, tzinfo=SHANGHAI).timestamp() * 1000)
    ).is_workday


def test_default_start_is_whole_steps() -> None:
    assert default_start(10.0).timestamp() % 10 == 0


def test_pacer_rejects_non_positive_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        Pacer(0)


async def test_pacer_returns_false_once_stopped() -> None:
    stop = asyncio.Event()
    pacer = Pacer(speed=1.0)
    assert await pacer.wait_until(0.0, stop)
    stop.set()
    # An hour of real time ahead: a set stop event must cut the wait short.
    async with asyncio.timeout(5):
        assert not await pacer.wait_until(3600.0, stop)


async def test_pacer_catches_up_without_sleeping_through_past_ticks() -> None:
    pacer = Pacer(speed=1e9)
    async with asyncio.timeout(5):
        for elapsed in range(0, 10_000, 10):
            assert await pacer.wait_until(float(elapsed))
