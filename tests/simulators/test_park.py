"""Park physics over a simulated day, checked on what the devices publish."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import orjson
import pytest

from parkwatch.schema import Kind, parse_topic
from simulators.fleet import FleetSpec, default_fleet
from simulators.generate import iter_messages
from simulators.park import Park
from simulators.payloads import COUNTER_FIELDS
from simulators.simtime import instant_at

Series = dict[tuple[str, Kind, str], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def fleet() -> FleetSpec:
    return default_fleet()


@pytest.fixture(scope="module")
def day(fleet: FleetSpec, start: datetime) -> Series:
    """One simulated Monday of the default fleet, decoded, per device (and connector)."""
    series: Series = defaultdict(list)
    for topic, payload in iter_messages(fleet, 42, start, 86400):
        parts = parse_topic(topic)
        assert not isinstance(parts, str)
        series[(parts.park, Kind(parts.kind), parts.device)].append(orjson.loads(payload))
    return series


def _of(series: Series, park: str, kind: Kind) -> list[list[dict[str, Any]]]:
    return [msgs for (p, k, _), msgs in series.items() if p == park and k is kind]


def test_energy_balance_closes_in_counters_over_a_day(fleet: FleetSpec, day: Series) -> None:
    for spec in fleet.parks:
        (meter,) = _of(day, spec.id, Kind.MICROGRID)
        batteries = _of(day, spec.id, Kind.STORAGE)
        first, last = meter[0], meter[-1]

        def delta(name: str, first: dict[str, Any] = first, last: dict[str, Any] = last) -> float:
            return float(last[name] - first[name])

        # Storage reports on the meter's ticks, so first/last line up in time.
        assert all(b[0]["ts"] == first["ts"] and b[-1]["ts"] == last["ts"] for b in batteries)
        discharged = sum(b[-1]["discharged_kwh"] - b[0]["discharged_kwh"] for b in batteries)
        charged = sum(b[-1]["charged_kwh"] - b[0]["charged_kwh"] for b in batteries)
        supplied = (
            delta("pv_kwh")
            + delta("grid_import_kwh")
            - delta("grid_export_kwh")
            + discharged
            - charged
        )
        assert delta("load_kwh") > 10_000
        assert supplied == pytest.approx(delta("load_kwh"), rel=1e-3), spec.id


def test_power_balance_holds_in_every_meter_message(fleet: FleetSpec, day: Series) -> None:
    for spec in fleet.parks:
        (meter,) = _of(day, spec.id, Kind.MICROGRID)
        storage_kw: dict[int, float] = defaultdict(float)
        for battery in _of(day, spec.id, Kind.STORAGE):
            for msg in battery:
                storage_kw[msg["ts"]] += msg["power_kw"]
        for m in meter:
            supplied = m["pv_kw"] + m["grid_import_kw"] - m["grid_export_kw"] + storage_kw[m["ts"]]
            assert supplied == pytest.approx(m["load_kw"], abs=0.01)
            assert m["grid_import_kw"] == 0 or m["grid_export_kw"] == 0


def test_park_load_includes_sites_and_chargers(fleet: FleetSpec, day: Series) -> None:
    for spec in fleet.parks:
        (meter,) = _of(day, spec.id, Kind.MICROGRID)
        devices = _of(day, spec.id, Kind.SITE5G) + _of(day, spec.id, Kind.CHARGER)
        device_kwh = sum(d[-1]["energy_kwh"] - d[0]["energy_kwh"] for d in devices)
        assert 0 < device_kwh < meter[-1]["load_kwh"] - meter[0]["load_kwh"]


def test_counters_are_monotonic(day: Series) -> None:
    for (_, kind, device), msgs in day.items():
        by_connector: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for msg in msgs:
            by_connector[msg.get("connector_id", 0)].append(msg)
        for series in by_connector.values():
            for name in COUNTER_FIELDS[kind]:
                values = [m[name] for m in series]
                assert values == sorted(values), (device, name)


def test_soc_stays_within_its_window(day: Series) -> None:
    socs = [
        m["soc_pct"] for (_, kind, _), msgs in day.items() if kind is Kind.STORAGE for m in msgs
    ]
    assert min(socs) >= 10.0
    assert max(socs) <= 90.0
    assert max(socs) - min(socs) > 40  # and the batteries are actually used


def test_pv_is_zero_at_night_and_highest_around_noon(day: Series) -> None:
    for (_, kind, _), msgs in day.items():
        if kind is not Kind.MICROGRID:
            continue
        by_hour: dict[int, float] = defaultdict(float)
        for m in msgs:
            by_hour[int(instant_at(m["ts"]).hour)] += m["pv_kw"]
        assert all(by_hour[h] == 0 for h in (*range(4), 20, 21, 22, 23))
        midday = sum(by_hour[h] for h in range(10, 14))
        mornings_and_evenings = sum(by_hour[h] for h in (5, 6, 17, 18))
        assert midday > 2 * mornings_and_evenings


def test_storage_follows_time_of_use(day: Series) -> None:
    valley_discharge = peak_discharge = valley_charge = 0.0
    for (_, kind, _), msgs in day.items():
        if kind is not Kind.STORAGE:
            continue
        for m in msgs:
            hour = instant_at(m["ts"]).hour
            if hour < 6 or hour >= 22:
                valley_discharge += max(m["power_kw"], 0)
                valley_charge += max(-m["power_kw"], 0)
            elif 8 <= hour < 11 or 18 <= hour < 21:
                peak_discharge += max(m["power_kw"], 0)
    assert valley_discharge == 0
    assert valley_charge > 0
    assert peak_discharge > 0


def test_devices_are_named_per_kind() -> None:
    park = Park.build(default_fleet(["zhangjiang"]).parks[0], 0)
    names = [d.device for d in park.devices()]
    assert names[0] == "mg-01"
    assert "bess-02" in names
    assert "gnb-04" in names
    assert "cp-08" in names
