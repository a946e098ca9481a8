"""The rules engine, feature by feature, with hand-computed expectations.

The engine is driven the way :mod:`parkwatch.analytics` drives it: for each reading the park's
clock moves (``advance``), then ``apply``; silence is ``advance`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from parkwatch.clock import ParkClocks
from parkwatch.events import AlertState, AlertTransition, KpiRecord, Output
from parkwatch.points import NO_TICKET, STATUS_MEASUREMENT, Point
from parkwatch.settings import ParksSettings, RulesSettings
from rules.engine import RulesEngine

S = 1000
M = 60 * S


class Rig:
    """One engine on a rule file, with the transitions it emitted."""

    def __init__(self, tmp_path: Path, rules: str, parks: dict[str, Any] | None = None) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("groups:\n  - name: g\n    rules:\n" + rules)
        self.registry = CollectorRegistry()
        self.settings = RulesSettings(paths=[path])
        self.parks = ParksSettings.model_validate(parks or {})
        self.engine = RulesEngine(self.settings, self.parks, ParkClocks(), self.registry)
        self.outputs: list[Output] = []
        self.now: dict[str, int] = {}

    def fresh(self) -> RulesEngine:
        """Another engine on the same rules (for restore tests)."""
        return RulesEngine(self.settings, self.parks, ParkClocks(), CollectorRegistry())

    def tick(self, park: str, ts: int) -> None:
        if ts > self.now.get(park, -1):
            self.now[park] = ts
            self.engine.advance(park, ts, self.outputs.append)

    def read(self, ts: int, park: str = "p", kind: str = "storage", device: str = "d",
             connector: str = "", **fields: Any) -> None:  # fmt: skip
        self.tick(park, ts)
        point = Point(park, kind, device, ts, fields, "", NO_TICKET, connector)
        self.engine.apply(point, self.outputs.append)

    def status(self, ts: int, online: bool, park: str = "p", kind: str = "storage",
               device: str = "d") -> None:  # fmt: skip
        self.tick(park, ts)
        point = Point(park, STATUS_MEASUREMENT, device, ts, {"online": online}, "", NO_TICKET,
                      device_kind=kind)  # fmt: skip
        self.engine.apply(point, self.outputs.append)

    def kpi(self, end: int, window: str = "1h", park: str = "p", **fields: float) -> None:
        self.tick(park, end)
        self.engine.take(KpiRecord(park, window, end - M, end, fields), self.outputs.append)

    def transitions(self) -> list[tuple[str, str, int, Any]]:
        """``(alertname, state, at, value)`` of each transition so far."""
        return [
            (o.alert.name, o.alert.state.value, o.at_ms, o.alert.value)
            for o in self.outputs
            if isinstance(o, AlertTransition)
        ]

    def last(self) -> AlertTransition:
        transitions = [o for o in self.outputs if isinstance(o, AlertTransition)]
        return transitions[-1]


HOT = """\
      - alert: Hot
        source: storage
        expr: cell_temp_max_c > 45
        clear: cell_temp_max_c < 42
        for: 30s
        annotations: {summary: "{{ park }}/{{ device }} {{ value:.1f }} degC"}
