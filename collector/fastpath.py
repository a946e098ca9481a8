"""The decoder's fast path: a well-formed payload read with orjson and a per-kind field table.

Why: validating a telemetry payload with its pydantic model cost ~15 us of the decoder's ~30 us a
message (``bench/stages.py``, ``bench/kpi.py``'s ``decode_us_per_point``), the largest single
item behind the MQTT client in a drain's profile. Most payloads are well formed, and checking
one against a table of exact JSON types is a few dict lookups.

What it accepts is exactly what the kind's model accepts with the same result, and nothing it
is unsure about: each declared field must have the exact JSON type the strict model takes
(``float`` fields also take an integer, as strict pydantic does, stored as a float), be finite
and within the model's bounds, or be one of an enum's values; ``ts`` is epoch milliseconds or an
RFC 3339 string, within the model's bounds. Anything else (a wrong type, an out-of-range value,
a payload orjson refuses, a number too large to be sure both parsers round it alike) makes
:meth:`FastReader.read` return None, and the decoder validates the payload with pydantic, whose
error messages are the ones dead letters carry. So the fast path can make a message faster, never
change what becomes of it; ``tests/collector/test_fastpath.py`` checks both paths give the same
point or dead letter over arbitrary payloads (valid, almost valid, hostile).

The table is derived from the models (``parkwatch/schema.py``) by recognising the field shapes
they use; a field of any other shape leaves its kind without a fast path (always pydantic), so a
schema change can only make decoding slower, never wrong.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final

import annotated_types
import orjson
from pydantic import BaseModel, Strict
from pydantic.fields import FieldInfo
from pydantic.functional_validators import BeforeValidator

from parkwatch.points import FieldValue

# The private validator: _reader checks that ts is validated by it and nothing else.
from parkwatch.schema import _to_epoch_ms, rfc3339_to_epoch_ms

__all__ = ["FastReader", "Reading", "fast_readers"]

Reading = tuple[int, dict[str, FieldValue], list[tuple[str, str]], dict[str, Any] | None]
"""A payload as the decoder needs it: ``ts`` in epoch ms, the declared fields that are not tags
(model order, no nulls), the tag fields as (field name, text), and the extra fields (or None).
A plain tuple: one is made per message."""

_BAD: Final = object()
_FLOAT_LIMIT: Final = float(2**63)
"""Floats beyond this (and integers beyond 2**53) go to pydantic: orjson reads an integer too big
for 64 bits as a float, pydantic as an int, and equal results for those are not worth proving."""
_EXACT_INT: Final = 2**53

Check = Callable[[Any], Any]
"""Returns the value to store, or ``_BAD``."""


def _float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value if -_FLOAT_LIMIT < value < _FLOAT_LIMIT else _BAD  # NaN fails both
    if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
        return float(value)
    return _BAD


def _bool(value: Any) -> Any:
    return value if type(value) is bool else _BAD


def _int_check(low: int, high: int) -> Check:
    def check(value: Any) -> Any:
        return value if type(value) is int and low <= value <= high else _BAD

    return check


def _enum_check(members: type[enum.Enum]) -> Check:
    values = frozenset(member.value for member in members)

    def check(value: Any) -> Any:
        return value if type(value) is str and value in values else _BAD

    return check


def _bounds(metadata: list[Any]) -> tuple[int, int] | None:
    """Inclusive integer bounds from ``Ge``/``Gt``/``Le``/``Lt``; None for other metadata."""
    low, high = -(2**63), 2**63 - 1
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = max(low, int(item.ge))  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Gt):
            low = max(low, int(item.gt) + 1)  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Le):
            high = min(high, int(item.le))  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Lt):
            high = min(high, int(item.lt) - 1)  # type: ignore[call-overload]
        else:
            return None
    return low, high


def _non_strict_enum(annotation: Any) -> type[enum.Enum] | None:
    """``Annotated[SomeStrEnum, Field(strict=False)]`` (JSON strings equal to a value)."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    base, *extras = typing.get_args(annotation)
    if not (isinstance(base, type) and issubclass(base, enum.StrEnum)):
        return None
    for extra in extras:
        if not isinstance(extra, FieldInfo) or extra.metadata != [Strict(strict=False)]:
            return None
    return base


def _value_check(annotation: Any, metadata: list[Any]) -> Check | None:
    """The check of a field's (non-null) value; None: not a known shape."""
    members = _non_strict_enum(annotation)
    if members is not None:
        return None if metadata else _enum_check(members)
    if annotation is float:
        return None if metadata else _float
    if annotation is bool:
        return None if metadata else _bool
    bounds = _bounds(metadata)
    if annotation is int and bounds is not None:
        return _int_check(*bounds)
    return None


