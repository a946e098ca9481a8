"""Storage: every battery system's state of charge, power, cell temperatures, efficiency, health.

Answers: is each battery inside its healthy SOC window, charging or discharging when the tariff
says so, running hot, losing efficiency (round-trip), or near the end of its first life (SOH).
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.influxql import park_filter
from dashboards.panels import at_least, at_most, band, bar_gauge, timeseries_panel

__all__ = ["UID", "build"]

UID: Final = "parkwatch-storage"
MEASUREMENT: Final = "storage"
DEVICES: Final = f'{park_filter()} AND "device" =~ /^$device$/'
# Defaults of the shipped rule pack (../shared/domain.md): healthy SOC window, LFP charging
# temperature limit, end of first life.
SOC_LOW_PCT: Final = 10.0
SOC_HIGH_PCT: Final = 90.0
CELL_HOT_C: Final = 45.0
SOH_END_OF_LIFE_PCT: Final = 80.0
LEGEND: Final = "$tag_park/$tag_device"


def _per_device(select: str) -> str:
    return f"""SELECT {select} FROM "{MEASUREMENT}" WHERE {DEVICES} AND $timeFilter
        GROUP BY time($__interval), "park", "device" fill(none)"""


def build(context: BuildContext) -> Board:
    """The Storage dashboard."""
    q = context.influxql
    board = Board(
        context,
        uid=UID,
        title="parkwatch · Storage",
        description="Battery systems: SOC, power, cell temperatures, round-trip efficiency, SOH.",
    )
    board.park_variable(measurement=MEASUREMENT)
    board.device_variable(MEASUREMENT, label="Battery")
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "State of charge",
                "Healthy window 10-90 %.",
                q(_per_device('mean("soc_pct") AS "soc_pct"'), alias=LEGEND),
                unit="percent",
                thresholds=band(SOC_LOW_PCT, SOC_HIGH_PCT),
            ),
        ),
        (
            12,
            timeseries_panel(
                "Power",
                "+ discharging, - charging.",
                q(_per_device('mean("power_kw") AS "power_kw"'), alias=LEGEND),
                unit="kwatt",
            ),
        ),
    )
    board.row(
        8,
        (
            24,
            timeseries_panel(
                "Cell temperature, max and min",
                "Hottest and coolest cell of each system; LFP cells charge up to 45 degC.",
                q(
                    _per_device(
                        'mean("cell_temp_max_c") AS "cell_temp_max_c", '
                        'mean("cell_temp_min_c") AS "cell_temp_min_c"'
                    ),
                    alias="$tag_device $col",
                ),
                unit="celsius",
                thresholds=at_most(CELL_HOT_C),
            ),
        ),
    )
    board.row(
        7,
        (
            8,
            bar_gauge(
                "Round-trip efficiency, per system",
                "Discharged / charged energy over the time range, from the counters.",
                q(
                    f'SELECT 100 * spread("discharged_kwh") / spread("charged_kwh") '
                    f'AS "rte_pct" FROM "{MEASUREMENT}" WHERE {DEVICES} AND $timeFilter '
                    'GROUP BY "park", "device"',
                    alias=LEGEND,
                ),
                unit="percent",
                thresholds=at_least(context.targets.storage_rte_pct_min),
                minimum=50,
                maximum=100,
            ),
        ),
        (
            8,
            bar_gauge(
                "State of health, per system",
                "Usable capacity against nameplate; below 80 % is the end of first life.",
                q(
                    f'SELECT last("soh_pct") AS "soh_pct" FROM "{MEASUREMENT}" '
                    f'WHERE {DEVICES} AND $timeFilter GROUP BY "park", "device"',
                    alias=LEGEND,
                ),
                unit="percent",
                thresholds=at_least(SOH_END_OF_LIFE_PCT),
                minimum=50,
                maximum=100,
            ),
        ),
        (
            8,
            timeseries_panel(
                "Round-trip efficiency, per park and day",
                "Last 7 days, from the daily KPI windows (a day's window closes after "
                "midnight); the dashed line is the target.",
                q(
                    m.kpi_query(m.columns("storage_rte_pct"), "1d", '"park"'),
                    alias="$tag_park",
                ),
                unit="percent",
                thresholds=at_least(context.targets.storage_rte_pct_min),
                bars=True,
                time_from="7d",
            ),
        ),
    )
    return board
