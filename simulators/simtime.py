"""Simulated time: the instant every device model sees, Shanghai's tariff periods, and pacing.

Simulated time advances in fixed steps from a start instant; payload timestamps are computed from
the step index in integer milliseconds, never from the wall clock, so a run with a given start is
reproducible. :class:`Pacer` maps simulated time onto the wall clock for real-time (``speed=1``) or
accelerated (``speed=60``: a simulated minute per second) publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

__all__ = [
    "SHANGHAI",
    "Instant",
    "Pacer",
    "TouPeriod",
    "default_start",
    "instant_at",
    "tou_period",
]

SHANGHAI: Final = timezone(timedelta(hours=8), "CST")
"""China Standard Time; China has no daylight saving, so a fixed offset is exact."""

PEAK_HOURS: Final = ((8, 11), (18, 21))
VALLEY_HOURS: Final = ((22, 24), (0, 6))
"""Shanghai industrial time-of-use periods (approx., local hours [from, to))."""


class TouPeriod(enum.StrEnum):
    """Time-of-use tariff period."""

    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"


def tou_period(hour: float) -> TouPeriod:
    """The tariff period of a local (Shanghai) fractional hour of day."""
    if any(lo <= hour < hi for lo, hi in PEAK_HOURS):
        return TouPeriod.PEAK
    if any(lo <= hour < hi for lo, hi in VALLEY_HOURS):
        return TouPeriod.VALLEY
    return TouPeriod.FLAT


@dataclass(frozen=True, slots=True)
class Instant:
    """One simulated instant, with the calendar facts the device models need precomputed."""

    ts_ms: int
    """Epoch milliseconds (UTC)."""
    hour: float
    """Local fractional hour of day, 0 <= hour < 24."""
    weekday: int
    """Local day of week, Monday = 0."""
    day_of_year: int
    """Local day of year, 1-366."""
    period: TouPeriod

    @property
    def is_workday(self) -> bool:
        """Monday to Friday (public holidays are not modelled)."""
        return self.weekday < 5


def instant_at(ts_ms: int) -> Instant:
    """The :class:`Instant` at epoch milliseconds ``ts_ms``."""
    local = datetime.fromtimestamp(ts_ms / 1000, SHANGHAI)
    hour = local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600
    return Instant(
        ts_ms=ts_ms,
        hour=hour,
        weekday=local.weekday(),
        day_of_year=local.timetuple().tm_yday,
        period=tou_period(hour),
    )


def default_start(step_s: float) -> datetime:
    """Now, floored to a whole simulation step (the default start of a live run)."""
    now = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(math.floor(now / step_s) * step_s, UTC)


class Pacer:
    """Waits until the wall clock reaches a simulated offset, at ``speed`` x real time.

    A run that falls behind (a slow broker, a stopped debugger) publishes the late ticks at once
    rather than skipping them, so every simulated step is still emitted.
    """

    def __init__(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._origin: float | None = None

    async def wait_until(self, elapsed_s: float, stop: asyncio.Event | None = None) -> bool:
        """Sleep until ``elapsed_s`` simulated seconds after the first call have passed.

        Returns False, early, if ``stop`` is set (a real-time step may be long to sleep through).
        """
        loop = asyncio.get_running_loop()
        if self._origin is None:
            self._origin = loop.time() - elapsed_s / self.speed
        delay = self._origin + elapsed_s / self.speed - loop.time()
        if stop is None:
            if delay > 0:
                await asyncio.sleep(delay)
            return True
        if delay > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        return not stop.is_set()
