"""The measurements of ``bench.drain``, each against the run's shared Mosquitto and InfluxDB.

Every drain gets a fresh backlog under its own topic prefix, client id(s) and database, so
measurements never see each other's messages; the database is dropped afterwards (InfluxDB stays
small, so later contenders do not pay for earlier ones).

* :func:`drain_subscriber`: a baseline (``bench.subscribers``) in its own process.
* :func:`drain_parkwatch`: one or more ``parkwatch run`` processes, timed from process start
  until every message is received and acked (``parkwatch_unacked_messages`` 0); checked against
  InfluxDB afterwards (every point stored, nothing dead-lettered).
* :func:`measure_startup`: a collector with no backlog: startup to healthy, and the CPU and
  memory that startup costs (subtracted from drains to get CPU seconds per message).
* :func:`measure_live_stage` and :func:`profile_stage`: see ``bench.live`` and ``bench.profile``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from bench.backlog import KIND_FIELD, publish_backlog, register_session
from bench.backlog import telemetry as make_telemetry
from bench.collectorproc import CollectorProcess, Scrape
from bench.live import measure_live
from bench.procstat import cpu_seconds, machine_cpu
from bench.profile import PySpy, py_spy_path
from parkwatch.localservers import InfluxDB1, Mosquitto, wait_for
from parkwatch.settings import MqttSettings

__all__ = [
    "Bench",
    "BenchError",
    "drain_parkwatch",
    "drain_subscriber",
    "measure_live_stage",
    "measure_startup",
    "profile_stage",
]

START_TIMEOUT_S: Final = 60.0
HEALTH_POLL_S: Final = 0.01  # fine-grained: startup to healthy is itself a figure
METRICS_POLL_S: Final = 0.05  # each scrape costs the collector a little CPU
MIN_RATE: Final = 100.0
"""Slowest drain rate (msg/s) waited for before a contender is declared stuck."""


class BenchError(RuntimeError):
    """A contender failed: stuck, crashed, or what it stored does not add up."""


@dataclass
class Bench:
    """The servers and choices shared by every measurement of one run."""

    broker: Mosquitto
    influx: InfluxDB1
    workdir: Path
    parks: list[str]
    devices: int
    receive_maximum: int = MqttSettings().receive_maximum
    engines: str = "unknown"
    """The stages ``parkwatch run`` reported at its start (``engines: ...`` in its log)."""

    def drain_timeout(self, count: int) -> float:
        """How long a drain of ``count`` messages may take before it counts as stuck."""
        return START_TIMEOUT_S + count / MIN_RATE

    def fresh_backlog(self, prefix: str, count: int, sessions: dict[str, list[str]]) -> None:
        """Register each offline session, then queue ``count`` messages under ``prefix``."""
        for client_id, topic_filters in sessions.items():
            register_session(self.broker, client_id, topic_filters)
        messages = make_telemetry(prefix, count, devices=self.devices, parks=self.parks)
        publish_backlog(self.broker, messages, client_id=f"{prefix}-backlog")

    def stored(self, database: str) -> int:
        """Telemetry points in ``database``, all kinds together."""
        total = 0
        for kind, field in KIND_FIELD.items():
            rows = self.influx.query(database, f'SELECT count("{field}") FROM "{kind}"')  # noqa: S608
            total += int(rows[0]["count"]) if rows else 0
        return total


def _database(tag: str) -> str:
    return "bench_" + tag.replace("-", "_")


def _collector(
    bench: Bench, tag: str, database: str, client_id: str, env: dict[str, str] | None = None
) -> CollectorProcess:
    return CollectorProcess(
        bench.workdir / client_id,
        broker=bench.broker,
        influx=bench.influx,
        database=database,
        topic_prefix=tag,
        client_id=client_id,
        extra_env=env,
    )


def _wait_healthy(proc: CollectorProcess) -> float:
    """Wait for ``/healthz`` 200; return the seconds since the process was started."""
    wait_for(proc.healthy, timeout=START_TIMEOUT_S, what="healthz 200", interval=HEALTH_POLL_S)
    return time.perf_counter() - proc.started_at


# -- the baselines ------------------------------------------------------------------------------


def drain_subscriber(bench: Bench, tag: str, contender: str, count: int) -> dict[str, float]:
    """One baseline (``bench.subscribers``) drains its own fresh backlog in its own process."""
    naive = contender == "naive"
    database = _database(tag)
    if naive:
        bench.influx.create_database(database)
    bench.fresh_backlog(tag, count, {tag: [f"{tag}/#"]})
    timeout = bench.drain_timeout(count)
    command = [
        sys.executable, "-m", "bench.subscribers", contender, "--port", str(bench.broker.port),
        "--client-id", tag, "--count", str(count), "--timeout", str(timeout),
        "--receive-maximum", str(bench.receive_maximum), "--influx-url", bench.influx.url,
        "--database", database,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout + 30
        )
        if done.returncode != 0:
            raise BenchError(f"{contender} exited with {done.returncode}: {done.stderr[-2000:]}")
        report = orjson.loads(done.stdout.strip().splitlines()[-1])
        if naive and (stored := bench.stored(database)) != count:
            raise BenchError(f"naive writer stored {stored} of {count} points")
    finally:
        if naive:
            bench.influx.drop_database(database)
    return {
        "msgs_per_s": count / report["elapsed_s"],
        "elapsed_s": report["elapsed_s"],
        "cpu_s": report["cpu_s"],
    }


# -- parkwatch run ------------------------------------------------------------------------------


def _split(bench: Bench, tag: str, collectors: int) -> list[tuple[str, list[str], dict[str, str]]]:
    """Per collector: client id, the topic filters it subscribes to, and its extra settings."""
    if collectors == 1:
        return [(tag, [f"{tag}/#"], {})]
    out = []
    for index in range(collectors):
        client_id = f"{tag}-{index}"
        settings = MqttSettings.model_validate(
            {"topic_prefix": tag, "parks": bench.parks, "partition": f"{index}/{collectors}"}
        )
        # Asked of the settings, so the sessions hold exactly what the collector subscribes.
        filters = [f"{tag}/{park}/#" for park in settings.assigned_parks() or []]
        env = {
            "PARKWATCH_MQTT__PARKS": json.dumps(bench.parks),
            "PARKWATCH_MQTT__PARTITION": f"{index}/{collectors}",
        }
        out.append((client_id, filters, env))
    return out


def drain_parkwatch(
    bench: Bench,
    tag: str,
    count: int,
    *,
    collectors: int = 1,
    profiler: PySpy | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """``collectors`` x ``parkwatch run`` drain one fresh backlog; the clock includes startup.

    ``env``: extra ``PARKWATCH_*`` settings for every collector (e.g. the MQTT client)."""
    database = _database(tag)
    split = _split(bench, tag, collectors)
    bench.fresh_backlog(tag, count, {client_id: filters for client_id, filters, _ in split})
    procs = [
        _collector(bench, tag, database, client_id, {**split_env, **(env or {})})
        for client_id, _, split_env in split
    ]
    try:
        return _time_drain(bench, procs, count, database, profiler)
    finally:
        for proc in procs:
            proc.stop()
        if profiler is not None:
            profiler.finish()
        bench.influx.drop_database(database)


def _drained(procs: list[CollectorProcess], count: int) -> list[Scrape] | None:
    """The scrapes once every message is received and acked (nothing left unacked)."""
    scrapes = [proc.scrape() for proc in procs]
    received = sum(s.value("parkwatch_messages_received_total") for s in scrapes)
    unacked = sum(s.value("parkwatch_unacked_messages") for s in scrapes)
    return scrapes if received >= count and unacked == 0 else None


def _time_drain(
    bench: Bench,
    procs: list[CollectorProcess],
    count: int,
    database: str,
    profiler: PySpy | None,
) -> dict[str, float]:
    broker_pid, influx_pid = bench.broker.pid or 0, bench.influx.pid or 0
    machine0 = machine_cpu()
    broker0, influx0 = cpu_seconds(broker_pid), cpu_seconds(influx_pid)
    for proc in procs:
        proc.start()
    startup = [_wait_healthy(proc) for proc in procs]
    if profiler is not None:
        profiler.attach(procs[0].pid)  # after the imports: the profile is of the drain
    scrapes = wait_for(
        lambda: _drained(procs, count),
        timeout=bench.drain_timeout(count),
        what=f"{count} messages received and acked",
        interval=METRICS_POLL_S,
    )
    elapsed = time.perf_counter() - procs[0].started_at
    cpu = [proc.cpu_s() for proc in procs]
    memory = procs[0].memory_mb()
    busy = machine_cpu().busy_fraction_since(machine0)
    broker_cpu, influx_cpu = cpu_seconds(broker_pid) - broker0, cpu_seconds(influx_pid) - influx0
    if profiler is not None:
        profiler.finish()
    bench.engines = procs[0].engines()
    dead = sum(s.value("parkwatch_dead_letters_total") for s in scrapes)
    if dead:
        raise BenchError(f"{dead:.0f} messages were dead-lettered: the backlog should be valid")
    # Acked also means spooled; the spool replays, so wait for every point to land.
    wait_for(lambda: bench.stored(database) >= count, timeout=START_TIMEOUT_S, what="all stored")
    if (stored := bench.stored(database)) != count:
        raise BenchError(f"InfluxDB holds {stored} telemetry points, expected {count}")
    figures = {
        "msgs_per_s": count / elapsed,
        "elapsed_s": elapsed,
        "startup_s": max(startup),
        "cpu_s": sum(cpu),
        "broker_cpu_s": broker_cpu,
        "influx_cpu_s": influx_cpu,
        "machine_busy_fraction": busy,
    }
    if len(procs) == 1:
        figures["vmhwm_mb"] = memory.get("vmhwm", 0.0)
        figures["vmrss_mb"] = memory.get("vmrss", 0.0)
    else:
        received = [s.value("parkwatch_messages_received_total") for s in scrapes]
        figures["smallest_share"] = min(received) / count
    return figures


# -- startup, live latency, profile -------------------------------------------------------------


def measure_startup(bench: Bench, tag: str) -> dict[str, float]:
    """A collector with nothing to drain: startup to healthy, its CPU cost and resident memory."""
    database = _database(tag)
    proc = _collector(bench, tag, database, tag)
    proc.start()
    try:
        startup = _wait_healthy(proc)
        return {
            "startup_s": startup,
            "startup_cpu_s": proc.cpu_s(),
            "rss_idle_mb": proc.memory_mb().get("vmrss", 0.0),
        }
    finally:
        proc.stop()
        bench.influx.drop_database(database)


def measure_live_stage(
    bench: Bench, tag: str, *, rate: int, seconds: float, probe_interval_s: float
) -> dict[str, Any]:
    """A fresh collector, then the offered load and the latency probes (``bench.live``)."""
    database = _database(tag)
    proc = _collector(bench, tag, database, tag)
    proc.start()
    try:
        _wait_healthy(proc)
        figures = measure_live(
            proc,
            broker=bench.broker,
            influx=bench.influx,
            database=database,
            prefix=tag,
            parks=bench.parks,
            devices=bench.devices,
            rate=rate,
            seconds=seconds,
            probe_interval_s=probe_interval_s,
        )
        figures["vmhwm_mb"] = proc.memory_mb().get("vmhwm", 0.0)
        return figures
    finally:
        proc.stop()
        bench.influx.drop_database(database)


def profile_stage(bench: Bench, tag: str, count: int) -> dict[str, Any]:
    """One more single-collector drain with py-spy attached; the top functions by own time."""
    executable = py_spy_path()
    if executable is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    profiler = PySpy(executable, bench.workdir / f"{tag}.collapsed")
    figures = drain_parkwatch(bench, tag, count, profiler=profiler)
    summary = profiler.summary()
    summary["msgs_per_s_under_profiler"] = figures["msgs_per_s"]
    return summary
