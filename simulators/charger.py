"""EV charge points: Poisson arrivals, charging sessions and OCPP 1.6 connector status.

A connector walks Available -> Preparing -> Charging -> (SuspendedEV) -> Finishing -> Available;
any state may fall into Faulted (rarely at random, or on demand) and comes back Available after
the fault clears, the session lost.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from parkwatch.schema import ChargerStatus, OcppErrorCode
from simulators.simtime import Instant
from simulators.weather import ambient_temp_c

__all__ = ["ChargePoint", "Connector", "Session", "arrival_rate_per_h", "taper"]

RANDOM_FAULT_RATE_PER_H = 0.003
"""Chance per connector-hour of a spontaneous fault: a park sees one every day or two."""
RANDOM_FAULT_CODES = (
    OcppErrorCode.GROUND_FAILURE,
    OcppErrorCode.HIGH_TEMPERATURE,
    OcppErrorCode.OVER_CURRENT_FAILURE,
    OcppErrorCode.POWER_METER_FAILURE,
    OcppErrorCode.CONNECTOR_LOCK_FAILURE,
    OcppErrorCode.EV_COMMUNICATION_ERROR,
)
CHARGE_EFFICIENCY = 0.93
"""Share of metered energy that ends up in the EV battery."""
TAPER_FROM_PCT = 80.0


def arrival_rate_per_h(instant: Instant) -> float:
    """Expected EV arrivals per connector-hour: commuters at 8-9, lunch, and end of shift."""
    h = instant.hour
    rate = (
        0.04
        + 0.55 * math.exp(-(((h - 8.5) / 1.2) ** 2))
        + 0.35 * math.exp(-(((h - 13.0) / 1.5) ** 2))
        + 0.25 * math.exp(-(((h - 18.5) / 1.5) ** 2))
    )
    return rate if instant.is_workday else 0.4 * rate


def taper(ev_soc_pct: float) -> float:
    """Share of its maximum power an EV accepts: full up to 80 % SOC, then down to 10 %."""
    if ev_soc_pct < TAPER_FROM_PCT:
        return 1.0
    return max(0.1, 1.0 - 0.9 * (ev_soc_pct - TAPER_FROM_PCT) / (100 - TAPER_FROM_PCT))


@dataclass(slots=True)
class Session:
    """A plugged-in EV and what it wants."""

    capacity_kwh: float
    soc_pct: float
    target_pct: float
    max_kw: float

    @classmethod
    def arrive(cls, rng: random.Random) -> Session:
        """A random commuter car or van."""
        return cls(
            capacity_kwh=rng.uniform(40, 90),
            soc_pct=rng.uniform(10, 50),
            target_pct=rng.uniform(80, 100),
            max_kw=rng.uniform(40, 150),
        )


@dataclass(slots=True)
class Connector:
    """One connector of a charge point and its OCPP state."""

    connector_id: int
    max_kw: float
    status: ChargerStatus = ChargerStatus.AVAILABLE
    error_code: OcppErrorCode = OcppErrorCode.NO_ERROR
    timer_s: float = 0.0
    """Time left in the current transient state (Preparing, SuspendedEV, Finishing, Faulted)."""
    session: Session | None = None
    power_kw: float = 0.0
    energy_kwh: float = 0.0
    temp_c: float = 25.0
    forced_fault: bool = False

    def _fault(self, code: OcppErrorCode, duration_s: float) -> None:
        self.status, self.error_code, self.timer_s, self.session = (
            ChargerStatus.FAULTED,
            code,
            duration_s,
            None,
        )

    def _advance(self, instant: Instant, dt_s: float, rng: random.Random) -> None:
        self.timer_s -= dt_s
        status = self.status
        if status is ChargerStatus.AVAILABLE:
            if rng.random() < -math.expm1(-arrival_rate_per_h(instant) * dt_s / 3600):
                self.status, self.timer_s = ChargerStatus.PREPARING, rng.uniform(30, 120)
                self.session = Session.arrive(rng)
        elif status is ChargerStatus.CHARGING:
            session = self.session
            if session is not None and session.soc_pct >= session.target_pct:
                if rng.random() < 0.6:  # the driver is still at work: the car idles plugged in
                    self.status, self.timer_s = ChargerStatus.SUSPENDED_EV, rng.uniform(300, 2700)
                else:
                    self.status, self.timer_s = ChargerStatus.FINISHING, rng.uniform(30, 90)
        elif self.timer_s <= 0:
            if status is ChargerStatus.PREPARING:
                self.status = ChargerStatus.CHARGING
            elif status is ChargerStatus.SUSPENDED_EV:
                self.status, self.timer_s = ChargerStatus.FINISHING, rng.uniform(30, 90)
            else:  # Finishing, or a spontaneous fault that cleared
                self.status, self.error_code, self.session = (
                    ChargerStatus.AVAILABLE,
                    OcppErrorCode.NO_ERROR,
                    None,
                )

    def step(
        self,
        instant: Instant,
        dt_s: float,
        rng: random.Random,
        *,
        fault: OcppErrorCode | None = None,
    ) -> float:
        """Advance ``dt_s``; ``fault`` holds the connector Faulted with that code. Return kW."""
        if fault is not None:
            if not self.forced_fault or self.error_code is not fault:
                self._fault(fault, math.inf)
            self.forced_fault = True
        elif self.forced_fault:  # the injected fault cleared
            self.forced_fault = False
            self.status, self.error_code = ChargerStatus.AVAILABLE, OcppErrorCode.NO_ERROR
        elif self.status is not ChargerStatus.FAULTED and rng.random() < -math.expm1(
            -RANDOM_FAULT_RATE_PER_H * dt_s / 3600
        ):
            self._fault(rng.choice(RANDOM_FAULT_CODES), rng.uniform(600, 3600))
        else:
            self._advance(instant, dt_s, rng)

        session = self.session
        if self.status is ChargerStatus.CHARGING and session is not None:
            self.power_kw = min(self.max_kw, session.max_kw * taper(session.soc_pct))
            added = self.power_kw * dt_s / 3600 * CHARGE_EFFICIENCY
            session.soc_pct = min(100.0, session.soc_pct + 100 * added / session.capacity_kwh)
        else:
            self.power_kw = 0.0
        self.energy_kwh += self.power_kw * dt_s / 3600
        target = ambient_temp_c(instant) + 2.0 + 30.0 * (self.power_kw / self.max_kw) ** 2
        self.temp_c += (target - self.temp_c) * min(1.0, dt_s / 600)
        return self.power_kw


@dataclass(slots=True)
class ChargePoint:
    """A charge point with one or more connectors; each connector reports on its own."""

    connectors: list[Connector] = field(default_factory=list)

    @classmethod
    def build(cls, connectors: int, max_kw: float) -> ChargePoint:
        """A charge point with ``connectors`` connectors numbered from 1."""
        return cls([Connector(i, max_kw) for i in range(1, connectors + 1)])

    def step(
        self,
        instant: Instant,
        dt_s: float,
        rng: random.Random,
        *,
        fault: OcppErrorCode | None = None,
    ) -> float:
        """Advance every connector; return the charge point's total power."""
        return sum(c.step(instant, dt_s, rng, fault=fault) for c in self.connectors)
