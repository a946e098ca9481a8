"""Shanghai weather for the device models: clear-sky sun, passing clouds, ambient temperature.

Solar geometry follows the usual textbook approximations (Cooper's declination, Spencer-style
equation of time, Haurwitz clear-sky irradiance); they are good to a few minutes and a few percent,
which is plenty for telemetry that must look plausible, not for yield forecasts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from simulators.simtime import Instant

__all__ = [
    "LATITUDE_DEG",
    "LONGITUDE_DEG",
    "CloudProcess",
    "ambient_temp_c",
    "clear_sky_ghi",
    "cos_zenith",
    "solar_declination_deg",
]

LATITUDE_DEG: Final = 31.2
LONGITUDE_DEG: Final = 121.47
STANDARD_MERIDIAN_DEG: Final = 120.0
"""UTC+8's meridian; Shanghai's solar noon is a few minutes before 12:00 local for it."""

_PHI: Final = math.radians(LATITUDE_DEG)


def solar_declination_deg(day_of_year: int) -> float:
    """The sun's declination (Cooper 1969), +23.45 deg at the June solstice."""
    return 23.45 * math.sin(2 * math.pi * (284 + day_of_year) / 365)


def _equation_of_time_min(day_of_year: int) -> float:
    b = 2 * math.pi * (day_of_year - 81) / 364
    return 9.87 * math.sin(2 * b) - 7.53 * math.cos(b) - 1.5 * math.sin(b)


def cos_zenith(instant: Instant) -> float:
    """Cosine of the solar zenith angle in Shanghai; negative when the sun is down."""
    correction_min = 4 * (LONGITUDE_DEG - STANDARD_MERIDIAN_DEG)
    solar_hour = instant.hour + (correction_min + _equation_of_time_min(instant.day_of_year)) / 60
    omega = math.radians(15 * (solar_hour - 12))
    delta = math.radians(solar_declination_deg(instant.day_of_year))
    return math.sin(_PHI) * math.sin(delta) + math.cos(_PHI) * math.cos(delta) * math.cos(omega)


def clear_sky_ghi(instant: Instant) -> float:
    """Clear-sky global horizontal irradiance in W/m2 (Haurwitz model); 0 at night."""
    cz = cos_zenith(instant)
    if cz <= 0.01:  # below ~0.6 deg elevation the model's exp term blows up; it is dark anyway
        return 0.0
    return 1098.0 * cz * math.exp(-0.057 / cz)


def ambient_temp_c(instant: Instant) -> float:
    """Typical Shanghai air temperature: ~5 degC in late January, ~29 degC in late July.

    The daily swing of +-4 degC peaks at 14:00 local time.
    """
    seasonal = 16.8 - 12.0 * math.cos(2 * math.pi * (instant.day_of_year - 20) / 365)
    diurnal = 4.0 * math.cos(2 * math.pi * (instant.hour - 14) / 24)
    return seasonal + diurnal


@dataclass(slots=True)
class CloudProcess:
    """Cloud cover in [0, 1]: a bounded mean-reverting (Ornstein-Uhlenbeck) process.

    Clouds persist for hours, so successive steps are strongly correlated; the exact OU transition
    is used so the statistics do not depend on the simulation step.
    """

    cover: float = 0.3
    mean: float = 0.35
    reversion_per_h: float = 0.6
    stationary_sd: float = 0.3
    max_attenuation: float = 0.75
    """Share of clear-sky irradiance an overcast sky (cover = 1) takes away."""

    def step(self, rng: random.Random, dt_s: float) -> None:
        """Advance the cover by ``dt_s`` seconds."""
        decay = math.exp(-self.reversion_per_h * dt_s / 3600)
        noise = self.stationary_sd * math.sqrt(1 - decay * decay) * rng.gauss(0.0, 1.0)
        self.cover = min(1.0, max(0.0, self.mean + (self.cover - self.mean) * decay + noise))

    @property
    def transmission(self) -> float:
        """Share of clear-sky irradiance that reaches the panels."""
        return 1.0 - self.max_attenuation * self.cover
