"""Alert state survives a restart and a kill -9 of a real collector process.

The collector runs as a child process (``tests/faults.py``) with the shipped rule pack, against
the suite's Mosquitto and InfluxDB. What is checked from outside: the ``alerts`` points in
InfluxDB (a second ``firing`` record would be a second point with another timestamp) and
``/api/v1/alerts``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from parkwatch.localservers import InfluxDB1, Mosquitto
from tests.faults import CollectorProcess, wait_until
from tests.helpers import publish_all

pytestmark = pytest.mark.servers

TIMEOUT = 30.0


def charger(prefix: str, ts: int, status: str, error: str = "NoError") -> tuple[str, bytes]:
    body = {"ts": ts, "status": status, "error_code": error, "connector_id": 1}
    return f"{prefix}/p1/charger/cp-1/telemetry", orjson.dumps(body)


def site(prefix: str, ts: int, on_battery: bool) -> tuple[str, bytes]:
    body = {"ts": ts, "on_battery": on_battery, "power_kw": 3.0}
    return f"{prefix}/p1/site5g/gnb-1/telemetry", orjson.dumps(body)


def alert_rows(influx: InfluxDB1, database: str, name: str) -> list[dict[str, Any]]:
    try:
        return influx.query(database, f"SELECT * FROM alerts WHERE alertname = '{name}'")  # noqa: S608
    except OSError:
        return []


def states(influx: InfluxDB1, database: str, name: str) -> list[tuple[int, str]]:
    return [(row["time"], row["state"]) for row in alert_rows(influx, database, name)]


def expect(
    collector: CollectorProcess,
    influx: InfluxDB1,
    database: str,
    name: str,
    wanted: list[tuple[int, str]],
) -> None:
    """Wait until the alert's records are exactly ``wanted``."""
    wait_until(
        lambda: states(influx, database, name) == wanted,
        timeout=TIMEOUT,
        what=f"{name} records {wanted}",
        collector=collector,
    )


def api_alerts(collector: CollectorProcess) -> list[dict[str, Any]]:
    status, body = collector._get("/api/v1/alerts")
    assert status == 200
    data: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
    return data


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_firing_alert_stays_firing_across_a_restart_and_still_resolves(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
    *,
    stop: str,
) -> None:
    collector = CollectorProcess(
        tmp_path,
        broker=mosquitto,
        influx=influxdb,
        database=influx_database,
        topic_prefix=topic_prefix,
    )
    base = (round(time.time()) - 600) * 1000
    try:
        collector.start()
        collector.wait_subscribed()
        publish_all(
            mosquitto,
            [
                charger(topic_prefix, base, "Faulted", "GroundFailure"),
                site(topic_prefix, base, on_battery=True),  # Site5gOnBattery pends for 1 min
            ],
        )
        expect(collector, influxdb, influx_database, "ChargerFaulted", [(base, "firing")])
        wait_until(
            lambda: any(a["state"] == "pending" for a in api_alerts(collector)),
            timeout=TIMEOUT,
            what="Site5gOnBattery pending",
            collector=collector,
        )

        if stop == "kill -9":
            collector.kill()  # state only in the journal: rebuilt by replay
        else:
            assert collector.terminate() == 0  # a snapshot on the way out
        collector.start()
        collector.wait_subscribed()

        active = {a["labels"]["alertname"]: a for a in api_alerts(collector)}
        assert active["ChargerFaulted"]["state"] == "firing"
        assert active["ChargerFaulted"]["labels"] == {
            "alertname": "ChargerFaulted",
            "park": "p1",
            "kind": "charger",
            "device": "cp-1",
            "connector": "1",
            "severity": "major",
        }
        summary = "p1/cp-1 connector 1: Faulted (GroundFailure)"
        assert active["ChargerFaulted"]["annotations"] == {"summary": summary}
        assert active["Site5gOnBattery"]["state"] == "pending"

        # Still faulted after the restart: no second firing record. The site's minute is up.
        publish_all(
            mosquitto,
            [
                charger(topic_prefix, base + 30_000, "Faulted", "GroundFailure"),
                site(topic_prefix, base + 61_000, on_battery=True),
            ],
        )
        expect(collector, influxdb, influx_database, "Site5gOnBattery", [(base + 60_000, "firing")])
        assert states(influxdb, influx_database, "ChargerFaulted") == [(base, "firing")]

        publish_all(mosquitto, [charger(topic_prefix, base + 90_000, "Available")])
        resolved = [(base, "firing"), (base + 90_000, "resolved")]
        expect(collector, influxdb, influx_database, "ChargerFaulted", resolved)
        assert [a["labels"]["alertname"] for a in api_alerts(collector)] == ["Site5gOnBattery"]
        labels = {"alertname": "ChargerFaulted", "severity": "major", "state": "firing"}
        assert collector.metric("parkwatch_alerts", **labels) == 0

        # A redelivered (or duplicated) old reading cannot fire it again.
        skipped = collector.metric("parkwatch_rule_readings_skipped_total")
        publish_all(mosquitto, [charger(topic_prefix, base + 30_000, "Faulted", "GroundFailure")])
        wait_until(
            lambda: collector.metric("parkwatch_rule_readings_skipped_total") > skipped,
            timeout=TIMEOUT,
            what="the old reading seen",
            collector=collector,
        )
        assert [a["labels"]["alertname"] for a in api_alerts(collector)] == ["Site5gOnBattery"]
        assert states(influxdb, influx_database, "ChargerFaulted") == resolved
    finally:
        collector.close()
