"""The fleet description and its validation."""

from __future__ import annotations

from pathlib import Path

import pytest

import simulators
from parkwatch.errors import ConfigError
from parkwatch.schema import Kind
from simulators.fleet import DEFAULT_PARK_IDS, FleetSpec, ParkSpec, default_fleet, load_fleet

EXAMPLE = Path(simulators.__file__).parent / "fleet.example.yaml"


def test_example_file_loads_with_defaults_merged() -> None:
    fleet = load_fleet(EXAMPLE)
    parks = {p.id: p for p in fleet.parks}
    assert set(parks) >= {"caohejing", "zhangjiang", "lingang"}
    assert parks["lingang"].storage.count == 2
    assert parks["lingang"].storage.capacity_kwh == 4000
    assert parks["lingang"].storage.soc_min_pct == 10  # from defaults
    assert parks["hongqiao"].charger.connectors == 2
    assert fleet.every(Kind.CHARGER) == 3


def test_default_fleet_is_the_shanghai_parks() -> None:
    fleet = default_fleet()
    assert tuple(p.id for p in fleet.parks) == DEFAULT_PARK_IDS
    assert fleet.step_ms == 10_000
    assert len({p.pv_kw for p in fleet.parks}) > 1  # parks differ


def test_select_keeps_known_parks_and_defaults_unknown_ones() -> None:
    fleet = load_fleet(EXAMPLE).select(["lingang", "carbon-valley"])
    assert [p.id for p in fleet.parks] == ["lingang", "carbon-valley"]
    assert fleet.parks[0].pv_kw == 4000
    assert fleet.parks[1] == ParkSpec(id="carbon-valley")
    with pytest.raises(ConfigError):
        fleet.select(["Not/A/Park"])


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("parks: []", "at least 1"),
        ("parks: [{id: a, pv_kwp: 3}]", "pv_kwp"),
        ("parks: [{id: a}, {id: a}]", "unique"),
        ("parks: [{id: Caohejing}]", "pattern"),
        ("parks: [{id: a/b}]", "pattern"),
        ("step_s: 10\nintervals_s: {charger: 15}\nparks: [{id: a}]", "multiple of step_s"),
        ("parks: [{id: a, storage: {soc_min_pct: 95}}]", "soc_min_pct"),
        ("defaults: [1]\nparks: [{id: a}]", "defaults"),
        ("parks: [{id: a", "fleet file"),
    ],
)
def test_invalid_fleets_are_config_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_fleet(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fleet file"):
        load_fleet(tmp_path / "nope.yaml")


def test_fleet_spec_is_frozen() -> None:
    fleet = FleetSpec(parks=[ParkSpec(id="a")])
    with pytest.raises(ValueError, match="frozen"):
        fleet.step_s = 1.0
