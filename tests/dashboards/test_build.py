"""The build: committed JSON in step, byte-identical rebuilds, thresholds from the targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dashboards.build import (
    DASHBOARD_UIDS,
    STAMP_KEY,
    build_all,
    content_digest,
    context_from_settings,
    render,
    write_all,
)
from parkwatch.cli import main
from parkwatch.settings import Settings, load_settings
from tests.dashboards.grafana import JSON_DIR


def test_committed_json_is_what_the_build_writes() -> None:
    # `parkwatch dashboards build` regenerates them; a difference means it was not rerun.
    built = build_all(context_from_settings(Settings()))
    committed = sorted(path.stem for path in JSON_DIR.glob("*.json"))
    assert committed == sorted(DASHBOARD_UIDS)
    for uid, dashboard in built.items():
        assert (JSON_DIR / f"{uid}.json").read_bytes() == render(dashboard), uid


def test_the_cli_build_is_byte_identical_run_to_run(tmp_path: Path) -> None:
    runner = CliRunner()
    for out in ("a", "b"):
        result = runner.invoke(main, ["dashboards", "build", "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    first = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    second = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert first == second
    assert len(first) == 7


def _thresholds(dashboard: dict[str, Any], title: str) -> list[float | None]:
    (panel,) = (p for p in dashboard["panels"] if p["title"] == title)
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_thresholds_follow_the_parks_targets(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        parks={
            "defaults": {
                "targets": {
                    "self_sufficiency_pct_min": 42,
                    "carbon_intensity_t_per_tce_max": 2.5,
                    "site5g_kwh_per_gb_max": 0.07,
                    "storage_rte_pct_min": 90,
                }
            }
        },
    )
    built = build_all(context_from_settings(settings))
    assert _thresholds(built["parkwatch-city"], "Self-sufficiency today") == [None, 42]
    assert _thresholds(built["parkwatch-park"], "Carbon intensity today") == [None, 2.5]
    assert _thresholds(built["parkwatch-site5g"], "Energy per GB, per site") == [None, 0.07]
    assert _thresholds(built["parkwatch-storage"], "Round-trip efficiency, per system") == [
        None,
        90,
    ]
    # kgCO2/kWh column of the city table: the t/tce target in kg/kWh (x 0.1229 kgce/kWh).
    (table,) = (p for p in built["parkwatch-city"]["panels"] if p["title"] == "Parks today")
    steps = next(
        prop["value"]["steps"]
        for override in table["fieldConfig"]["overrides"]
        if override["matcher"]["options"] == "carbon_intensity_kg_per_kwh"
        for prop in override["properties"]
        if prop["id"] == "thresholds"
    )
    assert steps[1]["value"] == 2.5 * 0.1229
    defaults = build_all(context_from_settings(Settings()))
    assert _thresholds(defaults["parkwatch-city"], "Self-sufficiency today") == [None, 30]


def test_the_stamp_is_the_digest_of_the_content(tmp_path: Path) -> None:
    paths = write_all(tmp_path, context_from_settings(Settings()))
    (path,) = [p for p in paths if p.name == "parkwatch-park.json"]
    dashboard = json.loads(path.read_bytes())
    assert dashboard[STAMP_KEY]["sha256"] == content_digest(dashboard)
    dashboard["title"] = "edited"
    assert dashboard[STAMP_KEY]["sha256"] != content_digest(dashboard)
    # What Grafana sets on save is not content.
    dashboard["title"], dashboard["id"], dashboard["version"] = "parkwatch · Park", 12, 3
    assert dashboard[STAMP_KEY]["sha256"] == content_digest(dashboard)


def test_the_data_source_uid_comes_from_the_settings() -> None:
    settings = load_settings(None, grafana={"datasource_uid": "my-influx"})
    text = json.dumps(build_all(context_from_settings(settings)))
    assert '"uid": "my-influx"' in text
    assert "parkwatch-influxdb" not in text
