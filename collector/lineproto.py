"""InfluxDB line protocol encoding: where a decoded message becomes a point.

Hand-rolled rather than ``influxdb_client.Point`` for speed: ``bench/lineproto.py`` measures
both in one run (see the README for the figures). Escaping follows the line-protocol reference:
measurement: comma and space; tag keys and values, field keys: comma, equals sign and space;
string field values: double quote and backslash. Topic ids never contain backslashes or control
characters (``parkwatch.schema.parse_topic`` rejects them), which is what makes tag escaping total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from parkwatch.points import FieldValue

__all__ = [
    "FieldValue",
    "LineEncoder",
    "escape_measurement",
    "escape_tag",
    "field_value",
]


CACHE_LIMIT: Final = 100_000
"""Series and field keys (with their ``=``) remembered by ``LineEncoder``; the caches start over
past this."""
_INF: Final = float("inf")

_TAG_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES: Final = str.maketrans({",": r"\,", " ": r"\ "})
_STRING_ESCAPES: Final = str.maketrans({'"': r"\"", "\\": "\\\\"})


def escape_tag(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_TAG_ESCAPES)


def escape_measurement(text: str) -> str:
    """Escape a measurement name."""
    return text.translate(_MEASUREMENT_ESCAPES)


def field_value(value: FieldValue) -> str:
    """Encode one field value; bool before int because bool is an int in Python."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("line protocol cannot carry NaN or infinity")
        return repr(value)
    if isinstance(value, int):
        return f"{value}i"
    return f'"{value.translate(_STRING_ESCAPES)}"'


class LineEncoder:
    """Encodes points as line-protocol lines, caching the escaped series key and field keys.

    A park's devices send the same series and field names over and over, so escaping them once
    makes encoding several times faster (``bench/lineproto.py``). Caches are bounded. Empty tag
    values are left out (InfluxDB refuses them); tags are written in the order given.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._keys: dict[str, str] = {}

    def encode(
        self,
        measurement: str,
        tags: tuple[tuple[str, str], ...],
        fields: Mapping[str, FieldValue],
        timestamp: int,
    ) -> str:
        """One point as a line; ``tags`` sorted by key, as a tuple (it is the cache key)."""
        return self.line(self.series(measurement, tags), fields, timestamp)

    def series(self, measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
        """The escaped series key (``measurement,tag=value,...``) that starts a line."""
        series = self._series.get((measurement, tags))
        if series is None:
            if len(self._series) >= CACHE_LIMIT:
                self._series.clear()
            series = escape_measurement(measurement) + "".join(
                f",{escape_tag(k)}={escape_tag(v)}" for k, v in tags if v != ""
            )
            self._series[(measurement, tags)] = series
        return series

    def line(self, series: str, fields: Mapping[str, FieldValue], timestamp: int) -> str:
        """A line from a ``series`` key (as made by :meth:`series`), fields and timestamp."""
        keys = self._keys
        parts = []
        for name, value in fields.items():
            key = keys.get(name)
            if key is None:
                if len(keys) >= CACHE_LIMIT:
                    keys.clear()
                key = keys[name] = escape_tag(name) + "="
            if type(value) is float:
                if not -_INF < value < _INF:  # NaN fails both comparisons
                    raise ValueError("line protocol cannot carry NaN or infinity")
                parts.append(key + repr(value))
            else:
                parts.append(key + field_value(value))
        if not parts:
            raise ValueError("a point needs at least one field")
        return f"{series} {','.join(parts)} {timestamp}"
