"""The expression language: grammar, types, hostile input, and parse/print round trips."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.expr import (
    MAX_DEPTH,
    MAX_LENGTH,
    Binary,
    Call,
    Compare,
    Const,
    ExprError,
    FieldRef,
    FieldType,
    Node,
    Param,
    Stale,
    Type,
    Unary,
    check,
    parse,
    parse_duration,
    value_node,
)

FIELDS = {
    "a": FieldType(Type.NUMBER),
    "b": FieldType(Type.NUMBER),
    "c": FieldType(Type.NUMBER),
    "s": FieldType(Type.STRING, frozenset({"X", "Y"})),
    "f": FieldType(Type.BOOL),
}
PARAMS: dict[str, float | str] = {"p": 2.5, "q": -1.0}


def strip(node: Node) -> Node:
    """``node`` with every position cleared (positions depend on spacing, not meaning)."""
    changes: dict[str, Any] = {"pos": -1}
    for name in ("operand", "left", "right"):
        if hasattr(node, name):
            changes[name] = strip(getattr(node, name))
    return dataclasses.replace(node, **changes)


def test_precedence_and_associativity() -> None:
    assert strip(parse("a + b * c")) == Binary(
        "+", FieldRef("a"), Binary("*", FieldRef("b"), FieldRef("c"))
    )
    assert strip(parse("a - b - c")) == Binary(
        "-", Binary("-", FieldRef("a"), FieldRef("b")), FieldRef("c")
    )
    assert strip(parse("not a > 1 and f or b < 2")) == Binary(
        "or",
        Binary("and", Unary("not", Compare(">", FieldRef("a"), Const(1.0))), FieldRef("f")),
        Compare("<", FieldRef("b"), Const(2.0)),
    )
    assert strip(parse("-a * 2")) == Binary("*", Unary("-", FieldRef("a")), Const(2.0))


def test_literals_params_and_window_functions() -> None:
    assert strip(parse('s == "X \\" y"')) == Compare("==", FieldRef("s"), Const('X " y'))
    assert strip(parse("$p")) == Param("p")
    assert strip(parse("true")) == Const(True)
    assert strip(parse("1.5e3")) == Const(1500.0)
    assert strip(parse("avg_over_time(a, 1h30m)")) == Call("avg_over_time", "a", 5_400_000)
    assert strip(parse("stale(5m)")) == Stale(300_000)


@pytest.mark.parametrize(
    ("text", "ms"), [("500ms", 500), ("30s", 30_000), ("15m", 900_000), ("1d", 86_400_000)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a < b < c", "cannot be chained"),
        ("a +", "unexpected the end"),
        ("(a > 1", "expected ')'"),
        ("a > 1)", "unexpected ')'"),
        ("a = 1", "compare with =="),
        ("s == 'X'", "double quotes"),
        ("avg_over_time(a)", "expected ','"),
        ("avg_over_time(a, 5)", "expected a duration"),
        ("avg_over_time(1, 5m)", "takes a field name"),
        ("a > 5m", "only allowed as a window function's argument"),
        ("stale(0s)", "longer than zero"),
        ("", "empty expression"),
    ],
)
def test_syntax_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "not a condition"),
        ('a > "X"', "cannot compare a number with a string"),
        ('s == "Faultd"', "s is never 'Faultd'"),
        ('s < "X"', "strings compare only with == and !="),
        ("f + 1 > 2", "'+' needs numbers"),
        ("a and f", "'and' needs bools"),
        ("not a", "'not' needs a bool"),
        ("zz > 1", "unknown field 'zz'"),
        ("$nope > 1", "unknown parameter $nope"),
        ("avg_over_time(s, 5m) > 1", "needs a numeric field"),
        ("stale(5m) and f", "stale() must be the whole expression"),
    ],
)
def test_type_errors_are_found_before_evaluation(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        check(parse(text), FIELDS, PARAMS, allow_stale=True)


def test_stale_only_for_device_sources() -> None:
    with pytest.raises(ExprError, match="device sources only"):
        check(parse("stale(5m)"), FIELDS, PARAMS, allow_stale=False)


# Each of these is refused while the rule loads (the loader turns ExprError into file:line).
HOSTILE = [
    "__import__('os').system('id')",
    "a.__class__.__mro__",
    "().__class__.__bases__[0].__subclasses__()",
    "__builtins__ > 0",
    'open("/etc/passwd") == "x"',
    'eval("1") > 0',
    'exec("import os") > 0',
    'getattr(a, "real") > 0',
    "globals() > 0",
    "a ** 99999999 > 0",
    "9**9**9**9 > 0",
    "1e999999 > 0",
    "1" + "0" * 400 + " > 0",
    "a[0] > 1",
    "{} > 1",
    "lambda: 1",
    "[x for x in a] > 1",
    "a if f else b > 1",
    '"' + "x" * 10_000 + '" == s',
    "(" * 1000 + "a > 1" + ")" * 1000,
    "-" * 1000 + "a > 1",
    "not " * 1000 + "f",
    " + ".join(["a"] * 200) + " > 1",
    "a > 1 " + "and f " * 3000,
    "avg_over_time(a, 9999d) > 1",
    "a > 1\x00",
    "a; import os",
    "`id` > 1",
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: t[:30])
def test_hostile_expressions_are_refused(text: str) -> None:
    with pytest.raises(ExprError):
        check(parse(text), FIELDS, PARAMS, allow_stale=True)


def test_input_bounds() -> None:
    with pytest.raises(ExprError, match=f"longer than {MAX_LENGTH}"):
        parse("a" * (MAX_LENGTH + 1))
    ok = "(" * (MAX_DEPTH - 2) + "a > 1" + ")" * (MAX_DEPTH - 2)
    check(parse(ok), FIELDS, PARAMS, allow_stale=False)
    with pytest.raises(ExprError, match="nested deeper"):
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))


def test_value_is_the_data_side_of_the_first_comparison() -> None:
    node = parse("$p > avg_over_time(a, 5m) or b > 3")
    assert strip(value_node(node, FIELDS, PARAMS) or Const(0)) == Call(
        "avg_over_time", "a", 300_000
    )
    assert value_node(parse('s == "X"'), FIELDS, PARAMS) is None


# -- property: printing a tree and parsing it back gives the same tree ------------------------

_NUM_LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.sampled_from([FieldRef("a"), FieldRef("b"), FieldRef("c"), Param("p"), Param("q")]),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda v: Const(float(v))),
    st.builds(
        Call,
        st.sampled_from(["avg_over_time", "max_over_time", "rate", "delta"]),
        st.sampled_from(["a", "b"]),
        st.sampled_from([1000, 60_000, 3_600_000]),
    ),
)


def numbers() -> st.SearchStrategy[Node]:
    """Numeric expressions."""
    return st.recursive(
        _NUM_LEAVES,
        lambda inner: st.one_of(
            st.builds(Unary, st.just("-"), inner),
            st.builds(Binary, st.sampled_from(["+", "-", "*", "/"]), inner, inner),
        ),
        max_leaves=6,
    )


def conditions() -> st.SearchStrategy[Node]:
    """Boolean expressions."""
    leaves = st.one_of(
        st.builds(
            Compare, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numbers(), numbers()
        ),
        st.builds(
            Compare,
            st.sampled_from(["==", "!="]),
            st.just(FieldRef("s")),
            st.sampled_from([Const("X"), Const("Y")]),
        ),
        st.sampled_from([FieldRef("f"), Const(True), Const(False)]),
    )
    return st.recursive(
        leaves,  # type: ignore[arg-type]  # hypothesis types this st.one_of as object
        lambda inner: st.one_of(
            st.builds(Unary, st.just("not"), inner),
            st.builds(Binary, st.sampled_from(["and", "or"]), inner, inner),
        ),
        max_leaves=6,
    )


_POWER = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}


def render(node: Node) -> str:
    """Source text with only the parentheses precedence needs (tests the parser's table)."""
    return _render(node, 0)


def _render(node: Node, context: int) -> str:
    if isinstance(node, Unary):
        power = _POWER["neg" if node.op == "-" else "not"]
        text = ("-" if node.op == "-" else "not ") + _render(node.operand, power - 1)
    elif isinstance(node, Compare):
        power = _POWER["cmp"]
        text = f"{_render(node.left, power)} {node.op} {_render(node.right, power)}"
    elif isinstance(node, Binary):
        power = _POWER[node.op]
        # Left-associative: the right operand needs parentheses at the same power.
        text = f"{_render(node.left, power - 1)} {node.op} {_render(node.right, power)}"
    else:
        return _leaf(node)
    return f"({text})" if power <= context else text


def _leaf(node: Node) -> str:
    if isinstance(node, Const):
        if isinstance(node.value, bool):
            return "true" if node.value else "false"
        return f'"{node.value}"' if isinstance(node.value, str) else repr(node.value)
    if isinstance(node, FieldRef):
        return node.name
    if isinstance(node, Param):
        return "$" + node.name
    assert isinstance(node, Call)
    return f"{node.func}({node.field}, {node.duration_ms}ms)"


@settings(max_examples=300, deadline=None)
@given(conditions())
def test_print_then_parse_is_identity(node: Node) -> None:
    parsed = parse(render(node))
    assert strip(parsed) == node
    assert check(parsed, FIELDS, PARAMS, allow_stale=False) is Type.BOOL


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab$p()+-*/<>=!. \"'_,5ms:notandor[]{}")), max_size=40)
)
def test_any_text_parses_or_raises_expr_error(text: str) -> None:
    with contextlib.suppress(ExprError):
        check(parse(text), FIELDS, PARAMS, allow_stale=True)
