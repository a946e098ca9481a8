"""Structural checks on each committed dashboard, as Grafana would need them to hold."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from dashboards.board import GRID_COLUMNS, TAG
from dashboards.build import STAMP_KEY
from parkwatch.settings import Settings
from tests.dashboards.grafana import expected_columns, load_dashboards, queries

DASHBOARDS = load_dashboards()
DATASOURCE_UID = Settings().grafana.datasource_uid
# Grafana's own: macros of the InfluxDB data source and legend patterns.
BUILTIN = re.compile(r"\$(?:timeFilter|__interval_ms|__interval|col|tag_\w+)\b")
GRAFANA_GLOBALS = {"__value", "__url_time_range"}
EXPECTED_UIDS = {
    "parkwatch-city",
    "parkwatch-park",
    "parkwatch-storage",
    "parkwatch-site5g",
    "parkwatch-ev",
    "parkwatch-alerts",
    "parkwatch-collector",
}

each = pytest.mark.parametrize("uid", sorted(DASHBOARDS))


def test_every_dashboard_is_there_with_a_stable_uid() -> None:
    assert set(DASHBOARDS) == EXPECTED_UIDS
    for uid, dashboard in DASHBOARDS.items():
        assert dashboard["uid"] == uid
        assert TAG in dashboard["tags"]
        assert dashboard[STAMP_KEY]["sha256"]


@each
def test_panel_ids_are_unique(uid: str) -> None:
    ids = [panel["id"] for panel in DASHBOARDS[uid]["panels"]]
    assert len(ids) == len(set(ids)), ids
    assert all(isinstance(i, int) and i > 0 for i in ids)


@each
def test_panels_lie_on_the_grid_without_overlap(uid: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARDS[uid]["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0, panel["title"]
        assert pos["h"] > 0, panel["title"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
        for cell in itertools.product(
            range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
        ):
            assert cell not in cells, f"{panel['title']} overlaps {cells[cell]} at {cell}"
            cells[cell] = panel["title"]


def _refs(node: Any) -> list[dict[str, Any]]:
    """Every ``datasource`` reference anywhere in a dashboard."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            found.append(node["datasource"])
        for value in node.values():
            found += _refs(value)
    elif isinstance(node, list):
        for value in node:
            found += _refs(value)
    return found


@each
def test_every_datasource_reference_resolves_to_the_provisioned_one(uid: str) -> None:
    refs = _refs(DASHBOARDS[uid])
    assert refs
    for ref in refs:
        assert ref == {"type": "influxdb", "uid": DATASOURCE_UID}


@each
def test_every_panel_has_a_query_and_every_expression_an_alias(uid: str) -> None:
    for panel in DASHBOARDS[uid]["panels"]:
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["query"].strip(), panel["title"]
            assert target["rawQuery"] is True
            assert expected_columns(target["query"])  # raises on an unaliased expression


@each
def test_every_variable_used_exists(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    texts = [query.text for query in queries(dashboard)]
    texts += [  # data links and legends use variables too
        link["url"]
        for panel in dashboard["panels"]
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    for text in texts:
        used = set(re.findall(r"\$\{?(\w+)", BUILTIN.sub("", text))) - GRAFANA_GLOBALS
        assert used <= defined, f"{used - defined} undefined in {text}"


def test_the_park_dashboard_opens_by_park_as_the_notifications_link_it() -> None:
    park = DASHBOARDS["parkwatch-park"]
    (variable,) = park["templating"]["list"]
    assert variable["name"] == "park"
    assert variable["multi"] is False
    links = {
        link["url"]
        for dashboard in DASHBOARDS.values()
        for panel in dashboard["panels"]
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    }
    assert links == {"/d/parkwatch-park?var-park=${__value.raw}&${__url_time_range}"}
