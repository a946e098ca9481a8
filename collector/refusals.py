"""What the database refused, remembered, so the same refusal costs no more write requests.

InfluxDB answers HTTP 400 to a batch in which some lines conflict in field type with what it
holds, or would create a series beyond a cardinality limit, and stores the rest. The writer finds
the refused lines by bisecting, which costs about ``2 log2(n)`` requests per bad line: with 10 %
of the messages conflicting that was a write request per message. So the writer remembers two
things the answers teach it, and screens every batch against them before writing:

* **Field types**: ``(measurement, field) -> type`` from InfluxDB's "field type conflict: input
  field "f" on measurement "m" is type float, already exists as type integer". A line that gives
  a remembered field another type is refused before the write (reason ``rejected_by_sink``).
  InfluxDB 1.x keeps one type per field and measurement (per shard), so that is the key.
* **Refused series**: the series key (measurement and tags) of a line that bisection isolated as
  refused by ``max-series-per-database`` or ``max-values-per-tag`` (reason ``series_limit``):
  later lines of that device are refused before the write.

Memory is bounded: at most ``max_entries`` of each kind (the least recently used go first), and
each is forgotten ``ttl_s`` after it was learnt, since a new shard may take a new type, and an
operator may raise a limit or drop series. Until then, lines InfluxDB would now take are still
dead-lettered (kept with their payload, never lost).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, NamedTuple

from collector.messages import Reason
from parkwatch.errors import FieldTypeConflict, SinkRejected

__all__ = [
    "MAX_ENTRIES",
    "TTL_S",
    "RefusalMemory",
    "Refused",
    "field_types",
    "refusal_of",
    "series_key",
]

MAX_ENTRIES: Final = 10_000
"""Field types and refused series remembered, each (a series key is ~100 bytes: ~1 MB each)."""
TTL_S: Final = 600.0
"""Seconds a refusal is remembered."""

_SERIES: Final = re.compile(r"(?:[^ \\]|\\.)*")  # up to the first unescaped space
_MEASUREMENT: Final = re.compile(r"(?:[^, \\]|\\.)*")
_FIELD: Final = re.compile(r'((?:[^=, \\]|\\.)+)=("(?:[^"\\]|\\.)*"|[^, ]*)([, ]|$)')
_UNESCAPE: Final = re.compile(r"\\([,= ])")
_BOOLEANS: Final = frozenset(
    {"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"}
)


class Refused(NamedTuple):
    """Why a line is refused: the dead-letter reason and a detail for the record."""

    reason: str
    detail: str


def refusal_of(error: SinkRejected) -> Refused:
    """The reason and detail for lines ``error`` refused."""
    return Refused(Reason.SERIES_LIMIT if error.limit else Reason.REJECTED_BY_SINK, str(error))


def series_key(line: str) -> str:
    """A line's series key as written: measurement and tags, up to the first unescaped space."""
    match = _SERIES.match(line)
    return match.group(0) if match else line


def _measurement(line: str) -> str:
    match = _MEASUREMENT.match(line)
    return _UNESCAPE.sub(r"\1", match.group(0) if match else line)


def _value_type(value: str) -> str:
    """InfluxDB's name for the type of an encoded field value."""
    if value.startswith('"'):
        return "string"
    if value.endswith("i"):
        return "integer"
    if value.endswith("u"):
        return "unsigned"
    return "boolean" if value in _BOOLEANS else "float"


def field_types(line: str) -> dict[str, str]:
    """The fields of a line and InfluxDB's name for each one's type (malformed tail: ignored)."""
    key = series_key(line)
    position, types = len(key) + 1, {}
    while position < len(line):
        match = _FIELD.match(line, position)
        if match is None:
            break
        types[_UNESCAPE.sub(r"\1", match.group(1))] = _value_type(match.group(2))
        if match.group(3) != ",":
            break
        position = match.end()
    return types


class RefusalMemory:
    """Field types and refused series learnt from the database's answers; bounded, forgetful."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._types: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._typed: dict[str, int] = {}  # measurement -> remembered fields of it
        self._series: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._types) + len(self._series)

    def learn_conflict(self, conflict: FieldTypeConflict) -> bool:
        """Remember the type a field holds; return whether that is news."""
        key = (conflict.measurement, conflict.field)
        known = self._types.get(key)
        news = known is None or known[0] != conflict.stored
        if key not in self._types:
            self._typed[conflict.measurement] = self._typed.get(conflict.measurement, 0) + 1
        self._types[key] = (conflict.stored, self._clock() + self._ttl)
        self._types.move_to_end(key)
        while len(self._types) > self._max:
            self._forget_type(next(iter(self._types)))
        return news

    def learn_refused_series(self, line: str, limit: str) -> None:
        """Remember that the series of ``line`` is refused by the cardinality ``limit``."""
        key = series_key(line)
        self._series[key] = (limit, self._clock() + self._ttl)
        self._series.move_to_end(key)
        while len(self._series) > self._max:
            self._series.popitem(last=False)

    def screen(self, line: str) -> Refused | None:
        """Why the database will refuse ``line``, as far as remembered; None if it will not."""
        if self._series:
            refused = self._refused_series(series_key(line))
            if refused is not None:
                return refused
        if not self._typed:
            return None
        measurement = _measurement(line)
        if measurement not in self._typed:
            return None
        now = self._clock()
        for field, sent in field_types(line).items():
            known = self._types.get((measurement, field))
            if known is None:
                continue
            stored, expires = known
            if expires <= now:
                self._forget_type((measurement, field))
            elif sent != stored:
                return Refused(
                    Reason.REJECTED_BY_SINK,
                    f'field type conflict: field "{field}" on measurement "{measurement}" is '
                    f"{sent} in this line, the database holds {stored} (known from an earlier "
                    f"answer of the database)",
                )
        return None

    def _refused_series(self, key: str) -> Refused | None:
        entry = self._series.get(key)
        if entry is None:
            return None
        limit, expires = entry
        if expires <= self._clock():
            del self._series[key]
            return None
        return Refused(
            Reason.SERIES_LIMIT,
            f"new series refused by the database's {limit} limit (known from an earlier answer "
            f"of the database)",
        )

    def _forget_type(self, key: tuple[str, str]) -> None:
        del self._types[key]
        left = self._typed[key[0]] - 1
        if left:
            self._typed[key[0]] = left
        else:
            del self._typed[key[0]]
