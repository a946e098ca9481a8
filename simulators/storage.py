"""Battery energy storage: a time-of-use dispatch rule and a battery that obeys its limits.

Sign convention (as in :class:`parkwatch.schema.StorageTelemetry`): ``power_kw`` is measured at the
AC terminal, positive when discharging into the park, negative when charging. The counters
``charged_kwh`` / ``discharged_kwh`` count AC energy, so they enter the park's energy balance
directly; the conversion losses show up in the state of charge instead (round-trip efficiency =
discharged / charged, about ``eta_charge * eta_discharge``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from simulators.simtime import Instant, TouPeriod
from simulators.weather import ambient_temp_c

__all__ = ["Battery", "dispatch_request"]

VALLEY_CHARGE_SHARE = 0.4
"""Share of rated power used to charge from the grid in valley hours (fills by morning)."""
THERMAL_TIME_CONSTANT_S = 1800.0
SOH_LOSS_PER_CYCLE_PCT = 0.0035
"""LFP: about 6000 equivalent full cycles to 80 % state of health."""


def dispatch_request(period: TouPeriod, surplus_kw: float, rated_kw: float, units: int) -> float:
    """The power one of ``units`` batteries should deliver (+) or absorb (-).

    ``surplus_kw`` is PV minus load. PV surplus is always stored; otherwise the batteries charge
    from the grid in valley hours and shave the park's import in peak hours (never exporting
    battery energy, which a tariff would not pay for).
    """
    if surplus_kw > 0:
        return -min(rated_kw, surplus_kw / units)
    if period is TouPeriod.VALLEY:
        return -rated_kw * VALLEY_CHARGE_SHARE
    if period is TouPeriod.PEAK:
        return min(rated_kw, -surplus_kw / units)
    return 0.0


@dataclass(slots=True)
class Battery:
    """An LFP container: SOC bookkeeping with losses, limits, cell temperatures and voltages."""

    capacity_kwh: float
    rated_kw: float
    soc_pct: float = 50.0
    soh_pct: float = 98.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 90.0
    eta_charge: float = 0.95
    eta_discharge: float = 0.95
    derate_temp_c: float = 55.0
    """The BMS stops charging and discharging above this cell temperature."""
    temp_spread_c: float = 3.0
    volt_spread: float = 0.012
    temp_c: float = 25.0
    power_kw: float = 0.0
    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0

    @property
    def usable_kwh(self) -> float:
        """Energy between 0 and 100 % SOC at the current state of health."""
        return self.capacity_kwh * self.soh_pct / 100

    @property
    def cell_temp_max_c(self) -> float:
        """Hottest cell."""
        return self.temp_c + self.temp_spread_c / 2

    @property
    def cell_temp_min_c(self) -> float:
        """Coolest cell."""
        return self.temp_c - self.temp_spread_c / 2

    @property
    def cell_v_mean(self) -> float:
        """Mean cell voltage: a rough LFP open-circuit curve minus the IR drop under load."""
        ocv = 3.10 + 0.25 * self.soc_pct / 100
        return ocv - 0.05 * self.power_kw / self.rated_kw

    def _limit(self, request_kw: float, dt_s: float) -> float:
        if self.cell_temp_max_c > self.derate_temp_c:
            return 0.0
        hours = dt_s / 3600
        power = max(-self.rated_kw, min(self.rated_kw, request_kw))
        if power < 0:
            room_kwh = max(0.0, (self.soc_max_pct - self.soc_pct) / 100 * self.usable_kwh)
            return max(power, -room_kwh / (hours * self.eta_charge))
        stored_kwh = max(0.0, (self.soc_pct - self.soc_min_pct) / 100 * self.usable_kwh)
        return min(power, stored_kwh * self.eta_discharge / hours)

    def step(
        self,
        request_kw: float,
        instant: Instant,
        dt_s: float,
        rng: random.Random,
        *,
        extra_heat_c: float = 0.0,
    ) -> float:
        """Run at ``request_kw`` (within limits) for ``dt_s``; return the AC power delivered.

        ``extra_heat_c`` raises the temperature the cells settle at (a failing HVAC, a fault).
        """
        self.power_kw = self._limit(request_kw, dt_s)
        energy_kwh = abs(self.power_kw) * dt_s / 3600
        if self.power_kw < 0:
            self.charged_kwh += energy_kwh
            cell_kwh = energy_kwh * self.eta_charge
        else:
            self.discharged_kwh += energy_kwh
            cell_kwh = -energy_kwh / self.eta_discharge
        soc = self.soc_pct + 100 * cell_kwh / self.usable_kwh
        # Clamp away float rounding at the limits; _limit already stopped the power there.
        self.soc_pct = min(self.soc_max_pct, max(self.soc_min_pct, soc))
        self.soh_pct -= SOH_LOSS_PER_CYCLE_PCT * abs(cell_kwh) / (2 * self.capacity_kwh)

        # Air-conditioned container: the cells follow the outside air only weakly.
        room_c = 24.0 + 0.25 * (ambient_temp_c(instant) - 24.0)
        target = room_c + 6.0 * abs(self.power_kw) / self.rated_kw + extra_heat_c
        self.temp_c += (target - self.temp_c) * min(1.0, dt_s / THERMAL_TIME_CONSTANT_S)
        self.temp_c += rng.gauss(0.0, 0.02)
        return self.power_kw
