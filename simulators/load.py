"""Industrial process load of a park: a weekday day-shift plateau, lower nights and weekends."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulators.simtime import Instant

__all__ = ["IndustrialLoad", "shift_profile"]

SHIFT_START_H = 8.0
SHIFT_END_H = 20.0
RAMP_H = 1.0
"""Machines start up and wind down over about an hour around shift changes."""
NIGHT_SHARE = 0.35
"""Share of the plateau drawn at night on workdays (compressors, HVAC, continuous lines)."""
WEEKEND_SHARE = 0.45
"""Share of the plateau drawn during the weekend day (skeleton shift)."""
LUNCH_DIP = 0.12


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def shift_profile(instant: Instant) -> float:
    """The load as a share of the day-shift plateau at ``instant``, before noise (0-1)."""
    h = instant.hour
    on = _smoothstep((h - SHIFT_START_H + RAMP_H / 2) / RAMP_H) * (
        1 - _smoothstep((h - SHIFT_END_H + RAMP_H / 2) / RAMP_H)
    )
    lunch = LUNCH_DIP * math.exp(-(((h - 12.5) / 0.5) ** 2))
    day_share = 1.0 - lunch if instant.is_workday else WEEKEND_SHARE
    return NIGHT_SHARE + (day_share - NIGHT_SHARE) * on


@dataclass(slots=True)
class IndustrialLoad:
    """Factory consumption with slowly wandering noise (a mean-reverting multiplier)."""

    plateau_kw: float
    noise_sd: float = 0.05
    noise_reversion_per_h: float = 4.0
    noise: float = 0.0
    power_kw: float = 0.0

    def step(self, instant: Instant, dt_s: float, rng: random.Random) -> float:
        """Advance the noise by ``dt_s`` and return the load at ``instant``."""
        decay = math.exp(-self.noise_reversion_per_h * dt_s / 3600)
        self.noise = self.noise * decay + self.noise_sd * math.sqrt(1 - decay * decay) * rng.gauss(
            0.0, 1.0
        )
        self.power_kw = max(0.0, self.plateau_kw * shift_profile(instant) * (1 + self.noise))
        return self.power_kw