"""


def test_for_pends_then_fires_at_the_deadline_in_event_time(tmp_path: Path) -> None:
    rig = Rig(tmp_path, HOT)
    rig.read(0, cell_temp_max_c=40.0)
    rig.read(10 * S, cell_temp_max_c=46.0)
    rig.read(25 * S, cell_temp_max_c=47.0)
    assert rig.transitions() == [("Hot", "pending", 10 * S, 46.0)]
    rig.tick("p", 39 * S)
    assert len(rig.transitions()) == 1
    rig.read(60 * S, cell_temp_max_c=48.0)  # the clock jumps past the deadline (40 s)
    assert rig.transitions()[1:] == [("Hot", "firing", 40 * S, 47.0)]
    alert = rig.last().alert
    assert (alert.active_at_ms, alert.fired_at_ms) == (10 * S, 40 * S)
    assert alert.annotations == {"summary": "p/d 47.0 degC"}
    assert alert.labels == {"alertname": "Hot", "park": "p", "kind": "storage", "device": "d",
                            "severity": "warning"}  # fmt: skip
    [active] = rig.engine.active_alerts()
    assert (active.value, active.annotations["summary"]) == (48.0, "p/d 48.0 degC")


def test_pending_ends_quietly_when_the_condition_fails_first(tmp_path: Path) -> None:
    rig = Rig(tmp_path, HOT)
    rig.read(0, cell_temp_max_c=46.0)
    rig.read(20 * S, cell_temp_max_c=44.0)
    rig.tick("p", 10 * M)
    assert rig.transitions() == [("Hot", "pending", 0, 46.0), ("Hot", "inactive", 20 * S, 44.0)]
    assert rig.engine.active_alerts() == []


def test_hysteresis_holds_until_clear(tmp_path: Path) -> None:
    rig = Rig(tmp_path, HOT)
    for i, temp in enumerate([46.0, 46.0, 46.0, 46.0, 44.0, 42.5, 41.9]):
        rig.read(i * 10 * S, cell_temp_max_c=temp)
    assert rig.transitions() == [
        ("Hot", "pending", 0, 46.0),
        ("Hot", "firing", 30 * S, 46.0),
        ("Hot", "resolved", 60 * S, 41.9),
    ]
    assert rig.last().alert.resolved_at_ms == 60 * S


def test_without_clear_it_resolves_when_expr_fails(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "      - {alert: Low, source: storage, expr: soc_pct < 10}\n")
    rig.read(0, soc_pct=9.0)
    rig.read(M, soc_pct=9.5)
    rig.read(2 * M, soc_pct=10.0)
    assert rig.transitions() == [("Low", "firing", 0, 9.0), ("Low", "resolved", 2 * M, 10.0)]


def test_params_overrides_and_park_targets(tmp_path: Path) -> None:
    rules = """\
      - alert: Low
        source: storage
        expr: soc_pct < $floor
        params: {floor: 10}
        overrides: {lingang: {floor: 15}}
      - alert: Green
        source: park_kpi:1d
        expr: self_sufficiency_pct < $self_sufficiency_pct_min
"""
    parks = {"defaults": {"targets": {"self_sufficiency_pct_min": 30}},
             "overrides": {"hongqiao": {"targets": {"self_sufficiency_pct_min": 20}}}}  # fmt: skip
    rig = Rig(tmp_path, rules, parks)
    rig.read(0, park="caohejing", soc_pct=12.0)
    rig.read(0, park="lingang", soc_pct=12.0)
    rig.kpi(M, "1d", park="caohejing", self_sufficiency_pct=25.0)
    rig.kpi(M, "1d", park="hongqiao", self_sufficiency_pct=25.0)
    assert [(a.name, a.labels["park"]) for a in rig.engine.active_alerts()] == [
        ("Low", "lingang"),
        ("Green", "caohejing"),
    ]
    assert rig.engine.active_alerts()[1].labels == {
        "alertname": "Green", "park": "caohejing", "severity": "warning"}  # fmt: skip


def test_window_functions_in_rules(tmp_path: Path) -> None:
    rules = """\
      - alert: AvgLow
        source: storage
        expr: avg_over_time(soc_pct, 3m) < 20
      - alert: Swing
        source: storage
        expr: max_over_time(soc_pct, 3m) - min_over_time(soc_pct, 3m) > 30
      - alert: FastCharge
        source: storage
        expr: rate(charged_kwh, 2m) * 3600 > 500
"""
    rig = Rig(tmp_path, rules)
    # minute:        0     1     2     3     4
    soc = [30.0, 25.0, 2.0, 20.0, 60.0]
    charged = [0.0, 5.0, 10.0, 20.0, 40.0]
    for i in range(5):
        rig.read(i * M, soc_pct=soc[i], charged_kwh=charged[i])
    # AvgLow: windows (t-3m, t]: 30 | 27.5 | 19 (fires at 2m) | 15.67 | 27.33 (resolves at 4m)
    # Swing: 30-2=28 at 2m, 25-2=23 at 3m, 60-2=58 at 4m (fires)
    # FastCharge: 2m window at 3m: (10->20)/60 s = 600 kWh/h fires; at 4m: 20 kWh/min = 1200
    # FastCharge: rate over (1m, 3m] at 3m: 10 kWh (2m) -> 20 kWh (3m) in 60 s = 600 kWh/h;
    # at 2m: 5 -> 10 kWh = 300 kWh/h, below.
    assert rig.transitions() == [
        ("AvgLow", "firing", 2 * M, pytest.approx(19.0)),
        ("FastCharge", "firing", 3 * M, pytest.approx(600.0)),
        ("AvgLow", "resolved", 4 * M, pytest.approx(82 / 3)),
        ("Swing", "firing", 4 * M, pytest.approx(58.0)),
    ]


def test_string_conditions_and_fields_in_annotations(tmp_path: Path) -> None:
    rules = """\
      - alert: Faulted
        source: charger
        expr: status == "Faulted" and error_code != "NoError"
        annotations: {summary: "{{ device }}#{{ connector }}: {{ error_code }}"}
