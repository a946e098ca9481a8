"""A park's photovoltaic array: clear-sky sun scaled by capacity, cut by passing clouds."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from simulators.simtime import Instant
from simulators.weather import CloudProcess, clear_sky_ghi

__all__ = ["PvArray"]

STC_IRRADIANCE = 1000.0
"""W/m2 at standard test conditions, where an array yields its nameplate DC power."""


@dataclass(slots=True)
class PvArray:
    """Rooftop PV of a whole park, seen as one AC output."""

    capacity_kw: float
    performance_ratio: float = 0.82
    """Inverter, wiring, soiling and temperature losses from DC nameplate to AC (approx.)."""
    clouds: CloudProcess = field(default_factory=CloudProcess)
    power_kw: float = 0.0

    def step(self, instant: Instant, dt_s: float, rng: random.Random) -> float:
        """Advance the clouds by ``dt_s`` and return the AC power at ``instant``."""
        self.clouds.step(rng, dt_s)
        ghi = clear_sky_ghi(instant)
        self.power_kw = (
            self.capacity_kw
            * self.performance_ratio
            * (ghi / STC_IRRADIANCE)
            * self.clouds.transmission
        )
        return self.power_kw
