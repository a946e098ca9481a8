"""The KPI engine's cost per point against the decode stage's, and its memory per 1 000 devices.

Both run over the same simulated telemetry (the built-in five-park fleet for six hours): the
decoder (``collector.decode.Decoder``, the baseline) turns the raw messages into points, then
the KPI engine takes them as the analytics stage feeds it: the park clock observes each point,
``advance`` runs when it moved (closing due windows), then ``apply``. Memory is what the
engine holds (``tracemalloc``) once 1 000 devices of one kind, in ten parks, have reported for
twenty minutes: their counters, connectors and the open windows.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from collector.decode import Decoder
from collector.messages import RawMessage
from collector.metrics import Metrics
from kpi import KpiEngine
from parkwatch.clock import ParkClocks
from parkwatch.events import Output
from parkwatch.points import Point
from parkwatch.settings import IngestSettings, KpiSettings, ParksSettings
from simulators.fleet import default_fleet
from simulators.generate import iter_messages
from simulators.simtime import SHANGHAI

START = datetime(2025, 6, 21, 6, tzinfo=SHANGHAI)
SPAN_S = 6 * 3600
ROUNDS = 3


def _messages() -> list[RawMessage]:
    messages = iter_messages(default_fleet(), 1, START, SPAN_S)
    return [RawMessage(topic, payload, 0.0, n) for n, (topic, payload) in enumerate(messages)]


def _engine() -> tuple[KpiEngine, ParkClocks]:
    clocks = ParkClocks()
    engine = KpiEngine(KpiSettings(), ParksSettings(), clocks, CollectorRegistry())
    return engine, clocks


def _run_engine(points: list[Point]) -> tuple[float, int]:
    """Seconds to feed every point as the analytics stage does; KPI records emitted."""
    engine, clocks = _engine()
    outputs: list[Output] = []
    emit = outputs.append
    advanced: dict[str, int] = {}
    started = time.perf_counter()
    for point in points:
        now = clocks.observe(point.park, point.ts_ms, 0.0)
        if now > advanced.get(point.park, -1):
            advanced[point.park] = now
            engine.advance(point.park, now, emit)
        engine.apply(point, emit)
    return time.perf_counter() - started, len(outputs)


def _memory_per_1000(kind: str) -> float:
    """Bytes the engine holds for 1 000 devices of ``kind`` (chargers: two connectors each)."""
    fields: dict[str, dict[str, Any]] = {
        "microgrid": {"pv_kwh": 1.0, "load_kwh": 2.0, "grid_import_kwh": 1.0, "grid_export_kwh": 0},
        "storage": {"charged_kwh": 1.0, "discharged_kwh": 1.0},
        "site5g": {"energy_kwh": 1.0, "traffic_gb": 10.0},
        "charger": {"energy_kwh": 1.0, "status": "Charging"},
    }
    start_ms = round(START.timestamp() * 1000)
    points = []
    for step in range(41):  # every 30 s for 20 minutes
        for n in range(1000):
            park, device = f"park-{n % 10}", f"{kind}-{n:04d}"
            values = {k: v * step if isinstance(v, float) else v for k, v in fields[kind].items()}
            for connector in ("1", "2") if kind == "charger" else ("",):
                ts = start_ms + step * 30_000
                points.append(Point(park, kind, device, ts, values, "", 0, connector))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine, clocks = _engine()
    outputs: list[Output] = []
    for point in points:
        engine.advance(point.park, clocks.observe(point.park, point.ts_ms, 0.0), outputs.append)
        engine.apply(point, outputs.append)
    del outputs
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # Counters per device (a charger: one counter and one status per connector).
    assert (
        engine.tracked() == 1000 * {"microgrid": 4, "storage": 2, "site5g": 2, "charger": 4}[kind]
    )
    del engine
    return float(held)


def run() -> dict[str, float]:
    """Microseconds per point for the decoder and the KPI engine, the ratio, and memory."""
    raw = _messages()
    decoder = Decoder(IngestSettings(max_past_s=1e10, max_future_s=1e10), Metrics())
    decode_s = engine_s = float("inf")
    points: list[Point] = []
    records = 0
    for _ in range(ROUNDS):  # the best of a few rounds: the machine is shared
        started = time.perf_counter()
        decoded = [decoder.decode(message) for message in raw]
        decode_s = min(decode_s, time.perf_counter() - started)
        points = [p for p in decoded if isinstance(p, Point)]
        seconds, records = _run_engine(points)
        engine_s = min(engine_s, seconds)
    assert len(points) == len(raw), "every simulated message decodes"
    results = {
        "points": float(len(points)),
        "kpi_records": float(records),
        "decode_us_per_point": decode_s / len(raw) * 1e6,
        "kpi_engine_us_per_point": engine_s / len(points) * 1e6,
        "kpi_vs_decode_ratio": engine_s / decode_s,
    }
    for kind in ("microgrid", "storage", "site5g", "charger"):
        results[f"memory_kib_per_1000_{kind}"] = _memory_per_1000(kind) / 1024
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:,.2f}")
