"""Rule unit tests: the shipped pack's own tests pass (CI), and a wrong expectation fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules import PACK, run_test_paths
from rules.testing import expand_values

PACK_TESTS = PACK / "tests"


def test_the_shipped_pack_passes_its_own_tests() -> None:
    report = run_test_paths([PACK_TESTS])
    assert report.failures == []
    assert len(report.passed) >= 15


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("1 2 _ 3", [1.0, 2.0, None, 3.0]),
        ("5x3", [5.0, 5.0, 5.0]),
        ("10+2x3 0-1x2", [10.0, 12.0, 14.0, 0.0, -1.0]),
        ("Faulted Availablex2 true _x2", ["Faulted", "Available", "Available", True, None, None]),
    ],
)
def test_compact_value_notation(text: str, values: list[object]) -> None:
    assert expand_values(text) == values


def test_a_wrong_expectation_is_reported_with_file_line_and_name(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: Low, source: storage, expr: soc_pct < 10, for: 2m}\n"
    )
    test = tmp_path / "t.yaml"
    test.write_text(
        """\
rule_files: [r.yaml]
tests:
  - name: fires too early
    series:
      - device: p/storage/b
        fields: {soc_pct: "5x5"}
    expect:
      - at: 1m
        alerts:
          - labels: {alertname: Low}
  - name: right
    series:
      - device: p/storage/b
        fields: {soc_pct: "5x5"}
    expect:
      - at: 2m
        alerts:
          - labels: {alertname: Low, park: p, device: b}
"""
    )
    report = run_test_paths([test])
    assert report.passed == [f"{test}:11: right"]
    [failure] = report.failures
    assert failure.startswith(
        f"{test}:3: fires too early: at 1m: expected firing {{'alertname': 'Low'}}"
    )
    assert "active: pending" in failure
    assert not report.ok


def test_broken_rule_files_and_tests_are_failures(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "groups: [{name: g, rules: [{alert: A, source: x, expr: y}]}]\n"
    )
    test = tmp_path / "t.yaml"
    test.write_text("rule_files: [r.yaml]\ntests: []\n")
    report = run_test_paths([test])
    assert report.failures == [f"{tmp_path / 'r.yaml'}:1: A: unknown source 'x' (one of: "
                               "microgrid, storage, site5g, charger, any, device_status, "
                               "park_kpi:1m, park_kpi:15m, park_kpi:1h, park_kpi:1d)"]  # fmt: skip
    test.write_text("rule_files: []\ntests: [{name: n, series: [], expect: []}]\nextra: 1\n")
    [problem] = run_test_paths([test]).failures
    assert problem == f"{test}:3: extra: Extra inputs are not permitted"
