"""The demo's live view: latest readings and today's green KPIs per park, and the alerts.

Fed by the collector (``Collector.observe`` with every validated point, ``observe_outputs`` with
every KPI record and alert transition) and rendered by ``parkwatch demo`` as a live terminal
table or, with ``--plain``, printed every few seconds. Times are the simulated parks' own (their
time zone, Asia/Shanghai by default).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from rich.console import Group, RenderableType
from rich.table import Table

from kpi.today import TodaySoFar
from parkwatch.events import AlertState, AlertTransition, KpiRecord, Output
from parkwatch.points import Point
from parkwatch.service import Collector

__all__ = ["GOODBYE_ALERT", "LiveView"]

RESOLVED_SHOWN: Final = 8
ACTIVE_SHOWN: Final = 10
GOODBYE_ALERT: Final = "DeviceOffline"
"""What the simulated devices' goodbye (``offline``) fires for each of them as the demo stops."""


@dataclass(slots=True)
class _ParkState:
    pv_kw: float | None = None
    load_kw: float | None = None
    grid_import_kw: float | None = None
    soc: dict[str, float] = field(default_factory=dict)
    chargers: dict[str, str] = field(default_factory=dict)
    points: int = 0
    last_ts_ms: int = 0


class LiveView:
    """Latest readings per park, today's green KPIs so far and the alerts, fed by the collector
    with every validated point and every KPI record and alert transition the engines emit."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector
        self._parks: dict[str, _ParkState] = defaultdict(_ParkState)
        self._today = TodaySoFar(collector.settings.parks)
        self._rates: dict[str, float] = {}
        self._previous: dict[str, int] = {}
        self._previous_at = time.monotonic()
        self._alerts: dict[str, AlertTransition] = {}  # active, by fingerprint
        self._resolved: deque[AlertTransition] = deque(maxlen=RESOLVED_SHOWN)
        # The simulated parks' local time (the demo's --start is read in it too).
        self.zone = ZoneInfo(collector.settings.parks.defaults.timezone)
        self._stopping = False
        self.goodbyes = 0
        notify = collector.settings.notify
        self._receivers = sorted(notify.receivers) if notify.enabled else []
        """DeviceOffline alerts fired by the devices' goodbye (offline) as the demo stopped."""

    def stopping(self) -> None:
        """The demo stops: the simulated devices say goodbye (``offline``) from now on, and
        their DeviceOffline alerts are counted rather than listed (they would hide the rest)."""
        self._stopping = True

    def observe_output(self, output: Output) -> None:
        """Take in a KPI record or alert transition from the analytics stage."""
        if isinstance(output, KpiRecord):
            self._today.take(output)
            return
        alert = output.alert
        if self._stopping and alert.name == GOODBYE_ALERT and alert.state is AlertState.FIRING:
            self.goodbyes += 1
            return
        if alert.state in (AlertState.PENDING, AlertState.FIRING):
            self._alerts[alert.fingerprint] = output
            return
        self._alerts.pop(alert.fingerprint, None)
        if alert.state is AlertState.RESOLVED:
            self._resolved.appendleft(output)

    def render(self) -> Group:
        """The park table, the alerts table when there has been an alert, and the goodbyes."""
        parts: list[RenderableType] = [self.table()]
        if self._alerts or self._resolved:
            parts.append(self.alerts_table())
        notified = self.notifications()
        if notified:
            parts.append(notified)
        if self.goodbyes:
            parts.append(
                f"stopped: the simulated devices said goodbye (offline), so {self.goodbyes} "
                f"{GOODBYE_ALERT} alerts fired (stored like any other, not listed here)"
            )
        return Group(*parts)

    def notifications(self) -> str:
        """What the notification stage did, per receiver ("" when none is configured)."""
        registry = self._collector.metrics.registry
        lines = []
        for receiver in self._receivers:
            counts = {
                outcome: registry.get_sample_value(
                    "parkwatch_notifications_total", {"receiver": receiver, "outcome": outcome}
                )
                or 0.0
                for outcome in ("sent", "failed", "dropped")
            }
            lines.append(
                f"{receiver}: {counts['sent']:.0f} sent, {counts['failed']:.0f} failed, "
                f"{counts['dropped']:.0f} dropped"
            )
        return f"notifications: {'; '.join(lines)}" if lines else ""

    def alerts_table(self) -> Table:
        """Firing and pending alerts, then the latest resolved ones."""
        table = Table(title=f"alerts (simulated time, {self.zone.key})", title_justify="left")
        for column in ("state", "at", "alert", "where", "summary"):
            table.add_column(column)
        active = sorted(self._alerts.values(), key=lambda t: (t.alert.state.value, -t.at_ms))
        hidden = max(0, len(active) - ACTIVE_SHOWN)
        for transition in [*active[:ACTIVE_SHOWN], *self._resolved]:
            alert = transition.alert
            labels = alert.labels
            where = "/".join(labels[k] for k in ("park", "device") if labels.get(k))
            if labels.get("connector"):
                where += f"#{labels['connector']}"
            style = {"firing": "bold red", "pending": "yellow"}.get(alert.state.value, "green")
            table.add_row(
                f"[{style}]{alert.state.value}[/]",
                _clock(transition.at_ms, self.zone),
                f"{alert.name} ({labels.get('severity', '')})",
                where,
                alert.annotations.get("summary", ""),
            )
        if hidden:
            table.caption = f"… and {hidden} more active"
        return table

    def observe(self, point: Point) -> None:
        """Take in one point (called on the decoder's hot path: keep it cheap)."""
        state = self._parks[point.park]
        state.points += 1
        if not point.ts_from_receipt:  # a last will's receive time is not simulated time
            state.last_ts_ms = max(state.last_ts_ms, point.ts_ms)
        fields = point.fields
        if point.kind == "microgrid":
            state.pv_kw = _number(fields.get("pv_kw"), state.pv_kw)
            state.load_kw = _number(fields.get("load_kw"), state.load_kw)
            state.grid_import_kw = _number(fields.get("grid_import_kw"), state.grid_import_kw)
        elif point.kind == "storage" and "soc_pct" in fields:
            state.soc[point.device] = float(fields["soc_pct"])
        elif point.kind == "charger" and "status" in fields:
            state.chargers[point.line.split(" ", 1)[0]] = str(fields["status"])

    def _update_rates(self) -> None:
        now = time.monotonic()
        span = max(now - self._previous_at, 1e-6)
        for park, state in self._parks.items():
            self._rates[park] = (state.points - self._previous.get(park, 0)) / span
            self._previous[park] = state.points
        self._previous_at = now

    def table(self) -> Table:
        """The live table."""
        self._update_rates()
        metrics = self._collector.metrics
        dead = sum(
            sample.value
            for metric in metrics.dead_letters.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        latest = max((s.last_ts_ms for s in self._parks.values()), default=0)
        when = datetime.fromtimestamp(latest / 1000, self.zone).strftime(
            f"%Y-%m-%d %H:%M ({self.zone.key})"
        )
        written = metrics.registry.get_sample_value("parkwatch_points_written_total") or 0.0
        # Read through the registry: the unacked gauge is a function, evaluated only at a scrape.
        unacked = metrics.registry.get_sample_value("parkwatch_unacked_messages") or 0.0
        table = Table(
            title=f"parkwatch demo — simulated time {when if latest else '…'}",
            caption=f"points written {written:.0f} · dead letters {dead:.0f}"
            f" · unacked {unacked:.0f}"
            "\ntoday: the park's closed 1-minute KPI windows of its local day so far "
            "(since midnight, or since the simulated start)",
        )
        for column in ("park", "PV kW", "load kW", "grid import kW", "storage SOC %"):
            table.add_column(column, justify="right" if column != "park" else "left")
        table.add_column("chargers busy/faulted/all", justify="right")
        for column in ("today self-suff. %", "today tCO2/tce", "today kg CO2"):
            table.add_column(column, justify="right")
        table.add_column("msgs/s", justify="right")
        for park in sorted(self._parks):
            state = self._parks[park]
            statuses = list(state.chargers.values())
            busy = sum(
                s
                in {
                    "Charging",
                    "SuspendedEV",
                    "SuspendedEVSE",
                    "Preparing",
                    "Finishing",
                    "Occupied",
                }
                for s in statuses
            )
            faulted = sum(s == "Faulted" for s in statuses)
            soc = f"{sum(state.soc.values()) / len(state.soc):.1f}" if state.soc else "-"
            today = self._today.fields(park)
            table.add_row(
                park,
                _fmt(state.pv_kw),
                _fmt(state.load_kw),
                _fmt(state.grid_import_kw),
                soc,
                f"{busy}/{faulted}/{len(statuses)}",
                _fmt(today.get("self_sufficiency_pct")),
                _fmt(today.get("carbon_intensity_t_per_tce"), 2),
                _fmt(today.get("co2_kg"), 0),
                f"{self._rates.get(park, 0.0):.1f}",
            )
        return table


def _clock(epoch_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, zone).strftime("%H:%M")


def _number(value: object, default: float | None) -> float | None:
    return float(value) if isinstance(value, int | float) else default


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
