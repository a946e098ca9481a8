"""EV charging: connector states, charging power and energy, utilisation, faults, green share.

Answers: which connectors are charging, idle or faulted (and with which OCPP error), how much
energy the park delivered and how much of it came from its own PV, and how busy the chargers
are.
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.influxql import park_filter
from dashboards.panels import (
    bar_gauge,
    neutral,
    state_timeline,
    table_panel,
    text_states,
    timeseries_panel,
)

__all__ = ["UID", "build"]

UID: Final = "parkwatch-ev"
MEASUREMENT: Final = "charger"
DEVICES: Final = f'{park_filter()} AND "device" =~ /^$device$/'
# OCPP 1.6 ChargePointStatus (and 2.0.1's Occupied), coloured by what an operator should do.
STATUS_COLOURS: Final = {
    "Available": "green",
    "Preparing": "light-blue",
    "Charging": "blue",
    "SuspendedEVSE": "yellow",
    "SuspendedEV": "light-yellow",
    "Finishing": "purple",
    "Occupied": "blue",
    "Reserved": "orange",
    "Unavailable": "dark-orange",
    "Faulted": "red",
}


def _hourly_kpi(*fields: str) -> str:
    return m.kpi_query(m.columns(*fields), "1h", '"park"')


def build(context: BuildContext) -> Board:
    """The EV charging dashboard."""
    q = context.influxql
    board = Board(
        context,
        uid=UID,
        title="parkwatch · EV charging",
        description="Charge points: connector states, power, energy, utilisation, faults, "
        "green share.",
    )
    board.park_variable(measurement=MEASUREMENT)
    board.device_variable(MEASUREMENT, label="Charge point")
    board.row(
        9,
        (
            24,
            state_timeline(
                "Connector status",
                "OCPP status of every connector over time.",
                q(
                    f'SELECT last("status") AS "status" FROM "{MEASUREMENT}" '
                    f"WHERE {DEVICES} AND $timeFilter "
                    'GROUP BY time($__interval), "park", "device", "connector" fill(previous)',
                    alias="$tag_device/$tag_connector",
                ),
                mappings=text_states(STATUS_COLOURS),
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Charging power",
                "Summed over the chosen charge points, per park.",
                q(
                    f'SELECT sum("power_kw") AS "power_kw" FROM (SELECT mean("power_kw") '
                    f'AS "power_kw" FROM "{MEASUREMENT}" WHERE {DEVICES} AND $timeFilter '
                    'GROUP BY time($__interval), "park", "device", "connector") '
                    'WHERE $timeFilter GROUP BY time($__interval), "park"',
                    alias="$tag_park",
                ),
                unit="kwatt",
                stacked=True,
            ),
        ),
        (
            12,
            bar_gauge(
                "Energy delivered, per charge point",
                "Over the time range, from the connectors' energy registers.",
                q(
                    f'SELECT sum("energy_kwh") AS "energy_kwh" FROM (SELECT spread("energy_kwh") '
                    f'AS "energy_kwh" FROM "{MEASUREMENT}" WHERE {DEVICES} AND $timeFilter '
                    'GROUP BY "park", "device", "connector") GROUP BY "park", "device"',
                    alias="$tag_park/$tag_device",
                ),
                unit="kwatth",
                thresholds=neutral(),
                minimum=0,
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Energy delivered and its green part, per hour",
                "Green: charged while the park's PV covered its load (hourly KPI).",
                q(_hourly_kpi("ev_energy_kwh", "ev_green_kwh"), alias="$tag_park $col"),
                unit="kwatth",
                bars=True,
            ),
        ),
        (
            12,
            timeseries_panel(
                "Utilisation, fault share and green share",
                "Share of connector-time Charging / Faulted, and of energy that was green "
                "(hourly KPI).",
                q(
                    _hourly_kpi("ev_utilisation_pct", "ev_faulted_pct", "ev_green_share_pct"),
                    alias="$tag_park $col",
                ),
                unit="percent",
            ),
        ),
    )
    board.row(
        7,
        (
            24,
            table_panel(
                "Connector faults",
                "Connectors that reported Faulted in the time range, with the last OCPP error.",
                q(
                    f'SELECT count("status") AS "faulted_reports", last("error_code") '
                    f'AS "error_code" FROM "{MEASUREMENT}" WHERE "status" = \'Faulted\' '
                    f'AND {DEVICES} AND $timeFilter GROUP BY "park", "device", "connector"',
                    result_format="table",
                ),
                sort_by="faulted_reports",
                link_parks=True,
            ),
        ),
    )
    return board
