"""Scenario files, fault flags and the resolved fault plan."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import simulators
from parkwatch.errors import ConfigError
from parkwatch.schema import Kind, OcppErrorCode
from simulators.faults import (
    DeviceId,
    FaultKind,
    FaultPlan,
    FaultSpec,
    Scenario,
    load_scenario,
    parse_duration,
    parse_fault_flag,
)
from simulators.fleet import default_fleet
from simulators.generate import device_ids

EXAMPLE = Path(simulators.__file__).parent / "scenario.example.yaml"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1.5m", 90.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_example_scenario_covers_every_fault_and_fits_the_example_fleet() -> None:
    scenario = load_scenario(EXAMPLE)
    assert {f.fault for f in scenario.faults} == set(FaultKind)
    fleet = simulators.load_fleet(EXAMPLE.with_name("fleet.example.yaml"))
    FaultPlan(scenario, device_ids(fleet), 0)  # every selector matches a device


def test_fault_flag() -> None:
    spec = parse_fault_flag("offline:caohejing/charger/cp-01@10m+5m")
    assert (spec.fault, spec.device, spec.at, spec.duration) == (
        FaultKind.OFFLINE,
        "caohejing/charger/cp-01",
        600.0,
        300.0,
    )
    assert parse_fault_flag("counter_reset:*/microgrid/*@1h").duration == 600.0
    for bad in ("offline", "nonsense:a/b/c@1m", "offline:a/b/c@soon"):
        with pytest.raises(ConfigError):
            parse_fault_flag(bad)


def test_unknown_scenario_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("faults: [{fault: offline, device: a/b/c, at: 1m, when: now}]")
    with pytest.raises(ConfigError, match="when"):
        load_scenario(path)


def test_plan_matches_globs_and_kinds() -> None:
    devices = device_ids(default_fleet(["caohejing", "lingang"]))
    scenario = Scenario(
        faults=[
            FaultSpec(fault=FaultKind.OFFLINE, device="*/charger/cp-0[12]", at=60, duration=60),
            FaultSpec(fault=FaultKind.CHARGER_FAULTED, device="caohejing/*", at=0, duration=10),
        ]
    )
    plan = FaultPlan(scenario, devices, 1_000_000)
    cp1 = DeviceId("lingang", Kind.CHARGER, "cp-01")
    assert plan.active(cp1, 1_000_000 + 59_999) == []
    assert [s.fault for s in plan.active(cp1, 1_060_000)] == [FaultKind.OFFLINE]
    assert plan.active(cp1, 1_120_000) == []
    assert plan.windows(DeviceId("lingang", Kind.CHARGER, "cp-03")) == ()
    # A physical fault only hits devices of its kind, even when the glob matches more.
    meter = DeviceId("caohejing", Kind.MICROGRID, "mg-01")
    assert plan.windows(meter) == ()
    faulted = plan.first(
        DeviceId("caohejing", Kind.CHARGER, "cp-06"), 1_000_000, FaultKind.CHARGER_FAULTED
    )
    assert faulted is not None
    assert faulted.error_code is OcppErrorCode.GROUND_FAILURE


def test_plan_accepts_absolute_times() -> None:
    at = datetime(2025, 6, 23, 1, 0, tzinfo=UTC)
    spec = FaultSpec(fault=FaultKind.STUCK, device="*/microgrid/*", at=at, duration=60)
    plan = FaultPlan(Scenario(faults=[spec]), device_ids(default_fleet(["hongqiao"])), 0)
    meter = DeviceId("hongqiao", Kind.MICROGRID, "mg-01")
    start_ms = round(at.timestamp() * 1000)
    assert plan.active(meter, start_ms) == [spec]
    assert plan.active(meter, start_ms + 60_000) == []


@pytest.mark.parametrize(
    ("fault", "device"),
    [(FaultKind.SITE_ON_BATTERY, "*/charger/*"), (FaultKind.OFFLINE, "nowhere/*/*")],
)
def test_selectors_that_match_nothing_are_skipped_with_a_warning(
    fault: FaultKind, device: str, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = Scenario(faults=[FaultSpec(fault=fault, device=device, at=0)])
    devices = device_ids(default_fleet(["hongqiao"]))
    plan = FaultPlan(scenario, devices, 0)
    assert all(plan.windows(d) == () for d in devices)
    assert "selects no suitable device" in caplog.text
