"""Scale-out: parks split over two collectors on one broker; every alert (and KPI) exactly once.

Each collector gets the same ``mqtt.parks`` and its own ``mqtt.partition`` (``0/2``, ``1/2``),
client id, state directory and spool, and subscribes to ``{prefix}/{park}/#`` for its parks only.
Rule and KPI state is per park, so a park's whole state lives in one collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from functools import partial
from pathlib import Path

import orjson
import pytest

from parkwatch.events import AlertState, AlertTransition, KpiRecord, Output
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.points import Point
from parkwatch.service import Collector
from tests.helpers import collector_settings, publish_all, until

pytestmark = pytest.mark.servers

# crc32(park) % 2: caohejing 0, lingang 0, hongqiao 1, jinshan-bay 1
PARKS = ["caohejing", "lingang", "hongqiao", "jinshan-bay"]
SHARES = [["caohejing", "lingang"], ["hongqiao", "jinshan-bay"]]


def key(output: Output) -> tuple[str, ...]:
    """What must be emitted once across all collectors."""
    if isinstance(output, KpiRecord):
        return ("kpi", output.park, output.window, str(output.start_ms))
    return ("alert", output.alert.fingerprint, output.alert.state.value, str(output.at_ms))


def note_park(seen: set[str], point: Point) -> None:
    seen.add(point.park)


def park_of(output: Output) -> str:
    return output.park if isinstance(output, KpiRecord) else output.alert.labels["park"]


async def test_two_collectors_split_the_parks_and_emit_everything_once(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    outputs: list[list[Output]] = [[], []]
    points: list[set[str]] = [set(), set()]
    async with contextlib.AsyncExitStack() as stack:
        collectors: list[Collector] = []
        for i in range(2):
            settings = collector_settings(
                tmp_path / f"c{i}",
                mosquitto,
                influxdb,
                influx_database,
                topic_prefix,
                mqtt={
                    "client_id": f"{topic_prefix}-{i}"[:64],
                    "parks": PARKS,
                    "partition": f"{i}/2",
                },
            )
            assert settings.mqtt.assigned_parks() == SHARES[i]
            collector = Collector(settings)
            collector.observe_outputs(outputs[i].append)
            collector.observe(partial(note_park, points[i]))
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            stack.push_async_callback(partial(asyncio.wait_for, task, 60))  # after stop is set
            stack.callback(stop.set)
            await until(collector.connected.is_set, what=f"collector {i}", alive=task)
            collectors.append(collector)

        base = (round(time.time()) - 600) * 1000
        messages: list[tuple[str, bytes]] = []
        for park in PARKS:
            topic = f"{topic_prefix}/{park}/charger/cp-1/telemetry"
            for offset, status in ((0, "Faulted"), (60_000, "Available")):
                body = {"ts": base + offset, "status": status, "error_code": "NoError"}
                messages.append((topic, orjson.dumps(body)))
        await asyncio.to_thread(publish_all, mosquitto, messages)

        def resolved() -> set[str]:
            return {
                o.alert.labels["park"]
                for o in outputs[0] + outputs[1]
                if isinstance(o, AlertTransition) and o.alert.state is AlertState.RESOLVED
            }

        await until(lambda: resolved() == set(PARKS), what="every park's alert resolved")

    # Each collector heard only its parks, and emitted only for them.
    for i in range(2):
        assert points[i] == set(SHARES[i])
        assert {park_of(o) for o in outputs[i]} <= set(SHARES[i])
    # Every KPI record and alert transition exactly once across the two collectors.
    counts = Counter(key(o) for o in outputs[0] + outputs[1])
    assert counts
    assert set(counts.values()) == {1}
    firing = Counter(
        o.alert.labels["park"]
        for o in outputs[0] + outputs[1]
        if isinstance(o, AlertTransition) and o.alert.state is AlertState.FIRING
    )
    assert firing == dict.fromkeys(PARKS, 1)
    rows = influxdb.query(
        influx_database, "SELECT * FROM alerts WHERE alertname = 'ChargerFaulted'"
    )
    assert Counter((row["park"], row["state"]) for row in rows) == {
        (park, state): 1 for park in PARKS for state in ("firing", "resolved")
    }
