"""KPI windows and their alignment in time: 1m, 15m, 1h on the clock, 1d at local midnight.

``1m``, ``15m`` and ``1h`` windows are aligned to the epoch (so to UTC): for every time zone with a
whole-hour offset, Shanghai's included, that is also the local clock. ``1d`` windows run from one
local midnight to the next in the park's time zone, so a day is 23 or 25 hours long where daylight
saving time starts or ends. Where a midnight does not exist (a zone that springs forward at 00:00),
the day starts at the first instant that carries its date.

Times are epoch milliseconds; a window is the half-open interval ``[start, end)``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

__all__ = ["FIXED_WINDOW_MS", "FixedWindows", "LocalDays", "WindowKind", "window_kinds"]

FIXED_WINDOW_MS: Final = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}
"""Length of each clock-aligned window kind."""


class WindowKind(Protocol):
    """One kind of window: where the window holding an instant starts, and where it ends."""

    name: str

    def start_of(self, ts_ms: int) -> int:
        """Start of the window holding ``ts_ms``."""
        ...

    def end_of(self, start_ms: int) -> int:
        """End of the window starting at ``start_ms`` (the next window's start)."""
        ...


class FixedWindows:
    """Windows of a fixed length, aligned to the epoch."""

    __slots__ = ("name", "size_ms")

    def __init__(self, name: str, size_ms: int) -> None:
        self.name = name
        self.size_ms = size_ms

    def start_of(self, ts_ms: int) -> int:
        """Start of the window holding ``ts_ms``."""
        return ts_ms - ts_ms % self.size_ms

    def end_of(self, start_ms: int) -> int:
        """End of the window starting at ``start_ms``."""
        return start_ms + self.size_ms


class LocalDays:
    """Local calendar days in one time zone; remembers the last day looked up (the usual one)."""

    __slots__ = ("_end", "_start", "_zone", "name")

    def __init__(self, timezone: str) -> None:
        self.name = "1d"
        self._zone = ZoneInfo(timezone)
        self._start = 0
        self._end = 0  # [_start, _end) is the cached day; empty at first

    def start_of(self, ts_ms: int) -> int:
        """The first instant of the local day holding ``ts_ms``."""
        if self._start <= ts_ms < self._end:
            return self._start
        day = datetime.fromtimestamp(ts_ms // 1000, self._zone).date()
        start = self._midnight(day)
        self._start, self._end = start, self._after(day, start)
        return start

    def end_of(self, start_ms: int) -> int:
        """The first instant of the next local day."""
        if start_ms == self._start:
            return self._end
        day = datetime.fromtimestamp(start_ms // 1000, self._zone).date()
        return self._after(day, start_ms)

    def _midnight(self, day: date) -> int:
        # fold=0 maps a midnight lost to a spring-forward gap onto the instant of the jump,
        # and an ambiguous one onto its first occurrence: the first instant carrying ``day``.
        return round(datetime.combine(day, time(), tzinfo=self._zone).timestamp()) * 1000

    def _after(self, day: date, start_ms: int) -> int:
        end = self._midnight(day + timedelta(days=1))
        while end <= start_ms:  # a zone that skipped a whole date (Samoa, 2011-12-30)
            day += timedelta(days=1)
            end = self._midnight(day + timedelta(days=1))
        return end


def window_kinds(timezone: str) -> tuple[WindowKind, ...]:
    """The four window kinds of a park in ``timezone``, shortest first (``KPI_WINDOWS`` order)."""
    fixed = tuple(FixedWindows(name, size) for name, size in FIXED_WINDOW_MS.items())
    return (*fixed, LocalDays(timezone))
