"""A loaded rule, and the same rule bound to one park's parameters (what the engine evaluates)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rules.compile import Compiled, compile_expr
from rules.expr import Node
from rules.sources import Source
from rules.templates import Template

__all__ = ["SEVERITIES", "BoundRule", "Rule", "WindowSpec"]

SEVERITIES: Final = ("critical", "major", "minor", "warning")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A window some rule reads: field, span, and whether min/max are needed."""

    wid: str
    field: str
    span_ms: int
    extremes: bool


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule as loaded and checked (independent of any park)."""

    uid: str
    """Identity across restarts: ``group/alert{labels}``."""
    name: str
    group: str
    origin: str
    """``file:line`` of the rule, for messages."""
    source: Source
    expr: Node
    clear: Node | None
    value: Node | None
    for_ms: int
    stale_ms: int
    """For ``stale(d)`` rules, ``d``; else 0."""
    labels: Mapping[str, str]
    annotations: Mapping[str, Template]
    params: Mapping[str, float | str]
    overrides: Mapping[str, Mapping[str, float | str]]
    windows: tuple[WindowSpec, ...] = ()

    @property
    def severity(self) -> str:
        """The ``severity`` label."""
        return self.labels.get("severity", "warning")

    def bind(self, park: str, targets: Mapping[str, float]) -> BoundRule:
        """This rule with ``park``'s parameters: targets, then params, then overrides."""
        params: dict[str, float | str] = {**targets, **self.params, **self.overrides.get(park, {})}
        expr = None if self.stale_ms else compile_expr(self.expr, params)
        clear = None if self.clear is None else compile_expr(self.clear, params)
        value = None if self.value is None else compile_expr(self.value, params)
        template_values = {f"${name}": v for name, v in params.items()}
        return BoundRule(self, expr, clear, value, template_values)


@dataclass(frozen=True, slots=True)
class BoundRule:
    """A rule compiled with one park's parameters."""

    rule: Rule
    expr: Compiled | None
    """None for ``stale`` rules (the engine evaluates those)."""
    clear: Compiled | None
    value: Compiled | None
    params: Mapping[str, Any] = field(default_factory=dict)
    """``{"$name": value}``, for annotation templates."""
