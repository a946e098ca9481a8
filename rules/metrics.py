"""The rules engine's Prometheus metrics, read from the engine's state at scrape time.

A custom collector rather than counters incremented on the hot path: the engine counts in plain
integers (cheaper than ``Counter.inc`` with its lock) and ``parkwatch_alerts`` is computed from
the active alerts, so it can never drift from them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from rules.engine import RulesEngine

__all__ = ["RulesCollector"]

_STATES = ("pending", "firing")


class RulesCollector(Collector):
    """``parkwatch_alerts{alertname,severity,state}`` and the engine's counters."""

    def __init__(self, engine: RulesEngine) -> None:
        self._engine = engine

    def describe(self) -> Iterator[Metric]:
        """The metric families, without computing them (registration)."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        """The families with their current values."""
        engine = self._engine
        alerts, evaluations, redelivered, errors, loaded = self._families()
        counts = Counter(
            (a.labels["alertname"], a.labels.get("severity", ""), a.state.value)
            for a in engine.iter_active()
        )
        # Every rule shows 0 when quiet, so a resolved alert reads 0 rather than vanishing.
        for rule in engine.rules.rules:
            for state in _STATES:
                counts.setdefault((rule.name, rule.severity, state), 0)
        for (name, severity, state), count in sorted(counts.items()):
            alerts.add_metric([name, severity, state], count)
        evaluations.add_metric([], engine.evaluations)
        redelivered.add_metric([], engine.redelivered)
        for name, count in sorted(engine.errors.items()):
            errors.add_metric([name], count)
        loaded.add_metric([], len(engine.rules))
        yield from (alerts, evaluations, redelivered, errors, loaded)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily,
        GaugeMetricFamily,
    ]:  # fmt: skip
        return (
            GaugeMetricFamily(
                "parkwatch_alerts",
                "Active alerts by name, severity and state (pending, firing).",
                labels=["alertname", "severity", "state"],
            ),
            CounterMetricFamily(
                "parkwatch_rule_evaluations", "Rule conditions evaluated on readings."
            ),
            CounterMetricFamily(
                "parkwatch_rule_readings_skipped",
                "Readings not newer than their series' last one (redelivered or late), "
                "skipped by the rules so they cannot fire again.",
            ),
            CounterMetricFamily(
                "parkwatch_rule_errors",
                "Rule evaluations that raised, by rule.",
                labels=["alertname"],
            ),
            GaugeMetricFamily("parkwatch_rules_loaded", "Alerting rules loaded."),
        )
