"""Rule unit tests, in promtool's spirit: ``parkwatch rules test FILE_OR_FOLDER...``.

A test file::

    rule_files: [../storage.yaml]          # relative to this file
    parks: {overrides: {lingang: {targets: {self_sufficiency_pct_min: 40}}}}   # optional
    start: 2026-07-15T00:00:00+08:00       # optional (default 2026-01-01T00:00:00Z)
    tests:
      - name: warning fires after 30 s above 45 degC, clears below 42
        interval: 10s                      # spacing of values (default 1m)
        series:
          - device: lingang/storage/bess-1            # park/kind/device[/connector]
            fields: {cell_temp_max_c: "40 46x6 43 41"}
          - status: lingang/charger/cp-1              # birth messages and last wills
            values: "true _ false"
          - kpi: lingang/1d                           # park/window: KPI records (end times)
            fields: {self_sufficiency_pct: "20 35"}
        expect:
          - at: 1m                         # after the start
            alerts:                        # every active alert (or of `alertname:` only)
              - labels: {alertname: StorageCellHot, severity: warning}   # a subset
                state: firing              # pending | firing (default firing)
                annotations: {summary: "..."}                            # optional, exact
          - at: 2m
            alerts: []

Values, separated by spaces: a number, ``true``/``false``, a bare word (``Faulted``), ``_`` for
none; ``VxN`` repeats V N times; ``A+BxN`` counts N values from A by B (``A-BxN`` down). Value i
is at ``start + i * interval``. Time passes as in the collector: each reading moves its park's
clock, and before each expectation every park's clock is moved to ``at`` (silence counts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parkwatch.clock import ParkClocks
from parkwatch.errors import RuleError
from parkwatch.events import Alert, KpiRecord
from parkwatch.points import NO_TICKET, STATUS_MEASUREMENT, FieldValue, Point
from parkwatch.settings import ParksSettings, RulesSettings
from rules.engine import RulesEngine
from rules.expr import parse_duration
from rules.loader import load_rules
from rules.yamlnodes import load_located

__all__ = ["TestReport", "expand_values", "run_test_file", "run_test_paths"]

DEFAULT_START: Final = datetime(2026, 1, 1, tzinfo=UTC)
_RANGE = re.compile(r"(-?[\d.]+(?:e-?\d+)?)([+-][\d.]+(?:e-?\d+)?)x(\d+)")
_REPEAT = re.compile(r"(.+?)x(\d+)")
_MAX_VALUES: Final = 100_000


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesSpec(_Spec):
    """One input series: a device's readings, its status messages, or a park's KPI records."""

    device: str | None = None
    status: str | None = None
    kpi: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    values: str | None = None
    interval: str | None = None


class ExpectedAlert(_Spec):
    """An alert expected to be active."""

    labels: dict[str, str]
    state: str = "firing"
    annotations: dict[str, str] = Field(default_factory=dict)
    value: float | None = None


class Expectation(_Spec):
    """The active alerts at one time."""

    at: str
    alertname: str | None = None
    alerts: list[ExpectedAlert]


class TestCase(_Spec):
    """One named test."""

    name: str
    interval: str = "1m"
    series: list[SeriesSpec]
    expect: list[Expectation]


class TestFile(_Spec):
    """A file of rule tests."""

    rule_files: list[str]
    parks: dict[str, Any] = Field(default_factory=dict)
    start: datetime = DEFAULT_START
    tests: list[TestCase]


@dataclass
class TestReport:
    """Outcome of running test files."""

    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every test passed (and at least one ran)."""
        return not self.failures and bool(self.passed)


def expand_values(text: str) -> list[FieldValue | None]:
    """The compact notation (see the module docstring) -> one value or None per step."""
    values: list[FieldValue | None] = []
    for token in text.split():
        if match := _RANGE.fullmatch(token):
            start, step, count = float(match[1]), float(match[2]), int(match[3])
            _bound(len(values) + count)
            values += [start + i * step for i in range(count)]
        elif match := _REPEAT.fullmatch(token):
            _bound(len(values) + int(match[2]))
            values += [_scalar(match[1])] * int(match[2])
        else:
            values.append(_scalar(token))
    return values


def _bound(count: int) -> None:
    if count > _MAX_VALUES:
        raise ValueError(f"more than {_MAX_VALUES} values in one series")


def _scalar(word: str) -> FieldValue | None:
    if word == "_":
        return None
    if word in ("true", "false"):
        return word == "true"
    try:
        return float(word)
    except ValueError:
        return word


def run_test_paths(paths: list[Path]) -> TestReport:
    """Run every test file (folders: their ``*.yaml``/``*.yml``)."""
    report = TestReport()
    for path in paths:
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if (path.is_dir())
            else [path]
        )
        for file in files:
            run_test_file(file, report)
    return report


def run_test_file(path: Path, report: TestReport) -> None:
    """Run the tests of one file into ``report``."""
    try:
        doc = load_located(path.read_text(encoding="utf-8"))
    except OSError as exc:
        report.failures.append(f"{path}: cannot read: {exc.strerror}")
        return
    if doc.problems:
        report.failures += [f"{path}:{line}: {message}" for line, message in doc.problems]
        return
    try:
        spec = TestFile.model_validate(doc.data)
        parks = ParksSettings.model_validate(spec.parks)
        rules = load_rules([path.parent / name for name in spec.rule_files])
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            name = ".".join(str(p) for p in loc)
            report.failures.append(f"{path}:{doc.line(loc)}: {name}: {error['msg']}")
        return
    except RuleError as exc:
        report.failures += exc.problems
        return
    start_ms = round(spec.start.timestamp() * 1000)
    for index, case in enumerate(spec.tests):
        where = f"{path}:{doc.line(('tests', index))}: {case.name}"
        try:
            problems = _run_case(case, rules, parks, start_ms)
        except (ValueError, TypeError) as exc:  # ExprError is a ValueError
            problems = [f"invalid test: {exc}"]
        if problems:
            report.failures += [f"{where}: {problem}" for problem in problems]
        else:
            report.passed.append(where)


