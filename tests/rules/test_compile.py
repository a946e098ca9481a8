"""The evaluator: compiled closures agree with a plain recursive reference on random input."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.compile import compile_expr, window_id
from rules.expr import Binary, Call, Compare, Const, FieldRef, Node, Param, Unary, parse
from rules.windows import WINDOW_METHODS, Window
from tests.rules.test_expr import PARAMS, conditions

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def reference(node: Node, fields: Mapping[str, Any], windows: Mapping[str, Window]) -> Any:
    """The language's semantics, written out plainly (three-valued where data is missing)."""
    if isinstance(node, Const | FieldRef | Param):
        return _leaf(node, fields)
    if isinstance(node, Call):
        window = windows.get(window_id(node.field, node.duration_ms))
        return None if window is None else WINDOW_METHODS[node.func](window)
    if isinstance(node, Unary):
        value = reference(node.operand, fields, windows)
        if value is None:
            return None
        return -value if node.op == "-" else not value
    assert isinstance(node, Binary | Compare)
    return _binary(node.op, reference(node.left, fields, windows),
                   reference(node.right, fields, windows))  # fmt: skip


def _leaf(node: Const | FieldRef | Param, fields: Mapping[str, Any]) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, FieldRef):
        return fields.get(node.name)
    return float(PARAMS[node.name])


def _binary(op: str, left: Any, right: Any) -> Any:
    if op == "and":
        if left is False or right is False:
            return False
        return None if left is None or right is None else True
    if op == "or":
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    if left is None or right is None or (op == "/" and right == 0):
        return None
    return left / right if op == "/" else _OPS[op](left, right)


_NUMBER = st.one_of(st.none(), st.just(0.0), st.floats(-1e3, 1e3, allow_nan=False))


@st.composite
def inputs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Window]]:
    """Field values (some missing) and windows over fields a and b."""
    fields: dict[str, Any] = {name: draw(_NUMBER) for name in ("a", "b", "c")}
    fields["s"] = draw(st.sampled_from(["X", "Y", None]))
    fields["f"] = draw(st.sampled_from([True, False, None]))
    fields = {name: value for name, value in fields.items() if value is not None}
    windows: dict[str, Window] = {}
    for field in ("a", "b"):
        for span in (1000, 60_000, 3_600_000):
            samples = draw(st.lists(st.floats(0, 100, allow_nan=False), max_size=4))
            if samples:
                window = Window(span, extremes=True)
                for i, value in enumerate(samples):
                    window.add(i * 20_000, value)
                windows[window_id(field, span)] = window
    return fields, windows


@settings(max_examples=500, deadline=None)
@given(conditions(), inputs())
def test_compiled_closures_match_the_reference(
    node: Node, data: tuple[dict[str, Any], dict[str, Window]]
) -> None:
    fields, windows = data
    compiled = compile_expr(node, PARAMS)
    assert compiled(fields, windows) == reference(node, fields, windows)


def test_missing_data_leaves_the_condition_unknown() -> None:
    both = compile_expr(parse("a > 1 and b > 1"), {})
    assert both({"a": 2.0}, {}) is None
    assert both({"a": 0.0}, {}) is False  # false whatever b is
    either = compile_expr(parse("a > 1 or b > 1"), {})
    assert either({"a": 2.0}, {}) is True
    assert either({"a": 0.0}, {}) is None
    assert compile_expr(parse("a / b > 1"), {})({"a": 1.0, "b": 0.0}, {}) is None
    assert compile_expr(parse("avg_over_time(a, 5m) > 1"), {})({}, {}) is None


def test_parameters_are_bound_per_compilation() -> None:
    node = parse("a < $min")
    assert compile_expr(node, {"min": 10})({"a": 12.0}, {}) is False
    assert compile_expr(node, {"min": 15})({"a": 12.0}, {}) is True


def test_constants_fold() -> None:
    assert compile_expr(parse("1 + 2 * 3 == 7"), {})({}, {}) is True
    assert compile_expr(parse("1 / 0 > 0"), {})({}, {}) is None
    assert compile_expr(parse("-(1 / 0) > 0 or true"), {})({}, {}) is True
