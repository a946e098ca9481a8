"""City overview: every park ranked by the grading's core indicators, live.

Answers: which parks are green today and this month (self-sufficiency, carbon per unit of
energy), how much they emit, and where something is wrong right now (firing alerts, devices
offline).
"""

from __future__ import annotations

from typing import Final

from dashboards import measurements as m
from dashboards.board import Board, BuildContext
from dashboards.influxql import park_filter
from dashboards.panels import (
    KG_PER_KWH,
    T_PER_TCE,
    at_least,
    at_most,
    stat_panel,
    table_panel,
    timeseries_panel,
)

__all__ = ["UID", "build"]

UID: Final = "parkwatch-city"
TODAY: Final = "now/d"
THIS_MONTH: Final = "now/M"
PARKS: Final = park_filter()


def _kpi_totals(window: str, group_by: str = "") -> str:
    return m.kpi_query(
        f"{m.SELF_SUFFICIENCY_PCT}, {m.CARBON_T_PER_TCE}, {m.CARBON_KG_PER_KWH}, {m.CO2_T}, "
        'sum("pv_kwh") / 1000 AS "pv_mwh", sum("load_kwh") / 1000 AS "load_mwh"',
        window,
        group_by,
    )


def build(context: BuildContext) -> Board:
    """The City overview dashboard."""
    targets = context.targets
    q = context.influxql
    kg_per_kwh_max = targets.carbon_intensity_t_per_tce_max * m.KGCE_PER_KWH
    board = Board(
        context,
        uid=UID,
        title="parkwatch · City overview",
        description="Every park ranked by self-sufficiency and carbon intensity, live.",
    )
    board.park_variable()

    # "Today" sums the closed 1-minute KPI windows since local midnight: a 1-day window only
    # closes after the day is over.
    board.row(
        4,
        (
            4,
            stat_panel(
                "Self-sufficiency today",
                "(PV - export) / load over the chosen parks since local midnight.",
                q(m.kpi_query(f"{m.SELF_SUFFICIENCY_PCT}", "1m")),
                unit="percent",
                thresholds=at_least(targets.self_sufficiency_pct_min),
                time_from=TODAY,
                decimals=1,
            ),
        ),
        (
            4,
            stat_panel(
                "Carbon intensity today",
                "tCO2 per tce of energy used (scope 2, location-based): the zero-carbon core "
                "indicator.",
                q(m.kpi_query(f"{m.CARBON_T_PER_TCE}", "1m")),
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
                "Grid import x emission factor, tonnes.",
                q(m.kpi_query(f"{m.CO2_T}", "1m")),
                unit="masst",
                time_from=TODAY,
                decimals=1,
            ),
        ),
        (
            4,
            stat_panel(
                "PV today",
                "PV energy generated since local midnight.",
                q(m.kpi_query('sum("pv_kwh") AS "pv_kwh"', "1m")),
                unit="kwatth",
                time_from=TODAY,
                decimals=0,
            ),
        ),
        (
            4,
            stat_panel(
                "Firing alerts",
                "Alert series firing now in the chosen parks.",
                q(m.firing_alerts(PARKS)),
                unit="none",
                thresholds=at_most(1),
                no_value="0",
            ),
        ),
        (
            4,
            stat_panel(
                "Devices offline",
                "Devices whose last status message (or MQTT last will) says offline.",
                q(m.offline_devices(PARKS)),
                unit="none",
                thresholds=at_most(1),
                no_value="0",
            ),
        ),
    )

    units = {
        "self_sufficiency_pct": "percent",
        "carbon_intensity_t_per_tce": T_PER_TCE,
        "carbon_intensity_kg_per_kwh": KG_PER_KWH,
        "co2_t": "masst",
        "pv_mwh": "mwatth",
        "load_mwh": "mwatth",
    }
    colours = {
        "self_sufficiency_pct": at_least(targets.self_sufficiency_pct_min),
        "carbon_intensity_t_per_tce": at_most(targets.carbon_intensity_t_per_tce_max),
        "carbon_intensity_kg_per_kwh": at_most(kg_per_kwh_max),
        "offline_devices": at_most(1),
        "firing_alerts": at_most(1),
    }
    board.row(
        9,
        (
            24,
            table_panel(
                "Parks today",
                "Ranked by self-sufficiency since local midnight; click a park to open it.",
                q(_kpi_totals("1m", '"park"'), result_format="table"),
                q(m.firing_alerts(PARKS, '"park"'), ref_id="B", result_format="table"),
                q(m.offline_devices(PARKS, '"park"'), ref_id="C", result_format="table"),
                units=units,
                thresholds=colours,
                sort_by="self_sufficiency_pct",
                time_from=TODAY,
                link_parks=True,
            ),
        ),
    )
    board.row(
        9,
        (
            24,
            table_panel(
                "Parks this month",
                "The yearly grading's indicators, month to date (closed hourly KPI windows).",
                q(_kpi_totals("1h", '"park"'), result_format="table"),
                units=units,
                thresholds=colours,
                sort_by="self_sufficiency_pct",
                time_from=THIS_MONTH,
                link_parks=True,
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "Self-sufficiency by park",
                "Hourly; the dashed line is the target.",
                q(
                    m.kpi_query(m.columns("self_sufficiency_pct"), "1h", '"park"'),
                    alias="$tag_park",
                ),
                unit="percent",
                thresholds=at_least(targets.self_sufficiency_pct_min),
            ),
        ),
        (
            12,
            timeseries_panel(
                "Carbon intensity by park",
                "Hourly tCO2 per tce; the dashed line is the target.",
                q(
                    m.kpi_query(m.columns("carbon_intensity_t_per_tce"), "1h", '"park"'),
                    alias="$tag_park",
                ),
                unit=T_PER_TCE,
                thresholds=at_most(targets.carbon_intensity_t_per_tce_max),
            ),
        ),
    )
    board.row(
        8,
        (
            12,
            timeseries_panel(
                "PV by park",
                "Live PV output from the park meters.",
                q(
                    f'SELECT mean("pv_kw") AS "pv_kw" FROM "microgrid" WHERE {PARKS} '
                    'AND $timeFilter GROUP BY time($__interval), "park" fill(none)',
                    alias="$tag_park",
                ),
                unit="kwatt",
                stacked=True,
            ),
        ),
        (
            12,
            timeseries_panel(
                "Grid import by park",
                "Live power drawn from the grid.",
                q(
                    f'SELECT mean("grid_import_kw") AS "grid_import_kw" FROM "microgrid" '
                    f'WHERE {PARKS} AND $timeFilter GROUP BY time($__interval), "park" fill(none)',
                    alias="$tag_park",
                ),
                unit="kwatt",
                stacked=True,
            ),
        ),
    )
    return board
