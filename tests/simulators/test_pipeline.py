"""Simulators -> real Mosquitto -> collector -> real InfluxDB: every simulated reading lands."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.schema import Kind
from simulators.fleet import FleetSpec
from simulators.generate import iter_messages
from simulators.runner import run_fleet
from simulators.simtime import SHANGHAI
from tests.helpers import collector_settings, metric_value, running_collector, until

pytestmark = pytest.mark.servers

FLEET = FleetSpec.model_validate(
    {
        "parks": [
            {
                "id": "zhangjiang",
                "storage": {"count": 2},
                "site5g": {"count": 2},
                "charger": {"count": 2},
            },
            {
                "id": "lingang",
                "storage": {"count": 1},
                "site5g": {"count": 1},
                "charger": {"count": 1},
            },
        ]
    }
)
SEED = 11
SPAN_S = 1800.0


async def test_a_simulated_half_hour_lands_in_influxdb_point_for_point(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    # Recent enough for the collector's clock-skew bounds, aligned to the simulation step.
    start = datetime.now(SHANGHAI).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    expected = Counter(
        topic.split("/")[2]
        for topic, _ in iter_messages(FLEET, SEED, start, SPAN_S, prefix=topic_prefix)
        if topic.endswith("/telemetry")
    )
    assert set(expected) == {kind.value for kind in Kind}

    def stored() -> Counter[str]:
        return Counter(
            {
                kind.value: len(influxdb.query(influx_database, f'SELECT * FROM "{kind.value}"'))  # noqa: S608
                for kind in Kind
            }
        )

    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)
    async with running_collector(settings) as (collector, running):
        stats = await run_fleet(
            FLEET,
            mqtt_url=mosquitto.url,
            prefix=topic_prefix,
            speed=6000,
            start=start,
            seed=SEED,
            duration_s=SPAN_S,
        )
        assert stats.published == stats.acked == sum(expected.values())
        await until(lambda: stored() == expected, what=f"points per kind {expected}", alive=running)
    assert stored() == expected
    assert metric_value(collector.metrics, "parkwatch_dead_letters_total", reason="clock_skew") == 0
    parks = {row["park"] for row in influxdb.query(influx_database, "SELECT * FROM microgrid")}
    assert parks == {"zhangjiang", "lingang"}
