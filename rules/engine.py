"""The rules engine: alert series through inactive -> pending -> firing -> resolved, in event time.

Fed by :mod:`parkwatch.analytics` (see :class:`parkwatch.events.Engine` for the call order):

* ``apply(point)``: the point's series (device, or charger connector) is looked up; a reading
  not newer than the series' last one is skipped (redelivered or late: it cannot re-fire), else
  its fields enter the series' windows and the rules of its kind are evaluated, each compiled
  with the park's parameters. A status point (birth or last will) marks the device online or
  offline (in arrival order: a last will carries no time of its own).
* ``take(record)``: a KPI record, evaluated by the ``park_kpi:<window>`` rules of its park.
* ``advance(park, now)``: the park's clock moved; timers due by then run: ``for`` deadlines of
  pending alerts (they fire at the deadline, in event time) and ``stale()`` deadlines. Timers sit
  in one heap per park, so a call with nothing due costs one comparison.

A condition holds its last evaluated value until the series' next reading; missing data
(``None``) leaves an alert as it is. A firing alert resolves when ``clear`` holds (hysteresis) or,
without ``clear``, when ``expr`` no longer does. Everything depends on event times and the order
of calls only, never on the wall clock, so the analytics stage's replay rebuilds it exactly.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry

from parkwatch.clock import ParkClocks
from parkwatch.events import Alert, AlertState, AlertTransition, Emit, KpiRecord
from parkwatch.points import STATUS_MEASUREMENT, Point
from parkwatch.settings import ParksSettings, RulesSettings
from parkwatch.throttle import Throttle
from rules.loader import RuleSet, load_rules
from rules.metrics import RulesCollector
from rules.rule import BoundRule, Rule, WindowSpec
from rules.state import KPI_PREFIX, STATUS_PREFIX, ActiveAlert, Series, SeriesKey, load_key
from rules.windows import Window

__all__ = ["RulesEngine"]

log = logging.getLogger(__name__)

SNAPSHOT_VERSION: Final = 1
ERROR_LOG_INTERVAL_S: Final = 30.0
_FOR: Final = "for"
_STALE: Final = "stale"

AlertKey = tuple[str, SeriesKey]
Timer = tuple[int, int, str, str, SeriesKey]  # due, seq, what, rule uid, series


class _ParkRules:
    """The rules compiled with one park's parameters, indexed by what they read."""

    __slots__ = ("by_uid", "kinds", "kpi", "stale", "status")

    def __init__(self, rules: RuleSet, park: str, targets: Mapping[str, float]) -> None:
        self.kinds: dict[str, list[BoundRule]] = {}
        self.stale: dict[str, list[BoundRule]] = {}
        self.status: list[BoundRule] = []
        self.kpi: dict[str, list[BoundRule]] = {}
        self.by_uid: dict[str, BoundRule] = {}
        for rule in rules.rules:
            bound = rule.bind(park, targets)
            self.by_uid[rule.uid] = bound
            source = rule.source
            if source.kpi_window:
                self.kpi.setdefault(source.kpi_window, []).append(bound)
            elif source.status:
                self.status.append(bound)
            for kind in source.kinds:
                (self.stale if rule.stale_ms else self.kinds).setdefault(kind, []).append(bound)