"""
    rig = Rig(tmp_path, rules)
    rig.read(0, kind="charger", connector="2", status="Faulted", error_code="NoError")
    rig.read(M, kind="charger", connector="2", status="Faulted", error_code="GroundFailure")
    rig.read(2 * M, kind="charger", connector="2", status="Available", error_code="NoError")
    assert rig.transitions() == [
        ("Faulted", "firing", M, None),
        ("Faulted", "resolved", 2 * M, None),
    ]
    firing = next(o for o in rig.outputs if isinstance(o, AlertTransition)).alert
    assert firing.labels["connector"] == "2"
    assert firing.annotations == {"summary": "d#2: GroundFailure"}


STALE = "      - {alert: Offline, source: any, expr: stale(5m)}\n"


def test_stale_fires_on_a_silent_park_and_clears_on_the_next_reading(tmp_path: Path) -> None:
    rig = Rig(tmp_path, STALE)
    rig.read(0, soc_pct=50.0)
    rig.read(M, soc_pct=50.0)
    rig.tick("p", 5 * M + 59 * S)
    assert rig.transitions() == []
    rig.tick("p", 8 * M)  # wall-clock ticks move a silent park's clock
    assert rig.transitions() == [("Offline", "firing", 6 * M, 300.0)]
    rig.read(9 * M, soc_pct=50.0)
    assert rig.transitions()[-1] == ("Offline", "resolved", 9 * M, 480.0)
    rig.tick("p", 13 * M)
    assert len(rig.transitions()) == 2  # re-armed from 9 min: due at 14 min
    rig.tick("p", 14 * M)
    assert rig.transitions()[-1] == ("Offline", "firing", 14 * M, 300.0)


def test_a_last_will_fires_at_once_and_a_reading_resolves(tmp_path: Path) -> None:
    rig = Rig(tmp_path, STALE)
    rig.read(0, soc_pct=50.0)
    rig.read(M, soc_pct=50.0)
    rig.status(30_000, online=False)  # a will is stamped with its receive time, whatever it is
    assert rig.transitions() == [("Offline", "firing", M, 0.0)]  # at the park's clock
    rig.read(2 * M, soc_pct=50.0)
    assert rig.transitions()[-1] == ("Offline", "resolved", 2 * M, 60.0)


def test_status_messages_apply_in_arrival_order(tmp_path: Path) -> None:
    rig = Rig(tmp_path, STALE)
    rig.read(M, soc_pct=50.0)
    rig.status(M, online=False)
    rig.status(0, online=True)  # a birth (even stamped earlier) after the will: online again
    assert [t[1] for t in rig.transitions()] == ["firing", "resolved"]
    rig.tick("p", 5 * M + 59 * S)
    assert len(rig.transitions()) == 2
    rig.tick("p", 6 * M)  # but a birth is not a reading: silence still counts from 1 min
    assert rig.transitions()[-1] == ("Offline", "firing", 6 * M, 300.0)


def test_a_charger_will_covers_every_connector_and_a_new_device(tmp_path: Path) -> None:
    rig = Rig(tmp_path, STALE)
    rig.read(0, kind="charger", device="cp", connector="1", status="Available")
    rig.read(0, kind="charger", device="cp", connector="2", status="Available")
    rig.status(M, online=False, kind="charger", device="cp")
    rig.status(M, online=False, kind="charger", device="never-heard")
    offline = sorted((a.labels["device"], a.labels.get("connector"))
                     for a in rig.engine.active_alerts())  # fmt: skip
    assert offline == [("cp", "1"), ("cp", "2"), ("never-heard", None)]
    # The unknown charger's first reading (connector 1) replaces its connector-less series.
    rig.read(2 * M, kind="charger", device="never-heard", connector="1", status="Available")
    assert sorted(a.labels["device"] for a in rig.engine.active_alerts()) == ["cp", "cp"]


def test_kpi_sources_fire_per_park(tmp_path: Path) -> None:
    rules = """\
      - alert: Dirty
        source: park_kpi:1h
        expr: avg_over_time(carbon_intensity_t_per_tce, 3h) > 3
        annotations: {summary: "{{ park_name }} {{ value:.2f }}"}
