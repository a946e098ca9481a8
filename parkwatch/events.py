"""What the stateful stages produce, and the protocol they implement.

The KPI engine (``kpi/``) and the rules engine (``rules/``) are deterministic event-time state
machines behind :class:`Engine`: fed the same points and clock moves, they produce the same
outputs, which is what lets :mod:`parkwatch.analytics` rebuild them after a crash by replaying
its journal. They emit:

* :class:`KpiRecord`: one park's KPIs for one closed window (written as ``park_kpi``, and fed to
  the rules engine for ``park_kpi:<window>`` rules);
* :class:`AlertTransition`: an alert series changed state (written as ``alerts``, handed to the
  notification stage, listed at ``/api/v1/alerts``).

Plain frozen, slotted objects: these cross module boundaries on the hot path.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from parkwatch.points import Point

__all__ = [
    "ALERTS_MEASUREMENT",
    "COLLECTOR_MEASUREMENT",
    "DEAD_LETTER_MEASUREMENT",
    "KPI_FIELDS",
    "KPI_MEASUREMENT",
    "KPI_WINDOWS",
    "Alert",
    "AlertState",
    "AlertTransition",
    "Emit",
    "Engine",
    "KpiRecord",
    "Output",
]

KPI_MEASUREMENT = "park_kpi"
ALERTS_MEASUREMENT: Final = "alerts"
"""Alert transitions as the rules stage writes them (``parkwatch/analytics.py``)."""
COLLECTOR_MEASUREMENT: Final = "parkwatch_collector"
"""The collector's own metrics, sampled by ``parkwatch/selfmetrics.py``."""
DEAD_LETTER_MEASUREMENT: Final = "parkwatch_dead_letters"
"""Dead letters by reason, sampled by ``parkwatch/selfmetrics.py``."""
KPI_WINDOWS = ("1m", "15m", "1h", "1d")
"""Window names, shortest first; ``1d`` is aligned to local midnight in the park's time zone."""
KPI_FIELDS: Final[tuple[str, ...]] = (
    "pv_kwh",
    "load_kwh",
    "grid_import_kwh",
    "grid_export_kwh",
    "self_consumption_pct",
    "self_sufficiency_pct",
    "emission_factor_kg_per_kwh",
    "co2_kg",
    "carbon_intensity_kg_per_kwh",
    "carbon_intensity_t_per_tce",
    "storage_charged_kwh",
    "storage_discharged_kwh",
    "storage_rte_pct",
    "site5g_energy_kwh",
    "site5g_traffic_gb",
    "site5g_kwh_per_gb",
    "ev_energy_kwh",
    "ev_green_kwh",
    "ev_green_share_pct",
    "ev_utilisation_pct",
    "ev_faulted_pct",
    "peak_demand_kw",
)
"""Every field a ``park_kpi`` point can carry, in the README's order (computed in ``kpi/``,
read by ``park_kpi:<window>`` rules)."""


@dataclass(frozen=True, slots=True)
class KpiRecord:
    """One park's KPIs over one closed window; ``fields`` omits what cannot be computed."""

    park: str
    window: str
    start_ms: int
    end_ms: int
    fields: Mapping[str, float]


class AlertState(enum.StrEnum):
    """Lifecycle of one alert series: inactive -> pending -> firing -> resolved."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert series as it stands.

    ``labels`` identify the series: ``alertname``, ``park``, ``severity`` and the rule's own
    labels, plus ``kind`` and ``device`` (and ``connector`` for chargers) for device sources.
    Times are event times (epoch ms, the park's clock).
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    value: float | None
    active_at_ms: int
    """When the condition first held (the start of pending)."""
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None
    fingerprint: str = ""
    """Stable hash of ``labels``; the series' identity across restarts and receivers."""

    @property
    def name(self) -> str:
        """The alert name (the ``alertname`` label)."""
        return self.labels.get("alertname", "")


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """An alert series moved from ``previous`` to ``alert.state`` at event time ``at_ms``.

    Only transitions to ``firing`` and ``resolved`` are written to InfluxDB and notified;
    ``pending`` ones (and pending -> inactive) exist for ``/api/v1/alerts`` and tests.
    """

    alert: Alert
    previous: AlertState
    at_ms: int


Output = KpiRecord | AlertTransition
Emit = Callable[[Output], None]


class Engine(Protocol):
    """A deterministic event-time state machine fed by validated points.

    An engine is given the shared :class:`~parkwatch.clock.ParkClocks` when it is built.
    :mod:`parkwatch.analytics` calls, for every point in arrival order: ``clocks.observe``, then
    ``advance`` if that moved the park's clock, then ``apply``; and on every wall-clock tick while
    the collector listens, ``advance`` for every park. So ``advance`` runs about once per point:
    it must cost O(1) when nothing is due (keep deadlines in a heap, not a scan). Engines never
    read the wall clock, only the times passed in. State is bounded by parks x devices x rules,
    never by time.
    """

    name: str

    def apply(self, point: Point, emit: Emit) -> None:
        """Take in one point (its park's clock has observed it already)."""

    def advance(self, park: str, now_ms: int, emit: Emit) -> None:
        """The park's clock reads ``now_ms``: close windows, run timers, emit what follows."""

    def take(self, record: KpiRecord, emit: Emit) -> None:
        """Take in a KPI record emitted by another engine (rules on ``park_kpi`` sources)."""

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data."""

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with a ``snapshot``."""
