"""What lines InfluxDB refuses cost: write requests and throughput of one collector.

N messages are queued in the collector's persistent session while it is offline; the clock runs
from the collector's start until every message is written or dead-lettered. Cases, each against
real InfluxDB 1.x: a share of the messages (0 %, 1 %, 10 %, 50 %) gives field ``mode`` another
type than InfluxDB holds; and ``series_limit``: ``max-values-per-tag`` lets in half the devices.
Write requests are counted from the collector's metrics (written + refused + failed).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from bench.backlog import register_session
from bench.preload import publish
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.service import Collector
from parkwatch.settings import load_settings

COUNT = 20_000
DEVICES = 200
LIMIT_DEVICES = 4_000  # the series_limit case: 5 messages per device, half of them let in


def _messages(
    prefix: str, base: int, count: int, conflict_every: int, devices: int
) -> list[tuple[str, bytes]]:
    messages = []
    for n in range(count):
        mode: object = True if conflict_every and n % conflict_every == 0 else 0.5 + n % 7
        payload = {"ts": base + n, "pv_kw": 120.5 + n % 7, "load_kw": 300.25, "mode": mode}
        topic = f"{prefix}/zhangjiang/microgrid/meter-{n % devices}/telemetry"
        messages.append((topic, orjson.dumps(payload)))
    return messages


async def _run_collector(
    broker: Mosquitto, influx: InfluxDB1, workdir: Path, name: str
) -> dict[str, float]:
    settings = load_settings(
        None,
        mqtt={"url": broker.url, "client_id": name, "topic_prefix": name},
        influx={"url": influx.url, "database": name},
        spool={"directory": workdir / f"{name}-spool"},
        deadletter={"path": workdir / f"{name}-dead.jsonl"},
        http={"port": 0},
    )
    service = Collector(settings)
    registry = service.metrics.registry

    def value(metric: str, **labels: str) -> float:
        return registry.get_sample_value(metric, labels) or 0.0

    def done() -> float:
        dead = sum(
            sample.value
            for family in registry.collect()
            if family.name == "parkwatch_dead_letters"
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        return value("parkwatch_points_written_total") + dead

    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(service.run(stop))
    while done() < COUNT:
        if running.done():
            running.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    written = value("parkwatch_write_duration_seconds_count")
    refused = value("parkwatch_write_errors_total", kind="rejected")
    failed = value("parkwatch_write_errors_total", kind="unavailable")
    stop.set()
    await running
    return {
        "msgs_per_s": COUNT / elapsed,
        "requests": written + refused + failed,
        "refused_requests": refused,
        "dead_letters": done() - value("parkwatch_points_written_total"),
    }


def _case(
    workdir: Path, name: str, conflict_every: int, influx_options: dict[str, int]
) -> dict[str, float]:
    with (
        Mosquitto(workdir / f"{name}-broker") as broker,
        InfluxDB1(workdir / f"{name}-influx", data_options=influx_options) as influx,
    ):
        influx.create_database(name)
        base = int(time.time() * 1000) - COUNT
        # InfluxDB holds `mode` as a float before the messages come: in their shard (field
        # types are per shard), so the seed is just before them. In the series_limit case the
        # seed fills the device tag's values with half the meters (one request may overshoot
        # the limit: InfluxDB checks it against the index as it was before the request).
        devices = LIMIT_DEVICES if influx_options else DEVICES
        seeded = range(LIMIT_DEVICES // 2) if influx_options else range(1)
        influx.write(
            name,
            "\n".join(
                f"microgrid,device=meter-{n},park=zhangjiang mode=0.5 {base - 1}" for n in seeded
            ),
        )
        register_session(broker, name, [f"{name}/#"])
        publish(broker, _messages(name, base, COUNT, conflict_every, devices))
        return asyncio.run(_run_collector(broker, influx, workdir, name))


def run() -> dict[str, dict[str, float]]:
    """Per case: messages per second, write requests, refused requests, dead letters."""
    cases = {
        "conflicts_0pct": (0, {}),
        "conflicts_1pct": (100, {}),
        "conflicts_10pct": (10, {}),
        "conflicts_50pct": (2, {}),
        # The seed fills the device tag's 2000 values; the other 2000 meters are refused.
        "series_limit": (0, {"max-values-per-tag": LIMIT_DEVICES // 2}),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (conflict_every, options) in cases.items():
            results[name] = _case(Path(tmp), name, conflict_every, options)
    return results


if __name__ == "__main__":
    print(f"{COUNT} messages per case")
    for case, figures in run().items():
        print(
            f"{case:>16}: {figures['msgs_per_s']:8.0f} msg/s, {figures['requests']:6.0f} write "
            f"requests ({figures['refused_requests']:.0f} refused), "
            f"{figures['dead_letters']:.0f} dead letters"
        )
