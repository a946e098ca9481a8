"""A 5G base-station site: power = idle floor (cut by sleep modes) + a share tracking traffic."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulators.simtime import Instant
from simulators.weather import ambient_temp_c

__all__ = ["SLEEP_FLOOR_SHARE", "Site5G", "traffic_profile"]

SLEEP_FLOOR_SHARE = (1.0, 0.8, 0.6, 0.4)
"""Idle floor kept at sleep level 0-3 (symbol, channel, carrier and deep sleep; approx.)."""
SLEEP_THRESHOLDS = (0.30, 0.18, 0.10)
"""Traffic shares below which the site enters sleep level 1, 2, 3."""
DEEP_SLEEP_HOURS = (1.0, 6.0)
"""Level 3 (deep sleep) is only allowed in this local night window: it costs wake-up latency."""


def traffic_profile(instant: Instant) -> float:
    """Expected traffic as a share of the busy-hour peak: a late-morning and an evening hump."""
    h = instant.hour
    morning = 0.9 * math.exp(-(((h - 11.0) / 2.5) ** 2))
    evening = 0.8 * math.exp(-(((h - 20.5) / 2.2) ** 2))
    weekend = 1.0 if instant.is_workday else 0.75
    return min(1.0, 0.06 + weekend * (morning + evening))


@dataclass(slots=True)
class Site5G:
    """One site (three sectors) with its counters; ``on_battery`` means the mains are lost."""

    idle_kw: float = 2.2
    dynamic_kw: float = 2.0
    """Extra power at 100 % PRB utilisation."""
    peak_gb_per_h: float = 60.0
    max_ues: int = 400
    noise: float = 0.0
    traffic_share: float = 0.0
    sleep_level: int = 0
    on_battery: bool = False
    power_kw: float = 0.0
    energy_kwh: float = 0.0
    traffic_gb: float = 0.0
    cabinet_temp_c: float = 25.0

    def _sleep_level(self, instant: Instant) -> int:
        level = sum(self.traffic_share < t for t in SLEEP_THRESHOLDS)
        lo, hi = DEEP_SLEEP_HOURS
        if level == 3 and not lo <= instant.hour < hi:
            level = 2
        # On battery the site saves energy harder to stretch its autonomy.
        return min(3, level + 1) if self.on_battery else level

    def step(
        self, instant: Instant, dt_s: float, rng: random.Random, *, on_battery: bool = False
    ) -> float:
        """Advance ``dt_s``; return the power the site draws from the park (0 on battery)."""
        decay = math.exp(-3.0 * dt_s / 3600)
        self.noise = self.noise * decay + 0.12 * math.sqrt(1 - decay * decay) * rng.gauss(0, 1)
        self.traffic_share = min(1.0, max(0.0, traffic_profile(instant) * (1 + self.noise)))
        self.on_battery = on_battery
        self.sleep_level = self._sleep_level(instant)
        floor = self.idle_kw * SLEEP_FLOOR_SHARE[self.sleep_level]
        self.power_kw = floor + self.dynamic_kw * self.traffic_share
        self.energy_kwh += self.power_kw * dt_s / 3600
        self.traffic_gb += self.peak_gb_per_h * self.traffic_share * dt_s / 3600
        target = (
            ambient_temp_c(instant) + 4.0 + 6.0 * self.power_kw / (self.idle_kw + self.dynamic_kw)
        )
        self.cabinet_temp_c += (target - self.cabinet_temp_c) * min(1.0, dt_s / 1200)
        return 0.0 if on_battery else self.power_kw

    @property
    def prb_util_pct(self) -> float:
        """Physical resource block utilisation, roughly the traffic share."""
        return 100 * min(1.0, 0.02 + 0.95 * self.traffic_share)

    @property
    def active_ues(self) -> int:
        """Connected users in the busy state."""
        return round(self.max_ues * self.traffic_share)
