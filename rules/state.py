"""The rules engine's state: series (per device or park KPI window) and active alerts.

Mutable slotted objects, each with a JSON-able form for the engine's snapshot. Series keys are
``(park, kind, device, connector)``; ``kind`` is a device kind for telemetry, ``park_kpi:<window>``
for a park's KPI records (device and connector empty), and ``device_status:<kind>`` for the
status messages that ``device_status`` rules read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from parkwatch.events import Alert, AlertState
from rules.rule import WindowSpec
from rules.windows import Window

__all__ = [
    "KPI_PREFIX",
    "STATUS_PREFIX",
    "ActiveAlert",
    "Series",
    "SeriesKey",
    "fingerprint",
    "load_key",
]

SeriesKey = tuple[str, str, str, str]
KPI_PREFIX: Final = "park_kpi:"
STATUS_PREFIX: Final = "device_status:"


class Series:
    """What the engine knows of one series: its newest reading, liveness and windows."""

    __slots__ = ("fields", "key", "last_seen", "last_ts", "offline", "quiet", "windows")

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.last_ts = -1
        """Newest reading applied; a reading not newer than this is skipped (redelivered)."""
        self.last_seen = -1
        """Newest evidence of life (telemetry, or a birth message) for ``stale()``."""
        self.offline = False
        """The last status message said offline (a last will), and no reading came since."""
        self.quiet = False
        """Every ``stale()`` timer of the series armed and none of its alerts active: a reading
        has nothing to do for ``stale()`` (not persisted: a restored series looks once)."""
        self.fields: Mapping[str, Any] = {}
        self.windows: dict[str, Window] = {}

    def dump(self) -> list[Any]:
        """JSON-able form."""
        windows = {wid: window.dump() for wid, window in self.windows.items()}
        return [*self.key, self.last_ts, self.last_seen, self.offline, dict(self.fields), windows]

    @classmethod
    def load(cls, data: list[Any], specs: Mapping[str, WindowSpec]) -> Series:
        """From ``dump``; windows no rule reads any more are dropped."""
        park, kind, device, connector, last_ts, last_seen, offline, fields, windows = data
        series = cls((park, kind, device, connector))
        series.last_ts = int(last_ts)
        series.last_seen = int(last_seen)
        series.offline = bool(offline)
        series.fields = fields
        for wid, window in windows.items():
            spec = specs.get(wid)
            if spec is not None:
                series.windows[wid] = Window.load(spec.span_ms, window, extremes=spec.extremes)
        return series


class ActiveAlert:
    """A pending or firing alert series."""

    __slots__ = (
        "active_at",
        "annotations",
        "fingerprint",
        "fired_at",
        "key",
        "labels",
        "last_at",
        "state",
        "uid",
        "value",
    )

    def __init__(
        self,
        uid: str,
        key: SeriesKey,
        labels: dict[str, str],
        state: AlertState,
        *,
        active_at: int,
        value: float | None,
    ) -> None:
        self.uid = uid
        self.key = key
        self.labels = labels
        self.fingerprint = fingerprint(labels)
        self.state = state
        self.active_at = active_at
        self.fired_at: int | None = None
        self.last_at = active_at
        """Time of the last transition: later transitions are never stamped before it."""
        self.value = value
        self.annotations: dict[str, str] = {}

    def alert(self, state: AlertState | None = None, resolved_at: int | None = None) -> Alert:
        """The immutable view (``state`` overrides, for the final transition)."""
        return Alert(
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            state=state or self.state,
            value=self.value,
            active_at_ms=self.active_at,
            fired_at_ms=self.fired_at,
            resolved_at_ms=resolved_at,
            fingerprint=self.fingerprint,
        )

    def dump(self) -> list[Any]:
        """JSON-able form."""
        return [
            self.uid,
            list(self.key),
            self.state.value,
            self.active_at,
            self.fired_at,
            self.last_at,
            self.value,
            self.labels,
            self.annotations,
        ]

    @classmethod
    def load(cls, data: list[Any]) -> ActiveAlert:
        """From ``dump``."""
        uid, key, state, active_at, fired_at, last_at, value, labels, annotations = data
        alert = cls(
            uid,
            load_key(key),
            dict(labels),
            AlertState(state),
            active_at=int(active_at),
            value=value,
        )
        alert.fired_at = None if fired_at is None else int(fired_at)
        alert.last_at = int(last_at)
        alert.annotations = dict(annotations)
        return alert


def load_key(data: list[Any]) -> SeriesKey:
    """A series key as a snapshot holds it (a JSON list)."""
    park, kind, device, connector = (str(part) for part in data)
    return park, kind, device, connector


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit hash of a label set (the alert series' identity)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
