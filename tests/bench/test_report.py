"""``bench.report`` statistics, and reading a fire-latency histogram the way ``bench.live`` does."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.collectorproc import Scrape
from bench.live import fire_latency
from bench.report import histogram_quantile, percentile, spread, summarise_rounds


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]

    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 10.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]

    # The 50th of 100 lies in (0.1, 0.5], 40 of its 80: halfway.
    assert math.isclose(histogram_quantile(0.5, buckets) or 0.0, 0.3)
    # The 99th lies in (0.5, 1.0], 9 of its 10.
    assert math.isclose(histogram_quantile(0.99, buckets) or 0.0, 0.95)
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    # Beyond the last finite bound Prometheus answers that bound.
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


def test_spread_over_rounds() -> None:
    rounds = [{"a": 3.0, "b": 1.0}, {"a": 1.0}, {"a": 2.0, "b": 5.0}]

    summary = summarise_rounds(rounds)

    assert summary["a"] == spread([3.0, 1.0, 2.0])
    assert summary["a"]["median"] == 2.0
    assert (summary["a"]["min"], summary["a"]["max"]) == (1.0, 3.0)
    assert summary["b"]["values"] == [1.0, 5.0]


def test_fire_latency_from_a_real_exposition() -> None:
    registry = CollectorRegistry()
    fire = Histogram(
        "parkwatch_rule_fire_latency_seconds",
        "Message received -> alert transition emitted.",
        ["rule"],
        buckets=(0.01, 0.1, 1.0),
        registry=registry,
    )
    for _ in range(90):
        fire.labels("a").observe(0.05)
    for _ in range(10):
        fire.labels("b").observe(0.5)

    found = fire_latency(Scrape(generate_latest(registry).decode()))

    assert found["metric"] == "parkwatch_rule_fire_latency_seconds"
    assert found["count"] == 100
    # Labels summed: 90 in (0.01, 0.1], 10 in (0.1, 1.0].
    assert math.isclose(found["p50_s"], 0.01 + 0.09 * 50 / 90)
    assert math.isclose(found["p99_s"], 0.1 + 0.9 * 9 / 10)


def test_fire_latency_slot_when_absent() -> None:
    registry = CollectorRegistry()
    Histogram("parkwatch_write_duration_seconds", "Writes.", registry=registry).observe(0.2)

    found = fire_latency(Scrape(generate_latest(registry).decode()))

    assert found["metric"] is None
    assert found["p99_s"] is None
    assert found["note"].startswith("SLOT")
