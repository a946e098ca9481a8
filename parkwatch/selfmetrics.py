"""The collector's own metrics as InfluxDB points, for the Collector health dashboard.

Every ``interval_s`` :class:`SelfMetrics` reads the Prometheus registry that ``/metrics``
exports and turns its key metrics into two kinds of point, handed to ``emit`` (the writer's
point queue, so they take the same durable path as telemetry):

* ``parkwatch_collector``, tag ``instance``: counters as running totals (``messages_received``,
  ``points_written``, ``dead_letters``, ``write_errors``, ...; Grafana takes their
  ``non_negative_derivative``), gauges as they stand (``unacked``, ``oldest_unacked_s``,
  ``spool_bytes``, ``queue_<name>``, ...), ``mqtt_connected``/``sink_up``/``spool_full`` as
  booleans, and the write latency of the interval (``write_latency_mean_s`` and
  ``write_latency_p99_s``, from the histogram's increase; absent when nothing was written);
* ``parkwatch_dead_letters``, tags ``instance`` and ``reason``: field ``count``, a running total.

This way the compose stack needs no Prometheus server for Grafana to show collector health.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from collector.lineproto import LineEncoder
from parkwatch.events import COLLECTOR_MEASUREMENT, DEAD_LETTER_MEASUREMENT
from parkwatch.points import NO_TICKET, FieldValue, Point

__all__ = [
    "DEAD_LETTER_MEASUREMENT",
    "INTERVAL_S",
    "MEASUREMENT",
    "SelfMetrics",
    "quantile",
]

log = logging.getLogger(__name__)

MEASUREMENT: Final = COLLECTOR_MEASUREMENT
INTERVAL_S: Final = 10.0

# Prometheus family name -> field; counters summed over their labels.
COUNTERS: Final = {
    "parkwatch_messages_received": "messages_received",
    "parkwatch_points_written": "points_written",
    "parkwatch_dead_letters": "dead_letters",
    "parkwatch_fields_dropped": "fields_dropped",
    "parkwatch_write_errors": "write_errors",
    "parkwatch_mqtt_reconnects": "mqtt_reconnects",
    "parkwatch_spooled_batches": "spooled_batches",
    "parkwatch_replayed_points": "replayed_points",
}
GAUGES: Final = {
    "parkwatch_unacked_messages": "unacked",
    "parkwatch_oldest_unacked_seconds": "oldest_unacked_s",
    "parkwatch_spool_bytes": "spool_bytes",
    "parkwatch_spool_segments": "spool_segments",
}
FLAGS: Final = {
    "parkwatch_mqtt_connected": "mqtt_connected",
    "parkwatch_sink_up": "sink_up",
    "parkwatch_spool_full": "spool_full",
}
QUEUES: Final = "parkwatch_queue_depth"
WRITE_LATENCY: Final = "parkwatch_write_duration_seconds"
DEAD_LETTERS: Final = "parkwatch_dead_letters"

Emit = Callable[[Point], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Histogram:
    """A histogram's cumulative state: (upper bound, cumulative count) per bucket, sum, count."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets, as Prometheus'
    ``histogram_quantile`` estimates it (linear within a bucket); None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: its bound is the best estimate
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (upper - lower) * share
        lower, below = upper, cumulative
    return lower


class SelfMetrics:
    """Samples a Prometheus registry into points; ``run`` does so every ``interval_s``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        instance: str,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._instance = instance
        self.interval_s = interval_s
        self._clock = clock
        self._last_latency: _Histogram | None = None

    def sample(self) -> list[Point]:
        """The registry as it stands, as points stamped with the clock's time (ms)."""
        ts_ms = round(self._clock() * 1000)
        fields: dict[str, FieldValue] = {}
        dead: dict[str, float] = {}
        for family in self._registry.collect():
            self._read(family, fields, dead)
        tags = (("instance", self._instance),)
        points = [_point(MEASUREMENT, tags, fields, ts_ms)] if fields else []
        points += [
            _point(DEAD_LETTER_MEASUREMENT, (*tags, ("reason", reason)), {"count": n}, ts_ms)
            for reason, n in sorted(dead.items())
        ]
        return points

    def _read(self, family: Metric, fields: dict[str, FieldValue], dead: dict[str, float]) -> None:
        name = family.name
        if name in COUNTERS:
            total = _sum(family, f"{name}_total")
            fields[COUNTERS[name]] = total
            if name == DEAD_LETTERS:
                for sample in family.samples:
                    if sample.name == f"{name}_total":
                        dead[sample.labels.get("reason", "")] = float(sample.value)
        elif name in GAUGES:
            fields[GAUGES[name]] = _sum(family, name)
        elif name in FLAGS:
            fields[FLAGS[name]] = _sum(family, name) >= 1
        elif name == QUEUES:
            for sample in family.samples:
                fields[f"queue_{sample.labels.get('queue', '')}"] = float(sample.value)
        elif name == WRITE_LATENCY:
            fields.update(self._latency(family))

    def _latency(self, family: Metric) -> dict[str, FieldValue]:
        """Mean and p99 write latency over the writes since the previous sample."""
        buckets = tuple(
            (float(s.labels["le"]), float(s.value))
            for s in family.samples
            if s.name.endswith("_bucket")
        )
        now = _Histogram(
            buckets, _sum(family, f"{family.name}_sum"), _sum(family, f"{family.name}_count")
        )
        before, self._last_latency = self._last_latency, now
        if before is not None and now.count >= before.count:
            previous = dict(before.buckets)
            delta = [(le, n - previous.get(le, 0.0)) for le, n in now.buckets]
            count, total = now.count - before.count, now.total - before.total
        else:  # the first sample, or the registry started over: everything so far
            delta, count, total = list(now.buckets), now.count, now.total
        if count <= 0:
            return {}
        p99 = quantile(0.99, delta)
        fields: dict[str, FieldValue] = {"write_latency_mean_s": total / count}
        if p99 is not None:
            fields["write_latency_p99_s"] = p99
        return fields

    async def run(self, emit: Emit) -> None:
        """Every ``interval_s``, sample and hand the points to ``emit``; until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                points = self.sample()
            except Exception:  # a broken metric must not stop the collector
                log.exception("self-metrics: sampling the registry failed")
                continue
            for point in points:
                await emit(point)


def _sum(family: Metric, sample_name: str) -> float:
    return float(sum(s.value for s in family.samples if s.name == sample_name))


_ENCODER: Final = LineEncoder()


def _point(
    measurement: str, tags: tuple[tuple[str, str], ...], fields: dict[str, FieldValue], ts: int
) -> Point:
    line = _ENCODER.encode(measurement, tuple(sorted(tags)), fields, ts)
    return Point("", measurement, "", ts, fields, line, NO_TICKET)
