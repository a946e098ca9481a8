"""Issue 11's benchmark in one command: drain, scale-out, startup, memory, live latency, profile.

Against a real Mosquitto (the no-loss settings of config/mosquitto.conf) and a real InfluxDB 1.x,
each round measures (``bench.contenders``):

1. **Drain.** A QoS 1 backlog (default 60 000 messages of ~155 B, all four device kinds, 20 000
   devices in 60 parks, distinct timestamps) is queued in a persistent session while the consumer
   is offline; then the consumer starts and is timed until it has drained everything. Each
   contender gets its own fresh backlog: a bare gmqtt subscriber that discards (the limit), a
   bare paho-mqtt one, ``parkwatch run`` as a subprocess with default settings (timed from process
   start until every message is received and acked, i.e. written: startup included), and a naive
   writer (one HTTP POST per message, ack after the write; a smaller backlog by default, since it
   takes ~1 ms a message and its rate does not depend on the backlog's size). The parkwatch drain
   also gives memory: VmHWM/VmRSS once every device of the backlog has reported. ``parkwatch``
   runs the default MQTT client (``mqtt.client = native``); ``parkwatch_paho`` the same collector
   with paho-mqtt, so the two clients are compared in one run.
2. **Scale-out.** Two ``parkwatch run`` splitting the parks (``mqtt.parks``/``mqtt.partition``;
   a shared subscription is refused while KPIs and rules are on) drain the same backlog: the
   ratio against one collector.
3. **Startup.** A collector with nothing to drain: startup to healthy, and the CPU seconds that
   startup costs; subtracted from a drain's CPU seconds, they give the collector's CPU cost per
   message, hence the projected per-core rate (what one collector would drain with a core of its
   own, the broker and the database elsewhere).

Once per run: **live** latency (``bench.live``: N msg/s offered for S seconds, p50/p99 publish ->
queryable, rule fire latency if the collector exports it) and a **profile** (``bench.profile``:
one more drain with py-spy attached, the top functions by own time).

Rounds alternate the contenders' order; every figure is reported as median and spread over the
rounds. Writes JSON (``var/bench/drain.json``) and prints a short table; the machine's load
average is printed first: on a shared machine, absolute figures vary, and the ratios are the point.

    python -m bench.drain [--rounds N] [--messages N] [--quick] [--no-profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from bench.backlog import balanced_parks, mean_size
from bench.backlog import telemetry as make_telemetry
from bench.collectorproc import compile_sources
from bench.contenders import (
    Bench,
    drain_parkwatch,
    drain_subscriber,
    measure_live_stage,
    measure_startup,
    profile_stage,
)
from bench.procstat import loadavg
from bench.report import spread, summarise_rounds, table
from parkwatch.errors import ServerError
from parkwatch.localservers import InfluxDB1, Mosquitto

__all__ = ["CONTENDERS", "QUICK", "Options", "main", "run"]

CONTENDERS: Final = ("gmqtt", "paho", "parkwatch", "parkwatch_paho", "naive", "parkwatch_x2")
PAHO_CLIENT: Final = {"PARKWATCH_MQTT__CLIENT": "paho"}
"""``parkwatch_paho``: the same collector with ``mqtt.client = paho``, against the default."""
TARGETS: Final = {"parkwatch_vs_gmqtt": 0.5, "parkwatch_vs_naive": 30.0}
FAILURES: Final = (RuntimeError, ServerError, OSError, ValueError, subprocess.SubprocessError)
"""What a failing measurement raises: it is recorded, and the run goes on with the others."""


@dataclass(frozen=True, slots=True)
class Options:
    """What one run measures, and how big."""

    messages: int = 60_000
    naive_messages: int = 10_000
    devices: int = 20_000
    parks: int = 60
    rounds: int = 1
    live_rate: int = 10_000
    live_seconds: float = 20.0
    probe_interval_s: float = 0.1
    profile: bool = True


QUICK: Final = Options(
    messages=2000,
    naive_messages=300,
    devices=400,
    parks=4,
    live_rate=1000,
    live_seconds=3.0,
    profile=False,
)
"""A smoke test: every stage at a tiny size (its figures say nothing about performance)."""


def _runners(o: Options) -> dict[str, Callable[[Bench, str], dict[str, float]]]:
    return {
        "gmqtt": lambda bench, tag: drain_subscriber(bench, tag, "gmqtt", o.messages),
        "paho": lambda bench, tag: drain_subscriber(bench, tag, "paho", o.messages),
        "naive": lambda bench, tag: drain_subscriber(bench, tag, "naive", o.naive_messages),
        "parkwatch": lambda bench, tag: drain_parkwatch(bench, tag, o.messages),
        "parkwatch_paho": lambda bench, tag: drain_parkwatch(
            bench, tag, o.messages, env=PAHO_CLIENT
        ),
        "parkwatch_x2": lambda bench, tag: drain_parkwatch(bench, tag, o.messages, collectors=2),
    }


def _ratios(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """One round's ratios, for the pairs that both succeeded."""
    rate = {name: f["msgs_per_s"] for name, f in figures.items()}
    pairs = {
        "parkwatch_vs_gmqtt": ("parkwatch", "gmqtt"),
        "parkwatch_vs_naive": ("parkwatch", "naive"),
        "parkwatch_vs_paho": ("parkwatch", "paho"),
        "native_vs_paho_client": ("parkwatch", "parkwatch_paho"),
        "two_vs_one_collector": ("parkwatch_x2", "parkwatch"),
    }
    return {key: rate[a] / rate[b] for key, (a, b) in pairs.items() if a in rate and b in rate}


