"""The validated reading as it travels the pipeline: what the KPI and rule stages consume.

Plain frozen, slotted objects (pydantic stays at the boundaries). The decoder makes them; the
writer stores their ``line`` and settles their ``ticket``; the KPI and rule stages read ``park``,
``kind``, ``device``, ``connector``, ``ts_ms`` and ``fields``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

__all__ = ["NO_TICKET", "STATUS_MEASUREMENT", "FieldValue", "Point"]

FieldValue = float | int | bool | str
"""A field value as InfluxDB stores it."""

STATUS_MEASUREMENT: Final = "device_status"
"""``kind`` of a point made from a device's status message (birth message or last will)."""

NO_TICKET: Final = -1
"""Ticket of a point that no MQTT message waits on (a derived point, a replayed line)."""


@dataclass(slots=True, frozen=True)
class Point:
    """A validated message: its line-protocol line plus what the KPI and rule stages need.

    For a status point ``kind`` is :data:`STATUS_MEASUREMENT` and ``fields`` is
    ``{"online": bool}``; the device's own kind is in ``device_kind``.
    """

    park: str
    kind: str
    device: str
    ts_ms: int
    fields: dict[str, FieldValue]
    line: str
    ticket: int
    connector: str = ""
    """The charger connector id as a string ("" for the other kinds)."""
    device_kind: str = ""
    """The device's kind for status points ("" otherwise: then it is ``kind``)."""
    ts_from_receipt: bool = False
    """The message had no ``ts`` of its own (an MQTT last will, the bare words online/offline):
    ``ts_ms`` is its receive time, which says nothing about the park's event time. Such a point
    does not move the park's clock; the analytics stage places it at that clock (``placed_at``)."""
    received_at: float = 0.0
    """When its MQTT message came in (epoch seconds); 0 for derived and replayed points. The
    rules' fire latency (``parkwatch_rule_fire_latency_seconds``) is measured from it."""

    def placed_at(self, ts_ms: int) -> Point:
        """This point at event time ``ts_ms``, its line re-stamped (the timestamp ends it)."""
        line = f"{self.line.rpartition(' ')[0]} {ts_ms}" if self.line else ""
        return replace(self, ts_ms=ts_ms, line=line, ts_from_receipt=False)
