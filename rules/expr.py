"""The rule expression language: a lexer and a Pratt parser to a small typed syntax tree.

::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?     (no chaining)
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/") unary)*
    unary    := "-" unary | primary
    primary  := NUMBER | STRING | "true" | "false" | $param | field
              | window_fn "(" field "," DURATION ")" | "stale" "(" DURATION ")" | "(" expr ")"

Nothing here is Python: there is no attribute access, indexing, call of anything but the window
functions, exponent or ``eval``. Input is bounded (length, nesting, literal sizes) so a hostile
expression is refused while the rule file loads, never at evaluation. Types are checked against
the fields of the rule's source by :func:`check`, so ``status == "Faultd"`` or ``soc_pct + "x"``
fail at load too.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from rules.windows import WINDOW_METHODS

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "WINDOW_FUNCTIONS",
    "Binary",
    "Call",
    "Compare",
    "Const",
    "ExprError",
    "FieldRef",
    "FieldType",
    "Node",
    "Param",
    "Stale",
    "Type",
    "Unary",
    "check",
    "children",
    "parse",
    "parse_duration",
    "type_of",
    "value_node",
]

MAX_LENGTH: Final = 2000
"""Characters in one expression."""
MAX_DEPTH: Final = 40
"""Nesting of parentheses and operators (keeps the parser's recursion far from Python's limit)."""
MAX_NUMBER_CHARS: Final = 40
MAX_STRING_CHARS: Final = 256
MAX_DURATION_MS: Final = 31 * 86_400_000
"""The longest window: a month (window buffers are bounded in samples too)."""

WINDOW_FUNCTIONS: Final = frozenset(WINDOW_METHODS)
"""The window functions an expression may call: those ``rules/windows.py`` evaluates."""

_UNITS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")


class ExprError(ValueError):
    """An expression is invalid; ``pos`` is the 0-based character offset (or -1)."""

    def __init__(self, message: str, pos: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos

    def __str__(self) -> str:
        return self.message if self.pos < 0 else f"{self.message} (column {self.pos + 1})"


def parse_duration(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"500ms"`` -> milliseconds (Prometheus' notation)."""
    if not _DURATION.fullmatch(text):
        raise ExprError(f"invalid duration {text!r} (use e.g. 30s, 15m, 1h30m, 1d)")
    total = sum(int(n) * _UNITS_MS[unit] for n, unit in _DURATION_PART.findall(text))
    if total > MAX_DURATION_MS:
        raise ExprError(f"duration {text!r} is longer than 31d")
    return total


# -- syntax tree ---------------------------------------------------------------------------


class Type(enum.Enum):
    """Static types of the language."""

    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"


@dataclass(frozen=True, slots=True)
class Const:
    """A number, string or boolean literal."""

    value: float | str | bool
    pos: int = -1


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field of the source's readings (the current one)."""

    name: str
    pos: int = -1


@dataclass(frozen=True, slots=True)
class Param:
    """``$name``: a rule parameter (per-park overrides, or the park's targets)."""

    name: str
    pos: int = -1


@dataclass(frozen=True, slots=True)
class Unary:
    """``-x`` or ``not x``."""

    op: str
    operand: Node
    pos: int = -1


@dataclass(frozen=True, slots=True)
class Binary:
    """``+ - * /`` and ``and or``."""

    op: str
    left: Node
    right: Node
    pos: int = -1


@dataclass(frozen=True, slots=True)
class Compare:
    """``< <= > >= == !=``."""

    op: str
    left: Node
    right: Node
    pos: int = -1


@dataclass(frozen=True, slots=True)
class Call:
    """A window function over one field: ``avg_over_time(soc_pct, 15m)``."""

    func: str
    field: str
    duration_ms: int
    pos: int = -1


@dataclass(frozen=True, slots=True)
class Stale:
    """``stale(5m)``: no reading for this long on the park's clock, or a last will."""

    duration_ms: int
    pos: int = -1


Node = Const | FieldRef | Param | Unary | Binary | Compare | Call | Stale


