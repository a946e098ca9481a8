"""The service's notification wiring across a restart, with a real Alertmanager.

An alert that still fires when the collector stops must keep being re-sent to Alertmanager by the
next run (else Alertmanager lets it expire after its ``endsAt``), must not be notified to the
other receivers a second time, and must still resolve everywhere when its condition clears.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from parkwatch.localservers import Alertmanager, InfluxDB1, Mosquitto
from parkwatch.settings import Settings
from tests.helpers import (
    alertmanager_alerts,
    collector_settings,
    publish_all,
    running_collector,
    until,
    until_alertmanager_resolved,
    until_alertmanager_shows,
)
from tests.notify.helpers import RecordingServer

pytestmark = pytest.mark.servers

RESEND_S = 0.5
"""Alertmanager re-sends this often, each valid 4 x as long: an alert nobody re-sends is gone
from Alertmanager's active list 2 s after its last post."""


def notify_settings(am: Alertmanager, hook: RecordingServer) -> dict[str, Any]:
    """Everything to Alertmanager and to a signed webhook, at once."""
    return {
        "receivers": {
            "am": {"type": "alertmanager", "url": am.url, "resend_interval_s": RESEND_S},
            "hook": {"type": "webhook", "url": f"{hook.url}/hook", "secret": "s3cret"},
        },
        "route": {"receivers": ["am", "hook"], "group_wait_s": 0},
    }


def charger(park: str, ts_ms: int, status: str) -> tuple[str, bytes]:
    """One charger connector reading (``status`` an OCPP status)."""
    body = {"ts": ts_ms, "connector_id": 1, "status": status, "error_code": "GroundFailure"}
    if status != "Faulted":
        body["error_code"] = "NoError"
    return f"{park}/charger/cp-01/telemetry", orjson.dumps(body)


def hook_statuses(hook: RecordingServer) -> list[str]:
    """The ``status`` of each webhook body received, in order."""
    return [orjson.loads(body)["status"] for body in hook.bodies("/hook")]


def updated_at(alert: dict[str, Any]) -> float:
    """When Alertmanager last received the alert (epoch seconds)."""
    return datetime.fromisoformat(alert["updatedAt"].replace("Z", "+00:00")).timestamp()


async def test_alerts_still_firing_after_a_restart_are_re_sent_not_re_notified(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
    *,
    alertmanager: Alertmanager,
) -> None:
    park = topic_prefix  # unique to this test on the shared Alertmanager
    hook = RecordingServer()
    await hook.start()
    settings: Settings = collector_settings(
        tmp_path,
        mosquitto,
        influxdb,
        influx_database,
        topic_prefix,
        notify=notify_settings(alertmanager, hook),
    )
    now_ms = int(time.time() * 1000)
    topic, payload = charger(park, now_ms, "Faulted")
    try:
        async with running_collector(settings) as (collector, running):
            publish_all(mosquitto, [(f"{topic_prefix}/{topic}", payload)])
            before = await until_alertmanager_shows(
                alertmanager, alertname="ChargerFaulted", park=park
            )
            await until(
                lambda: hook_statuses(hook) == ["firing"], what="the webhook", alive=running
            )

        restarted_at = time.time()
        async with running_collector(settings) as (collector, running):
            assert [a.name for a in collector.active_alerts()] == ["ChargerFaulted"]

            last_post = [restarted_at]

            async def re_sent() -> bool:
                shown = await alertmanager_alerts(
                    alertmanager, alertname="ChargerFaulted", park=park
                )
                if len(shown) != 1 or updated_at(shown[0]) <= last_post[0]:
                    return False
                last_post[0] = updated_at(shown[0])
                return True

            await until(re_sent, what="the new run re-sending the alert", alive=running)
            await until(re_sent, what="and re-sending it again", alive=running)
            after = await until_alertmanager_shows(
                alertmanager, alertname="ChargerFaulted", park=park
            )
            assert after["labels"] == before["labels"]
            assert after["startsAt"] == before["startsAt"]  # the same alert, still firing
            assert hook_statuses(hook) == ["firing"]  # not notified a second time

            topic, payload = charger(park, now_ms + 60_000, "Available")
            publish_all(mosquitto, [(f"{topic_prefix}/{topic}", payload)])
            await until_alertmanager_resolved(alertmanager, alertname="ChargerFaulted", park=park)
            await until(
                lambda: hook_statuses(hook) == ["firing", "resolved"],
                what="the webhook told of the resolve",
                alive=running,
            )
    finally:
        await hook.stop()
