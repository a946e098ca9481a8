"""Simulator fault -> rule fires -> Alertmanager shows it -> fault cleared -> resolved.

Real Mosquitto, InfluxDB and Alertmanager, the collector with the shipped rule pack, simulated
devices publishing (each on its own MQTT connection, with its last will), and a signed webhook
on a local HTTP server receiving the same transitions. The simulated day lies in the past, as in
``parkwatch demo``: the last will of the device taken offline must not throw the park's clock to
the wall time (every other device would go stale at once).

The firing -> delivered latency per receiver (the dispatcher's histogram: from the transition's
hand-off to the receiver's answer) is recorded as a property of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from parkwatch.localservers import Alertmanager, InfluxDB1, Mosquitto
from parkwatch.schema import OcppErrorCode
from simulators.faults import FaultKind, FaultSpec, Scenario
from simulators.fleet import FleetSpec
from simulators.runner import run_fleet
from simulators.simtime import SHANGHAI
from tests.helpers import (
    alertmanager_alerts,
    collector_settings,
    running_collector,
    until,
    until_alertmanager_resolved,
)
from tests.notify.helpers import RecordingServer, mean_latency_ms

pytestmark = pytest.mark.servers

PARK = "notify-e2e"
FLEET = FleetSpec.model_validate(
    {"parks": [{"id": PARK, "storage": {"count": 1}, "site5g": {"count": 1},
                "charger": {"count": 1, "connectors": 1}}]}
)  # fmt: skip
MINUTE = 60
SCENARIO = Scenario(
    faults=[
        FaultSpec(
            fault=FaultKind.CHARGER_FAULTED,
            device=f"{PARK}/charger/cp-01",
            at=3 * MINUTE,
            duration=15 * MINUTE,
            error_code=OcppErrorCode.GROUND_FAILURE,
        ),
        FaultSpec(
            fault=FaultKind.OFFLINE,
            device=f"{PARK}/site5g/gnb-01",
            at=3 * MINUTE,
            duration=15 * MINUTE,
        ),
    ]
)
SPEED = 300  # the faults last 3 s of wall time: long enough to see them in Alertmanager
SECRET = "e2e secret"
FAULTED = {"ChargerFaulted": "cp-01", "DeviceOffline": "gnb-01"}


def receivers(am: Alertmanager, hook: RecordingServer) -> dict[str, Any]:
    """Alertmanager and a signed webhook, every alert to both."""
    return {
        "receivers": {
            "am": {"type": "alertmanager", "url": am.url},
            "hook": {"type": "webhook", "url": f"{hook.url}/hook", "secret": SECRET},
        },
        "route": {"receivers": ["am", "hook"], "group_wait_s": 0.2},
    }


def webhook_transitions(hook: RecordingServer) -> list[tuple[str, str, str]]:
    """(alertname, device, status) of every alert in every webhook body, signatures checked."""
    seen = []
    for request in hook.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["X-Parkwatch-Signature"], expected)
        for alert in orjson.loads(request.body)["alerts"]:
            labels = alert["labels"]
            seen.append((labels["alertname"], labels.get("device", ""), alert["status"]))
    return seen


async def test_a_simulator_fault_reaches_alertmanager_and_the_webhook_and_resolves(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
    *,
    alertmanager: Alertmanager,
    record_property: Callable[[str, object], None],
) -> None:
    hook = RecordingServer()
    await hook.start()
    start = datetime.now(SHANGHAI).replace(second=0, microsecond=0) - timedelta(days=1)
    settings = collector_settings(
        tmp_path,
        mosquitto,
        influxdb,
        influx_database,
        topic_prefix,
        ingest={"max_past_s": 2 * 86_400.0},
        notify=receivers(alertmanager, hook),
    )
    # (alertname, device) -> the alert as Alertmanager first showed it
    shown: dict[tuple[str, str], dict[str, Any]] = {}

    async def watch() -> None:
        while True:
            for alert in await alertmanager_alerts(alertmanager, park=PARK):
                labels = alert["labels"]
                shown.setdefault((labels["alertname"], labels.get("device", "")), alert)
            await asyncio.sleep(0.02)  # polling Alertmanager is what this test is about

    stop = asyncio.Event()
    try:
        async with running_collector(settings) as (collector, running):
            watcher = asyncio.create_task(watch())
            # Runs until stopped: the end of a run says every device is offline.
            fleet = asyncio.create_task(
                run_fleet(
                    FLEET,
                    mqtt_url=mosquitto.url,
                    prefix=topic_prefix,
                    speed=SPEED,
                    start=start,
                    seed=5,
                    scenario=SCENARIO,
                    stop=stop,
                )
            )
            try:
                for key in FAULTED.items():
                    in_am = partial(operator.contains, shown, key)
                    await until(in_am, what=f"{key} in Alertmanager", alive=fleet)
                for name in FAULTED:
                    await until_alertmanager_resolved(alertmanager, alertname=name, park=PARK)
                await until(
                    lambda: len(webhook_transitions(hook)) >= 2 * len(FAULTED),
                    what="the webhook",
                    alive=running,
                )
                seen_before_stop = set(shown)
                told = sorted(webhook_transitions(hook))
            finally:
                stop.set()
                stats = await fleet
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            assert stats.published == stats.acked
            registry = collector.metrics.registry
            for receiver in ("am", "hook"):
                record_property(f"{receiver}_latency_ms", mean_latency_ms(registry, receiver))
    finally:
        await hook.stop()

    charger = shown["ChargerFaulted", "cp-01"]
    assert charger["labels"] == {
        "alertname": "ChargerFaulted",
        "park": PARK,
        "kind": "charger",
        "device": "cp-01",
        "connector": "1",
        "severity": "major",
    }
    assert charger["annotations"]["summary"] == (
        f"{PARK}/cp-01 connector 1: Faulted (GroundFailure)"
    )
    offline = shown["DeviceOffline", "gnb-01"]
    assert offline["labels"] == {
        "alertname": "DeviceOffline",
        "park": PARK,
        "kind": "site5g",
        "device": "gnb-01",
        "severity": "major",
    }
    # Only the faults, and each fired and resolved once: the will did not make the park stale.
    assert seen_before_stop == set(FAULTED.items())
    assert told == sorted(
        (name, device, status)
        for name, device in FAULTED.items()
        for status in ("firing", "resolved")
    )
