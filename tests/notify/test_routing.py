"""The routing tree follows Alertmanager: first matching child wins unless it continues, a node
no child took notifies, settings are inherited, regexes are anchored."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify.routing import Router
from parkwatch.errors import ConfigError
from parkwatch.settings import RouteSettings, load_settings

TREE: dict[str, Any] = {
    "receivers": ["default"],
    "group_by": ["park"],
    "group_wait_s": 30,
    "routes": [
        {"receivers": ["alertmanager"], "continue": True},
        {
            "match": {"severity": "critical"},
            "receivers": ["oncall"],
            "group_wait_s": 0,
            "routes": [{"match_re": {"park": "lingang|hongqiao"}, "receivers": ["west"]}],
        },
        {"match": {"kind": "charger"}, "receivers": ["chargers"], "continue": True},
        {"match_re": {"alertname": "Storage.*"}, "receivers": ["storage"]},
        {"match_re": {"alertname": "Charger.*"}},  # inherits the root's receivers
    ],
}


def receivers(labels: dict[str, str]) -> list[str]:
    """Receivers for ``labels``, in routing order."""
    router = Router(RouteSettings.model_validate(TREE))
    return [name for route in router.routes_for(labels) for name in route.receivers]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # Only the catch-all continues; nothing else matches: the root notifies nobody more.
        ({"alertname": "GridFrequency", "severity": "major"}, ["alertmanager"]),
        # The first non-continuing match wins: critical storage goes to oncall, not storage.
        ({"alertname": "StorageCellHot", "severity": "critical"}, ["alertmanager", "oncall"]),
        # A matching grandchild takes over from its parent.
        (
            {"alertname": "StorageCellHot", "severity": "critical", "park": "lingang"},
            ["alertmanager", "west"],
        ),
        ({"alertname": "StorageSocLow", "severity": "warning"}, ["alertmanager", "storage"]),
        # continue on chargers, then the Charger.* node with inherited receivers.
        (
            {"alertname": "ChargerFaulted", "kind": "charger", "severity": "major"},
            ["alertmanager", "chargers", "default"],
        ),
        # Regexes are anchored: "XStorage" does not match "Storage.*".
        ({"alertname": "XStorageCellHot", "severity": "minor"}, ["alertmanager"]),
    ],
)
def test_routing_follows_alertmanager(labels: dict[str, str], expected: list[str]) -> None:
    assert receivers(labels) == expected


def test_group_settings_are_inherited_unless_set() -> None:
    router = Router(RouteSettings.model_validate(TREE))
    critical = router.root.children[1]
    assert (critical.group_by, critical.group_wait_s) == (("park",), 0)
    west = critical.children[0]
    assert (west.group_by, west.group_wait_s) == (("park",), 0)
    assert router.root.children[3].group_wait_s == 30


def test_the_root_notifies_when_no_child_matches() -> None:
    router = Router(RouteSettings.model_validate({"receivers": ["ops"], "routes": [
        {"match": {"park": "lingang"}, "receivers": ["lingang"]},
    ]}))  # fmt: skip
    assert [r.receivers for r in router.routes_for({"park": "wusong"})] == [("ops",)]
    assert router.root.group_by == ("park", "alertname")
    assert router.root.group_wait_s == 10


def test_a_missing_label_matches_the_empty_string() -> None:
    router = Router(RouteSettings.model_validate({"routes": [
        {"match": {"device": ""}, "receivers": ["park-level"]},
    ]}))  # fmt: skip
    assert router.routes_for({"alertname": "SelfSufficiencyLow"})[0].receivers == ("park-level",)
    assert router.routes_for({"device": "bess-1"})[0].receivers == ()


def test_settings_refuse_unknown_receivers_and_bad_regexes() -> None:
    with pytest.raises(ConfigError, match="unknown receivers: nobody"):
        load_settings(notify={"route": {"receivers": ["nobody"]}})
    with pytest.raises(ConfigError, match="invalid regex"):
        load_settings(notify={"route": {"match_re": {"park": "(unclosed"}}})


label_values = st.sampled_from(["", "caohejing", "lingang", "critical", "minor", "storage"])
label_sets = st.dictionaries(
    st.sampled_from(["alertname", "park", "severity", "kind"]), label_values, max_size=4
)


@given(label_sets)
def test_every_alert_reaches_the_catch_all_and_only_matching_nodes(labels: dict[str, str]) -> None:
    router = Router(RouteSettings.model_validate(TREE))
    routes = router.routes_for(labels)
    assert routes[0].receivers == ("alertmanager",)
    for route in routes:
        assert route.matches(labels)
