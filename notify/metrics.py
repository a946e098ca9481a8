"""Prometheus metrics of the notification stage, on the registry the application passes in."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["OUTCOMES", "NotifyMetrics"]

OUTCOMES = ("sent", "failed", "dropped")
"""``sent``: delivered; ``failed``: refused, or still failing at the retry deadline;
``dropped``: pushed out of a full queue."""

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600)


class NotifyMetrics:
    """Counters per receiver and outcome, latency, retries, de-duplication and queue depth."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.notifications = Counter(
            "parkwatch_notifications",
            "Notification messages by receiver and outcome (sent, failed, dropped).",
            ["receiver", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "parkwatch_notification_latency_seconds",
            "From the first transition in a message reaching the notifier to its delivery.",
            ["receiver"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "parkwatch_notification_retries",
            "Delivery attempts that failed retryably and were retried.",
            ["receiver"],
            registry=r,
        )
        self.deduplicated = Counter(
            "parkwatch_notification_duplicates",
            "Alert transitions not notified again because the receiver already had them.",
            ["receiver"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "parkwatch_notify_queue_depth",
            "Messages waiting for each receiver.",
            ["receiver"],
            registry=r,
        )

    def add_receivers(self, depths: Iterable[tuple[str, Callable[[], float]]]) -> None:
        """Show every receiver's series from the start, at zero, with a live queue depth."""
        for receiver, depth in depths:
            for outcome in OUTCOMES:
                self.notifications.labels(receiver, outcome)
            self.retries.labels(receiver)
            self.deduplicated.labels(receiver)
            self.latency.labels(receiver)
            self.queue_depth.labels(receiver).set_function(depth)

    def count(self, receiver: str, outcome: str, amount: int = 1) -> None:
        """Count messages with ``outcome``."""
        self.notifications.labels(receiver, outcome).inc(amount)

    def value(self, receiver: str, outcome: str) -> float:
        """The current count of messages with ``outcome`` (for tests and the demo)."""
        labels = {"receiver": receiver, "outcome": outcome}
        return self.registry.get_sample_value("parkwatch_notifications_total", labels) or 0.0