# -- lexer ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<duration>\d+(?:ms|s|m|h|d)(?:\d+(?:ms|s|m|h|d))*(?![A-Za-z0-9_]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_]))
  | (?P<string>"(?:[^"\\\n]|\\["\\])*")
  | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|[<>+\-*/(),])
    """,
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "true", "false"})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, string, duration, param, name, op, end
    text: str
    pos: int


def _tokens(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            char = source[pos]
            hint = ""
            if char == ".":
                hint = ": there is no attribute access"
            elif char in "[]{}":
                hint = ": there is no indexing"
            elif char == "'":
                hint = ": strings use double quotes"
            elif char == "=":
                hint = ": compare with =="
            raise ExprError(f"unexpected character {char!r}{hint}", pos)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(source)))
    return tokens


# -- parser --------------------------------------------------------------------------------

_COMPARISONS: Final = frozenset({"<", "<=", ">", ">=", "==", "!="})
# Left binding power of each infix operator; "not" (prefix) binds at 3.
_INFIX: Final = {
    "or": 1,
    "and": 2,
    **dict.fromkeys(_COMPARISONS, 4),
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
}
_NOT_POWER: Final = 3
_NEG_POWER: Final = 7


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text or token.kind not in ("op", "name"):
            raise ExprError(f"expected {text!r}, found {_describe(token)}", token.pos)
        return token

    def expression(self, min_power: int = 0) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested deeper than {MAX_DEPTH}", self.peek().pos)
        left = self.prefix()
        while True:
            token = self.peek()
            op = token.text
            infix = token.kind == "op" or (token.kind == "name" and op in ("and", "or"))
            power = _INFIX.get(op, 0) if infix else 0
            if power == 0 or power <= min_power:
                break
            self.take()
            if op in _COMPARISONS:
                right = self.expression(power)
                after = self.peek()
                if after.kind == "op" and after.text in _COMPARISONS:
                    raise ExprError("comparisons cannot be chained; join them with and", after.pos)
                left = Compare(op, left, right, token.pos)
            else:
                left = Binary(op, left, self.expression(power), token.pos)
        self.depth -= 1
        return left

    def prefix(self) -> Node:
        token = self.take()
        kind, text, pos = token.kind, token.text, token.pos
        if kind == "number":
            return Const(_number(text, pos), pos)
        if kind == "string":
            body = text[1:-1]
            if len(body) > MAX_STRING_CHARS:
                raise ExprError(f"string literal longer than {MAX_STRING_CHARS} characters", pos)
            return Const(body.replace('\\"', '"').replace("\\\\", "\\"), pos)
        if kind == "param":
            return Param(text[1:], pos)
        if kind == "duration":
            raise ExprError(
                f"a duration ({text}) is only allowed as a window function's argument", pos
            )
        if kind == "op" and text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if kind == "op" and text == "-":
            return Unary("-", self.expression(_NEG_POWER - 1), pos)
        if kind == "name":
            return self.name(token)
        raise ExprError(f"unexpected {_describe(token)}", pos)

    def name(self, token: _Token) -> Node:
        text, pos = token.text, token.pos
        if text == "not":
            return Unary("not", self.expression(_NOT_POWER - 1), pos)
        if text in ("true", "false"):
            return Const(text == "true", pos)
        if text in ("and", "or"):
            raise ExprError(f"unexpected {text!r}", pos)
        if "__" in text:
            raise ExprError(f"names with double underscores are not allowed: {text!r}", pos)
        if self.peek().text != "(" or self.peek().kind != "op":
            return FieldRef(text, pos)
        self.take()
        if text == "stale":
            duration = self.duration()
            self.expect(")")
            return Stale(duration, pos)
        if text not in WINDOW_FUNCTIONS:
            known = ", ".join(sorted(WINDOW_FUNCTIONS | {"stale"}))
            raise ExprError(f"unknown function {text!r} (functions: {known})", pos)
        field = self.take()
        if field.kind != "name" or field.text in _KEYWORDS or "__" in field.text:
            raise ExprError(
                f"{text}() takes a field name first, found {_describe(field)}", field.pos
            )
        self.expect(",")
        duration = self.duration()
        self.expect(")")
        return Call(text, field.text, duration, pos)

    def duration(self) -> int:
        token = self.take()
        if token.kind != "duration":
            raise ExprError(f"expected a duration like 5m, found {_describe(token)}", token.pos)
        try:
            value = parse_duration(token.text)
        except ExprError as exc:
            raise ExprError(exc.message, token.pos) from None
        if value <= 0:
            raise ExprError("a duration must be longer than zero", token.pos)
        return value


def _number(text: str, pos: int) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ExprError(f"number literal longer than {MAX_NUMBER_CHARS} characters", pos)
    value = float(text)
    if not math.isfinite(value):
        raise ExprError(f"number {text} is out of range", pos)
    return value


def _describe(token: _Token) -> str:
    return "the end of the expression" if token.kind == "end" else repr(token.text)


def parse(source: str) -> Node:
    """Parse ``source`` into a syntax tree; raise :class:`ExprError` with a column."""
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    if not source.strip():
        raise ExprError("empty expression")
    parser = _Parser(source)
    node = parser.expression()
    end = parser.peek()
    if end.kind != "end":
        raise ExprError(f"unexpected {_describe(end)}", end.pos)
    if _depth(node) > MAX_DEPTH:
        # A long flat chain (a + b + c ...) is deep as a tree though the parser looped over it.
        raise ExprError(f"expression nested deeper than {MAX_DEPTH} (split it up)")
    return node


def _depth(root: Node) -> int:
    """The tree's depth, without recursion."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children(node))
    return deepest


# -- types ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldType:
    """A field's type, and for string fields the values it can take (empty: any)."""

    type: Type
    values: frozenset[str] = frozenset()


