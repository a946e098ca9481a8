"""The demo's live view: today's green KPIs, the collector's counts, the alerts, the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from notify.metrics import NotifyMetrics
from parkwatch.events import Alert, AlertState, AlertTransition, KpiRecord
from parkwatch.liveview import LiveView
from parkwatch.points import STATUS_MEASUREMENT, Point
from parkwatch.service import Collector
from parkwatch.settings import load_settings
from tests.parkwatch.test_demo import column


def test_the_live_view_shows_todays_green_kpis() -> None:
    """Two closed minutes of one park: pv 8, export 1, load 20, import 14 kWh."""
    view = LiveView(Collector(load_settings()))
    start = round(datetime(2025, 6, 21, tzinfo=UTC).timestamp() * 1000)
    view.observe(Point("lingang", "microgrid", "mg-01", start, {"pv_kw": 1.0}, "", 0))
    for offset, fields in (
        (0, {"pv_kwh": 6.0, "load_kwh": 12.0, "grid_import_kwh": 8.0, "grid_export_kwh": 1.0}),
        (60_000, {"pv_kwh": 2.0, "load_kwh": 8.0, "grid_import_kwh": 6.0, "grid_export_kwh": 0.0}),
    ):
        view.observe_output(KpiRecord("lingang", "1m", start + offset, start + offset, fields))
    console = Console(width=200, record=True)
    console.print(view.table())
    text = console.export_text()
    assert column(text, "today self-suff. %") == {"lingang": f"{100 * 7 / 20:.1f}"}
    assert column(text, "today tCO2/tce") == {"lingang": f"{14 * 0.55 / (20 * 0.1229):.2f}"}
    assert column(text, "today kg CO2") == {"lingang": f"{14 * 0.55:.0f}"}


def test_the_live_view_caption_shows_the_collector_counts(tmp_path: Path) -> None:
    collector = Collector(load_settings(None, spool={"directory": tmp_path / "spool"}))
    metrics = collector.metrics
    metrics.points_written.inc(41)
    metrics.dead_letters.labels("invalid_json").inc(2)
    metrics.unacked.set_function(lambda: 7)  # as the MQTT adapter reports it: a function
    console = Console(width=120, record=True)
    console.print(LiveView(collector).table())
    assert "points written 41 · dead letters 2 · unacked 7" in console.export_text()


def test_the_simulated_time_shown_ignores_the_receive_time_of_a_last_will() -> None:
    view = LiveView(Collector(load_settings()))
    simulated = round(datetime(2025, 6, 21, 2, 30, tzinfo=UTC).timestamp() * 1000)
    view.observe(Point("lingang", "microgrid", "mg-01", simulated, {"pv_kw": 1.0}, "", 0))
    received = round(datetime(2025, 6, 22, 9, 0, tzinfo=UTC).timestamp() * 1000)
    will = Point("lingang", STATUS_MEASUREMENT, "cp-01", received, {"online": False}, "", 1,
                 device_kind="charger", ts_from_receipt=True)  # fmt: skip
    view.observe(will)
    console = Console(width=200, record=True)
    console.print(view.table())
    assert "simulated time 2025-06-21 10:30 (Asia/Shanghai)" in console.export_text()


def test_alerts_fired_by_the_goodbyes_at_the_stop_are_counted_not_listed() -> None:
    view = LiveView(Collector(load_settings()))
    faulted = Alert({"alertname": "ChargerFaulted", "park": "p", "device": "cp-01"}, {},
                    AlertState.FIRING, None, 0)  # fmt: skip
    view.observe_output(AlertTransition(faulted, AlertState.INACTIVE, 0))
    view.stopping()
    for device in ("mg-01", "cp-01"):
        offline = Alert({"alertname": "DeviceOffline", "park": "p", "device": device}, {},
                        AlertState.FIRING, None, 60_000)  # fmt: skip
        view.observe_output(AlertTransition(offline, AlertState.INACTIVE, 60_000))
    console = Console(width=200, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "ChargerFaulted" in text
    assert "DeviceOffline (" not in text
    assert "said goodbye (offline), so 2 DeviceOffline alerts fired" in text


def test_the_live_view_counts_notifications_per_receiver(tmp_path: Path) -> None:
    receivers = {"am": {"type": "alertmanager", "url": "http://127.0.0.1:1"}}
    notify = {"receivers": receivers, "route": {"receivers": ["am"]}}
    collector = Collector(load_settings(None, notify=notify, state={"directory": tmp_path}))
    counted = NotifyMetrics(collector.metrics.registry)  # what the dispatcher counts in
    counted.count("am", "sent", 3)
    counted.count("am", "failed")
    assert LiveView(collector).notifications() == "notifications: am: 3 sent, 1 failed, 0 dropped"
    assert LiveView(Collector(load_settings())).notifications() == ""
