"""What the dashboards query: measurement names and the InfluxQL expressions of the park KPIs.

Names come from the shared contract where it has them (``parkwatch.events``,
``parkwatch.points``); ``alerts`` and the collector's own metrics are named by the rules stage
and ``parkwatch/selfmetrics.py`` (the query checks in ``tests/dashboards`` run against what they
really write, so a renamed measurement shows up as a blank panel there).

KPI ratios over several windows are recomputed from the summed energies (a mean of hourly
percentages would weight a dark hour like a sunny one), with the same formulas as the KPI
stage (``../shared/domain.md``).
"""

from __future__ import annotations

from typing import Final

from dashboards.influxql import park_filter
from parkwatch.events import (
    ALERTS_MEASUREMENT,
    COLLECTOR_MEASUREMENT,
    DEAD_LETTER_MEASUREMENT,
    KPI_MEASUREMENT,
)
from parkwatch.points import STATUS_MEASUREMENT

__all__ = [
    "ALERTS",
    "CARBON_KG_PER_KWH",
    "CARBON_T_PER_TCE",
    "CO2_T",
    "COLLECTOR",
    "DEAD_LETTERS",
    "KGCE_PER_KWH",
    "KPI",
    "SELF_CONSUMPTION_PCT",
    "SELF_SUFFICIENCY_PCT",
    "STATUS",
    "columns",
    "firing_alerts",
    "kpi_query",
    "offline_devices",
]

KPI: Final = KPI_MEASUREMENT
STATUS: Final = STATUS_MEASUREMENT
ALERTS: Final = ALERTS_MEASUREMENT
COLLECTOR: Final = COLLECTOR_MEASUREMENT
DEAD_LETTERS: Final = DEAD_LETTER_MEASUREMENT

KGCE_PER_KWH: Final = 0.1229
"""Electricity in standard coal equivalent (calorific equivalent, GB/T 2589)."""

SELF_SUFFICIENCY_PCT: Final = (
    '100 * (sum("pv_kwh") - sum("grid_export_kwh")) / sum("load_kwh") AS "self_sufficiency_pct"'
)
SELF_CONSUMPTION_PCT: Final = (
    '100 * (sum("pv_kwh") - sum("grid_export_kwh")) / sum("pv_kwh") AS "self_consumption_pct"'
)
CARBON_T_PER_TCE: Final = (
    f'sum("co2_kg") / (sum("load_kwh") * {KGCE_PER_KWH}) AS "carbon_intensity_t_per_tce"'
)
CARBON_KG_PER_KWH: Final = 'sum("co2_kg") / sum("load_kwh") AS "carbon_intensity_kg_per_kwh"'
CO2_T: Final = 'sum("co2_kg") / 1000 AS "co2_t"'


def kpi_query(select: str, window: str, group_by: str = "") -> str:
    """``select`` from one window's ``park_kpi`` records of the chosen parks (per ``group_by``)."""
    tail = f" GROUP BY {group_by}" if group_by else ""
    return (
        f'SELECT {select} FROM "{KPI}" '
        f"WHERE \"window\" = '{window}' AND {park_filter()} AND $timeFilter{tail}"
    )


def columns(*fields: str) -> str:
    """``"f" AS "f", ...``: each field under its own name (the column a panel expects)."""
    return ", ".join(f'"{field}" AS "{field}"' for field in fields)


def firing_alerts(where: str, group_by: str = "") -> str:
    """Alert series whose latest transition is ``firing``, counted (per ``group_by`` tags).

    Not limited to the dashboard's time range: an alert that fired last week and still fires
    is firing now.
    """
    inner = f'SELECT last("state") AS "state" FROM "{ALERTS}" WHERE {where} GROUP BY *'
    tail = f" GROUP BY {group_by}" if group_by else ""
    return f"""SELECT count("state") AS "firing_alerts" FROM ({inner})
        WHERE "state" = 'firing'{tail}"""


def offline_devices(where: str, group_by: str = "") -> str:
    """Devices whose latest status (birth message or last will) says offline, counted."""
    inner = (
        f'SELECT last("online") AS "online" FROM "{STATUS}" WHERE {where} '
        'GROUP BY "park", "kind", "device"'
    )
    tail = f" GROUP BY {group_by}" if group_by else ""
    return f"""SELECT count("online") AS "offline_devices" FROM ({inner})
        WHERE "online" = false{tail}"""
