"""Every injected fault is observable in what the devices publish."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pydantic
import pytest

from parkwatch.schema import (
    ChargerStatus,
    ChargerTelemetry,
    MicrogridTelemetry,
    OcppErrorCode,
    SiteTelemetry,
)
from simulators.faults import FaultKind, FaultSpec, Scenario
from simulators.fleet import FleetSpec, default_fleet
from simulators.generate import Tick, iter_ticks

MIN = 60_000


@pytest.fixture(scope="module")
def fleet() -> FleetSpec:
    return default_fleet(["hongqiao"])


def fault_spec(**fields: object) -> FaultSpec:
    """A fault from YAML-like fields (durations as "10m")."""
    return FaultSpec.model_validate(fields)


def run(fleet: FleetSpec, start: datetime, *faults: FaultSpec, hours: float = 1.0) -> list[Tick]:
    return list(iter_ticks(fleet, 5, start, hours * 3600, scenario=Scenario(faults=list(faults))))


def published(ticks: list[Tick], topic_part: str) -> list[tuple[int, bytes]]:
    """(tick ts, payload) of every message whose topic contains ``topic_part``."""
    return [(t.ts_ms, m.payload) for t in ticks for m in t.messages if topic_part in m.topic]


def in_window(ts: int, t0: int, at_min: float, for_min: float) -> bool:
    return t0 + at_min * MIN <= ts < t0 + (at_min + for_min) * MIN


def test_offline_device_publishes_nothing_and_is_reported(
    fleet: FleetSpec, start: datetime
) -> None:
    spec = fault_spec(
        fault=FaultKind.OFFLINE, device="hongqiao/charger/cp-02", at="10m", duration="5m"
    )
    ticks = run(fleet, start, spec)
    t0 = ticks[0].ts_ms
    msgs = published(ticks, "/charger/cp-02/")
    assert msgs
    assert not [ts for ts, _ in msgs if in_window(ts, t0, 10, 5)]
    assert any(in_window(ts, t0, 15, 1) for ts, _ in msgs)
    went = [t.ts_ms for t in ticks if t.went_offline]
    came = [t.ts_ms for t in ticks if t.came_online]
    assert went == [t0 + 10 * MIN]
    assert came == [t0 + 15 * MIN]


def test_stuck_sensor_repeats_its_values(fleet: FleetSpec, start: datetime) -> None:
    spec = fault_spec(
        fault=FaultKind.STUCK, device="hongqiao/microgrid/*", at="10m", duration="20m"
    )
    ticks = run(fleet, start, spec)
    t0 = ticks[0].ts_ms
    decoded = [(ts, orjson.loads(p)) for ts, p in published(ticks, "/microgrid/")]
    stuck = [m for ts, m in decoded if in_window(ts, t0, 10, 20)]
    assert len({m["load_kw"] for m in stuck}) == 1
    assert len({m["frequency_hz"] for m in stuck}) == 1
    assert len({m["load_kwh"] for m in stuck}) == len(stuck)  # counters keep counting
    after = [m["load_kw"] for ts, m in decoded if in_window(ts, t0, 30, 30)]
    assert len(set(after)) > 1


def test_spikes_multiply_the_field(fleet: FleetSpec, start: datetime) -> None:
    spike = fault_spec(
        fault=FaultKind.SPIKE, device="hongqiao/microgrid/*", at="20m", duration="10s"
    )
    clean = published(run(fleet, start), "/microgrid/")
    spiked = published(run(fleet, start, spike), "/microgrid/")
    diffs = [
        (orjson.loads(a), orjson.loads(b))
        for (_, a), (_, b) in zip(clean, spiked, strict=True)
        if a != b
    ]
    assert len(diffs) == 1
    normal, hit = diffs[0]
    assert hit["load_kw"] == pytest.approx(10 * normal["load_kw"], abs=0.01)
    assert {k: v for k, v in hit.items() if k != "load_kw"} == {
        k: v for k, v in normal.items() if k != "load_kw"
    }


def test_malformed_payloads_are_not_json(fleet: FleetSpec, start: datetime) -> None:
    spec = fault_spec(
        fault=FaultKind.MALFORMED, device="hongqiao/site5g/gnb-01", at="5m", duration="2m"
    )
    ticks = run(fleet, start, spec)
    t0 = ticks[0].ts_ms
    msgs = published(ticks, "/site5g/gnb-01/")
    bad = [p for ts, p in msgs if in_window(ts, t0, 5, 2)]
    assert len(bad) == 4
    for payload in bad:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(payload)
    for ts, payload in msgs:
        if not in_window(ts, t0, 5, 2):
            SiteTelemetry.model_validate_json(payload)


def test_wrong_types_fail_strict_validation(fleet: FleetSpec, start: datetime) -> None:
    spec = fault_spec(
        fault=FaultKind.WRONG_TYPES, device="hongqiao/site5g/gnb-02", at="5m", duration="1m"
    )
    clean = published(run(fleet, start), "/gnb-02/")
    ticks = run(fleet, start, spec)
    t0 = ticks[0].ts_ms
    pairs = [
        (orjson.loads(c), orjson.loads(f))
        for (ts, c), (_, f) in zip(clean, published(ticks, "/gnb-02/"), strict=True)
        if in_window(ts, t0, 5, 1)
    ]
    assert pairs
    for normal, msg in pairs:
        # The same reading, numbers and booleans sent as text, ts untouched.
        assert msg["power_kw"] == str(normal["power_kw"])
        assert msg["on_battery"] == ("true" if normal["on_battery"] else "false")
        assert msg["ts"] == normal["ts"]
        with pytest.raises(pydantic.ValidationError):
            SiteTelemetry.model_validate(msg)


def test_clock_skew_shifts_timestamps(fleet: FleetSpec, start: datetime) -> None:
    spec = fault_spec(
        fault=FaultKind.CLOCK_SKEW,
        device="hongqiao/charger/cp-01",
        at="10m",
        duration="10m",
        skew_s=-7200,
    )
    ticks = run(fleet, start, spec)
    t0 = ticks[0].ts_ms
    for tick_ts, payload in published(ticks, "/charger/cp-01/"):
        offset = orjson.loads(payload)["ts"] - tick_ts
        assert offset == (-7_200_000 if in_window(tick_ts, t0, 10, 10) else 0)


def test_counter_reset_restarts_counters_from_zero(fleet: FleetSpec, start: datetime) -> None:
    spec = fault_spec(fault=FaultKind.COUNTER_RESET, device="hongqiao/microgrid/mg-01", at="30m")
    ticks = run(fleet, start, spec)
    values = [orjson.loads(p)["load_kwh"] for _, p in published(ticks, "/microgrid/")]
    drops = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
    assert drops == [180]  # the tick at 30 min
    assert values[180] == 0.0
    assert values[181:] == sorted(values[181:])
    assert values[-1] > 0


def test_charger_faulted_reports_the_error_and_draws_nothing(
    fleet: FleetSpec, start: datetime
) -> None:
    spec = fault_spec(
        fault=FaultKind.CHARGER_FAULTED,
        device="hongqiao/charger/cp-03",
        at="10m",
        duration="20m",
        error_code=OcppErrorCode.HIGH_TEMPERATURE,
    )
    ticks = run(fleet, start.replace(hour=8), spec)
    t0 = ticks[0].ts_ms
    for ts, payload in published(ticks, "/charger/cp-03/"):
        msg = ChargerTelemetry.model_validate_json(payload)
        if in_window(ts, t0, 10, 20):
            assert msg.status is ChargerStatus.FAULTED
            assert msg.error_code is OcppErrorCode.HIGH_TEMPERATURE
            assert msg.power_kw == 0
        elif ts >= t0 + 30 * MIN:
            assert msg.status is not ChargerStatus.FAULTED or msg.error_code in (
                OcppErrorCode.GROUND_FAILURE,
                OcppErrorCode.POWER_METER_FAILURE,
            )


def test_site_on_battery_is_flagged_and_leaves_the_park_load(
    fleet: FleetSpec, start: datetime
) -> None:
    spec = fault_spec(
        fault=FaultKind.SITE_ON_BATTERY, device="hongqiao/site5g/*", at="10m", duration="20m"
    )
    clean, faulty = run(fleet, start), run(fleet, start, spec)
    t0 = clean[0].ts_ms
    flags = [(ts, orjson.loads(p)["on_battery"]) for ts, p in published(faulty, "/site5g/")]
    assert all(flag == in_window(ts, t0, 10, 20) for ts, flag in flags)

    def load(ticks: list[Tick]) -> dict[int, float]:
        return {
            ts: MicrogridTelemetry.model_validate_json(p).load_kw or 0.0
            for ts, p in published(ticks, "/microgrid/")
        }

    before, after = load(clean), load(faulty)
    inside = [ts for ts in before if in_window(ts, t0, 10, 20)]
    # Two sites of 1-4 kW each (asleep at night) no longer draw from the park's mains.
    assert all(1.5 < before[ts] - after[ts] < 10 for ts in inside)


def test_storage_overtemp_heats_the_cells(fleet: FleetSpec, start: datetime) -> None:
    spec = fault_spec(
        fault=FaultKind.STORAGE_OVERTEMP, device="*/storage/*", at="10m", duration="2h"
    )
    ticks = run(fleet, start, spec, hours=2.5)
    temps: list[Any] = [
        orjson.loads(p)["cell_temp_max_c"] for _, p in published(ticks, "/storage/")
    ]
    assert max(temps[:60]) < 35
    assert max(temps) > 50  # beyond the LFP limits that rules watch
