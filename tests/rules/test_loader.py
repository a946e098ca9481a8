"""Rule files: the pack loads; every problem is reported as file:line: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from parkwatch.errors import ConfigError, RuleError
from rules.loader import PACK, load_rules
from tests.rules.test_expr import HOSTILE


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load_rules([path])
    assert isinstance(caught.value, ConfigError)  # so `parkwatch run` reports it cleanly
    return caught.value.problems


def test_the_pack_loads_by_default() -> None:
    rules = load_rules()
    assert rules.files == tuple(sorted(PACK.glob("*.yaml")))
    names = {rule.name for rule in rules.rules}
    assert {
        "SelfSufficiencyBelowTarget",
        "CarbonIntensityAboveTarget",
        "StorageSocOutOfRange",
        "StorageCellHot",
        "StorageRoundTripEfficiencyLow",
        "StorageHealthLow",
        "Site5gEnergyPerGbAboveTarget",
        "Site5gOnBattery",
        "ChargerFaulted",
        "ChargerConnectorHot",
        "DeviceOffline",
        "GridFrequencyOutOfRange",
    } == names


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
groups:
  - name: g
    rules:
      - alert: Hot
        source: storage
        expr: cell_temp_max_cc > 45
      - alert: Faulty
        source: charger
        expr: status == "Faulty"
        labels: {severity: urgent}
      - alert: Typo
        source: storage
        expr: soc_pct < 10
        fro: 5m
      - alert: Wrong source
        source: storages
        expr: soc_pct < 10
      - alert: Clear
        source: storage
        expr: soc_pct < $low
        params: {low: 10}
        overrides: {lingang: {lo: 15}}
        annotations: {summary: "{{ devise }}"}
""",
    )
    assert problems(path) == [
        f"{path}:6: Hot: expr: unknown field 'cell_temp_max_cc' for this source (column 1)",
        f"{path}:9: Faulty: expr: status is never 'Faulty' (values: Available, Charging, Faulted,"
        " Finishing, Occupied, Preparing, Reserved, SuspendedEV, SuspendedEVSE, Unavailable)"
        " (column 11)",
        f"{path}:10: Faulty: severity 'urgent' is not one of critical, major, minor, warning",
        f"{path}:14: groups.0.rules.2.fro: Extra inputs are not permitted",
        f"{path}:15: groups.0.rules.3.alert: "
        "String should match pattern '^[A-Za-z_][A-Za-z0-9_]*$'",
        f"{path}:22: Clear: override of unknown parameter 'lo' for park 'lingang'",
        f"{path}:23: Clear: annotation summary: unknown name 'devise' in '{{{{ devise }}}}' "
        "(known: $carbon_intensity_t_per_tce_max, $low, $self_sufficiency_pct_min, "
        "$site5g_kwh_per_gb_max, $storage_rte_pct_min, alertname, capacity_kwh, cell_temp_max_c,"
        " cell_temp_min_c, cell_v_max, cell_v_min, charged_kwh, connector, device, "
        "discharged_kwh, kind, park, park_name, power_kw, severity, soc_pct, soh_pct, value)",
    ]


def test_block_scalars_and_yaml_errors(tmp_path: Path) -> None:
    bad_yaml = write(tmp_path, "groups:\n  - name: g\n    rules: [\n", "broken.yaml")
    [problem] = problems(bad_yaml)
    assert problem.startswith(f"{bad_yaml}:4: YAML:")
    folded = write(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        source: storage\n"
        "        expr: >-\n          soc_pct <\n          10 +\n",
        "folded.yaml",
    )
    assert problems(folded) == [f"{folded}:6: A: expr: unexpected the end of the expression"
                                " (column 15)"]  # fmt: skip


def test_duplicates_aliases_and_missing_files(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
groups:
  - name: g
    rules:
      - &rule
        alert: A
        source: storage
        expr: soc_pct < 10
        expr: soc_pct < 20
      - *rule
""",
    )
    assert problems(path) == [
        f"{path}:8: duplicate key 'expr'",
        f"{path}:4: YAML anchors and aliases are not supported",  # PyYAML marks the anchor
        f"{path}:4: groups.0.rules.1: Input should be a valid dictionary",
    ]
    twice = write(
        tmp_path, "groups:\n  - {name: g, rules: []}\n  - {name: g, rules: []}\n", "2.yaml"
    )
    assert problems(twice) == [f"{twice}:3: group 'g' appears twice in this file"]
    assert problems(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}:0: no such file or folder"
    ]


def test_same_rule_twice_is_an_error_but_severities_may_differ(tmp_path: Path) -> None:
    rule = "      - {alert: A, source: storage, expr: soc_pct < 10, labels: {severity: %s}}\n"
    head = "groups:\n  - name: g\n    rules:\n"
    assert len(load_rules([write(tmp_path, head + rule % "minor" + rule % "major")])) == 2
    path = write(tmp_path, head + rule % "minor" + rule % "minor", "twice.yaml")
    assert problems(path) == [
        f"{path}:5: A: same group, name and labels as the rule at {path}:4 "
        "(give it a different severity or label)"
    ]


@pytest.mark.parametrize("expr", HOSTILE, ids=lambda t: t[:30])
def test_hostile_expressions_stop_the_load(tmp_path: Path, expr: str) -> None:
    quoted = expr.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\0")
    path = write(
        tmp_path, f'groups:\n  - name: g\n    rules:\n      - alert: A\n        source: storage\n'
        f'        expr: "{quoted}"\n'
    )  # fmt: skip
    [problem] = problems(path)
    assert problem.startswith(f"{path}:6: A: expr: ")


def test_extra_fields_are_declared_per_file(tmp_path: Path) -> None:
    rules = """\
groups:
  - name: g
    rules:
      - {alert: Fan, source: storage, expr: fan_rpm < 100}
"""
    assert "unknown field 'fan_rpm'" in problems(write(tmp_path, rules))[0]
    declared = write(tmp_path, rules + "extra_fields: {storage: {fan_rpm: number}}\n", "ok.yaml")
    assert len(load_rules([declared])) == 1


def test_folders_load_their_yaml_files(tmp_path: Path) -> None:
    head = "groups:\n  - name: %s\n    rules:\n"
    head += "      - {alert: A, source: storage, expr: soc_pct < 1}\n"
    write(tmp_path, head % "one", "a.yaml")
    write(tmp_path, head % "two", "b.yml")
    write(tmp_path, "not rules", "notes.txt")
    assert [rule.uid for rule in load_rules([tmp_path]).rules] == [
        "one/A{severity=warning}",
        "two/A{severity=warning}",
    ]