def _per_core(figures: dict[str, float], count: int, collectors: int, startup_cpu_s: float) -> None:
    """Add the drain's CPU seconds (startup's taken off) and messages per such CPU second."""
    drain_cpu = figures["cpu_s"] - collectors * startup_cpu_s
    if drain_cpu > 0:
        figures["drain_cpu_s"] = drain_cpu
        figures["msgs_per_drain_cpu_s"] = count / drain_cpu


def _guarded(errors: list[str], what: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return measure()
    except FAILURES as exc:
        errors.append(f"{what}: {type(exc).__name__}: {exc}"[:3000])
        return {"error": errors[-1]}


@dataclass
class _Rounds:
    """What the rounds measured, per contender, and each round's ratios."""

    figures: dict[str, list[dict[str, float]]]
    ratios: list[dict[str, float]]


def _run_rounds(
    bench: Bench, o: Options, run_id: str, errors: list[str], log: Callable[[str], None]
) -> _Rounds:
    runners = _runners(o)
    done = _Rounds({name: [] for name in ("startup", *CONTENDERS)}, [])
    for number in range(o.rounds):
        label = f"round {number + 1}/{o.rounds}"
        log(f"{label}: startup ...")
        measure = functools.partial(measure_startup, bench, f"{run_id}-r{number}-startup")
        startup = _guarded(errors, f"{label} startup", measure)
        if "error" not in startup:
            done.figures["startup"].append(startup)
        this_round: dict[str, dict[str, float]] = {}
        for name in CONTENDERS if number % 2 == 0 else CONTENDERS[::-1]:
            log(f"{label}: {name} ...")
            tag = f"{run_id}-r{number}-{name.replace('_', '')}"
            measure = functools.partial(runners[name], bench, tag)
            figures = _guarded(errors, f"{label} {name}", measure)
            if "error" in figures:
                continue
            if name.startswith("parkwatch") and "error" not in startup:
                collectors = 2 if name == "parkwatch_x2" else 1
                _per_core(figures, o.messages, collectors, startup["startup_cpu_s"])
            this_round[name] = figures
            done.figures[name].append(figures)
            log(f"  {figures['msgs_per_s']:,.0f} msg/s")
        done.ratios.append(_ratios(this_round))
    return done


def _run(bench: Bench, o: Options, log: Callable[[str], None]) -> dict[str, Any]:
    run_id = f"d{int(time.time()) % 100000:05d}"  # unique names, also on servers in use
    sample = make_telemetry("x", min(o.messages, 4000), devices=o.devices, parks=bench.parks)
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_start": loadavg(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        **dataclasses.asdict(o),
        "payload_bytes": round(mean_size(sample), 1),
        "devices_reporting": min(o.devices, o.messages),
        "split_mode": "partition",
        "receive_maximum": bench.receive_maximum,
    }
    log(
        f"load average at start: {' '.join(map(str, meta['loadavg_start']))} ({meta['cpus']} cores)"
    )
    errors: list[str] = []
    rounds = _run_rounds(bench, o, run_id, errors, log)
    log("live latency ...")
    live = _guarded(
        errors,
        "live",
        functools.partial(
            measure_live_stage,
            bench,
            f"{run_id}-live",
            rate=o.live_rate,
            seconds=o.live_seconds,
            probe_interval_s=o.probe_interval_s,
        ),
    )
    profile: dict[str, Any] = {"skipped": "--no-profile"}
    if o.profile:
        log("profile (py-spy) ...")
        measure = functools.partial(profile_stage, bench, f"{run_id}-profile", o.messages)
        profile = _guarded(errors, "profile", measure)
    meta["loadavg_end"] = loadavg()
    meta["engines"] = bench.engines
    drain = {name: summarise_rounds(r) for name, r in rounds.figures.items() if r}
    startup = drain.pop("startup", {})
    one = drain.get("parkwatch", {})
    ratio_keys = sorted({key for r in rounds.ratios for key in r})
    return {
        "meta": meta,
        "drain": drain,
        "ratios": {
            key: {**spread([r[key] for r in rounds.ratios if key in r]), "target": TARGETS.get(key)}
            for key in ratio_keys
        },
        "scale_out": {
            "mode": "partition",
            "ratio": summarise_rounds(rounds.ratios).get("two_vs_one_collector"),
            "projected_per_core_msgs_per_s": one.get("msgs_per_drain_cpu_s"),
            "one_collector_drain_cpu_s": one.get("drain_cpu_s"),
            "broker_cpu_s": one.get("broker_cpu_s"),
            "influx_cpu_s": one.get("influx_cpu_s"),
            "elapsed_s": one.get("elapsed_s"),
            "machine_busy_fraction": one.get("machine_busy_fraction"),
        },
        "startup": {
            **startup,
            "with_backlog_s": one.get("startup_s"),
        },
        "memory": {
            "devices": meta["devices_reporting"],
            "vmhwm_mb": one.get("vmhwm_mb"),
            "vmrss_mb": one.get("vmrss_mb"),
            "rss_idle_mb": startup.get("rss_idle_mb"),
        },
        "live": live,
        "profile": profile,
        "errors": errors,
    }


