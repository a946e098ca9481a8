"""Statistics and the printed table of ``bench.drain``: medians and spreads over rounds,
percentiles of latency samples, quantiles of Prometheus histograms."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from parkwatch.selfmetrics import quantile as histogram_quantile  # one estimator for both

__all__ = ["histogram_quantile", "percentile", "spread", "summarise_rounds", "table"]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of one figure over the rounds, with the values themselves."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def summarise_rounds(rounds: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per figure, the spread over the rounds that measured it."""
    keys = sorted({key for figures in rounds for key in figures})
    return {key: spread([figures[key] for figures in rounds if key in figures]) for key in keys}


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (``pct`` in 0-100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _median(result: Mapping[str, Any], *path: str) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, Mapping):
        node = node.get("median")
    return float(node) if isinstance(node, int | float) else None


def _fmt(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _rate_row(result: Mapping[str, Any], label: str, contender: str) -> str:
    figures = result["drain"].get(contender, {}).get("msgs_per_s")
    if not figures:
        return f"{label:34s} {'failed':>10s}"
    low, high = figures["min"], figures["max"]
    return f"{label:34s} {figures['median']:>10,.0f}   [{low:,.0f} - {high:,.0f}]"


def table(result: Mapping[str, Any]) -> str:
    """The short human summary: drain rates, ratios against the targets, live, memory, scale."""
    meta = result["meta"]
    lines = [
        f"drain of {meta['messages']:,} QoS 1 messages ({meta['devices']:,} devices, "
        f"{meta['parks']} parks; naive writer: {meta['naive_messages']:,}), "
        f"{meta['rounds']} round(s), median [min - max]; load average at start "
        f"{' '.join(str(v) for v in meta['loadavg_start'])} on {meta['cpus']} cores",
        f"{'contender':34s} {'msg/s':>10s}",
        _rate_row(result, "bare gmqtt subscriber (the limit)", "gmqtt"),
        _rate_row(result, "bare paho-mqtt subscriber", "paho"),
        _rate_row(result, "parkwatch run (startup included)", "parkwatch"),
        _rate_row(result, "parkwatch run, mqtt.client = paho", "parkwatch_paho"),
        _rate_row(result, "naive per-message writer", "naive"),
        _rate_row(result, f"two parkwatch ({result['scale_out']['mode']})", "parkwatch_x2"),
    ]
    for name, ratio in result["ratios"].items():
        target = ratio.get("target")
        verdict = ""
        if target is not None:
            verdict = "  meets target" if ratio["median"] >= target else "  BELOW target"
            verdict = f"  (target >= {target}){verdict}"
        lines.append(f"ratio {name:28s} {ratio['median']:>10.2f}{verdict}")
    live = result.get("live", {})
    fire = live.get("rule_fire", {})
    lines.append(
        f"live at {_fmt(live.get('offered_msgs_per_s'))} msg/s offered: publish -> queryable "
        f"p50 {_fmt(live.get('queryable_p50_s'), '{:.3f}')} s, "
        f"p99 {_fmt(live.get('queryable_p99_s'), '{:.3f}')} s (target <= 2); rule fire "
        f"p50 {_fmt(fire.get('p50_s'), '{:.3f}')} s, p99 {_fmt(fire.get('p99_s'), '{:.3f}')} s "
        "(target <= 0.25)"
    )
    memory, startup = result.get("memory", {}), result.get("startup", {})
    lines.append(
        f"memory with {memory.get('devices', 0):,} devices: VmHWM "
        f"{_fmt(_median(memory, 'vmhwm_mb'))} MiB, VmRSS {_fmt(_median(memory, 'vmrss_mb'))} MiB "
        f"(target <= 200); startup to healthy {_fmt(_median(startup, 'startup_s'), '{:.2f}')} s "
        f"idle, {_fmt(_median(startup, 'with_backlog_s'), '{:.2f}')} s with a backlog "
        "(target <= 1)"
    )
    scale = result.get("scale_out", {})
    lines.append(
        f"scale-out: two / one collector {_fmt(_median(scale, 'ratio'), '{:.2f}')}; projected "
        f"per-core rate {_fmt(_median(scale, 'projected_per_core_msgs_per_s'))} msg/s per "
        "collector CPU second"
    )
    if result.get("errors"):
        lines += ["ERRORS:", *(f"  {error}" for error in result["errors"])]
    return "\n".join(lines)
