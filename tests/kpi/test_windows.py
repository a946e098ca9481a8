"""Window alignment: the clock's windows on the epoch, days at local midnight (DST included)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpi.windows import FixedWindows, LocalDays, window_kinds

H = 3_600_000


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch milliseconds of a UTC date and time."""
    return round(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def test_clock_windows_are_aligned_to_the_epoch() -> None:
    quarter = FixedWindows("15m", 900_000)
    at = utc_ms(2025, 6, 21, 3, 45) - 1
    assert quarter.start_of(at) == utc_ms(2025, 6, 21, 3, 30)
    assert quarter.end_of(quarter.start_of(at)) == utc_ms(2025, 6, 21, 3, 45)
    assert quarter.start_of(utc_ms(2025, 6, 21, 3, 45)) == utc_ms(2025, 6, 21, 3, 45)
    assert [kind.name for kind in window_kinds("UTC")] == ["1m", "15m", "1h", "1d"]


def test_a_shanghai_day_starts_at_16_00_utc() -> None:
    days = LocalDays("Asia/Shanghai")
    start = days.start_of(utc_ms(2025, 6, 21, 16) - 1)  # 23:59:59.999 local
    assert start == utc_ms(2025, 6, 20, 16)
    assert days.end_of(start) == utc_ms(2025, 6, 21, 16)
    assert days.start_of(utc_ms(2025, 6, 21, 16)) == utc_ms(2025, 6, 21, 16)


@pytest.mark.parametrize(
    ("zone", "day", "start", "hours"),
    [
        ("Europe/Berlin", date(2025, 3, 30), utc_ms(2025, 3, 29, 23), 23),  # spring forward
        ("Europe/Berlin", date(2025, 10, 26), utc_ms(2025, 10, 25, 22), 25),  # fall back
        # Chile springs forward at midnight: 00:00 does not exist, the day starts at 01:00.
        ("America/Santiago", date(2024, 9, 8), utc_ms(2024, 9, 8, 4), 23),
        ("America/Santiago", date(2024, 9, 7), utc_ms(2024, 9, 7, 4), 24),
        # Samoa skipped 2011-12-30: the 29th ends where the 31st begins.
        ("Pacific/Apia", date(2011, 12, 29), utc_ms(2011, 12, 29, 10), 24),
        ("Pacific/Apia", date(2011, 12, 31), utc_ms(2011, 12, 30, 10), 24),
    ],
)
def test_days_follow_the_zones_clock_changes(zone: str, day: date, start: int, hours: int) -> None:
    days = LocalDays(zone)
    noon = start + 12 * H
    assert datetime.fromtimestamp(noon / 1000, ZoneInfo(zone)).date() == day
    assert days.start_of(noon) == start
    assert days.end_of(start) - start == hours * H


@given(
    zone=st.sampled_from(
        [
            "Asia/Shanghai",
            "Europe/Berlin",
            "America/Santiago",
            "Australia/Lord_Howe",
            "Pacific/Apia",
        ]
    ),
    instants=st.lists(st.integers(utc_ms(2010, 1, 1), utc_ms(2030, 1, 1)), min_size=1, max_size=20),
)
def test_every_instant_lies_in_the_day_of_its_local_date(zone: str, instants: list[int]) -> None:
    """In any order of lookups (the last day is cached): start <= ts < end, the start is the
    first instant of its local date, and the end the first instant of a later date."""
    days, tz = LocalDays(zone), ZoneInfo(zone)
    for ts in instants:
        start = days.start_of(ts)
        end = days.end_of(start)
        assert start <= ts < end
        local_date = datetime.fromtimestamp(ts // 1000, tz).date()
        assert datetime.fromtimestamp(start // 1000, tz).date() == local_date
        assert datetime.fromtimestamp((start - 1000) // 1000, tz).date() < local_date
        assert datetime.fromtimestamp(end // 1000, tz).date() > local_date  # next (Samoa: +2)
        assert datetime.fromtimestamp((end - 1000) // 1000, tz).date() == local_date