def run(
    options: Options,
    *,
    broker: Mosquitto | None = None,
    influx: InfluxDB1 | None = None,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure everything; servers are started for the run unless given (tests pass theirs)."""
    compile_sources()  # the collector starts as installed, not compiling its own source
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-drain-")))
        if broker is None:
            broker = stack.enter_context(Mosquitto(workdir / "mosquitto"))
        if influx is None:
            influx = stack.enter_context(InfluxDB1(workdir / "influxdb"))
        bench = Bench(
            broker,
            influx,
            workdir,
            parks=balanced_parks(options.parks),
            devices=options.devices,
        )
        return _run(bench, options, log)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, write the JSON, print the table; 1 if anything failed."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: every stage, tiny")
    parser.add_argument("--rounds", type=int, help="drain rounds (default 1)")
    parser.add_argument("--messages", type=int, help="backlog per contender (default 60000)")
    parser.add_argument("--naive-messages", type=int, help="naive writer's backlog (10000)")
    parser.add_argument("--devices", type=int, help="distinct devices (default 20000)")
    parser.add_argument("--parks", type=int, help="parks the devices are spread over (60)")
    parser.add_argument("--live-rate", type=int, help="offered msg/s in the live run (10000)")
    parser.add_argument("--live-seconds", type=float, help="length of the live run (20)")
    parser.add_argument("--probe-interval-s", type=float, help="latency probe period (0.1)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--workdir", type=Path, help="keep servers' data and collector logs here")
    parser.add_argument("--out", type=Path, default=Path("var/bench/drain.json"))
    args = parser.parse_args(argv)
    chosen = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Options)
        if getattr(args, field.name, None) is not None
    }
    options = dataclasses.replace(QUICK if args.quick else Options(), **chosen)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(options, workdir=args.workdir, log=lambda line: print(line, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"\n{table(result)}\n\nevery figure: {args.out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
