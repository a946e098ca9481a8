"""Live latency: a running collector under offered load, publish -> queryable in InfluxDB.

While ``bench.load`` (its own process) offers the fleet's telemetry at N msg/s, a probe device
publishes one QoS 1 message every ``probe_interval_s`` carrying a sequence number, and a poller
thread queries InfluxDB for the probe's points every ``POLL_S``: a probe's latency is from just
before its publish to the first query that returned it (so it includes up to ``POLL_S`` of
polling delay; the flush interval of the collector's batcher, 1 s by default, dominates).

Rule fire latency (message received -> alert transition emitted) is measured inside the collector
by the rules stage; it is read from ``/metrics`` at the end: the first histogram whose name says
``fire`` (``parkwatch_*fire*``). If the collector exports none, the slot says so. So that there is
something to measure (the load's values are healthy), a probe charger publishes with every latency
probe, its connector alternately ``Faulted`` and ``Available``: the pack's ``ChargerFaulted``
fires and resolves at once, ~10 transitions a second.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from typing import Any, Final

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.collectorproc import CollectorProcess, Scrape
from bench.report import histogram_quantile, percentile
from parkwatch.localservers import InfluxDB1, Mosquitto, wait_for
from parkwatch.schema import Kind, telemetry_topic

__all__ = ["PROBE_CHARGER", "PROBE_DEVICE", "fire_latency", "measure_live"]

PROBE_DEVICE: Final = "latency-probe"
PROBE_CHARGER: Final = "fire-probe"
POLL_S: Final = 0.025
PROBE_TIMEOUT_S: Final = 30.0
"""After the load, how long the last probes may take to become queryable."""
CATCH_UP_RATE: Final = 500.0
"""Slowest catching-up rate (msg/s) waited for, after the load, before probes count as lost."""
LOAD_TIMEOUT_S: Final = 120.0
"""After the probes, how long the offered load may still take to be published and acked."""
FIRE_METRIC: Final = re.compile(r"^parkwatch_\w*fire\w*$")


def fire_latency(scrape: Scrape) -> dict[str, Any]:
    """p50/p99 of the collector's rule fire latency histogram, or a note that it has none."""
    for name, buckets in sorted(scrape.histograms.items()):
        if FIRE_METRIC.match(name):
            return {
                "metric": name,
                "count": buckets[-1][1],
                "p50_s": histogram_quantile(0.5, buckets),
                "p99_s": histogram_quantile(0.99, buckets),
            }
    return {
        "metric": None,
        "p50_s": None,
        "p99_s": None,
        "note": "SLOT: this collector exports no parkwatch_*fire* histogram in /metrics",
    }


class _ProbePoller(threading.Thread):
    """Queries InfluxDB for probe points until stopped; records when each was first seen."""

    def __init__(self, influx: InfluxDB1, database: str, since_ms: int) -> None:
        super().__init__(name="probe-poller", daemon=True)
        self.seen: dict[int, float] = {}
        self.error: Exception | None = None
        self._stop_event = threading.Event()
        # S608: InfluxQL built from constants and a number, no outside input.
        self._query = (
            f'SELECT "seq" FROM "{Kind.MICROGRID}" WHERE "device" = \'{PROBE_DEVICE}\' '  # noqa: S608
            f"AND time >= {since_ms * 1_000_000}"
        )
        self._influx = influx
        self._database = database

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                rows = self._influx.query(self._database, self._query)
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                self.error = exc
                return
            now = time.time()
            for row in rows:
                self.seen.setdefault(int(row["seq"]), now)
            self._stop_event.wait(POLL_S)

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop_event.set()
        self.join()


