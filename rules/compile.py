"""Turn a checked syntax tree into nested closures: the evaluator of the rule language.

A compiled expression is a function ``(fields, windows) -> value``: ``fields`` the reading's
fields, ``windows`` the series' windows by id. Parameters are bound when compiling (one compiled
copy per rule and park), so ``$soc_min`` costs nothing at evaluation, and constant
sub-expressions are folded. The common shapes (a field or function compared with a constant) get
one closure instead of three. ``bench/rules.py`` measures this against simpleeval, lark and
cel-python.

Values are three-valued where data can be missing: a field absent from the reading, a window
with too few samples or a division by zero give ``None``, which propagates (``None < 3`` is
``None``; ``x and None`` is ``None`` unless ``x`` is false) and leaves the alert as it was.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from rules.expr import Binary, Call, Compare, Const, FieldRef, Node, Param, Stale, Unary
from rules.windows import WINDOW_METHODS, Window

__all__ = ["Compiled", "compile_expr", "window_id"]

Compiled = Callable[[Mapping[str, Any], Mapping[str, Window]], Any]
"""``(fields, windows) -> value or None``."""

_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_ARITHMETIC: Final[dict[str, Callable[[float, float], float]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def window_id(field: str, duration_ms: int) -> str:
    """The id of the window a ``Call`` reads: one per field and duration, shared by rules."""
    return f"{field}@{duration_ms}"


class _Constant:
    """A folded constant (kept apart from closures so parents can specialise on it)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def compile_expr(node: Node, params: Mapping[str, float | str]) -> Compiled:
    """Compile ``node`` (already type-checked) with ``params`` bound."""
    return _function(_build(node, params))


def _build(node: Node, params: Mapping[str, float | str]) -> Compiled | _Constant:
    if isinstance(node, Stale):
        raise TypeError("stale() is evaluated by the engine, not compiled")
    return _BUILDERS[type(node)](node, params)


def _literal(node: Node, params: Mapping[str, float | str]) -> _Constant:
    assert isinstance(node, Const)
    return _Constant(node.value)


def _param(node: Node, params: Mapping[str, float | str]) -> _Constant:
    assert isinstance(node, Param)
    value = params[node.name]
    return _Constant(value if isinstance(value, str) else float(value))


def _field(node: Node, params: Mapping[str, float | str]) -> Compiled:
    assert isinstance(node, FieldRef)
    name = node.name

    def field(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        return fields.get(name)

    return field


def _binary(node: Node, params: Mapping[str, float | str]) -> Compiled | _Constant:
    assert isinstance(node, Binary)
    left, right = _build(node.left, params), _build(node.right, params)
    if node.op == "and":
        return _and(left, right)
    if node.op == "or":
        return _or(left, right)
    return _arithmetic(_ARITHMETIC[node.op], left, right)


def _unary_node(node: Node, params: Mapping[str, float | str]) -> Compiled | _Constant:
    assert isinstance(node, Unary)
    return _unary(node.op, _build(node.operand, params))


def _call(node: Node, params: Mapping[str, float | str]) -> Compiled:
    assert isinstance(node, Call)
    wid = window_id(node.field, node.duration_ms)
    method = WINDOW_METHODS[node.func]

    def call(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        window = windows.get(wid)
        return None if window is None else method(window)

    return call


def _unary(op: str, operand: Compiled | _Constant) -> Compiled | _Constant:
    if isinstance(operand, _Constant):
        if operand.value is None:
            return operand
        return _Constant(-operand.value if op == "-" else not operand.value)
    inner = operand
    if op == "-":

        def negate(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
            value = inner(fields, windows)
            return None if value is None else -value

        return negate

    def invert(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        value = inner(fields, windows)
        return None if value is None else not value

    return invert


def _compare(node: Node, params: Mapping[str, float | str]) -> Compiled | _Constant:
    assert isinstance(node, Compare)
    op = _COMPARE[node.op]
    left, right = _build(node.left, params), _build(node.right, params)
    if _unknown(left) or _unknown(right):
        return _Constant(None)
    if isinstance(left, _Constant) and isinstance(right, _Constant):
        return _Constant(op(left.value, right.value))
    if isinstance(right, _Constant) and isinstance(node.left, FieldRef):
        name, limit = node.left.name, right.value

        def field_vs_constant(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
            value = fields.get(name)
            return None if value is None else op(value, limit)

        return field_vs_constant
    if isinstance(right, _Constant):
        get, limit = _function(left), right.value

        def versus_constant(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
            value = get(fields, windows)
            return None if value is None else op(value, limit)

        return versus_constant
    if isinstance(left, _Constant):
        first, get_right = left.value, _function(right)

        def constant_versus(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
            value = get_right(fields, windows)
            return None if value is None else op(first, value)

        return constant_versus
    a, b = _function(left), _function(right)

    def general(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        x = a(fields, windows)
        if x is None:
            return None
        y = b(fields, windows)
        return None if y is None else op(x, y)

    return general


def _safe_div(x: float, y: float) -> float | None:
    """``x / y``, unknown (None) for a division by zero."""
    return None if y == 0 else x / y


def _arithmetic(
    op: Callable[[float, float], float], left: Compiled | _Constant, right: Compiled | _Constant
) -> Compiled | _Constant:
    # Chosen once, here: evaluation runs for every reading.
    apply: Callable[[float, float], float | None] = _safe_div if op is operator.truediv else op

    if _unknown(left) or _unknown(right):
        return _Constant(None)
    if isinstance(left, _Constant) and isinstance(right, _Constant):
        return _Constant(apply(left.value, right.value))
    if isinstance(right, _Constant):
        get, constant = _function(left), right.value

        def with_constant(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
            value = get(fields, windows)
            return None if value is None else apply(value, constant)

        return with_constant
    a, b = _function(left), _function(right)

    def general(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        x = a(fields, windows)
        if x is None:
            return None
        y = b(fields, windows)
        return None if y is None else apply(x, y)

    return general


def _unknown(built: Compiled | _Constant) -> bool:
    """A constant that folded to None (a division by zero): the whole comparison is unknown."""
    return isinstance(built, _Constant) and built.value is None


def _function(built: Compiled | _Constant) -> Compiled:
    """A closure for ``built`` (a constant becomes one that returns it)."""
    if isinstance(built, _Constant):
        value = built.value
        return lambda fields, windows: value
    return built


def _and(left: Compiled | _Constant, right: Compiled | _Constant) -> Compiled | _Constant:
    a, b = _function(left), _function(right)

    def both(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        x = a(fields, windows)
        if x is False:
            return False
        y = b(fields, windows)
        if y is False:
            return False
        return None if x is None or y is None else True

    return both


def _or(left: Compiled | _Constant, right: Compiled | _Constant) -> Compiled | _Constant:
    a, b = _function(left), _function(right)

    def either(fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
        x = a(fields, windows)
        if x is True:
            return True
        y = b(fields, windows)
        if y is True:
            return True
        return None if x is None or y is None else False

    return either


_BUILDERS: Final[dict[type, Callable[[Any, Mapping[str, float | str]], Compiled | _Constant]]] = {
    Const: _literal,
    Param: _param,
    FieldRef: _field,
    Call: _call,
    Unary: _unary_node,
    Binary: _binary,
    Compare: _compare,
}
