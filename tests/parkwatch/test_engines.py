"""Which engines the service builds, and in what order."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from kpi import KpiEngine
from parkwatch.clock import ParkClocks
from parkwatch.service import build_engines
from parkwatch.settings import load_settings


def test_the_kpi_engine_comes_first_and_can_be_switched_off() -> None:
    engines = build_engines(load_settings(), ParkClocks(), CollectorRegistry())
    assert isinstance(engines[0], KpiEngine)  # the rules engine reads what it emits
    switched_off = build_engines(
        load_settings(kpi={"enabled": False}), ParkClocks(), CollectorRegistry()
    )
    assert not any(isinstance(engine, KpiEngine) for engine in switched_off)
