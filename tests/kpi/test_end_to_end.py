"""A simulated park's day through real Mosquitto, the collector and InfluxDB 1.x.

The ``park_kpi`` points the collector wrote must equal the KPIs an independent offline reference
(tests/kpi/reference.py) computes from the raw telemetry this test reads back from InfluxDB,
and the simulators' energy balance must show in them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kpi import KPI_FIELDS
from parkwatch.localservers import InfluxDB1, Mosquitto
from simulators.fleet import FleetSpec
from simulators.generate import iter_messages
from simulators.simtime import SHANGHAI
from tests.helpers import collector_settings, publish_all, running_collector, until
from tests.kpi.reference import reference_kpis
from tests.kpi.stored import closed_by, read_kpis, read_telemetry, telemetry_count

pytestmark = pytest.mark.servers

PARK = "lingang"
FLEET = FleetSpec.model_validate(
    {
        "step_s": 30,
        "intervals_s": {"microgrid": 30, "storage": 30, "site5g": 30, "charger": 30},
        "parks": [
            {"id": PARK, "storage": {"count": 1}, "site5g": {"count": 1}, "charger": {"count": 1}}
        ],
    }
)
SEED = 7
DAY_S = 86_400


async def test_a_simulated_day_gives_the_reference_kpis_and_closes_the_energy_balance(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    # A whole local day in the past (within the collector's clock-skew bounds), and ten minutes
    # of the next, so the data itself closes the day.
    midnight = datetime.now(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(days=2)
    start_ms = round(start.timestamp() * 1000)
    messages = list(iter_messages(FLEET, SEED, start, DAY_S + 600, prefix=topic_prefix))
    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)
    async with running_collector(settings) as (_, running):
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await until(
            lambda: telemetry_count(influxdb, influx_database) == len(messages),
            timeout=120,
            what=f"{len(messages)} telemetry points",
            alive=running,
        )
        rows = read_telemetry(influxdb, influx_database, start_ms, start_ms + (DAY_S + 600) * 1000)
        newest = max(int(row["time"]) for kind_rows in rows.values() for row in kind_rows)
        expected = reference_kpis(rows)
        await until(
            lambda: (
                closed_by(read_kpis(influxdb, influx_database, PARK), newest).keys()
                >= expected.keys()
            ),
            timeout=60,
            what=f"{len(expected)} park_kpi points",
            alive=running,
        )
    stored = closed_by(read_kpis(influxdb, influx_database, PARK), newest)
    assert stored.keys() == expected.keys()
    for key, fields in expected.items():
        assert stored[key] == pytest.approx(fields, rel=1e-9, abs=1e-9), key

    day = stored["1d", start_ms]
    assert set(day) == set(KPI_FIELDS)  # every field of the table, through InfluxDB
    for (window, _), fields in stored.items():
        if window in ("1h", "1d") and {"pv_kwh", "storage_charged_kwh"} <= fields.keys():
            supplied = (
                fields["pv_kwh"]
                + fields["grid_import_kwh"]
                - fields["grid_export_kwh"]
                + fields["storage_discharged_kwh"]
                - fields["storage_charged_kwh"]
            )
            assert supplied == pytest.approx(fields["load_kwh"], rel=1e-3)
    assert day["load_kwh"] > 0
    assert 0 < day["self_sufficiency_pct"] < 100
