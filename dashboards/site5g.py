"""5G sites: power, traffic, energy per GB, sleep modes and mains loss of every base station.

Answers: how much each site draws and carries, how efficient it is (kWh per GB against the
park's target; ETSI ES 203 228), whether it sleeps when traffic is low, and when it ran on
battery.
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.influxql import park_filter
from dashboards.panels import (
    KWH_PER_GB,
    RED,
    at_most,
    bar_gauge,
    boolean_states,
    state_timeline,
    text_states,
    timeseries_panel,
)

__all__ = ["UID", "build"]

UID: Final = "parkwatch-site5g"
MEASUREMENT: Final = "site5g"
DEVICES: Final = f'{park_filter()} AND "device" =~ /^$device$/'
LEGEND: Final = "$tag_park/$tag_device"
MBIT_PER_GB: Final = 8000
SLEEP_COLOURS: Final = {"0": "green", "1": "blue", "2": "purple", "3": "dark-purple"}


def _per_site(select: str, fill: str = "none") -> str:
    return f"""SELECT {select} FROM "{MEASUREMENT}" WHERE {DEVICES} AND $timeFilter
        GROUP BY time($__interval), "park", "device" fill({fill})"""


def build(context: BuildContext) -> Board:
    """The 5G sites dashboard."""
    q = context.influxql
    kwh_per_gb_max = context.targets.site5g_kwh_per_gb_max
    board = Board(
        context,
        uid=UID,
        title="parkwatch · 5G sites",
        description="5G base-station sites: power, traffic, kWh per GB, sleep modes, mains loss.",
    )
    board.park_variable(measurement=MEASUREMENT)
    board.device_variable(MEASUREMENT, label="Site")
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Power",
                "Site power draw.",
                q(_per_site('mean("power_kw") AS "power_kw"'), alias=LEGEND),
                unit="kwatt",
            ),
        ),
        (
            12,
            timeseries_panel(
                "Traffic",
                "Data volume per second, from the traffic counter.",
                q(
                    _per_site(
                        f'non_negative_derivative(max("traffic_gb"), 1s) * {MBIT_PER_GB} '
                        'AS "traffic_mbps"'
                    ),
                    alias=LEGEND,
                ),
                unit="Mbits",
            ),
        ),
    )
    board.row(
        8,
        (
            8,
            bar_gauge(
                "Energy per GB, per site",
                "kWh per GB over the time range, from the counters; red above the target.",
                q(
                    f'SELECT spread("energy_kwh") / spread("traffic_gb") AS "kwh_per_gb" '
                    f'FROM "{MEASUREMENT}" WHERE {DEVICES} AND $timeFilter '
                    'GROUP BY "park", "device"',
                    alias=LEGEND,
                ),
                unit=KWH_PER_GB,
                thresholds=at_most(kwh_per_gb_max),
                minimum=0,
            ),
        ),
        (
            16,
            timeseries_panel(
                "Energy per GB, per park",
                "Hourly KPI over all the park's sites; the dashed line is the target.",
                q(
                    m.kpi_query(m.columns("site5g_kwh_per_gb"), "1h", '"park"'),
                    alias="$tag_park",
                ),
                unit=KWH_PER_GB,
                thresholds=at_most(kwh_per_gb_max),
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            state_timeline(
                "Sleep level",
                "0 = awake; deeper sleep at low traffic saves energy.",
                q(_per_site('last("sleep_level") AS "sleep_level"', "previous"), alias=LEGEND),
                mappings=text_states(SLEEP_COLOURS),
            ),
        ),
        (
            12,
            state_timeline(
                "On battery",
                "Periods without mains power.",
                q(_per_site('last("on_battery") AS "on_battery"', "previous"), alias=LEGEND),
                mappings=boolean_states(true=("on battery", RED), false=("mains", "green")),
            ),
        ),
    )
    board.row(
        7,
        (
            24,
            timeseries_panel(
                "Cabinet temperature",
                "Inside each site's equipment cabinet.",
                q(_per_site('mean("cabinet_temp_c") AS "cabinet_temp_c"'), alias=LEGEND),
                unit="celsius",
            ),
        ),
    )
    return board
