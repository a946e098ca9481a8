"""End-to-end throughput of one collector process: MQTT -> validate -> InfluxDB 1.x.

N messages are queued in the collector's persistent session while it is offline; the clock runs
from the collector's start until InfluxDB has acknowledged all N points. Two modes:
``ack_after_write`` (parkwatch's behaviour, the guarantee) and ``ack_on_receipt`` (the baseline:
what an at-most-once collector such as Telegraf's default does).

One run of each mode is noisy on a shared machine, and whichever runs first meets a colder
broker and database. So the modes run in ``rounds`` pairs, the order alternating (baseline first
in even rounds, second in odd ones), each run with its own session and database. Reported: the
median and the range (min-max) of each mode, and the ratio within each pair; the cost of acking
after the write is called not measurable only when the pairs' ratios fall on both sides of 1
(and then only at that run's noise: a wide range says little either way).

    python -m bench.pipeline [--count 50000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.backlog import register_session
from bench.preload import payloads, publish
from collector.acks import AckTracker
from collector.adapters.mqtt import MqttSource
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.service import Collector
from parkwatch.settings import load_settings

MODES = ("ack_on_receipt", "ack_after_write")


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
    broker: Mosquitto, influx: InfluxDB1, workdir: Path, *, mode: str, name: str, count: int
) -> float:
    source = _AckOnReceiptSource if mode == "ack_on_receipt" else MqttSource
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
    registry = service.metrics.registry
    while (registry.get_sample_value("parkwatch_points_written_total") or 0) < count:
        if running.done():
            running.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    return elapsed


def _one_run(
    broker: Mosquitto, influx: InfluxDB1, workdir: Path, *, mode: str, round_: int, count: int
) -> float:
    """Messages per second of one mode in one round (own session, own database)."""
    name = f"{mode}_{round_}"
    influx.create_database(name)
    register_session(broker, name, [f"{name}/#"])
    publish(broker, payloads(name, count))
    elapsed = asyncio.run(
        _run_collector(broker, influx, workdir, mode=mode, name=name, count=count)
    )
    rows = influx.query(name, "SELECT count(pv_kw) FROM microgrid")
    assert rows, "nothing written"
    assert rows[0]["count"] == count, rows
    influx.drop_database(name)
    return count / elapsed


def run(count: int = 50_000, rounds: int = 4) -> dict[str, Any]:
    """Per mode: every run's msgs/s, median, min, max; per round: after-write / on-receipt."""
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with Mosquitto(workdir / "broker") as broker, InfluxDB1(workdir / "influx") as influx:
            for round_ in range(rounds):
                order = MODES if round_ % 2 == 0 else MODES[::-1]
                for mode in order:
                    rate = _one_run(broker, influx, workdir, mode=mode, round_=round_, count=count)
                    rates[mode].append(rate)
    ratios = [
        after / receipt
        for after, receipt in zip(rates["ack_after_write"], rates["ack_on_receipt"], strict=True)
    ]
    result: dict[str, Any] = {"count": count, "rounds": rounds}
    for mode, values in rates.items():
        result[mode] = {
            "msgs_per_s": [round(v) for v in values],
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
    result["ratio_after_write_to_on_receipt"] = {
        "per_round": [round(r, 3) for r in ratios],
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }
    return result


def verdict(ratio: dict[str, Any]) -> str:
    """What the paired ratios allow one to say about the cost of acking after the write."""
    low, high, median = ratio["min"], ratio["max"], ratio["median"]
    if low <= 1.0 <= high:
        return (
            f"no cost measurable at this noise: the pairs' ratios {low:.2f}-{high:.2f} lie on "
            "both sides of 1"
        )
    if high < 1.0:
        return (
            f"acking after the write costs {1 - median:.0%} "
            f"(every pair slower: {low:.2f}-{high:.2f})"
        )
    return f"acking after the write was faster in every pair ({low:.2f}-{high:.2f}): noise or order"


def main() -> None:
    """Run and print the figures and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = run(args.count, args.rounds)
    print(f"{result['count']} messages per run, {result['rounds']} rounds, order alternating")
    for mode in MODES:
        stats = result[mode]
        print(
            f"{mode:>16}: median {stats['median']:8.0f} msg/s, range {stats['min']:.0f}-"
            f"{stats['max']:.0f}, runs {stats['msgs_per_s']}"
        )
    ratio = result["ratio_after_write_to_on_receipt"]
    print(
        f"{'after/receipt':>16}: median {ratio['median']:.3f}, range {ratio['min']:.3f}-"
        f"{ratio['max']:.3f}, per round {ratio['per_round']}"
    )
    print(verdict(ratio))


if __name__ == "__main__":
    main()
