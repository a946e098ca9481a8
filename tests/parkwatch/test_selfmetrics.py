"""Self-metrics: the Prometheus registry as InfluxDB points for the Collector health dashboard.

That the points land in a real InfluxDB and fill every health panel is checked by
``tests/dashboards/test_queries.py`` (sampled from a real collector while it ingests a day).
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from prometheus_client import CollectorRegistry

from collector.metrics import Metrics
from parkwatch.points import NO_TICKET, Point
from parkwatch.selfmetrics import DEAD_LETTER_MEASUREMENT, MEASUREMENT, SelfMetrics, quantile
from tests.helpers import until


def _metrics() -> Metrics:
    metrics = Metrics()
    metrics.watch_queue("inbox", lambda: 7)
    metrics.received.inc(120)
    metrics.points_written.inc(100)
    metrics.dead_letters.labels("invalid_json").inc(3)
    metrics.dead_letters.labels("clock_skew").inc(2)
    metrics.unacked.set(20)
    metrics.spool_bytes.set(4096)
    metrics.mqtt_connected.set(1)
    return metrics


def test_a_sample_holds_counters_gauges_flags_and_dead_letters_by_reason() -> None:
    sampler = SelfMetrics(_metrics().registry, instance="c-1", clock=lambda: 1_700_000_000.5)

    points = sampler.sample()

    main, *dead = points
    assert main.kind == MEASUREMENT
    assert main.ts_ms == 1_700_000_000_500
    assert main.ticket == NO_TICKET
    assert main.line.startswith("parkwatch_collector,instance=c-1 ")
    fields = main.fields
    assert fields["messages_received"] == 120.0
    assert fields["points_written"] == 100.0
    assert fields["dead_letters"] == 5.0
    assert fields["unacked"] == 20.0
    assert fields["spool_bytes"] == 4096.0
    assert fields["queue_inbox"] == 7.0
    assert fields["mqtt_connected"] is True
    assert fields["sink_up"] is False
    assert "write_latency_mean_s" not in fields  # nothing written yet
    by_reason = {p.line.split(",reason=")[1].split(" ")[0]: p.fields["count"] for p in dead}
    assert by_reason["invalid_json"] == 3.0
    assert by_reason["clock_skew"] == 2.0
    assert by_reason["too_large"] == 0.0  # every reason, from zero
    assert all(p.kind == DEAD_LETTER_MEASUREMENT for p in dead)


def test_write_latency_is_per_interval() -> None:
    metrics = _metrics()
    sampler = SelfMetrics(metrics.registry, instance="c-1")
    for seconds in (0.2, 0.2, 0.2, 0.2):
        metrics.write_seconds.observe(seconds)
    first = sampler.sample()[0].fields
    assert first["write_latency_mean_s"] == pytest.approx(0.2)

    metrics.write_seconds.observe(0.004)
    second = sampler.sample()[0].fields
    # Only the write since the previous sample counts: not a mean over all five.
    assert second["write_latency_mean_s"] == pytest.approx(0.004)
    assert 0.0025 < float(second["write_latency_p99_s"]) <= 0.005

    assert "write_latency_mean_s" not in sampler.sample()[0].fields


def test_quantile_interpolates_within_a_bucket_like_histogram_quantile() -> None:
    buckets = [(0.1, 0.0), (0.25, 10.0), (math.inf, 10.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.175)
    assert quantile(0.99, [(0.1, 0.0), (math.inf, 4.0)]) == 0.1  # beyond the last bound
    assert quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None


async def test_run_emits_every_interval_and_survives_a_broken_metric() -> None:
    registry = CollectorRegistry()
    metrics = _metrics()
    broken = {"once": True}

    class Flaky:
        def collect(self) -> list[object]:
            if broken.pop("once", False):
                raise RuntimeError("boom")
            return list(metrics.registry.collect())

    registry.register(Flaky())  # type: ignore[arg-type]
    emitted: list[Point] = []

    async def emit(point: Point) -> None:
        emitted.append(point)

    sampler = SelfMetrics(registry, instance="c-1", interval_s=0.01)
    task = asyncio.create_task(sampler.run(emit))
    try:
        await until(lambda: sum(p.kind == MEASUREMENT for p in emitted) >= 3, what="three samples")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not broken  # the failing sample happened, and sampling went on
