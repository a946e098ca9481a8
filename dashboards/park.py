"""Park: one park's energy flows, green KPIs, emissions and peak demand, with its alerts.

Answers: where does this park's energy come from and go right now, is it meeting its
self-sufficiency and carbon targets, what does it emit, and how high was its 15-minute peak.
Linked from everywhere as ``/d/parkwatch-park?var-park=<park>``.
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.influxql import park_filter
from dashboards.panels import T_PER_TCE, at_least, at_most, band, stat_panel, timeseries_panel

__all__ = ["UID", "build"]

UID: Final = "parkwatch-park"
TODAY: Final = "now/d"
PARK: Final = park_filter()
GRID_HZ_LOW: Final = 49.5
GRID_HZ_HIGH: Final = 50.5


def _today(select: str, window: str = "1m") -> str:
    return m.kpi_query(select, window)


def _hourly(*fields: str) -> str:
    return m.kpi_query(m.columns(*fields), "1h")


def _summed_power(measurement: str, fields: dict[str, str]) -> str:
    """Power summed over the park's devices: a mean per device and interval, then the sum."""
    inner = ", ".join(f'mean("{field}") AS "{alias}"' for alias, field in fields.items())
    outer = ", ".join(f'sum("{alias}") AS "{alias}"' for alias in fields)
    return f"""SELECT {outer} FROM (SELECT {inner} FROM "{measurement}"
        WHERE {PARK} AND $timeFilter GROUP BY time($__interval), "device")
        WHERE $timeFilter GROUP BY time($__interval)"""


def build(context: BuildContext) -> Board:
    """The Park dashboard."""
    targets = context.targets
    q = context.influxql
    board = Board(
        context,
        uid=UID,
        title="parkwatch · Park",
        description="One park: energy flows, green KPIs, emissions, peak demand and alerts.",
    )
    board.park_variable(multi=False)
    board.alert_annotations(
        f'SELECT "summary" AS "summary", "state" AS "state" FROM "{m.ALERTS}" '
        f"WHERE {PARK} AND $timeFilter"
    )
    board.row(
        4,
        (
            4,
            stat_panel(
                "Self-sufficiency today",
                "(PV - export) / load since local midnight.",
                q(_today(m.SELF_SUFFICIENCY_PCT)),
                unit="percent",
                thresholds=at_least(targets.self_sufficiency_pct_min),
                time_from=TODAY,
                decimals=1,
            ),
        ),
        (
            4,
            stat_panel(
                "Self-consumption today",
                "(PV - export) / PV: the share of the PV used on site.",
                q(_today(m.SELF_CONSUMPTION_PCT)),
                unit="percent",
                time_from=TODAY,
                decimals=1,
            ),
        ),
        (
            4,
            stat_panel(
                "Carbon intensity today",
                "tCO2 per tce of energy used.",
                q(_today(m.CARBON_T_PER_TCE)),
                unit=T_PER_TCE,
                thresholds=at_most(targets.carbon_intensity_t_per_tce_max),
                time_from=TODAY,
                decimals=2,
            ),
        ),
        (
            4,
            stat_panel(
                "CO2 today",
                "Grid import x the park's emission factor.",
                q(_today(m.CO2_T)),
                unit="masst",
                time_from=TODAY,
                decimals=2,
            ),
        ),
        (
            4,
            stat_panel(
                "Peak demand today",
                "Highest 15-minute average grid import since local midnight.",
                q(_today('max("peak_demand_kw") AS "peak_demand_kw"', window="15m")),
                unit="kwatt",
                time_from=TODAY,
                decimals=0,
            ),
        ),
        (
            4,
            stat_panel(
                "Firing alerts",
                "Alert series of this park firing now.",
                q(m.firing_alerts(PARK)),
                unit="none",
                thresholds=at_most(1),
                no_value="0",
            ),
        ),
    )
    board.row(
        9,
        (
            24,
            timeseries_panel(
                "Energy flows",
                "Live power: PV, load, grid import and export summed over the park's meters; "
                "storage + discharging / - charging.",
                q(
                    _summed_power(
                        "microgrid",
                        {
                            "pv_kw": "pv_kw",
                            "load_kw": "load_kw",
                            "grid_import_kw": "grid_import_kw",
                            "grid_export_kw": "grid_export_kw",
                        },
                    )
                ),
                q(_summed_power("storage", {"storage_kw": "power_kw"}), ref_id="B"),
                unit="kwatt",
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Energy per hour",
                "From the meters' counters, per closed hour.",
                q(
                    _hourly(
                        "pv_kwh",
                        "load_kwh",
                        "grid_import_kwh",
                        "grid_export_kwh",
                        "storage_charged_kwh",
                        "storage_discharged_kwh",
                    )
                ),
                unit="kwatth",
                bars=True,
            ),
        ),
        (
            12,
            timeseries_panel(
                "Self-sufficiency and self-consumption",
                "Hourly; the dashed line is the self-sufficiency target.",
                q(_hourly("self_sufficiency_pct", "self_consumption_pct")),
                unit="percent",
                thresholds=at_least(targets.self_sufficiency_pct_min),
            ),
        ),
    )
    board.row(
        8,
        (
            8,
            timeseries_panel(
                "Emissions per hour",
                "Scope 2, location-based: grid import x emission factor.",
                q(_hourly("co2_kg")),
                unit="masskg",
                bars=True,
            ),
        ),
        (
            8,
            timeseries_panel(
                "Carbon intensity",
                "Hourly tCO2 per tce; the dashed line is the target.",
                q(_hourly("carbon_intensity_t_per_tce")),
                unit=T_PER_TCE,
                thresholds=at_most(targets.carbon_intensity_t_per_tce_max),
            ),
        ),
        (
            8,
            timeseries_panel(
                "15-minute peak demand",
                "Average grid import of each 15-minute window (the tariff's demand measure).",
                q(m.kpi_query(m.columns("peak_demand_kw"), "15m")),
                unit="kwatt",
                bars=True,
            ),
        ),
    )
    board.row(
        6,
        (
            24,
            timeseries_panel(
                "Grid frequency",
                "At the park's meters; outside 49.5-50.5 Hz is red.",
                q(
                    f'SELECT mean("frequency_hz") AS "frequency_hz" FROM "microgrid" '
                    f'WHERE {PARK} AND $timeFilter GROUP BY time($__interval), "device" '
                    "fill(none)",
                    alias="$tag_device",
                ),
                unit="hertz",
                thresholds=band(GRID_HZ_LOW, GRID_HZ_HIGH),
            ),
        ),
    )
    return board