class RulesEngine:
    """Evaluates alert rules on points and KPI records; see the module docstring."""

    name = "rules"

    def __init__(
        self,
        settings: RulesSettings,
        parks: ParksSettings,
        clocks: ParkClocks,
        registry: CollectorRegistry | None = None,
        *,
        rules: RuleSet | None = None,
    ) -> None:
        self.rules = rules if rules is not None else load_rules(settings.paths)
        self._parks = parks
        self._clocks = clocks
        self._windows = _window_specs(self.rules)
        self._specs_by_wid = {s.wid: s for specs in self._windows.values() for s in specs}
        self._bound: dict[str, _ParkRules] = {}
        self._series: dict[SeriesKey, Series] = {}
        self._devices: dict[tuple[str, str, str], list[SeriesKey]] = {}
        self._active: dict[AlertKey, ActiveAlert] = {}
        self._armed: dict[AlertKey, int] = {}
        self._timers: dict[str, list[Timer]] = {}
        self._seq = 0
        self._now: dict[str, int] = {}
        self.evaluations = 0
        self.redelivered = 0
        self.errors: dict[str, int] = {}
        self._error_log = Throttle(ERROR_LOG_INTERVAL_S)
        if registry is not None:
            registry.register(RulesCollector(self))

    # -- the Engine protocol ------------------------------------------------------------------

    def apply(self, point: Point, emit: Emit) -> None:
        """Take in one reading or status message."""
        if point.kind == STATUS_MEASUREMENT:
            self._status(point, emit)
            return
        kind, ts = point.kind, point.ts_ms
        key = (point.park, kind, point.device, point.connector)
        series = self._series.get(key)
        rules = self._bound.get(point.park) or self._park(point.park)
        if series is None:
            series = self._new_series(key)
            if point.connector:
                self._adopt(key, rules.stale.get(kind, []), ts, emit)
        elif ts <= series.last_ts:
            self.redelivered += 1
            return
        silent_since = series.last_seen
        self._observe(series, ts, point.fields, self._windows.get(kind, ()))
        stale = rules.stale.get(kind)
        if stale and not series.quiet:
            series.offline = False
            self._refresh(series, stale, ts, silent_since, emit)
        for bound in rules.kinds.get(kind, ()):
            self._evaluate(bound, series, ts, emit)

    def take(self, record: KpiRecord, emit: Emit) -> None:
        """Take in a park's KPI record (``park_kpi:<window>`` rules)."""
        kind = KPI_PREFIX + record.window
        key = (record.park, kind, "", "")
        series = self._series.get(key) or self._new_series(key)
        at = record.end_ms
        if at <= series.last_ts:
            self.redelivered += 1
            return
        self._observe(series, at, record.fields, self._windows.get(kind, ()))
        for bound in self._park(record.park).kpi.get(record.window, ()):
            self._evaluate(bound, series, at, emit)

    def advance(self, park: str, now_ms: int, emit: Emit) -> None:
        """Run the park's timers due by ``now_ms``."""
        self._now[park] = now_ms
        heap = self._timers.get(park)
        while heap and heap[0][0] <= now_ms:
            due, _, what, uid, key = heapq.heappop(heap)
            bound = self._park(park).by_uid.get(uid)
            if bound is None:
                continue  # a rule removed since the timer was set (restored state)
            if what == _FOR:
                self._for_due(bound, key, due, emit)
            else:
                self._stale_due(bound, key, due, emit)

    # -- evaluation -----------------------------------------------------------------------------

    def _evaluate(self, bound: BoundRule, series: Series, at: int, emit: Emit) -> None:
        fields, windows = series.fields, series.windows
        rule = bound.rule
        try:
            assert bound.expr is not None
            holds = bound.expr(fields, windows)
            self.evaluations += 1
            if holds is None:
                return
            key = (rule.uid, series.key)
            active = self._active.get(key)
            if active is None:
                if holds:
                    self._start(bound, series, at, self._value(bound, series), emit)
                return
            active.value = self._value(bound, series)
            if active.state is AlertState.PENDING:
                ended = not holds
            else:
                ended = bound.clear(fields, windows) is True if bound.clear else not holds
            if ended:
                self._end(active, _ended(active), at, emit)
            elif rule.annotations:
                # Like Prometheus, annotations follow the latest evaluation (value, fields).
                active.annotations = self._render(bound, active, series)
        except Exception as exc:  # noqa: BLE001 - one failing rule must not stop the others
            self._failed(rule, series.key, exc)

    @staticmethod
    def _value(bound: BoundRule, series: Series) -> float | None:
        if bound.value is None:
            return None
        value = bound.value(series.fields, series.windows)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def _start(
        self, bound: BoundRule, series: Series, at: int, value: float | None, emit: Emit
    ) -> None:
        rule = bound.rule
        labels = _labels(rule, series.key)
        pending = rule.for_ms > 0
        state = AlertState.PENDING if pending else AlertState.FIRING
        active = ActiveAlert(rule.uid, series.key, labels, state, active_at=at, value=value)
        if not pending:
            active.fired_at = at
        self._active[(rule.uid, series.key)] = active
        active.annotations = self._render(bound, active, series)
        if pending:
            self._push(series.key[0], at + rule.for_ms, _FOR, rule.uid, series.key)
        emit(AlertTransition(active.alert(), AlertState.INACTIVE, at))

    def _fire(self, bound: BoundRule, active: ActiveAlert, at: int, emit: Emit) -> None:
        active.state = AlertState.FIRING
        active.fired_at = at
        active.last_at = at
        series = self._series.get(active.key)
        if series is not None:
            active.annotations = self._render(bound, active, series)
        emit(AlertTransition(active.alert(), AlertState.PENDING, at))

    def _end(self, active: ActiveAlert, state: AlertState, at: int, emit: Emit) -> None:
        # The annotations stay as last rendered while active (as Alertmanager shows a resolved
        # alert); the value is the one that ended it.
        del self._active[(active.uid, active.key)]
        at = max(at, active.last_at)
        resolved_at = at if state is AlertState.RESOLVED else None
        emit(AlertTransition(active.alert(state, resolved_at), active.state, at))

    def _for_due(self, bound: BoundRule, key: SeriesKey, due: int, emit: Emit) -> None:
        active = self._active.get((bound.rule.uid, key))
        if (
            active is not None
            and active.state is AlertState.PENDING
            and active.active_at + bound.rule.for_ms == due
        ):
            self._fire(bound, active, due, emit)

    # -- stale() and last wills -----------------------------------------------------------------

    def _refresh(
        self, series: Series, stale: list[BoundRule], at: int, silent_since: int, emit: Emit
    ) -> None:
        """Fresh data: end ``stale()`` alerts of the series if it is fresh, and arm the timers.

        ``silent_since`` is when the series was last heard from before this news (the value
        of the resolved alert is the silence it ends).
        """
        now = self._now.get(series.key[0], at)
        for bound in stale:
            key = (bound.rule.uid, series.key)
            active = self._active.get(key)
            deadline = series.last_seen + bound.rule.stale_ms
            if active is not None and not series.offline and deadline > now:
                active.value = max(0, at - silent_since) / 1000
                self._end(active, _ended(active), at, emit)
            if key not in self._active and key not in self._armed:
                self._arm(key, deadline)
        series.quiet = not series.offline and all(
            (b.rule.uid, series.key) in self._armed for b in stale
        )

    def _stale_due(self, bound: BoundRule, key: SeriesKey, due: int, emit: Emit) -> None:
        akey = (bound.rule.uid, key)
        if self._armed.get(akey) != due:
            return  # superseded
        del self._armed[akey]
        series = self._series.get(key)
        if series is None or akey in self._active:
            return
        series.quiet = False  # unarmed now (re-armed below, or firing): readings must look
        deadline = series.last_seen + bound.rule.stale_ms
        if deadline > due and not series.offline:
            self._arm(akey, deadline)  # heard from since: look again then
            return
        self._start(bound, series, due, (due - series.last_seen) / 1000, emit)

    def _status(self, point: Point, emit: Emit) -> None:
        park, kind, device = point.park, point.device_kind, point.device
        rules = self._park(park)
        if rules.status:
            key = (park, STATUS_PREFIX + kind, device, "")
            series = self._series.get(key) or self._new_series(key)
            if point.ts_ms > series.last_ts:
                self._observe(series, point.ts_ms, point.fields, ())
                for bound in rules.status:
                    self._evaluate(bound, series, point.ts_ms, emit)
            else:
                self.redelivered += 1
        stale = rules.stale.get(kind)
        if not stale:
            return
        now = self._now.get(park, point.ts_ms)
        keys = self._devices.get((park, kind, device)) or [
            self._new_series((park, kind, device, "")).key
        ]
        online = point.fields.get("online") is True
        for key in keys:
            series = self._series[key]
            if online:
                silent_since = series.last_seen
                series.offline = False
                series.last_seen = max(series.last_seen, min(point.ts_ms, now))
                self._refresh(series, stale, max(series.last_seen, 0), silent_since, emit)
                continue
            series.offline = True
            series.quiet = False
            if series.last_seen < 0:
                series.last_seen = now
            for bound in stale:
                akey = (bound.rule.uid, key)
                if akey not in self._active:
                    self._armed.pop(akey, None)
                    self._start(bound, series, now, (now - series.last_seen) / 1000, emit)

    def _adopt(self, key: SeriesKey, stale: list[BoundRule], at: int, emit: Emit) -> None:
        """A connector's first reading replaces the series a status message made for its device.

        A last will names a charger, not a connector: before any reading there is one series
        with an empty connector, whose alerts end here (the device is evidently alive).
        """
        placeholder = (key[0], key[1], key[2], "")
        series = self._series.pop(placeholder, None)
        if series is None:
            return
        self._devices[(key[0], key[1], key[2])].remove(placeholder)
        for bound in stale:
            akey = (bound.rule.uid, placeholder)
            self._armed.pop(akey, None)
            active = self._active.get(akey)
            if active is not None:
                self._end(active, _ended(active), at, emit)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _new_series(self, key: SeriesKey) -> Series:
        series = Series(key)
        self._add(series)
        return series

    def _add(self, series: Series) -> None:
        key = series.key
        self._series[key] = series
        if not key[1].startswith((KPI_PREFIX, STATUS_PREFIX)):
            self._devices.setdefault((key[0], key[1], key[2]), []).append(key)

    @staticmethod
    def _observe(
        series: Series, ts: int, fields: Mapping[str, Any], specs: tuple[WindowSpec, ...]
    ) -> None:
        series.last_ts = ts
        series.last_seen = max(series.last_seen, ts)
        series.fields = fields
        windows = series.windows
        for spec in specs:
            value = fields.get(spec.field)
            if value is None or value.__class__ is bool or value.__class__ is str:
                continue
            window = windows.get(spec.wid)
            if window is None:
                window = windows[spec.wid] = Window(spec.span_ms, extremes=spec.extremes)
            window.add(ts, float(value))

    def _park(self, park: str) -> _ParkRules:
        rules = self._bound.get(park)
        if rules is None:
            targets = self._parks.profile(park).targets.model_dump()
            rules = self._bound[park] = _ParkRules(self.rules, park, targets)
        return rules

    def _push(self, park: str, due: int, what: str, uid: str, key: SeriesKey) -> None:
        self._seq += 1
        heapq.heappush(self._timers.setdefault(park, []), (due, self._seq, what, uid, key))

    def _arm(self, akey: AlertKey, due: int) -> None:
        self._armed[akey] = due
        self._push(akey[1][0], due, _STALE, akey[0], akey[1])

    def _render(self, bound: BoundRule, active: ActiveAlert, series: Series) -> dict[str, str]:
        rule = bound.rule
        if not rule.annotations:
            return {}
        values: dict[str, Any] = {**series.fields, **bound.params, **active.labels}
        values["value"] = active.value
        values["park_name"] = self._parks.display_name(active.key[0])
        return {name: template.render(values) for name, template in rule.annotations.items()}

    def _failed(self, rule: Rule, key: SeriesKey, exc: Exception) -> None:
        self.errors[rule.name] = self.errors.get(rule.name, 0) + 1
        if self._error_log.due() is not None:  # only paces the log; never part of the state
            log.error(
                "rule %s (%s) failed on %s (further errors counted in parkwatch_rule_errors_total)",
                rule.name,
                rule.origin,
                "/".join(part for part in key if part),
                exc_info=exc,
            )

    # -- views ---------------------------------------------------------------------------------

    def active_alerts(self) -> list[Alert]:
        """Pending and firing alerts, oldest first."""
        alerts = sorted(self._active.values(), key=lambda a: (a.active_at, a.fingerprint))
        return [active.alert() for active in alerts]

    def iter_active(self) -> Iterator[ActiveAlert]:
        """The live active-alert objects (for metrics; do not keep them)."""
        return iter(self._active.values())

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data."""
        return {
            "version": SNAPSHOT_VERSION,
            "seq": self._seq,
            "now": dict(self._now),
            "series": [series.dump() for series in self._series.values()],
            "active": [active.dump() for active in self._active.values()],
            "armed": [[uid, list(key), due] for (uid, key), due in self._armed.items()],
            "timers": {
                park: [[due, seq, what, uid, list(key)] for due, seq, what, uid, key in heap]
                for park, heap in self._timers.items()
            },
            "evaluations": self.evaluations,
            "redelivered": self.redelivered,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with a ``snapshot`` (state of rules no longer loaded is dropped)."""
        if data.get("version") != SNAPSHOT_VERSION:
            log.warning("rules state of an unknown version; starting empty")
            return
        uids = self.rules.by_uid
        self._seq = int(data["seq"])
        self._now = {park: int(ms) for park, ms in data["now"].items()}
        self._series = {}
        self._devices = {}
        for row in data["series"]:
            self._add(Series.load(row, self._specs_by_wid))
        actives = (ActiveAlert.load(row) for row in data["active"])
        self._active = {(a.uid, a.key): a for a in actives if a.uid in uids}
        self._armed = {}
        for uid, key, due in data["armed"]:
            if uid in uids:
                self._armed[(uid, load_key(key))] = int(due)
        self._timers = {}
        for park, rows in data["timers"].items():
            heap = [
                (int(due), int(seq), str(what), str(uid), load_key(key))
                for due, seq, what, uid, key in rows
                if uid in uids
            ]
            heapq.heapify(heap)
            self._timers[park] = heap
        self.evaluations = int(data.get("evaluations", 0))
        self.redelivered = int(data.get("redelivered", 0))
        self._rearm()

    def _rearm(self) -> None:
        """Timers the restored state lacks because the rules changed (none after a crash)."""
        pending = {(t[3], t[4], t[0]) for heap in self._timers.values() for t in heap}
        for active in self._active.values():
            rule = self.rules.by_uid[active.uid]
            due = active.active_at + rule.for_ms
            if active.state is AlertState.PENDING and (active.uid, active.key, due) not in pending:
                self._push(active.key[0], due, _FOR, active.uid, active.key)
        stale_rules = [rule for rule in self.rules.rules if rule.stale_ms]
        for series in self._series.values():
            for rule in stale_rules:
                akey = (rule.uid, series.key)
                if (
                    series.key[1] in rule.source.kinds
                    and akey not in self._active
                    and akey not in self._armed
                ):
                    self._arm(akey, series.last_seen + rule.stale_ms)


def _ended(active: ActiveAlert) -> AlertState:
    return AlertState.RESOLVED if active.state is AlertState.FIRING else AlertState.INACTIVE


def _labels(rule: Rule, key: SeriesKey) -> dict[str, str]:
    park, kind, device, connector = key
    labels = {"alertname": rule.name, "park": park}
    if rule.source.devices:
        labels["kind"] = kind.removeprefix(STATUS_PREFIX)
        labels["device"] = device
        if connector:
            labels["connector"] = connector
    for name in sorted(rule.labels):
        labels[name] = rule.labels[name]
    return labels


def _window_specs(rules: RuleSet) -> dict[str, tuple[WindowSpec, ...]]:
    """The windows each series kind keeps: the union over the rules that read it."""
    found: dict[str, dict[str, WindowSpec]] = {}
    for rule in rules.rules:
        source = rule.source
        kinds = [KPI_PREFIX + source.kpi_window] if source.kpi_window else list(source.kinds)
        for kind in kinds:
            specs = found.setdefault(kind, {})
            for spec in rule.windows:
                old = specs.get(spec.wid)
                if old is None or (spec.extremes and not old.extremes):
                    specs[spec.wid] = spec
    return {kind: tuple(specs.values()) for kind, specs in found.items()}
