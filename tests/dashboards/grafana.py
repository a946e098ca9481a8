"""What Grafana does with a dashboard's InfluxQL before sending it, and what a panel expects back.

Used by the query checks: every target, annotation and template variable of the committed JSON
is interpolated the way Grafana's InfluxDB data source does it (``$timeFilter``,
``$__interval``, multi-value variables as regex alternations, a panel's relative time), run on a
real InfluxDB, and its answer compared with the columns the query names (``AS "alias"``) and
the tags it groups by.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

JSON_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "json"
DATASOURCE_MIN_INTERVAL_MS = 10_000  # jsonData.timeInterval of the provisioned data source
SCREEN_POINTS = 1800  # data points a full-width (24 column) panel asks for


@dataclass(frozen=True)
class Query:
    """One query of a committed dashboard: a panel target, an annotation or a variable."""

    dashboard: str
    where: str
    """Panel title and refId, ``annotation <name>`` or ``variable <name>``."""
    text: str
    time_from: str
    """The dashboard's range start, or the panel's relative time (``now/d``, ``7d``)."""
    width: int = 24
    timezone: str = "Asia/Shanghai"
    variable: str = ""
    multi: bool = False
    """For a variable: whether it takes several values (a fresh dashboard selects All)."""

    @property
    def id(self) -> str:
        """A readable test id."""
        return f"{self.dashboard}: {self.where}"


@functools.cache
def load_dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards by uid."""
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(JSON_DIR.glob("*.json"))
    }


def queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    """Every query of ``dashboard``: variables first (in order), then annotations, panels."""
    uid = dashboard["uid"]
    range_from = dashboard["time"]["from"]
    zone = dashboard.get("timezone", "Asia/Shanghai")
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        yield Query(uid, f"variable {variable['name']}", text, range_from, 24, zone,
                    variable["name"], bool(variable.get("multi")))  # fmt: skip
    for annotation in dashboard.get("annotations", {}).get("list", []):
        yield Query(uid, f"annotation {annotation['name']}", annotation["target"]["query"],
                    range_from, 24, zone)  # fmt: skip
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield Query(
                uid,
                f"{panel['title']} [{target['refId']}]",
                target["query"],
                panel.get("timeFrom") or range_from,
                panel["gridPos"]["w"],
                zone,
            )


def time_range(time_from: str, now: datetime, zone: str) -> tuple[datetime, datetime]:
    """The absolute range Grafana gives ``time_from``..now (``now-24h``, ``7d``, ``now/d``)."""
    local = now.astimezone(ZoneInfo(zone))
    if time_from == "now/d":
        return local.replace(hour=0, minute=0, second=0, microsecond=0), now
    if time_from == "now/M":
        return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now
    found = re.fullmatch(r"(?:now-)?(\d+)([mhd])", time_from)
    if found is None:
        raise ValueError(f"relative time {time_from!r} not handled")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[found[2]]
    return now - timedelta(**{unit: int(found[1])}), now


# Grafana's rangeutil.roundInterval: (below this many ms, use this interval).
_ROUNDING = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
)  # fmt: skip


def interval_ms(start: datetime, end: datetime, width: int) -> int:
    """``$__interval`` in ms: range / max data points, at least the data source's minimum."""
    points = max(1, round(width / 24 * SCREEN_POINTS))
    raw = max((end - start).total_seconds() * 1000 / points, DATASOURCE_MIN_INTERVAL_MS)
    for below, interval in _ROUNDING:
        if raw < below:
            return interval
    return 31536000000


def influx_duration(ms: int) -> str:
    """An InfluxQL duration literal for ``ms``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def interpolate(
    text: str, variables: Mapping[str, Sequence[str]], start: datetime, end: datetime, width: int
) -> str:
    """``text`` as Grafana's InfluxDB data source sends it."""
    step = interval_ms(start, end, width)
    from_ms, to_ms = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
    text = text.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    text = text.replace("$__interval_ms", str(step)).replace("$__interval", influx_duration(step))

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in variables:
            raise KeyError(f"variable ${name} is used but not defined")
        chosen = [re.escape(v) for v in variables[name]]
        # Grafana formats a multi-value (or All) variable in a regex as an alternation.
        return chosen[0] if len(chosen) == 1 else "(" + "|".join(chosen) + ")"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def _top_level(text: str, keyword: str) -> int:
    """Index of ``keyword`` outside parentheses (the outer statement's clause), or -1."""
    depth = 0
    upper = text.upper()
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if depth == 0 and upper.startswith(keyword, i):
            return i
    return -1


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def expected_columns(text: str) -> list[str]:
    """The aliases of the outer SELECT, in order (every expression must have one)."""
    start = _top_level(text, "SELECT ") + len("SELECT ")
    end = _top_level(text, " FROM ")
    aliases = []
    for item in _split(text[start:end]):
        found = re.search(r'\sAS\s+"(\w+)"$', item)
        if found is None:
            raise AssertionError(f"select expression without AS alias: {item!r}")
        aliases.append(found[1])
    return aliases


def expected_tags(text: str) -> list[str]:
    """The tags the outer statement groups by (``*`` excluded)."""
    at = _top_level(text, " GROUP BY ")
    if at < 0:
        return []
    clause = text[at + len(" GROUP BY ") :]
    clause = re.split(r"\s(?:fill|LIMIT|SLIMIT|ORDER)\b", clause)[0]
    return [item.strip('"') for item in _split(clause) if item.startswith('"')]