"""
    rig = Rig(tmp_path, rules, {"overrides": {"p": {"name": "Park P"}}})
    for hour, value in enumerate([2.5, 3.2, 3.6, 2.0, 1.0], start=1):
        rig.kpi(hour * 60 * M, "1h", carbon_intensity_t_per_tce=value)
    rig.kpi(60 * M, "15m", carbon_intensity_t_per_tce=9.0)  # another window: not this source
    # 3 h averages: 2.5, 2.85, 3.1 (fires at 3 h), 2.93 (resolves at 4 h)
    assert rig.transitions() == [
        ("Dirty", "firing", 180 * M, pytest.approx(3.1)),
        ("Dirty", "resolved", 240 * M, pytest.approx(8.8 / 3)),
    ]
    firing = next(o for o in rig.outputs if isinstance(o, AlertTransition)).alert
    assert firing.labels == {"alertname": "Dirty", "park": "p", "severity": "warning"}
    assert firing.annotations == {"summary": "Park P 3.10"}


def test_redelivered_and_late_readings_cannot_fire_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "      - {alert: Low, source: storage, expr: soc_pct < 10}\n")
    rig.read(0, soc_pct=5.0)
    rig.read(M, soc_pct=50.0)
    rig.read(0, soc_pct=5.0)  # the first message, redelivered
    rig.read(M, soc_pct=5.0)  # same ts as the last one: a duplicate
    rig.read(30 * S, soc_pct=5.0)  # late
    assert rig.transitions() == [("Low", "firing", 0, 5.0), ("Low", "resolved", M, 50.0)]
    assert rig.engine.redelivered == 3
    assert rig.registry.get_sample_value("parkwatch_rule_readings_skipped_total") == 3


def test_a_failing_rule_does_not_stop_the_others(tmp_path: Path) -> None:
    rules = "      - {alert: A, source: storage, expr: soc_pct < 10}\n" \
            "      - {alert: B, source: storage, expr: power_kw > 1}\n"  # fmt: skip
    rig = Rig(tmp_path, rules)
    rig.read(0, soc_pct="not a number", power_kw=5.0)  # a str compared with a float raises
    assert rig.transitions() == [("B", "firing", 0, 5.0)]
    assert rig.registry.get_sample_value("parkwatch_rule_errors_total", {"alertname": "A"}) == 1


def test_parkwatch_alerts_metric_counts_by_state(tmp_path: Path) -> None:
    rig = Rig(tmp_path, HOT)
    gauge = rig.registry.get_sample_value
    labels = {"alertname": "Hot", "severity": "warning"}
    assert gauge("parkwatch_alerts", {**labels, "state": "firing"}) == 0
    rig.read(0, cell_temp_max_c=46.0)
    rig.read(0, device="e", cell_temp_max_c=46.0)
    assert gauge("parkwatch_alerts", {**labels, "state": "pending"}) == 2
    rig.tick("p", M)
    assert gauge("parkwatch_alerts", {**labels, "state": "pending"}) == 0
    assert gauge("parkwatch_alerts", {**labels, "state": "firing"}) == 2
    assert gauge("parkwatch_rules_loaded") == 1


def _drive(rig: Rig, engine: RulesEngine, steps: list[tuple[str, int, dict[str, Any]]]) -> None:
    rig.engine = engine
    for what, ts, fields in steps:
        if what == "read":
            rig.read(ts, **fields)
        elif what == "status":
            rig.status(ts, **fields)
        elif what == "kpi":
            rig.kpi(ts, **fields)
        else:
            rig.tick("p", ts)


def test_snapshot_and_restore_continue_exactly(tmp_path: Path) -> None:
    rules = (
        HOT
        + STALE
        + """\
      - alert: Avg
        source: storage
        expr: avg_over_time(soc_pct, 10m) < 20 and rate(charged_kwh, 5m) > 0
        for: 2m
      - alert: Kpi
        source: park_kpi:1h
        expr: sum_over_time(co2_kg, 3h) > 100