def _start_load(
    broker: Mosquitto, prefix: str, parks: list[str], *, devices: int, rate: int, seconds: float
) -> subprocess.Popen[str]:
    """Start ``bench.load``; return once it has built its messages and starts publishing."""
    command = [
        sys.executable, "-m", "bench.load", "--port", str(broker.port), "--prefix", prefix,
        "--rate", str(rate), "--seconds", str(seconds), "--devices", str(devices),
        "--parks", ",".join(parks),
    ]  # fmt: skip
    load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    line = load.stdout.readline()  # blocks while it builds the messages
    if line.strip() != "publishing":
        load.kill()
        load.wait()
        load.stdout.close()
        raise RuntimeError(f"bench.load did not start: {line!r}")
    return load


def _fire_probe(ts_ms: int, seq: int) -> dict[str, Any]:
    """A charger reading that makes ``ChargerFaulted`` fire (even ``seq``) or resolve (odd)."""
    faulted = seq % 2 == 0
    return {
        "ts": ts_ms,
        "connector_id": 1,
        "status": "Faulted" if faulted else "Available",
        "error_code": "GroundFailure" if faulted else "NoError",
    }


def measure_live(
    collector: CollectorProcess,
    *,
    broker: Mosquitto,
    influx: InfluxDB1,
    database: str,
    prefix: str,
    parks: list[str],
    devices: int,
    rate: int,
    seconds: float,
    probe_interval_s: float,
) -> dict[str, Any]:
    """Run the load and the probes against ``collector`` (started, healthy); return figures."""
    probe_topic = telemetry_topic(parks[0], Kind.MICROGRID, PROBE_DEVICE, prefix=prefix)
    fire_topic = telemetry_topic(parks[0], Kind.CHARGER, PROBE_CHARGER, prefix=prefix)
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    poller = _ProbePoller(influx, database, since_ms=int(time.time() * 1000) - 1000)
    poller.start()
    load = _start_load(broker, prefix, parks, devices=devices, rate=rate, seconds=seconds)
    sent: dict[int, float] = {}
    try:
        probes = max(1, round(seconds / probe_interval_s))
        began = time.perf_counter()
        for seq in range(probes):
            # Paced against the start, so a slow publish does not stretch the run.
            time.sleep(max(0.0, began + seq * probe_interval_s - time.perf_counter()))
            now = time.time()
            payload = {"ts": int(now * 1000), "frequency_hz": 50.0, "seq": seq}
            sent[seq] = now
            client.publish(probe_topic, orjson.dumps(payload), qos=1)
            client.publish(fire_topic, orjson.dumps(_fire_probe(int(now * 1000), seq)), qos=1)
        stdout, _ = load.communicate(timeout=LOAD_TIMEOUT_S)
        received_at_end = collector.scrape().value("parkwatch_messages_received_total")
        report = orjson.loads(stdout.strip().splitlines()[-1])
        lag = max(0.0, report["acked"] + 2 * len(sent) - received_at_end)  # two probes each

        def all_seen() -> bool:
            collector.check_alive()
            return len(poller.seen) >= len(sent) or poller.error is not None

        # A collector that fell behind needs time to catch up before the last probes show.
        wait_for(
            all_seen,
            timeout=PROBE_TIMEOUT_S + lag / CATCH_UP_RATE,
            what="every latency probe queryable in InfluxDB",
        )
    finally:
        poller.stop()
        client.disconnect()
        client.loop_stop()
        if load.poll() is None:
            load.kill()
            load.wait()
        if load.stdout is not None:
            load.stdout.close()
    if poller.error is not None:
        raise RuntimeError(f"probe poller failed: {poller.error}")
    latencies = [poller.seen[seq] - sent[seq] for seq in sent]
    end = collector.scrape()
    return {
        "offered_msgs_per_s": report["acked"] / report["elapsed_s"],
        "offered_messages": report["acked"],
        "probes": len(latencies),
        "queryable_p50_s": percentile(latencies, 50),
        "queryable_p99_s": percentile(latencies, 99),
        "queryable_max_s": max(latencies),
        # How far behind the collector was when the offered load ended (0: it kept up).
        "lag_at_end_messages": lag,
        "rule_fire": fire_latency(end),
    }
