"""Annotation templates: plain ``{{ name }}`` substitution, checked at load, no code at all.

``{{ park }}``, ``{{ device }}``, any label, ``{{ value }}``, ``{{ $param }}`` and the fields of
the reading (``{{ error_code }}``) are replaced by their text; an optional format spec picks the
rendering of numbers: ``{{ value:.1f }}``. The spec is limited to fill-free alignment, a width of
at most two digits and a precision of at most two (no width can blow up memory). Unknown names are
errors while the rule file loads; a name whose value is missing at render time renders as ``-``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MISSING", "Template", "TemplateError", "format_number"]

MISSING: Final = "-"
MAX_TEMPLATE_CHARS: Final = 2000

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_INNER = re.compile(r"\s*(\$?[A-Za-z_][A-Za-z0-9_]*)\s*(?::\s*([^\s]*)\s*)?")
_SPEC = re.compile(r"[<>^]?\d{0,2}(?:\.\d{1,2})?[fge%]?")


class TemplateError(ValueError):
    """A template is invalid."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and ``(name, spec)`` placeholders, alternating."""

    parts: tuple[str | tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str, names: Sequence[str] | frozenset[str]) -> Template:
        """Parse ``text``; every placeholder must name one of ``names``."""
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
        parts: list[str | tuple[str, str]] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[pos : match.start()])
            inner = _INNER.fullmatch(match.group(1))
            if inner is None:
                raise TemplateError(
                    f"{match.group()!r}: a placeholder holds one name and an optional "
                    "format, e.g. {{ value:.1f }}"
                )
            name, spec = inner.group(1), inner.group(2) or ""
            if name not in names:
                known = ", ".join(sorted(names))
                raise TemplateError(f"unknown name {name!r} in {match.group()!r} (known: {known})")
            if spec and not _SPEC.fullmatch(spec):
                raise TemplateError(f"format {spec!r} not allowed (e.g. .1f, .3g, >8.2f)")
            parts.append((name, spec))
            pos = match.end()
        tail = text[pos:]
        if "{{" in tail or "}}" in tail:
            raise TemplateError("unbalanced '{{' or '}}'")
        parts.append(tail)
        return cls(tuple(part for part in parts if part != ""))

    def render(self, values: Mapping[str, Any]) -> str:
        """Substitute ``values`` (names as parsed, params with their ``$``)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, spec = part
            value = values.get(name)
            out.append(_text(value, spec))
        return "".join(out)


def format_number(value: float) -> str:
    """A number as an operator reads it: ``47.3``, ``0.0123``, ``12345``."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000 or value == int(value):
        return f"{value:.0f}" if abs(value) < 1e15 else f"{value:.3g}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _text(value: Any, spec: str) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if spec:
        return format(float(value), spec)
    return format_number(float(value))
