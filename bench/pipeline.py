"""End-to-end throughput of one collector process: MQTT -> validate -> InfluxDB 1.x.

N messages are queued in the collector's persistent session while it is offline; the clock runs
from the collector's start until InfluxDB has acknowledged all N points. Two modes, measured in
the same run: ``ack_after_write`` (parkwatch's behaviour, the guarantee) and ``ack_on_receipt``
(the baseline: what an at-most-once collector such as Telegraf's default does).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.preload import payloads, publish, register_session
from collector.acks import AckTracker
from collector.adapters.mqtt import MqttSource
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.service import Collector
from parkwatch.settings import load_settings


class _AckOnReceiptTracker(AckTracker):
    def received(self, mid: int, qos: int) -> int:
        ticket = super().received(mid, qos)
        self.settle(ticket)  # the pipeline's later settle of this ticket is then a no-op
        return ticket


class _AckOnReceiptSource(MqttSource):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = _AckOnReceiptTracker(self._send_ack)


async def _run_collector(
    broker: Mosquitto, influx: InfluxDB1, workdir: Path, name: str, count: int
) -> float:
    source = _AckOnReceiptSource if name == "ack_on_receipt" else MqttSource
    settings = load_settings(
        None,
        mqtt={"url": broker.url, "client_id": name, "topic_prefix": name},
        influx={"url": influx.url, "database": name},
        spool={"directory": workdir / f"{name}-spool"},
        deadletter={"path": workdir / f"{name}-dead.jsonl"},
        state={"directory": workdir / f"{name}-state"},
        http={"port": 0},
    )
    service = Collector(settings, source_factory=source)
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(service.run(stop))
    written = service.metrics.points_written
    while written._value.get() < count:
        if running.done():
            running.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    return elapsed


def run(count: int = 50_000) -> dict[str, float]:
    """Messages per second end to end, per mode, and the cost of acking after the write."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with Mosquitto(workdir / "broker") as broker, InfluxDB1(workdir / "influx") as influx:
            for name in ("ack_on_receipt", "ack_after_write"):
                influx.create_database(name)
                register_session(broker, name, f"{name}/#")
                publish(broker, payloads(name, count))
                elapsed = asyncio.run(_run_collector(broker, influx, workdir, name, count))
                rows = influx.query(name, "SELECT count(pv_kw) FROM microgrid")
                assert rows, "nothing written"
                assert rows[0]["count"] == count, rows
                results[f"{name}_msgs_per_s"] = count / elapsed
    results["ack_after_write_vs_on_receipt"] = (
        results["ack_after_write_msgs_per_s"] / results["ack_on_receipt_msgs_per_s"]
    )
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:>32}: {value:10.2f}")
