"""The fleet description: which parks, how many devices of each kind, their sizes and intervals.

Loaded from YAML (see ``simulators/fleet.example.yaml``) and validated here, at the boundary;
typos are errors (``extra="forbid"``). A top-level ``defaults`` mapping is merged into every park
so a file only spells out what differs. Each park has exactly one microgrid meter (the park's
grid connection); storage, 5G sites and charge points are counted per park.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from parkwatch.errors import ConfigError
from parkwatch.schema import Kind

__all__ = [
    "DEFAULT_PARK_IDS",
    "ChargerSpec",
    "FleetSpec",
    "Intervals",
    "ParkSpec",
    "Site5GSpec",
    "StorageSpec",
    "default_fleet",
    "load_fleet",
]

DEFAULT_PARK_IDS: Final = ("caohejing", "zhangjiang", "lingang", "hongqiao", "baoshan-nanda")

ParkId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""Park ids become topic segments and InfluxDB tags: keep them lowercase, no '/', '+', '#'."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSpec(_Spec):
    """Battery storage units of a park (all alike)."""

    count: int = Field(default=1, ge=0, le=20)
    capacity_kwh: float = Field(default=2000.0, gt=0)
    power_kw: float = Field(default=1000.0, gt=0)
    soc_min_pct: float = Field(default=10.0, ge=0, lt=100)
    soc_max_pct: float = Field(default=90.0, gt=0, le=100)
    eta_charge: float = Field(default=0.95, gt=0, le=1)
    eta_discharge: float = Field(default=0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        return self


class Site5GSpec(_Spec):
    """5G base-station sites of a park."""

    count: int = Field(default=2, ge=0, le=50)
    idle_kw: float = Field(default=2.2, gt=0)
    dynamic_kw: float = Field(default=2.0, ge=0)
    peak_gb_per_h: float = Field(default=60.0, gt=0)


class ChargerSpec(_Spec):
    """EV charge points of a park."""

    count: int = Field(default=4, ge=0, le=100)
    connectors: int = Field(default=2, ge=1, le=8)
    max_kw: float = Field(default=60.0, gt=0)


class ParkSpec(_Spec):
    """One park: PV and process-load sizes and its devices."""

    id: ParkId
    pv_kw: float = Field(default=1500.0, ge=0, description="PV DC nameplate.")
    load_kw: float = Field(default=2500.0, ge=0, description="Day-shift process load plateau.")
    storage: StorageSpec = StorageSpec()
    site5g: Site5GSpec = Site5GSpec()
    charger: ChargerSpec = ChargerSpec()


class Intervals(_Spec):
    """Reporting interval per kind, in simulated seconds."""

    microgrid: float = Field(default=10.0, gt=0)
    storage: float = Field(default=10.0, gt=0)
    site5g: float = Field(default=30.0, gt=0)
    charger: float = Field(default=30.0, gt=0)

    def of(self, kind: Kind) -> float:
        """The interval of ``kind``."""
        value: float = getattr(self, kind.value)
        return value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class FleetSpec(_Spec):
    """Everything the simulator runs."""

    step_s: float = Field(default=10.0, ge=0.1, le=3600, description="Simulation step.")
    intervals_s: Intervals = Intervals()
    parks: list[ParkSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "defaults" not in data:
            return data
        data = dict(data)
        defaults = data.pop("defaults") or {}
        if not isinstance(defaults, dict):
            raise ValueError("defaults must be a mapping of park settings")  # noqa: TRY004
        parks = data.get("parks")
        if isinstance(parks, list):
            data["parks"] = [_merge(defaults, p) if isinstance(p, dict) else p for p in parks]
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = [p.id for p in self.parks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"park ids must be unique: {ids}")
        if round(self.step_s * 1000) != self.step_s * 1000:
            raise ValueError("step_s must be a whole number of milliseconds")
        for kind in Kind:
            ratio = self.intervals_s.of(kind) / self.step_s
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"intervals_s.{kind} must be a multiple of step_s")
        return self

    @property
    def step_ms(self) -> int:
        """The simulation step in integer milliseconds (timestamps are computed from it)."""
        return round(self.step_s * 1000)

    def every(self, kind: Kind) -> int:
        """How many steps apart ``kind`` reports."""
        return round(self.intervals_s.of(kind) / self.step_s)

    def select(self, park_ids: Sequence[str]) -> FleetSpec:
        """This fleet restricted to ``park_ids``; an id not described here gets default sizes."""
        known = {p.id: p for p in self.parks}
        try:
            parks = [known.get(pid) or ParkSpec(id=pid) for pid in park_ids]
            return self.model_copy(update={"parks": FleetSpec(parks=parks).parks})
        except ValidationError as exc:
            raise ConfigError(f"invalid park selection {list(park_ids)}: {exc}") from exc


_DEFAULT_SIZES: Final = {
    # pv_kw, load_kw, storage count, site count, charger count: varied so parks look different.
    "caohejing": (1800.0, 3200.0, 1, 3, 6),
    "zhangjiang": (2500.0, 4000.0, 2, 4, 8),
    "lingang": (4000.0, 3000.0, 2, 2, 5),
    "hongqiao": (1200.0, 1800.0, 1, 2, 4),
    "baoshan-nanda": (900.0, 1500.0, 1, 1, 3),
}


def default_fleet(parks: Sequence[str] | None = None) -> FleetSpec:
    """The built-in fleet of a handful of Shanghai parks (or just ``parks``)."""
    specs = []
    for pid in parks or DEFAULT_PARK_IDS:
        pv, load, storage, sites, chargers = _DEFAULT_SIZES.get(pid, (1500.0, 2500.0, 1, 2, 4))
        specs.append(
            {
                "id": pid,
                "pv_kw": pv,
                "load_kw": load,
                "storage": {"count": storage},
                "site5g": {"count": sites},
                "charger": {"count": chargers},
            }
        )
    try:
        return FleetSpec.model_validate({"parks": specs})
    except ValidationError as exc:
        raise ConfigError(f"invalid park ids {list(parks or ())}: {exc}") from exc


def load_fleet(path: Path) -> FleetSpec:
    """Read and validate a fleet YAML file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return FleetSpec.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"fleet file {path}: {exc}") from exc
