"""Collector health: is ingestion keeping up, is anything rejected, is data waiting anywhere.

Answers: messages in and points written per second, dead letters by reason, write latency,
spool backlog, unacked messages and queue depths, and whether the broker and database are
connected. The data is the collector's own metrics, written to InfluxDB every few seconds by
``parkwatch/selfmetrics.py`` (so the compose stack needs no Prometheus server).
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.panels import (
    GREEN,
    RED,
    at_most,
    boolean_states,
    stat_panel,
    state_timeline,
    timeseries_panel,
)

__all__ = ["UID", "build"]

UID: Final = "parkwatch-collector"
INSTANCES: Final = '"instance" =~ /^$instance$/'
LEGEND: Final = "$tag_instance $col"


def _per_instance(select: str, measurement: str = m.COLLECTOR, by: str = "") -> str:
    return f"""SELECT {select} FROM "{measurement}" WHERE {INSTANCES} AND $timeFilter
        GROUP BY time($__interval), "instance"{by} fill(none)"""


def _rate(field: str, alias: str) -> str:
    return f'non_negative_derivative(max("{field}"), 1s) AS "{alias}"'


def build(context: BuildContext) -> Board:
    """The Collector health dashboard."""
    q = context.influxql
    board = Board(
        context,
        uid=UID,
        title="parkwatch · Collector health",
        description="Ingestion rate, dead letters, write latency, spool, unacked messages.",
        time_from="now-1h",
        refresh="30s",
    )
    board.tag_variable("instance", "Collector", m.COLLECTOR)
    board.row(
        4,
        (
            6,
            stat_panel(
                "Messages in",
                "MQTT messages received per second (last interval).",
                q(_per_instance(_rate("messages_received", "messages_per_s"))),
                unit="reqps",
            ),
        ),
        (
            6,
            stat_panel(
                "Unacked messages",
                "Received and not yet safe (written, spooled or dead-lettered).",
                q(_per_instance('max("unacked") AS "unacked"')),
                unit="none",
            ),
        ),
        (
            6,
            stat_panel(
                "Spool backlog",
                "Bytes waiting in the on-disk spool for InfluxDB.",
                q(_per_instance('max("spool_bytes") AS "spool_bytes"')),
                unit="bytes",
                thresholds=at_most(1),
            ),
        ),
        (
            6,
            stat_panel(
                "Dead letters",
                "Messages rejected in the time range (kept with a reason in the dead-letter file).",
                q(
                    f'SELECT spread("dead_letters") AS "dead_letters" FROM "{m.COLLECTOR}" '
                    f"WHERE {INSTANCES} AND $timeFilter"
                ),
                unit="none",
                thresholds=at_most(1),
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Messages and points per second",
                "Received from MQTT, written to InfluxDB.",
                q(
                    _per_instance(
                        f"{_rate('messages_received', 'messages_per_s')}, "
                        f"{_rate('points_written', 'points_per_s')}"
                    ),
                    alias=LEGEND,
                ),
                unit="reqps",
            ),
        ),
        (
            12,
            timeseries_panel(
                "Dead letters by reason",
                "Rejected messages per interval; the reasons are listed in the README.",
                q(
                    _per_instance(
                        'non_negative_difference(max("count")) AS "dead_letters"',
                        m.DEAD_LETTERS,
                        ', "reason"',
                    ),
                    alias="$tag_reason",
                ),
                unit="none",
                bars=True,
                stacked=True,
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Write latency",
                "Duration of successful InfluxDB writes: mean and 99th percentile per interval.",
                q(
                    _per_instance(
                        'mean("write_latency_mean_s") AS "mean", '
                        'max("write_latency_p99_s") AS "p99"'
                    ),
                    alias=LEGEND,
                ),
                unit="s",
            ),
        ),
        (
            12,
            timeseries_panel(
                "Spool",
                "Bytes waiting for InfluxDB; grows while it is down, drains when it is back.",
                q(_per_instance('max("spool_bytes") AS "spool_bytes"'), alias=LEGEND),
                unit="bytes",
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Unacked messages",
                "Received and not yet safe, and the age of the oldest.",
                q(
                    _per_instance(
                        'max("unacked") AS "unacked", max("oldest_unacked_s") AS "oldest_s"'
                    ),
                    alias=LEGEND,
                ),
                unit="none",
            ),
        ),
        (
            12,
            timeseries_panel(
                "Queue depths",
                "Items waiting in each pipeline queue; full queues block their producer.",
                q(
                    _per_instance(
                        'max("queue_inbox") AS "inbox", max("queue_points") AS "points", '
                        'max("queue_writes") AS "writes", max("queue_batches") AS "batches", '
                        'max("queue_dead_letters") AS "dead_letters"'
                    ),
                    alias=LEGEND,
                ),
                unit="none",
            ),
        ),
    )
    board.row(
        5,
        (
            24,
            state_timeline(
                "Connections",
                "Subscribed to the broker; last database write or ping succeeded.",
                q(
                    _per_instance(
                        'last("mqtt_connected") AS "mqtt_connected", last("sink_up") AS "sink_up"'
                    ),
                    alias=LEGEND,
                ),
                mappings=boolean_states(true=("up", GREEN), false=("down", RED)),
            ),
        ),
    )
    return board