def check(
    node: Node,
    fields: Mapping[str, FieldType],
    params: Mapping[str, float | str],
    *,
    allow_stale: bool,
) -> Type:
    """Type-check ``node``; the expression as a whole must be a condition (bool)."""
    if isinstance(node, Stale) or _contains_stale(node):
        if not isinstance(node, Stale):
            raise ExprError("stale() must be the whole expression", _stale_pos(node))
        if not allow_stale:
            raise ExprError("stale() applies to device sources only", node.pos)
        return Type.BOOL
    result = _type(node, fields, params)
    if result is not Type.BOOL:
        raise ExprError(f"the expression is a {result.value}, not a condition (compare it)")
    return result


def _contains_stale(node: Node) -> bool:
    return _stale_pos(node) >= 0


def _stale_pos(node: Node) -> int:
    if isinstance(node, Stale):
        return node.pos
    for child in children(node):
        pos = _stale_pos(child)
        if pos >= 0:
            return pos
    return -1


def children(node: Node) -> tuple[Node, ...]:
    """The operands of ``node`` (none for a leaf), left to right."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary | Compare):
        return (node.left, node.right)
    return ()


def type_of(node: Node, fields: Mapping[str, FieldType], params: Mapping[str, float | str]) -> Type:
    """The static type of ``node`` (raises ExprError on a type error)."""
    return _type(node, fields, params)


def _type(node: Node, fields: Mapping[str, FieldType], params: Mapping[str, float | str]) -> Type:
    if isinstance(node, Const):
        if isinstance(node.value, bool):
            return Type.BOOL
        return Type.STRING if isinstance(node.value, str) else Type.NUMBER
    if isinstance(node, FieldRef):
        return _field(node.name, node.pos, fields).type
    if isinstance(node, Param):
        if node.name not in params:
            known = ", ".join(f"${p}" for p in sorted(params)) or "none"
            raise ExprError(f"unknown parameter ${node.name} (known: {known})", node.pos)
        return Type.STRING if isinstance(params[node.name], str) else Type.NUMBER
    if isinstance(node, Call):
        if _field(node.field, node.pos, fields).type is not Type.NUMBER:
            raise ExprError(f"{node.func}() needs a numeric field, not {node.field!r}", node.pos)
        return Type.NUMBER
    return _operator_type(node, fields, params)


def _operator_type(
    node: Node, fields: Mapping[str, FieldType], params: Mapping[str, float | str]
) -> Type:
    if isinstance(node, Unary):
        inner = _type(node.operand, fields, params)
        want = Type.NUMBER if node.op == "-" else Type.BOOL
        if inner is not want:
            raise ExprError(f"{node.op!r} needs a {want.value}, not a {inner.value}", node.pos)
        return want
    if isinstance(node, Binary):
        want = Type.BOOL if node.op in ("and", "or") else Type.NUMBER
        for side in (node.left, node.right):
            got = _type(side, fields, params)
            if got is not want:
                raise ExprError(f"{node.op!r} needs {want.value}s, not a {got.value}", node.pos)
        return want
    if isinstance(node, Compare):
        return _compare(node, fields, params)
    raise ExprError("stale() must be the whole expression", node.pos)


def _compare(
    node: Compare, fields: Mapping[str, FieldType], params: Mapping[str, float | str]
) -> Type:
    left = _type(node.left, fields, params)
    right = _type(node.right, fields, params)
    if left is not right:
        raise ExprError(f"cannot compare a {left.value} with a {right.value}", node.pos)
    if left is not Type.NUMBER and node.op not in ("==", "!="):
        raise ExprError(f"{left.value}s compare only with == and !=", node.pos)
    if left is Type.STRING:
        for field, other in ((node.left, node.right), (node.right, node.left)):
            if isinstance(field, FieldRef) and isinstance(other, Const):
                allowed = fields[field.name].values
                if allowed and other.value not in allowed:
                    raise ExprError(
                        f"{field.name} is never {other.value!r} "
                        f"(values: {', '.join(sorted(allowed))})",
                        other.pos,
                    )
    return Type.BOOL


def _field(name: str, pos: int, fields: Mapping[str, FieldType]) -> FieldType:
    found = fields.get(name)
    if found is None:
        raise ExprError(f"unknown field {name!r} for this source", pos)
    return found


def value_node(
    node: Node, fields: Mapping[str, FieldType], params: Mapping[str, float | str]
) -> Node | None:
    """The sub-expression whose value an alert reports: the data side of the first comparison.

    For ``avg_over_time(soc_pct, 15m) < $soc_min`` that is the average; for a string or boolean
    condition there is none.
    """
    if isinstance(node, Compare):
        for side in (node.left, node.right):
            if _is_data(side) and _type(side, fields, params) is Type.NUMBER:
                return side
        return None
    for child in children(node):
        found = value_node(child, fields, params)
        if found is not None:
            return found
    return None


def _is_data(node: Node) -> bool:
    if isinstance(node, FieldRef | Call):
        return True
    return any(_is_data(child) for child in children(node))
