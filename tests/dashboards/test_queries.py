"""No blank panel ships: every query of every committed dashboard, run on a real InfluxDB 1.x.

``test_query_on_a_simulated_day``: two parks simulated from yesterday's local midnight until
now (simulators -> real Mosquitto -> the real collector -> real InfluxDB, at speed, with faults:
a charger faulted, a storage system overheating, a 5G site on battery, a device offline), and
the collector's own metrics sampled by ``parkwatch.selfmetrics`` while it ran. Each variable,
annotation and panel target is interpolated as Grafana would and must return non-empty series
with every column it names (``AS "alias"``) holding a value and every tag it groups by.

``test_query_on_contract_data`` runs the ``park_kpi`` and ``alerts`` queries also on rows shaped
exactly as the shared contract describes them (every field, every tag), so a query that only
passes because the simulated day happened to leave a field out would still be caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.sink import make_sink
from parkwatch.events import KPI_FIELDS
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.selfmetrics import SelfMetrics
from simulators.faults import Scenario
from simulators.fleet import FleetSpec
from simulators.runner import run_fleet
from simulators.simtime import SHANGHAI
from tests.dashboards.grafana import (
    Query,
    expected_columns,
    expected_tags,
    interpolate,
    load_dashboards,
    queries,
    time_range,
)
from tests.helpers import collector_settings, metric_value, running_collector, until

pytestmark = pytest.mark.servers

DERIVED = frozenset({"park_kpi", "alerts"})
"""Measurements the collector derives (KPI and rule stages) rather than receives."""
FLEET = FleetSpec.model_validate(
    {
        "step_s": 60,
        "intervals_s": {"microgrid": 60, "storage": 60, "site5g": 60, "charger": 60},
        "parks": [
            {
                "id": park,
                "storage": {"count": 1},
                "site5g": {"count": 1},
                "charger": {"count": 2, "connectors": 1},
            }
            for park in ("zhangjiang", "lingang")
        ],
    }
)
REAL_SECONDS = 10.0
"""How long the simulated span takes to publish."""
SELF_METRICS_SPAN_S = 22.0
"""Sampled collector metrics must span this long: two 10 s buckets of the health panels."""


def _measurements(text: str) -> set[str]:
    return set(re.findall(r'FROM "(\w+)"', text))


def _cases() -> Iterator[Any]:
    for dashboard in load_dashboards().values():
        for query in queries(dashboard):
            yield pytest.param(query, id=query.id)


CASES = list(_cases())


@dataclass
class Day:
    """The simulated data in InfluxDB and what is needed to query it like Grafana."""

    server: InfluxDB1
    database: str
    now: datetime
    values: dict[tuple[str, str], list[str]]
    """Template variable values per (dashboard, variable), filled as the variables run."""


def _scenario(span_s: float) -> Scenario:
    """Faults in the last 24 h of the span, so the default (now-24h) ranges show them."""

    def at(hours_before_end: float) -> float:
        return span_s - hours_before_end * 3600

    return Scenario.model_validate(
        {
            "faults": [
                {"fault": "charger_faulted", "device": "zhangjiang/charger/cp-01",
                 "at": at(6), "duration": 3600, "error_code": "HighTemperature"},
                {"fault": "storage_overtemp", "device": "lingang/storage/bess-01",
                 "at": at(5), "duration": 7200, "heat_c": 35},
                {"fault": "site_on_battery", "device": "lingang/site5g/gnb-01",
                 "at": at(4), "duration": 3600},
                {"fault": "offline", "device": "lingang/charger/cp-02",
                 "at": at(3), "duration": 1800},
            ]
        }
    )  # fmt: skip


async def _simulate(
    tmp: Path, broker: Mosquitto, server: InfluxDB1, database: str
) -> tuple[int, int]:
    """Publish the span through a real collector; sample its metrics into InfluxDB."""
    now = datetime.now(SHANGHAI)
    start = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    span_s = math.floor((now - start).total_seconds() / 60) * 60
    prefix = "t-dashboards-day"
    settings = collector_settings(tmp, broker, server, database, prefix)
    lines: list[str] = []

    async def keep(point: Any) -> None:
        lines.append(point.line)

    async with running_collector(settings) as (collector, running):
        sampler = SelfMetrics(collector.metrics.registry, instance="test-collector",
                              interval_s=0.25)  # fmt: skip
        sampling = asyncio.create_task(sampler.run(keep))
        first = datetime.now(UTC)
        stats = await run_fleet(
            FLEET,
            mqtt_url=broker.url,
            prefix=prefix,
            speed=span_s / REAL_SECONDS,
            start=start,
            seed=7,
            scenario=_scenario(span_s),
            duration_s=span_s,
        )
        await until(
            lambda: (
                metric_value(collector.metrics, "parkwatch_points_written_total") >= stats.acked
            ),
            timeout=60,
            what="every point written",
            alive=running,
        )
        await until(
            lambda: (datetime.now(UTC) - first).total_seconds() >= SELF_METRICS_SPAN_S,
            timeout=60, what="self-metrics span",
        )  # fmt: skip
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    sink = make_sink(settings.influx)
    await sink.start()
    try:
        await sink.write("\n".join(lines).encode())
    finally:
        await sink.close()
    return stats.acked, len(lines)


@pytest.fixture(scope="module")
def day(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto, influxdb: InfluxDB1
) -> Iterator[Day]:
    """A simulated park day in a database of its own, shared by the module's cases."""
    database = "t_dashboards_day"
    influxdb.create_database(database)
    acked, sampled = asyncio.run(
        _simulate(tmp_path_factory.mktemp("day"), mosquitto, influxdb, database)
    )
    assert acked > 10_000, acked
    assert sampled > 20, sampled
    yield Day(influxdb, database, datetime.now(UTC), {})
    influxdb.drop_database(database)


