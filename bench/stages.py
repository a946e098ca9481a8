"""Everything after the MQTT adapter, in one process: decode -> analytics -> writer -> acks.

``bench.drain`` times the whole collector, MQTT client included; this times only the stages
behind it, so their cost can be profiled and compared without the broker's noise. A stand-in
for the MQTT adapter (:class:`ReplaySource`) feeds the pipeline's inbox with the drain's backlog
(``bench.backlog.telemetry``: all four kinds, 20 000 devices in 60 parks) as fast as it takes
them, holding at most ``mqtt.receive_maximum`` messages unacked as the real adapter does, and
counts the acks. The collector is ``parkwatch.service.Collector`` with default settings (KPIs and
the rule pack on), writing to a real InfluxDB 1.x (``--sink influx``, the default) or to a sink
that discards (``--sink null``: our CPU alone).

    python -m bench.stages [--messages 60000] [--rounds 3] [--sink influx|null] [--profile]
        [--variant NAME:SECTION.KEY=VALUE,... ...]

Prints msg/s and CPU microseconds per message for each round (median and range); ``--variant``
compares settings (each round runs every variant, the order alternating), e.g.
``--variant default: --variant small:writer.batch_size=1000``; with ``--profile``, the top
functions of a py-spy profile of one more round (of the first variant).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, cast

import orjson

from bench.backlog import balanced_parks
from bench.backlog import telemetry as make_telemetry
from bench.procstat import cpu_seconds, loadavg
from bench.profile import PySpy, py_spy_path
from collector.adapters.mqtt import MqttSource
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.cli import tune_gc
from parkwatch.localservers import InfluxDB1
from parkwatch.service import Collector
from parkwatch.settings import MqttSettings, Settings, load_settings

__all__ = ["ReplaySource", "run_once"]

PREFIX: Final = "stages"
TIMEOUT_S: Final = 300.0


class NullSink:
    """Takes every write and forgets it (the stages' own CPU cost, without a database)."""

    name = "null"
    problem: str | None = None

    async def start(self) -> None:
        """Nothing to open."""

    async def write(self, body: bytes) -> None:
        """Discard ``body``."""

    async def ping(self) -> bool:
        """Always up."""
        return True

    async def close(self) -> None:
        """Nothing to close."""


class ReplaySource:
    """Stands in for ``MqttSource``: replays a backlog into the inbox, counts the acks."""

    def __init__(
        self,
        backlog: list[RawMessage],
        settings: MqttSettings,
        inbox: asyncio.Queue[RawMessage],
        metrics: Metrics,
        *,
        connected: asyncio.Event | None = None,
        **_: Any,
    ) -> None:
        self.backlog = backlog
        self._inbox = inbox
        self._metrics = metrics
        self._limit = settings.receive_maximum
        self.connected = connected or asyncio.Event()
        self.subscription = f"{PREFIX}/#"
        self.acked = 0
        self.done = asyncio.Event()
        self._room = asyncio.Event()
        self._sent = 0
        metrics.unacked.set_function(lambda: self._sent - self.acked)

    async def run(self) -> None:
        """Feed the backlog, never more than ``receive_maximum`` messages unacked."""
        self.connected.set()
        for raw in self.backlog:
            while self._sent - self.acked >= self._limit:
                self._room.clear()
                await self._room.wait()
            self._metrics.received.inc()
            self._sent += 1
            await self._inbox.put(raw)
        await asyncio.Event().wait()

    async def _idle(self) -> None:
        await asyncio.Event().wait()

    run_misc = run_pump = run_retained = _idle

    def settle(self, tickets: Iterable[int]) -> None:
        """Count the acks; wake the feeder."""
        self.acked += len(tickets) if isinstance(tickets, list) else sum(1 for _ in tickets)
        self._room.set()
        if self.acked >= len(self.backlog):
            self.done.set()

    def pause(self) -> None:
        """Nothing to pause: the backlog has been fed by then."""

    async def disconnect(self) -> None:
        """Nothing to disconnect."""


Variant = dict[str, dict[str, Any]]
"""Settings to change, by section (``{"writer": {"batch_size": 1000}}``)."""


def parse_variant(text: str) -> tuple[str, Variant]:
    """``name:section.key=value,...`` (values as JSON, else text) -> (name, settings)."""
    name, _, assignments = text.partition(":")
    variant: Variant = {}
    for assignment in filter(None, assignments.split(",")):
        dotted, _, value = assignment.partition("=")
        section, _, key = dotted.partition(".")
        try:
            parsed: Any = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = value
        variant.setdefault(section, {})[key] = parsed
    return name, variant


def _settings(
    workdir: Path, influx_url: str | None, database: str, variant: Variant | None = None
) -> Settings:
    sections: Variant = {
        "mqtt": {"url": "mqtt://127.0.0.1:1", "client_id": database, "topic_prefix": PREFIX},
        "influx": {"url": influx_url or "http://127.0.0.1:1", "database": database},
        "spool": {"directory": workdir / f"{database}-spool"},
        "deadletter": {"path": workdir / f"{database}-dead.jsonl"},
        "state": {"directory": workdir / f"{database}-state"},
        "http": {"port": 0},
    }
    for section, values in (variant or {}).items():
        sections.setdefault(section, {}).update(values)
    return load_settings(None, **sections)


async def _drain(settings: Settings, backlog: list[RawMessage], null: bool) -> tuple[float, float]:
    sources: list[ReplaySource] = []

    def make_source(*args: Any, **kwargs: Any) -> ReplaySource:
        sources.append(ReplaySource(backlog, *args, **kwargs))
        return sources[-1]

    collector = Collector(
        settings,
        sink=NullSink() if null else None,
        source_factory=cast(type[MqttSource], make_source),
    )
    stop = asyncio.Event()
    started, cpu = time.perf_counter(), time.process_time()
    running = asyncio.create_task(collector.run(stop))
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await collector.started.wait()
            done = asyncio.create_task(sources[0].done.wait())
            await asyncio.wait([done, running], return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()
        # Until the last ack: the final snapshot at shutdown is not part of the drain.
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        stop.set()
        await running


def run_once(
    workdir: Path,
    backlog: list[RawMessage],
    influx: InfluxDB1 | None,
    tag: str,
    variant: Variant | None = None,
) -> tuple[float, float]:
    """Seconds (wall, and this process's CPU) for one collector to take in, write and ack
    ``backlog``, startup included."""
    settings = _settings(workdir, influx.url if influx else None, tag, variant)
    try:
        return asyncio.run(_drain(settings, backlog, influx is None))
    finally:
        if influx is not None:
            influx.drop_database(tag)


def _backlog(count: int, devices: int, parks: int) -> list[RawMessage]:
    now = time.time()
    messages = make_telemetry(PREFIX, count, devices=devices, parks=balanced_parks(parks))
    backlog = [RawMessage(topic, payload, now, n) for n, (topic, payload) in enumerate(messages)]
    # In the collector these messages arrive over time and are gone once acked; here they sit
    # in memory: keep them out of the garbage collector's full passes, which would traverse them.
    gc.collect()
    gc.freeze()
    return backlog


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--parks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", choices=("influx", "null"), default="influx")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:SECTION.KEY=VALUE,...",
        help="compare settings: each round runs every variant, in turn (default: defaults)",
    )
    parser.add_argument("--profile", action="store_true", help="one more round under py-spy")
    args = parser.parse_args(argv)
    variants = dict(parse_variant(text) for text in args.variant) or {"defaults": {}}
    print(f"load average at start: {' '.join(map(str, loadavg()))}", flush=True)
    tune_gc()  # as `parkwatch run` does
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        workdir = Path(tmp)
        influx = InfluxDB1(workdir / "influxdb") if args.sink == "influx" else None
        if influx is not None:
            influx.__enter__()
        try:
            _rounds(workdir, args, influx, variants)
            if args.profile:
                _profile(workdir, args, influx, next(iter(variants.values())))
        finally:
            if influx is not None:
                influx.__exit__(None, None, None)


def _rounds(
    workdir: Path, args: argparse.Namespace, influx: InfluxDB1 | None, variants: dict[str, Variant]
) -> None:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu_us: dict[str, list[float]] = {name: [] for name in variants}
    influx_us: dict[str, list[float]] = {name: [] for name in variants}
    influx_pid = influx.pid if influx is not None else None
    for number in range(args.rounds):
        # Alternate the order, so no variant always meets a machine warmed by another.
        order = list(variants) if number % 2 == 0 else list(variants)[::-1]
        for name in order:
            # A fresh backlog each time: timestamps within the decoder's skew limits.
            backlog = _backlog(args.messages, args.devices, args.parks)
            tag = f"stages_r{number}_{len(rates[name])}_{abs(hash(name)) % 10000}"
            influx_before = cpu_seconds(influx_pid) if influx_pid else 0.0
            elapsed, cpu = run_once(workdir, backlog, influx, tag, variants[name])
            influx_cpu = (cpu_seconds(influx_pid) - influx_before) if influx_pid else 0.0
            del backlog  # frozen objects are still freed by reference counting
            rates[name].append(args.messages / elapsed)
            cpu_us[name].append(cpu / args.messages * 1e6)
            influx_us[name].append(influx_cpu / args.messages * 1e6)
            print(
                f"round {number + 1} {name}: {rates[name][-1]:,.0f} msg/s, "
                f"{cpu_us[name][-1]:.1f} CPU us/msg (InfluxDB {influx_us[name][-1]:.1f})",
                flush=True,
            )
    print(f"{args.sink} sink, {args.rounds} rounds; load average {' '.join(map(str, loadavg()))}")
    for name in variants:
        r, c, i = rates[name], cpu_us[name], influx_us[name]
        print(
            f"  {name:>12}: median {statistics.median(r):8,.0f} msg/s [{min(r):,.0f} - "
            f"{max(r):,.0f}], {statistics.median(c):5.1f} CPU us/msg [{min(c):.1f} - {max(c):.1f}]"
            f"; InfluxDB {statistics.median(i):5.1f} CPU us/msg [{min(i):.1f} - {max(i):.1f}]"
        )


def _profile(
    workdir: Path, args: argparse.Namespace, influx: InfluxDB1 | None, variant: Variant
) -> None:
    executable = py_spy_path()
    if executable is None:
        print("py-spy is not installed")
        return
    backlog = _backlog(args.messages, args.devices, args.parks)
    profiler = PySpy(executable, workdir / "stages.collapsed")
    profiler.attach(os.getpid())
    time.sleep(0.5)  # py-spy needs a moment to attach
    try:
        elapsed, _ = run_once(workdir, backlog, influx, "stages_profile", variant)
    finally:
        profiler.finish()
    summary = profiler.summary()
    print(f"\nprofiled round: {args.messages / elapsed:,.0f} msg/s; top by own time:")
    for row in summary.get("top_own", []):
        print(f"  {row['pct']:5.1f}%  {row['function']}  ({row['file']})")
    print("top by inclusive time (project code):")
    for row in summary.get("top_inclusive", []):
        print(f"  {row['pct']:5.1f}%  {row['function']}  ({row['file']})")


if __name__ == "__main__":
    main()