@dataclass(order=True)
class _Event:
    ts: int
    order: int
    park: str = field(compare=False)
    point: Point | None = field(compare=False, default=None)
    record: KpiRecord | None = field(compare=False, default=None)


def _run_case(case: TestCase, rules: Any, parks: ParksSettings, start_ms: int) -> list[str]:
    engine = RulesEngine(RulesSettings(), parks, ParkClocks(), None, rules=rules)
    events = sorted(_events(case, start_ms))
    now: dict[str, int] = {}

    def emit(output: object) -> None:
        """Transitions are read back through active_alerts()."""

    def move(park: str, to: int) -> None:
        if to > now.get(park, -1):
            now[park] = to
            engine.advance(park, to, emit)

    problems: list[str] = []
    pending = iter(events)
    upcoming = next(pending, None)
    for expectation in sorted(case.expect, key=lambda e: parse_duration(e.at)):
        at = start_ms + parse_duration(expectation.at)
        while upcoming is not None and upcoming.ts <= at:
            move(upcoming.park, upcoming.ts)
            if upcoming.point is not None:
                engine.apply(upcoming.point, emit)
            elif upcoming.record is not None:
                engine.take(upcoming.record, emit)
            upcoming = next(pending, None)
        for park in sorted({event.park for event in events}):
            move(park, at)
        problems += _compare(expectation, engine.active_alerts())
    return problems


def _events(case: TestCase, start_ms: int) -> list[_Event]:
    events: list[_Event] = []
    for order, series in enumerate(case.series):
        step = parse_duration(series.interval or case.interval)
        named = [name for name in (series.device, series.status, series.kpi) if name]
        if len(named) != 1:
            raise ValueError("each series names exactly one of device, status, kpi")
        if series.status is not None:
            park, kind, device = _parts(series.status, 3)
            for i, online in enumerate(expand_values(series.values or "")):
                if online is None:
                    continue
                if not isinstance(online, bool):
                    raise TypeError(f"status values are true, false or _, not {online!r}")
                ts = start_ms + i * step
                point = Point(park, STATUS_MEASUREMENT, device, ts, {"online": online}, "",
                              NO_TICKET, device_kind=kind)  # fmt: skip
                events.append(_Event(ts, order, park, point=point))
            continue
        rows = _rows(series.fields)
        if series.kpi is not None:
            park, window = _parts(series.kpi, 2)
            span = parse_duration(window)
            for i, fields in enumerate(rows):
                if fields:
                    end = start_ms + i * step
                    record = KpiRecord(park, window, end - span, end, _floats(fields))
                    events.append(_Event(end, order, park, record=record))
            continue
        assert series.device is not None
        parts = series.device.split("/")
        if len(parts) == 3 and parts[1] == "charger":
            parts.append("1")  # the decoder's default connector id
        park, kind, device, connector = _parts("/".join(parts), 3, optional=1)
        for i, fields in enumerate(rows):
            if fields:
                ts = start_ms + i * step
                point = Point(park, kind, device, ts, fields, "", NO_TICKET, connector)
                events.append(_Event(ts, order, park, point=point))
    return events


def _rows(fields: dict[str, str]) -> list[dict[str, FieldValue]]:
    columns = {name: expand_values(text) for name, text in fields.items()}
    length = max((len(values) for values in columns.values()), default=0)
    rows: list[dict[str, FieldValue]] = [{} for _ in range(length)]
    for name, values in columns.items():
        for i, value in enumerate(values):
            if value is not None:
                rows[i][name] = value
    return rows


def _floats(fields: dict[str, FieldValue]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, float):
            raise TypeError(f"KPI field {name} must be a number, not {value!r}")
        out[name] = value
    return out


def _parts(text: str, count: int, *, optional: int = 0) -> tuple[str, ...]:
    parts = tuple(text.split("/"))
    if not count <= len(parts) <= count + optional or not all(parts):
        raise ValueError(f"{text!r}: expected {count} parts separated by '/'")
    return parts + ("",) * (count + optional - len(parts))


def _compare(expectation: Expectation, active: list[Alert]) -> list[str]:
    if expectation.alertname is not None:
        active = [a for a in active if a.name == expectation.alertname]
    unmatched = list(active)
    problems: list[str] = []
    for expected in expectation.alerts:
        match = next((a for a in unmatched if _matches(expected, a)), None)
        if match is None:
            problems.append(
                f"at {expectation.at}: expected {expected.state} {expected.labels}"
                + (f" with {expected.annotations}" if expected.annotations else "")
                + f"; active: {_describe(active)}"
            )
        else:
            unmatched.remove(match)
    if unmatched and not problems:
        problems.append(f"at {expectation.at}: unexpected alerts: {_describe(unmatched)}")
    return problems


def _matches(expected: ExpectedAlert, alert: Alert) -> bool:
    if alert.state.value != expected.state:
        return False
    if any(alert.labels.get(k) != v for k, v in expected.labels.items()):
        return False
    if any(alert.annotations.get(k) != v for k, v in expected.annotations.items()):
        return False
    if expected.value is not None:
        if alert.value is None:
            return False
        return abs(alert.value - expected.value) <= 1e-9 * max(1.0, abs(expected.value))
    return True


def _describe(alerts: list[Alert]) -> str:
    if not alerts:
        return "none"
    return "; ".join(
        f"{a.state.value} {dict(a.labels)} {dict(a.annotations)} value={a.value}" for a in alerts
    )