def _field_check(info: FieldInfo) -> tuple[Check, bool] | None:
    """The check of one declared field and whether null is allowed; None: not a known shape."""
    annotation: Any = info.annotation
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) != 1 or info.default is not None:
            return None
        nullable, annotation = True, args[0]
    check = _value_check(annotation, info.metadata)
    return None if check is None else (check, nullable)


def _epoch_ms(value: Any, low: int, high: int) -> int | None:
    """``ts`` as the model reads it (epoch ms, or RFC 3339 text), within bounds; else None."""
    if type(value) is str:
        try:
            value = rfc3339_to_epoch_ms(value)
        except ValueError:
            return None
    elif type(value) is not int:
        return None
    return value if low <= value <= high else None


class FastReader:
    """Reads the payloads of one kind that its model would accept; see the module docstring."""

    def __init__(
        self,
        ts_bounds: tuple[int, int],
        fields: list[tuple[str, Check, bool, Any]],
        tag_fields: tuple[str, ...],
    ) -> None:
        self._ts_low, self._ts_high = ts_bounds
        self._fields = fields
        """(name, check, nullable, default) of every declared field but ``ts``, in model order."""
        self._tags = frozenset(tag_fields)
        self._declared = frozenset(["ts", *(name for name, *_ in fields)])

    def read(self, payload: bytes) -> Reading | None:
        """The payload's reading, or None: let pydantic decide (and explain)."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict:
            return None
        ts = _epoch_ms(data.get("ts"), self._ts_low, self._ts_high)
        if ts is None:
            return None
        declared = self._read_declared(data)
        if declared is None:
            return None
        extra = None
        if not data.keys() <= self._declared:
            extra = {name: value for name, value in data.items() if name not in self._declared}
        return ts, *declared, extra

    def _read_declared(
        self, data: dict[str, Any]
    ) -> tuple[dict[str, FieldValue], list[tuple[str, str]]] | None:
        """The declared fields other than ``ts``: (fields, tags), or None if one is amiss."""
        fields: dict[str, FieldValue] = {}
        tags: list[tuple[str, str]] = []
        for name, check, nullable, default in self._fields:
            value = data.get(name, default)
            if value is None:
                if nullable:
                    continue
                return None
            if check is _float:  # most fields: inlined, a call each cost a fifth of the read
                kind = type(value)
                if kind is float:
                    if not -_FLOAT_LIMIT < value < _FLOAT_LIMIT:  # NaN fails both
                        return None
                elif kind is int and -_EXACT_INT <= value <= _EXACT_INT:
                    value = float(value)
                else:
                    return None
            else:
                value = check(value)
                if value is _BAD:
                    return None
            if name in self._tags:
                tags.append((name, str(value)))
            else:
                fields[name] = value
        return fields, tags


def _understood(model: type[BaseModel]) -> bool:
    """Whether the model's configuration is the one the table mirrors, with no validator code."""
    config = model.model_config
    decorators = model.__pydantic_decorators__
    return (
        config.get("strict") is True
        and config.get("extra") == "allow"
        and config.get("allow_inf_nan") is False
        and not decorators.validators
        and not decorators.field_validators
        and not decorators.root_validators
        and not decorators.model_validators
        and all(f.alias is None and f.validation_alias is None for f in model.model_fields.values())
    )


def _ts_bounds(info: FieldInfo) -> tuple[int, int] | None:
    """Bounds of ``ts``, if it is the schema's epoch milliseconds (int or RFC 3339 text)."""
    validators = [m for m in info.metadata if isinstance(m, BeforeValidator)]
    others = [m for m in info.metadata if not isinstance(m, BeforeValidator)]
    if info.annotation is not int or not info.is_required():
        return None
    if [validator.func for validator in validators] != [_to_epoch_ms]:
        return None
    return _bounds(others)


def _reader(model: type[BaseModel]) -> FastReader | None:
    """The fast path of one payload model, or None if it has a field of an unknown shape."""
    if not _understood(model) or "ts" not in model.model_fields:
        return None
    ts_bounds = _ts_bounds(model.model_fields["ts"])
    if ts_bounds is None:
        return None
    fields: list[tuple[str, Check, bool, Any]] = []
    for name, info in model.model_fields.items():
        if name == "ts":
            continue
        check = None if info.is_required() else _field_check(info)
        if check is None:
            return None
        fields.append((name, check[0], check[1], info.default))
    tag_fields: tuple[str, ...] = getattr(model, "tag_fields", ())
    return FastReader(ts_bounds, fields, tag_fields)


def fast_readers(models: Mapping[str, type[BaseModel]]) -> dict[str, FastReader]:
    """A fast path for every model whose fields it understands, by kind."""
    readers = {kind: _reader(model) for kind, model in models.items()}
    return {kind: reader for kind, reader in readers.items() if reader is not None}
