"""Alerts: what fires now, what fired recently, and where and how severe.

Answers: which alerts are firing right now (and since when, with what value), what happened in
the time range, and which parks and severities produce the most alerts.
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.influxql import park_filter
from dashboards.panels import at_most, bar_gauge, stat_panel, table_panel, timeseries_panel

__all__ = ["UID", "build"]

UID: Final = "parkwatch-alerts"
PARKS: Final = park_filter()
SERIES_TAGS: Final = '"alertname", "severity", "park", "kind", "device", "connector"'


def _fired(group_by: str) -> str:
    """Transitions to firing in the time range, counted per ``group_by``."""
    return f"""SELECT count("state") AS "fired" FROM "{m.ALERTS}"
        WHERE "state" = 'firing' AND {PARKS} AND $timeFilter GROUP BY {group_by}"""


def build(context: BuildContext) -> Board:
    """The Alerts dashboard."""
    q = context.influxql
    board = Board(
        context,
        uid=UID,
        title="parkwatch · Alerts",
        description="Firing and recent alerts, counts by severity and park.",
    )
    board.park_variable()
    board.row(
        4,
        (
            6,
            stat_panel(
                "Alerts firing",
                "Alert series whose latest transition is firing.",
                q(m.firing_alerts(PARKS)),
                unit="none",
                thresholds=at_most(1),
                no_value="0",
            ),
        ),
        (
            18,
            timeseries_panel(
                "Fired over time, by severity",
                "Transitions to firing per interval.",
                q(_fired('time($__interval), "severity" fill(none)'), alias="$tag_severity"),
                unit="none",
                bars=True,
                stacked=True,
            ),
        ),
    )
    board.row(
        9,
        (
            24,
            table_panel(
                "Firing now",
                "Every firing alert series: since when (its firing transition), value and summary.",
                q(
                    f"""SELECT "state" AS "state", "value" AS "value", "summary" AS "summary"
                    FROM (SELECT last("state") AS "state", "value", "summary"
                    FROM "{m.ALERTS}" WHERE {PARKS} GROUP BY *)
                    WHERE "state" = 'firing' GROUP BY {SERIES_TAGS}""",
                    result_format="table",
                ),
                hide=(),
                link_parks=True,
            ),
        ),
    )
    board.row(
        9,
        (
            24,
            table_panel(
                "Recent transitions",
                "Every firing and resolved transition in the time range.",
                q(
                    f'SELECT "state" AS "state", "value" AS "value", "summary" AS "summary" '
                    f'FROM "{m.ALERTS}" WHERE {PARKS} AND $timeFilter GROUP BY {SERIES_TAGS}',
                    result_format="table",
                ),
                sort_by="Time",
                hide=(),
                link_parks=True,
            ),
        ),
    )
    board.row(
        7,
        (
            12,
            bar_gauge(
                "Fired by severity",
                "Transitions to firing in the time range.",
                q(_fired('"severity"'), alias="$tag_severity"),
                unit="none",
                thresholds=at_most(1),
                minimum=0,
            ),
        ),
        (
            12,
            bar_gauge(
                "Fired by park",
                "Transitions to firing in the time range.",
                q(_fired('"park"'), alias="$tag_park"),
                unit="none",
                thresholds=at_most(1),
                minimum=0,
            ),
        ),
    )
    return board
