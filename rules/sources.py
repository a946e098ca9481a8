"""What a rule can watch (its ``source``) and the typed fields each source offers.

Device sources take their fields from the payload models of :mod:`parkwatch.schema`, so a typo
in a rule (``cell_temp_max_cc``) or an impossible string (``status == "Faulty"``) is an error at
load time. Fields a device sends beyond the schema (kept as numbers or booleans) are declared per
file under ``extra_fields``. KPI sources offer the ``park_kpi`` fields of the KPI stage.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from parkwatch.events import KPI_FIELDS, KPI_WINDOWS
from parkwatch.points import STATUS_MEASUREMENT
from parkwatch.schema import KIND_MODELS, Kind
from rules.expr import FieldType, Type

__all__ = [
    "DEVICE_KINDS",
    "KPI_FIELDS",
    "SOURCES",
    "Source",
    "parse_source",
]

DEVICE_KINDS: Final = tuple(kind.value for kind in Kind)


SOURCES: Final = (*DEVICE_KINDS, "any", STATUS_MEASUREMENT, *(f"park_kpi:{w}" for w in KPI_WINDOWS))


@dataclass(frozen=True, slots=True)
class Source:
    """A parsed ``source``: the device kinds it covers, or the KPI window it reads."""

    name: str
    kinds: tuple[str, ...] = ()
    """Device kinds whose telemetry the rule sees (``any``: all four)."""
    kpi_window: str = ""
    status: bool = False
    """``device_status``: birth messages and last wills (field ``online``)."""

    @property
    def devices(self) -> bool:
        """Whether alerts are per device (else per park)."""
        return not self.kpi_window


def parse_source(name: str) -> Source:
    """``storage``, ``any``, ``device_status`` or ``park_kpi:1h``; ValueError otherwise."""
    if name in DEVICE_KINDS:
        return Source(name, kinds=(name,))
    if name == "any":
        return Source(name, kinds=DEVICE_KINDS)
    if name == STATUS_MEASUREMENT:
        return Source(name, status=True)
    if name.startswith("park_kpi:") and name.split(":", 1)[1] in KPI_WINDOWS:
        return Source(name, kpi_window=name.split(":", 1)[1])
    raise ValueError(f"unknown source {name!r} (one of: {', '.join(SOURCES)})")


def _field_type(annotation: object) -> FieldType | None:
    """The rule type of a payload model field's annotation (``float | None`` -> number)."""
    for member in typing.get_args(annotation) or (annotation,):
        arg = (
            typing.get_args(member)[0] if typing.get_origin(member) is typing.Annotated else member
        )
        if arg is bool:
            return FieldType(Type.BOOL)
        if arg in (int, float):
            return FieldType(Type.NUMBER)
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return FieldType(Type.STRING, frozenset(str(member.value) for member in arg))
    return None


def _kind_fields(kind: Kind) -> dict[str, FieldType]:
    model = KIND_MODELS[kind]
    fields: dict[str, FieldType] = {}
    for name, info in model.model_fields.items():
        if name == "ts" or name in model.tag_fields:
            continue
        found = _field_type(info.annotation)
        if found is not None:
            fields[name] = found
    return fields


_DEVICE_FIELDS: Final = {kind.value: _kind_fields(kind) for kind in Kind}
_KPI_TYPES: Final = dict.fromkeys(KPI_FIELDS, FieldType(Type.NUMBER))
_STATUS_FIELDS: Final = {"online": FieldType(Type.BOOL)}


def source_fields(source: Source, extra: Mapping[str, Mapping[str, Type]]) -> dict[str, FieldType]:
    """The fields a rule on ``source`` may read; ``extra`` adds declared fields per kind."""
    if source.kpi_window:
        return dict(_KPI_TYPES)
    if source.status:
        return dict(_STATUS_FIELDS)
    fields: dict[str, FieldType] = {}
    for kind in source.kinds:
        for name, field in _DEVICE_FIELDS[kind].items():
            fields.setdefault(name, field)
        for name, type_ in extra.get(kind, {}).items():
            fields.setdefault(name, FieldType(type_))
    return fields
