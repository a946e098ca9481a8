"""What the KPIs are made of: counter readings per device, and connector statuses.

Energy comes from cumulative counters only (``pv_kwh``, ``charged_kwh``, ``energy_kwh``, ...):
differences of counters survive lost messages and uneven sampling, integrating kW does not. Each
pair of consecutive readings of one counter contributes its :func:`increase`, which
:mod:`kpi.series` spreads over the windows the pair spans in proportion to time (that is linear
interpolation of the counter at every boundary).

A reading no newer than the counter's last one (a redelivered message, an older one arriving
late) is ignored: the pair it would split has been counted already, so ignoring it never counts
energy twice and never loses any.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHARGING", "COUNTER_SOURCES", "FAULTED", "Connector", "Track", "increase"]

COUNTER_SOURCES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "microgrid": (
        ("pv_kwh", "pv_kwh"),
        ("load_kwh", "load_kwh"),
        ("grid_import_kwh", "grid_import_kwh"),
        ("grid_export_kwh", "grid_export_kwh"),
    ),
    "storage": (
        ("charged_kwh", "storage_charged_kwh"),
        ("discharged_kwh", "storage_discharged_kwh"),
    ),
    "site5g": (("energy_kwh", "site5g_energy_kwh"), ("traffic_gb", "site5g_traffic_gb")),
    "charger": (("energy_kwh", "ev_energy_kwh"),),
}
"""Per device kind: (payload counter field, park total it adds to)."""

CHARGING: Final = "Charging"
FAULTED: Final = "Faulted"
"""OCPP connector statuses the EV utilisation and fault shares count."""


def increase(previous: float, current: float) -> float:
    """A counter's increase from ``previous`` to ``current``, like Prometheus ``increase()``.

    A decrease is a reset (device restart, meter replaced): the counter restarted from zero, so
    the new value is the increase since the reset.
    """
    if current >= previous:
        return current - previous
    return max(current, 0.0)


class Track:
    """One counter of one device (one connector for chargers): its first and last reading."""

    __slots__ = ("first_ts", "last_ts", "value")

    def __init__(self, first_ts: int, last_ts: int, value: float) -> None:
        self.first_ts = first_ts
        """The first reading: before it the device's energy is unknown."""
        self.last_ts = last_ts
        self.value = value


class Connector:
    """A charger connector's last reported OCPP status and when it was reported."""

    __slots__ = ("since", "status")

    def __init__(self, status: str, since: int) -> None:
        self.status = status
        self.since = since
