"""Reading back what the collector stored in InfluxDB: raw telemetry and ``park_kpi`` points."""

from __future__ import annotations

from typing import Any

from parkwatch.localservers import InfluxDB1
from parkwatch.schema import Kind
from tests.kpi.reference import SIZES

CHUNK_MS = 6 * 3_600_000  # rows per query stay in the thousands
KpiRows = dict[tuple[str, int], dict[str, float]]


def telemetry_count(influx: InfluxDB1, database: str) -> int:
    """Telemetry points stored, over every kind (one per message)."""
    total = 0
    for kind in Kind:
        # S608: InfluxQL built from constants, not from input.
        rows = influx.query(database, f'SELECT count(*) FROM "{kind.value}"')  # noqa: S608
        if rows:
            total += max(int(v) for k, v in rows[0].items() if k.startswith("count_"))
    return total


def read_telemetry(
    influx: InfluxDB1, database: str, start_ms: int, end_ms: int
) -> dict[str, list[dict[str, Any]]]:
    """Every telemetry row from ``start_ms`` to ``end_ms``, by kind (None for absent fields)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind in Kind:
        kind_rows = rows.setdefault(kind.value, [])
        for low in range(start_ms, end_ms + 1, CHUNK_MS):
            where = f"time >= {low}ms AND time < {low + CHUNK_MS}ms"
            kind_rows += influx.query(database, f'SELECT * FROM "{kind.value}" WHERE {where}')  # noqa: S608
    return rows


def read_kpis(influx: InfluxDB1, database: str, park: str) -> KpiRows:
    """Every ``park_kpi`` point of ``park``, by (window, start), without its absent fields."""
    kpis: KpiRows = {}
    for row in influx.query(database, f"SELECT * FROM park_kpi WHERE park = '{park}'"):  # noqa: S608
        key = (str(row["window"]), int(row["time"]))
        kpis[key] = {
            name: float(value)
            for name, value in row.items()
            if name not in ("time", "park", "window") and value is not None
        }
    return kpis


def closed_by(kpis: KpiRows, newest_ms: int, lateness_ms: int = 60_000) -> KpiRows:
    """The windows that the data itself closed: end + lateness before the newest reading.

    Windows after it close later, as the park's clock moves on with the wall clock.
    """
    return {
        (window, start): fields
        for (window, start), fields in kpis.items()
        if start + SIZES[window] + lateness_ms < newest_ms
    }
