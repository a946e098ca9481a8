"""EV charge points: sessions, taper, OCPP status transitions, faults."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from parkwatch.schema import ChargerStatus, OcppErrorCode
from simulators.charger import ChargePoint, Connector, arrival_rate_per_h, taper
from simulators.simtime import SHANGHAI, Instant, instant_at

S = ChargerStatus
ALLOWED = {
    (S.AVAILABLE, S.PREPARING),
    (S.PREPARING, S.CHARGING),
    (S.CHARGING, S.SUSPENDED_EV),
    (S.CHARGING, S.FINISHING),
    (S.SUSPENDED_EV, S.FINISHING),
    (S.FINISHING, S.AVAILABLE),
    (S.FAULTED, S.AVAILABLE),
    *((state, S.FAULTED) for state in S),
}


def _instant(seconds: float) -> Instant:
    local = datetime(2025, 6, 23, tzinfo=SHANGHAI) + timedelta(seconds=seconds)
    return instant_at(round(local.timestamp() * 1000))


def test_taper_is_flat_then_falls_towards_full() -> None:
    assert taper(20) == taper(79.9) == 1.0
    # Linear from 100 % at 80 % SOC to 10 % at full: 90 % less over 20 points of SOC.
    assert taper(85) == pytest.approx(0.775)
    assert taper(90) == pytest.approx(0.55)
    assert taper(95) == pytest.approx(0.325)
    assert taper(100) == pytest.approx(0.1)


def test_arrivals_peak_with_the_morning_shift_and_drop_at_night_and_weekends() -> None:
    assert arrival_rate_per_h(_instant(8.5 * 3600)) > 5 * arrival_rate_per_h(_instant(3 * 3600))
    saturday = _instant((5 * 24 + 8.5) * 3600)
    assert arrival_rate_per_h(saturday) < arrival_rate_per_h(_instant(8.5 * 3600))


def test_a_week_of_sessions_follows_ocpp_transitions() -> None:
    rng = random.Random(11)
    connector = Connector(1, max_kw=60.0)
    seen_transitions: set[tuple[ChargerStatus, ChargerStatus]] = set()
    energy = 0.0
    charging_powers: list[tuple[float, float]] = []
    for k in range(7 * 8640):
        before = connector.status
        soc_before = connector.session.soc_pct if connector.session else None
        power = connector.step(_instant(k * 10.0), 10.0, rng)
        if connector.status is not before:
            seen_transitions.add((before, connector.status))
        assert (power > 0) == (connector.status is S.CHARGING)
        assert connector.energy_kwh >= energy
        energy = connector.energy_kwh
        assert (connector.error_code is OcppErrorCode.NO_ERROR) == (
            connector.status is not S.FAULTED
        )
        if connector.session is not None:
            assert 0 <= connector.session.soc_pct <= 100
            if power > 0 and soc_before is not None:
                charging_powers.append((soc_before, power / connector.session.max_kw))
    assert seen_transitions <= ALLOWED
    for needed in [
        (S.AVAILABLE, S.PREPARING),
        (S.PREPARING, S.CHARGING),
        (S.FINISHING, S.AVAILABLE),
    ]:
        assert needed in seen_transitions
    assert (S.CHARGING, S.SUSPENDED_EV) in seen_transitions
    assert energy > 100
    # Power tapers: full power at most, and from 90 % SOC at most 55 % of it (see above).
    assert all(share <= 1.0 + 1e-9 for _, share in charging_powers)
    assert all(share <= 0.55 + 1e-9 for soc, share in charging_powers if soc >= 90)
    assert any(soc >= 90 for soc, _ in charging_powers)


def test_forced_fault_holds_faulted_then_clears_to_available() -> None:
    rng = random.Random(1)
    point = ChargePoint.build(2, 60.0)
    for k in range(100):
        assert point.step(_instant(k * 10.0), 10.0, rng, fault=OcppErrorCode.HIGH_TEMPERATURE) == 0
    for connector in point.connectors:
        assert connector.status is S.FAULTED
        assert connector.error_code is OcppErrorCode.HIGH_TEMPERATURE
        assert connector.session is None
    point.step(_instant(1000.0), 10.0, rng)
    assert all(c.status is S.AVAILABLE for c in point.connectors)
    assert all(c.error_code is OcppErrorCode.NO_ERROR for c in point.connectors)
