"""``parkwatch rules check`` and ``parkwatch rules test`` (promtool's spirit), and a broken rule
file stopping ``parkwatch run``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from parkwatch.cli import main
from rules import PACK


def test_rules_check_passes_the_pack() -> None:
    result = CliRunner().invoke(main, ["rules", "check", str(PACK)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 15 rules in 5 files")


def test_rules_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: A, source: storage, expr: soc_pct <}\n"
        "      - {alert: B, source: storage, expr: 'open(1) > 0'}\n"
    )
    result = CliRunner().invoke(main, ["rules", "check", str(PACK), str(bad)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{bad}:4: A: expr: unexpected the end of the expression (column 10)",
        f"{bad}:5: B: expr: unknown function 'open' (functions: avg_over_time, count_over_time, "
        "delta, last_over_time, max_over_time, min_over_time, rate, stale, sum_over_time) "
        "(column 1)",
    ]


def test_rules_test_runs_the_pack_tests() -> None:
    result = CliRunner().invoke(main, ["rules", "test", str(PACK / "tests")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("passed, 0 failed")


def test_rules_test_exits_1_on_a_failure(tmp_path: Path) -> None:
    test = tmp_path / "t.yaml"
    test.write_text(
        f"rule_files: [{PACK / 'charger.yaml'}]\n"
        "tests:\n  - name: no alert expected, one fires\n    series:\n"
        "      - device: p/charger/c\n        fields: {status: Faulted}\n"
        "    expect: [{at: 0s, alerts: []}]\n"
    )
    result = CliRunner().invoke(main, ["rules", "test", str(test)])
    assert result.exit_code == 1
    assert (
        f"FAILED {test}:3: no alert expected, one fires: at 0s: unexpected alerts" in result.output
    )
    assert result.output.strip().endswith("0 passed, 1 failed")


def test_a_broken_rule_file_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - {alert: A, source: storage}\n")
    monkeypatch.setenv("PARKWATCH_RULES__PATHS", f'["{bad}"]')
    monkeypatch.setenv("PARKWATCH_STATE__DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("PARKWATCH_SPOOL__DIRECTORY", str(tmp_path / "spool"))
    monkeypatch.setenv("PARKWATCH_HTTP__PORT", "0")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2  # a configuration problem, like every other one
    assert f"{bad}:4: groups.0.rules.0.expr: Field required" in result.output