def _run(server: InfluxDB1, database: str, text: str) -> list[dict[str, Any]]:
    params = {"db": database, "q": text, "epoch": "ms"}
    (result,) = server._request("GET", params, f"query {text[:80]}")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def check(query: Query, server: InfluxDB1, database: str, now: datetime,
          values: dict[tuple[str, str], list[str]]) -> None:  # fmt: skip
    """Run ``query`` as Grafana would and check it fills its panel (or variable)."""
    chosen = {name: vals for (uid, name), vals in values.items() if uid == query.dashboard}
    start, end = time_range(query.time_from, now, query.timezone)
    text = interpolate(query.text, chosen, start, end, query.width)
    series = _run(server, database, text)
    assert series, f"no series for {text}"
    if query.variable:
        found = sorted({row[1] for s in series for row in s["values"]})
        assert found, f"variable {query.variable} has no values: {text}"
        # A fresh dashboard selects All of a multi-value variable, else the first value.
        values[(query.dashboard, query.variable)] = found if query.multi else found[:1]
        return
    columns = expected_columns(query.text)
    tags = expected_tags(query.text)
    for one in series:
        assert one["columns"] == ["time", *columns], f"{one['columns']} for {text}"
        assert set(tags) <= set(one.get("tags", {})), f"{one.get('tags')} lacks {tags}: {text}"
    for index, column in enumerate(columns, start=1):
        assert any(row[index] is not None for one in series for row in one["values"]), (
            f"column {column} is empty: {text}"
        )


@pytest.mark.parametrize("query", CASES)
def test_query_on_a_simulated_day(query: Query, day: Day) -> None:
    _prepare_variables(query, day.server, day.database, day.now, day.values)
    check(query, day.server, day.database, day.now, day.values)


def _prepare_variables(query: Query, server: InfluxDB1, database: str, now: datetime,
                       values: dict[tuple[str, str], list[str]]) -> None:  # fmt: skip
    """Run the dashboard's variables before its other queries, as Grafana does."""
    for variable in queries(load_dashboards()[query.dashboard]):
        if variable == query or not variable.variable:
            return
        if (query.dashboard, variable.variable) not in values:
            check(variable, server, database, now, values)


CONTRACT_PARKS = ("lingang", "zhangjiang")
WINDOWS = {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}


def _kpi_lines(now: datetime) -> list[str]:
    """``park_kpi`` rows as the contract describes them, for every window of the last 2 days."""
    lines = []
    day_start = (now.astimezone(SHANGHAI) - timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    for park in CONTRACT_PARKS:
        for window, size in WINDOWS.items():
            t = day_start
            while t + timedelta(seconds=size) <= now - timedelta(minutes=2):
                hours = size / 3600
                fields = {name: 1.0 + index for index, name in enumerate(KPI_FIELDS)}
                fields |= {"pv_kwh": 500 * hours, "load_kwh": 1000 * hours,
                           "grid_export_kwh": 50 * hours, "co2_kg": 300 * hours}  # fmt: skip
                if window == "1d":
                    fields["storage_rte_pct"] = 88.0
                body = ",".join(f"{k}={v!r}" for k, v in fields.items())
                lines.append(f"park_kpi,park={park},window={window} {body} "
                             f"{round(t.timestamp() * 1000)}")  # fmt: skip
                t += timedelta(seconds=size)
    return lines


def _alert_lines(now: datetime) -> list[str]:
    """``alerts`` transitions as the contract describes them: KPI, device and charger alerts."""
    ms = round(now.timestamp() * 1000)
    hour = 3_600_000
    series = (
        ("alertname=SelfSufficiencyLow,park={park},severity=major", 1),
        ("alertname=StorageCellHot,device=bess-01,kind=storage,park={park},severity=critical", 2),
        ("alertname=ChargerFaulted,connector=1,device=cp-01,kind=charger,park={park},"
         "severity=major", 3),
    )  # fmt: skip
    lines = []
    for park in CONTRACT_PARKS:
        for tags, offset in series:
            key = tags.format(park=park)
            for state, at in (("firing", offset + 5), ("resolved", offset + 4),
                              ("firing", offset)):  # fmt: skip
                lines.append(f'alerts,{key} state="{state}",value={float(offset)},'
                             f'summary="{park}: {state} {offset}" {ms - at * hour}')  # fmt: skip
    return lines


CONTRACT_CASES = [
    pytest.param(query, id=query.id)
    for dashboard in load_dashboards().values()
    for query in queries(dashboard)
    if not query.variable and _measurements(query.text) & DERIVED
]


@pytest.fixture(scope="module")
def contract_data(influxdb: InfluxDB1) -> Iterator[tuple[str, datetime]]:
    """A database holding ``park_kpi`` and ``alerts`` rows shaped as the contract says."""
    database = "t_dashboards_contract"
    now = datetime.now(UTC)
    influxdb.create_database(database)
    influxdb.write(database, "\n".join(_kpi_lines(now) + _alert_lines(now)))
    yield database, now
    influxdb.drop_database(database)


@pytest.mark.parametrize("query", CONTRACT_CASES)
def test_query_on_contract_data(
    query: Query, influxdb: InfluxDB1, contract_data: tuple[str, datetime]
) -> None:
    database, now = contract_data
    multi = {
        v["name"]: v.get("multi", False)
        for v in load_dashboards()[query.dashboard].get("templating", {}).get("list", [])
    }
    parks = list(CONTRACT_PARKS) if multi.get("park") else [CONTRACT_PARKS[0]]
    check(query, influxdb, database, now, {(query.dashboard, "park"): parks})
