"""Faults on demand: the scenario file, and the plan that says which fault hits which device when.

A scenario lists faults, each with a device selector (``park/kind/device``, shell-style globs
allowed: ``*/charger/cp-0[12]``), a start (``at``: seconds or ``90s``/``10m``/``2h`` after the
simulated start, or an absolute ISO 8601 time) and a duration. For example::

    faults:
      - {fault: offline, device: caohejing/charger/cp-01, at: 10m, duration: 5m}
      - {fault: spike, device: "lingang/microgrid/*", at: 1h, field: load_kw, factor: 20}

Some faults change the physics (:data:`PHYSICAL_FAULTS`: a Faulted charger draws nothing, a site
on battery leaves the park's load); the others only corrupt what a device publishes and are applied
by :mod:`simulators.corrupt`. ``offline`` silences the device and drops its MQTT connection so the
broker publishes its last will.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, NamedTuple

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from parkwatch.errors import ConfigError
from parkwatch.schema import Kind, OcppErrorCode

__all__ = [
    "PHYSICAL_FAULTS",
    "DeviceId",
    "FaultKind",
    "FaultPlan",
    "FaultSpec",
    "Scenario",
    "load_scenario",
    "parse_fault_flag",
]


log = logging.getLogger(__name__)


class DeviceId(NamedTuple):
    """A simulated device: its park, kind and id (the three variable topic segments)."""

    park: str
    kind: Kind
    device: str

    @property
    def path(self) -> str:
        """``park/kind/device``, what fault selectors match against."""
        return f"{self.park}/{self.kind.value}/{self.device}"


class FaultKind(enum.StrEnum):
    """Faults the simulator can inject."""

    OFFLINE = "offline"
    STUCK = "stuck"
    SPIKE = "spike"
    MALFORMED = "malformed"
    WRONG_TYPES = "wrong_types"
    CLOCK_SKEW = "clock_skew"
    COUNTER_RESET = "counter_reset"
    CHARGER_FAULTED = "charger_faulted"
    SITE_ON_BATTERY = "site_on_battery"
    STORAGE_OVERTEMP = "storage_overtemp"


PHYSICAL_FAULTS: Final = {
    FaultKind.CHARGER_FAULTED: Kind.CHARGER,
    FaultKind.SITE_ON_BATTERY: Kind.SITE5G,
    FaultKind.STORAGE_OVERTEMP: Kind.STORAGE,
}
"""Faults that change a device's behaviour, and the only kind each applies to."""

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$"
)


def parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"10m"``, ``"1h30m"`` -> seconds; anything else is left to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class FaultSpec(BaseModel):
    """One fault to inject; parameters that do not apply to its kind are ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fault: FaultKind
    device: str = Field(min_length=1, description="Selector park/kind/device; globs allowed.")
    at: Seconds | datetime = Field(description="Seconds after the start, or an absolute time.")
    duration: Seconds = Field(default=600.0, description="Ignored by counter_reset (permanent).")
    field: str | None = Field(
        default=None,
        description="stuck/wrong_types: only this field (default all); spike: the field hit.",
    )
    factor: float = Field(default=10.0, description="spike: multiplier (a zero becomes factor).")
    probability: float = Field(default=1.0, gt=0, le=1, description="spike: share of messages.")
    skew_s: float = Field(default=3600.0, description="clock_skew: added to ts.")
    error_code: OcppErrorCode = OcppErrorCode.GROUND_FAILURE
    heat_c: float = Field(default=30.0, description="storage_overtemp: extra cell heating.")


class Scenario(BaseModel):
    """A list of faults to inject into one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: list[FaultSpec] = Field(default_factory=list)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return Scenario.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"scenario file {path}: {exc}") from exc


def parse_fault_flag(text: str) -> FaultSpec:
    """Parse ``FAULT:SELECTOR@AT[+DURATION]``, e.g. ``offline:caohejing/charger/cp-01@10m+5m``."""
    match = re.fullmatch(r"([a-z_]+):([^@]+)@([^+]+)(?:\+(.+))?", text.strip())
    if not match:
        raise ConfigError(f"fault {text!r}: expected FAULT:PARK/KIND/DEVICE@AT[+DURATION]")
    fault, device, at, duration = match.groups()
    fields: dict[str, Any] = {"fault": fault, "device": device, "at": at}
    if duration:
        fields["duration"] = duration
    try:
        return FaultSpec.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"fault {text!r}: {exc}") from exc


class Window(NamedTuple):
    """A fault active on one device from ``start_ms`` (inclusive) to ``end_ms`` (exclusive)."""

    spec: FaultSpec
    start_ms: int
    end_ms: int


class FaultPlan:
    """The scenario resolved against a fleet's devices and start time."""

    def __init__(self, scenario: Scenario | None, devices: Iterable[DeviceId], start_ms: int):
        self._windows: dict[DeviceId, list[Window]] = {}
        devices = list(devices)
        for spec in scenario.faults if scenario else ():
            matched = [
                d
                for d in devices
                if fnmatch.fnmatchcase(d.path, spec.device)
                and PHYSICAL_FAULTS.get(spec.fault, d.kind) == d.kind
            ]
            if not matched:
                # Not an error: one scenario file serves runs of different park selections.
                log.warning("fault %s selects no suitable device: %r", spec.fault, spec.device)
                continue
            if isinstance(spec.at, datetime):
                begin = round(spec.at.timestamp() * 1000)
            else:
                begin = start_ms + round(spec.at * 1000)
            window = Window(spec, begin, begin + round(spec.duration * 1000))
            for device in matched:
                self._windows.setdefault(device, []).append(window)

    def windows(self, device: DeviceId) -> Sequence[Window]:
        """Every fault window of ``device`` (empty for most devices)."""
        return self._windows.get(device, ())

    def active(self, device: DeviceId, ts_ms: int) -> list[FaultSpec]:
        """The faults hitting ``device`` at ``ts_ms``."""
        return [w.spec for w in self.windows(device) if w.start_ms <= ts_ms < w.end_ms]

    def first(self, device: DeviceId, ts_ms: int, fault: FaultKind) -> FaultSpec | None:
        """The first active fault of kind ``fault`` on ``device`` at ``ts_ms``, if any."""
        for w in self.windows(device):
            if w.spec.fault is fault and w.start_ms <= ts_ms < w.end_ms:
                return w.spec
        return None
