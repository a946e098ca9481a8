"""Simulator faults -> real Mosquitto -> collector with the shipped pack -> real InfluxDB.

A storage over-temperature, a charger fault and a device going offline (its connection dropped,
the broker publishing its last will) each produce a ``firing`` and then a ``resolved`` record in
the ``alerts`` measurement, and show in ``/api/v1/alerts`` while active.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.schema import OcppErrorCode
from simulators.faults import FaultKind, FaultSpec, Scenario
from simulators.fleet import FleetSpec
from simulators.runner import run_fleet
from simulators.simtime import SHANGHAI
from tests.helpers import collector_settings, running_collector, until

pytestmark = pytest.mark.servers

PARK = {"id": "e2e", "storage": {"count": 1}, "site5g": {"count": 1}, "charger": {"count": 1}}
FLEET = FleetSpec.model_validate({"parks": [PARK]})
MINUTE = 60_000
SCENARIO = Scenario(
    faults=[
        # Cells settle 40 degC hotter: past 45 (warning) in ~20 min, under 55 (critical).
        FaultSpec(
            fault=FaultKind.STORAGE_OVERTEMP,
            device="e2e/storage/bess-01",
            at=300,
            duration=1800,
            heat_c=40,
        ),
        FaultSpec(
            fault=FaultKind.CHARGER_FAULTED,
            device="e2e/charger/cp-01",
            at=300,
            duration=600,
            error_code=OcppErrorCode.HIGH_TEMPERATURE,
        ),
        FaultSpec(fault=FaultKind.OFFLINE, device="e2e/site5g/gnb-01", at=300, duration=600),
    ]
)
SPAN_S = 70 * 60.0
FAULTED = [("StorageCellHot", "bess-01"), ("ChargerFaulted", "cp-01"), ("DeviceOffline", "gnb-01")]


def records(influx: InfluxDB1, database: str) -> list[dict[str, Any]]:
    try:
        return influx.query(database, "SELECT * FROM alerts")
    except OSError:
        return []


def history(rows: list[dict[str, Any]], name: str, device: str) -> list[tuple[str, int]]:
    """``(state, time)`` of one alert's records, oldest first."""
    return sorted(
        (
            (row["state"], row["time"])
            for row in rows
            if row["alertname"] == name and row.get("device") == device
        ),
        key=lambda item: item[1],
    )


async def test_simulator_faults_fire_and_clear(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    # The simulated clock starts now and runs ahead of the wall clock, so a last will (stamped
    # with its receive time) is never newer than the park's clock.
    start = datetime.now(SHANGHAI).replace(second=0, microsecond=0)
    start_ms = round(start.timestamp() * 1000)
    settings = collector_settings(
        tmp_path,
        mosquitto,
        influxdb,
        influx_database,
        topic_prefix,
        ingest={"max_future_s": 86_400.0},
    )
    seen: set[tuple[str, str, str]] = set()
    async with running_collector(settings) as (collector, running):
        url = f"http://127.0.0.1:{collector.http_port}/api/v1/alerts"

        async def watch(http: aiohttp.ClientSession) -> None:
            while True:
                async with http.get(url) as response:
                    body = await response.json()
                for alert in body["data"]["alerts"]:
                    labels = alert["labels"]
                    seen.add((labels["alertname"], labels["device"], alert["state"]))
                await asyncio.sleep(0.01)  # polling the API is what this test is about

        async with aiohttp.ClientSession() as http:
            watcher = asyncio.create_task(watch(http))
            try:
                stats = await run_fleet(
                    FLEET,
                    mqtt_url=mosquitto.url,
                    prefix=topic_prefix,
                    speed=600,
                    start=start,
                    seed=3,
                    duration_s=SPAN_S,
                    scenario=SCENARIO,
                )
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        assert stats.published == stats.acked

        def resolved(name: str, device: str) -> bool:
            return "resolved" in dict(history(records(influxdb, influx_database), name, device))

        for name, device in FAULTED:
            await until(partial(resolved, name, device), what=f"{name} resolved", alive=running)
        active = {(a.name, a.labels["device"]) for a in collector.active_alerts()}

    assert {(name, device, "firing") for name, device in FAULTED} <= seen
    assert ("StorageCellHot", "bess-01") not in active
    assert ("ChargerFaulted", "cp-01") not in active

    rows = records(influxdb, influx_database)
    hot = [r for r in rows if r["alertname"] == "StorageCellHot" and r["severity"] == "warning"]
    assert [r["state"] for r in sorted(hot, key=lambda r: r["time"])] == ["firing", "resolved"]
    assert {(r["park"], r["kind"], r["device"]) for r in hot} == {("e2e", "storage", "bess-01")}
    firing_hot = next(r for r in hot if r["state"] == "firing")
    assert start_ms + 5 * MINUTE < firing_hot["time"] < start_ms + 36 * MINUTE
    assert firing_hot["value"] > 45
    assert firing_hot["summary"].startswith("e2e/bess-01: hottest cell ")

    faulted = [r for r in rows if r["alertname"] == "ChargerFaulted"]
    connectors = {r["connector"] for r in faulted}
    assert connectors  # one alert series per connector
    for connector in connectors:
        states = sorted((r["time"], r["state"]) for r in faulted if r["connector"] == connector)
        assert [state for _, state in states] == ["firing", "resolved"]
        assert start_ms + 5 * MINUTE <= states[0][0] < start_ms + 6 * MINUTE
        assert start_ms + 15 * MINUTE <= states[1][0] < start_ms + 16 * MINUTE
    assert all("Faulted (HighTemperature)" in r["summary"] for r in faulted)

    offline = history(rows, "DeviceOffline", "gnb-01")
    assert [state for state, _ in offline[:2]] == ["firing", "resolved"]
    # The will is stamped with the park's clock when it arrives: the last reading before 5 min.
    assert start_ms + 4 * MINUTE < offline[0][1] < start_ms + 6 * MINUTE
    assert start_ms + 15 * MINUTE <= offline[1][1] < start_ms + 16 * MINUTE  # back online
