"""Prometheus metrics of the collector, one registry per instance (so tests stay independent)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from collector.messages import DroppedField, Reason

__all__ = ["WRITE_ERROR_KINDS", "Metrics"]

WRITE_ERROR_KINDS = ("unavailable", "database_not_found", "retention_policy_not_found", "rejected")

_BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Every metric the collector exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "parkwatch_messages_received", "MQTT messages received.", registry=r
        )
        self.points_written = Counter(
            "parkwatch_points_written", "Points acknowledged by the database.", registry=r
        )
        self.dead_letters = Counter(
            "parkwatch_dead_letters", "Messages dead-lettered, by reason.", ["reason"], registry=r
        )
        self.fields_dropped = Counter(
            "parkwatch_fields_dropped", "Payload fields ignored, by reason.", ["reason"], registry=r
        )
        self.batch_lines = Histogram(
            "parkwatch_write_batch_lines", "Lines per write.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.write_seconds = Histogram(
            "parkwatch_write_duration_seconds",
            "Duration of successful writes.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_requests = Counter(
            "parkwatch_write_requests",
            "Write requests sent to the database, whatever their outcome.",
            registry=r,
        )
        self.write_errors = Counter(
            "parkwatch_write_errors",
            "Failed write requests, by kind (unavailable, database_not_found, "
            "retention_policy_not_found, rejected).",
            ["kind"],
            registry=r,
        )
        self.writes_failing = Gauge(
            "parkwatch_writes_failing_seconds",
            "Seconds since writes to the database started failing; 0 while the last one succeeded.",
            registry=r,
        )
        self.reconnects = Counter(
            "parkwatch_mqtt_reconnects", "Reconnections to the MQTT broker.", registry=r
        )
        self.session_takeovers = Counter(
            "parkwatch_mqtt_session_takeovers",
            "Connections lost to another client with our client id (MQTT 5 reason 0x8E, or "
            "MQTT 3.1.1 connections dropped again and again right after connecting).",
            registry=r,
        )
        self.retained_skipped = Counter(
            "parkwatch_retained_skipped",
            "Retained messages acked and skipped: the same (topic, payload) was handled before.",
            registry=r,
        )
        self.intake_errors = Counter(
            "parkwatch_mqtt_intake_errors",
            "Messages the MQTT adapter failed to take in (a bug), left unacked for redelivery.",
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "parkwatch_inflight_bytes",
            "Payload bytes received and not yet settled (bounded by mqtt.max_inflight_bytes).",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "parkwatch_mqtt_connected", "1 while connected to the broker.", registry=r
        )
        self.sink_up = Gauge(
            "parkwatch_sink_up",
            "1 if the database answered the latest write request (stored it, or refused bad "
            "lines); 0 after a write failed and is retried. Writes only: the /healthz ping does "
            "not set it, and it is 0 until the first write.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "parkwatch_queue_depth", "Items waiting in each pipeline queue.", ["queue"], registry=r
        )
        self.unacked = Gauge(
            "parkwatch_unacked_messages", "Messages received and not yet acked.", registry=r
        )
        self.oldest_unacked = Gauge(
            "parkwatch_oldest_unacked_seconds",
            "Age of the oldest unacknowledged message.",
            registry=r,
        )
        self.spool_bytes = Gauge("parkwatch_spool_bytes", "Bytes waiting in the spool.", registry=r)
        self.spool_segments = Gauge(
            "parkwatch_spool_segments", "Segment files in the spool.", registry=r
        )
        self.spooled_batches = Counter(
            "parkwatch_spooled_batches", "Batches written to the spool.", registry=r
        )
        self.replayed_points = Counter(
            "parkwatch_replayed_points", "Points replayed from the spool.", registry=r
        )
        self.spool_full = Gauge(
            "parkwatch_spool_full",
            "1 while a batch is held unacked because the spool refused it (full or failing).",
            registry=r,
        )
        self.spool_errors = Counter(
            "parkwatch_spool_errors",
            "Spool operations that failed on disk (e.g. ENOSPC), by operation "
            "(open, append, commit, read).",
            ["op"],
            registry=r,
        )
        self.dead_letter_write_errors = Counter(
            "parkwatch_deadletter_write_errors",
            "Failed attempts to write dead-letter records (each retried; messages stay unacked).",
            registry=r,
        )
        self.dead_letter_failing = Gauge(
            "parkwatch_deadletter_failing",
            "1 while dead-letter records cannot be written (their messages are not acked).",
            registry=r,
        )
        for reason in Reason.ALL:  # export every reason from the start, at zero
            self.dead_letters.labels(reason)
        for kind in WRITE_ERROR_KINDS:
            self.write_errors.labels(kind)
        for op in ("open", "append", "commit", "read"):
            self.spool_errors.labels(op)
        for reason in DroppedField.ALL:
            self.fields_dropped.labels(reason)

    def watch_queue(self, name: str, depth: Callable[[], int]) -> None:
        """Report a queue's depth at every scrape."""
        self.queue_depth.labels(name).set_function(depth)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
