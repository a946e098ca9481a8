"""Restarts mid-window: the collector process killed (``kill -9``) and stopped (SIGTERM) while a
simulated park streams through it; no KPI window may be lost or doubled.

The collector runs as a child process (tests/faults.py) with its state directory in its work
directory, so a restart recovers the KPI engine from the snapshot and the journal after it
(parkwatch/analytics.py), while the broker redelivers what was not acknowledged. Afterwards every
``park_kpi`` point in InfluxDB must equal what the offline reference computes from the raw
telemetry read back: a lost window would be missing, a doubled one (energy counted twice, or a
window closed early with half its data and again later) would differ.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from parkwatch.localservers import InfluxDB1, Mosquitto
from simulators.fleet import FleetSpec
from simulators.generate import iter_messages
from simulators.simtime import SHANGHAI
from tests.faults import CollectorProcess, Publisher, wait_until
from tests.kpi.reference import reference_kpis
from tests.kpi.stored import closed_by, read_kpis, read_telemetry, telemetry_count

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

PARK = "hongqiao"
FLEET = FleetSpec.model_validate(
    {
        "step_s": 30,
        "intervals_s": {"microgrid": 30, "storage": 30, "site5g": 30, "charger": 30},
        "parks": [
            {"id": PARK, "storage": {"count": 1}, "site5g": {"count": 1}, "charger": {"count": 1}}
        ],
    }
)
SPAN_S = 3 * 3600
RATE = 200.0  # messages per second: the stream lasts about 9 s, event time runs at ~1200x
WAIT_S = 60.0


def test_kill_and_sigterm_mid_window_lose_and_double_no_kpi_window(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    # 22:30 to 01:30 Shanghai time, two days ago: the restarts fall inside open 1m, 15m, 1h
    # and 1d windows.
    midnight = datetime.now(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(days=1, minutes=90)
    start_ms = round(start.timestamp() * 1000)
    messages = list(iter_messages(FLEET, 3, start, SPAN_S, prefix=topic_prefix))
    total = len(messages)
    collector = CollectorProcess(
        tmp_path / "collector",
        broker=mosquitto,
        influx=influxdb,
        database=influx_database,
        topic_prefix=topic_prefix,
        env={"PARKWATCH_STATE__SNAPSHOT_INTERVAL_S": "1"},
    )
    publisher = Publisher(mosquitto, client_id=f"pub-{topic_prefix}"[:64])
    try:
        collector.start()
        collector.wait_subscribed()
        publisher.connect()
        publisher.start_stream(
            ((i, topic, payload) for i, (topic, payload) in enumerate(messages)), rate=RATE
        )
        replayed = []
        for restart, share in (("kill", 1 / 3), ("sigterm", 2 / 3)):

            def mid_stream(share: float = share) -> bool:
                # Windows have closed and been emitted by this very process, and more are open.
                kpis = collector.metrics().get('parkwatch_engine_outputs_total{type="kpi"}', 0)
                return publisher.accepted_count >= total * share and kpis > 0

            wait_until(
                mid_stream, timeout=WAIT_S, what=f"{restart}: mid-stream", collector=collector
            )
            if restart == "kill":
                collector.kill()
            else:
                assert collector.terminate() == 0
            collector.start()
            collector.wait_subscribed()
            replayed.append(collector.metric("parkwatch_state_replayed_records_total"))
        publisher.join_stream()
        publisher.wait_accepted(total)
        wait_until(
            lambda: telemetry_count(influxdb, influx_database) == total,
            timeout=WAIT_S,
            what=f"{total} telemetry points",
            collector=collector,
        )
        rows = read_telemetry(influxdb, influx_database, start_ms, start_ms + SPAN_S * 1000)
        newest = max(int(row["time"]) for kind_rows in rows.values() for row in kind_rows)
        expected = reference_kpis(rows)
        wait_until(
            lambda: (
                closed_by(read_kpis(influxdb, influx_database, PARK), newest).keys()
                >= expected.keys()
            ),
            timeout=WAIT_S,
            what=f"{len(expected)} park_kpi windows",
            collector=collector,
        )
        stored = closed_by(read_kpis(influxdb, influx_database, PARK), newest)
        late = collector.metrics()
    finally:
        publisher.close()
        collector.close()

    assert stored.keys() == expected.keys()
    for key, fields in expected.items():
        assert stored[key] == pytest.approx(fields, rel=1e-9, abs=1e-9), key
    assert {window for window, _ in stored} == {"1m", "15m", "1h", "1d"}
    late_points = sum(v for k, v in late.items() if k.startswith("parkwatch_kpi_late_points"))
    print(  # shown with -rP: what the restarts did
        f"{total} messages, {len(expected)} KPI windows compared, journal records replayed "
        f"after the kill and the SIGTERM: {replayed}, late points after the last start: "
        f"{late_points}"
    )