"""
    )
    steps: list[tuple[str, int, dict[str, Any]]] = []
    for i in range(40):
        ts = i * 30 * S
        steps.append(("read", ts, {"soc_pct": 30.0 - i, "charged_kwh": float(i % 7),
                                   "cell_temp_max_c": 40.0 + (i % 9)}))  # fmt: skip
        if i % 10 == 5:
            steps.append(("status", ts, {"online": False}))
        if i % 4 == 0:
            steps.append(("kpi", ts + 1, {"co2_kg": float(i * 5)}))
        if i == 25:
            steps.append(("tick", ts + 9 * M, {}))
    reference = Rig(tmp_path, rules)
    _drive(reference, reference.engine, steps)
    assert len(reference.transitions()) > 8  # the sequence exercises the engine

    for cut in (7, 23, 41, 60):
        first = Rig(tmp_path, rules)
        _drive(first, first.engine, steps[:cut])
        data = orjson.loads(orjson.dumps(first.engine.snapshot()))  # JSON-able
        restored = first.fresh()
        restored.restore(data)
        _drive(first, restored, steps[cut:])
        assert first.transitions() == reference.transitions(), f"cut at {cut}"
        assert restored.snapshot() == reference.engine.snapshot()


def test_restore_drops_removed_rules_and_rearms_changed_ones(tmp_path: Path) -> None:
    rig = Rig(tmp_path, HOT + "      - {alert: Low, source: storage, expr: soc_pct < 10}\n")
    rig.read(0, cell_temp_max_c=46.0, soc_pct=5.0)
    data = rig.engine.snapshot()
    (tmp_path / "changed").mkdir()
    other = Rig(tmp_path / "changed", HOT.replace("for: 30s", "for: 2m"))
    other.engine.restore(data)
    assert [a.name for a in other.engine.active_alerts()] == ["Hot"]  # Low is gone
    other.now = {"p": 0}
    other.tick("p", M)
    assert other.transitions() == []  # the old 30 s deadline no longer applies
    other.tick("p", 2 * M)
    assert other.transitions() == [("Hot", "firing", 2 * M, 46.0)]


def test_pending_transitions_and_state_enum(tmp_path: Path) -> None:
    rig = Rig(tmp_path, HOT)
    rig.read(0, cell_temp_max_c=46.0)
    transition = rig.last()
    assert transition.previous is AlertState.INACTIVE
    assert transition.alert.state is AlertState.PENDING
    assert transition.alert.fingerprint == rig.engine.active_alerts()[0].fingerprint


def test_device_status_and_any_sources(tmp_path: Path) -> None:
    rules = """\
      - alert: Down
        source: device_status
        expr: not online
        annotations: {summary: "{{ kind }}/{{ device }} said offline"}
      - alert: Busy
        source: any
        expr: power_kw > 100
"""
    rig = Rig(tmp_path, rules)
    rig.status(0, online=True, kind="site5g", device="gnb")
    rig.status(M, online=False, kind="site5g", device="gnb")
    rig.status(30 * S, online=True, kind="site5g", device="gnb")  # older than the last: skipped
    rig.read(M, kind="charger", device="cp", connector="1", power_kw=150.0)
    rig.read(M, kind="storage", device="b", power_kw=120.0)
    rig.read(M, kind="microgrid", device="m", pv_kw=500.0)  # no power_kw: unknown, no alert
    alerts = {(a.name, a.labels["kind"], a.labels["device"]) for a in rig.engine.active_alerts()}
    assert alerts == {
        ("Down", "site5g", "gnb"),
        ("Busy", "charger", "cp"),
        ("Busy", "storage", "b"),
    }
    down = next(a for a in rig.engine.active_alerts() if a.name == "Down")
    assert down.annotations == {"summary": "site5g/gnb said offline"}
    rig.status(2 * M, online=True, kind="site5g", device="gnb")
    assert ("Down", "resolved", 2 * M, None) in rig.transitions()
