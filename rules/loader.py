"""Rule files: read, validate (pydantic), type-check and compile; every problem as file:line.

A rule file, Prometheus-shaped::

    groups:
      - name: storage
        rules:
          - alert: StorageCellHot
            source: storage          # a device kind, any, device_status, park_kpi:<window>
            expr: cell_temp_max_c > $hot_c
            clear: cell_temp_max_c < $cool_c     # optional hysteresis
            for: 30s                             # optional, on the park's event-time clock
            labels: {severity: warning}
            annotations: {summary: "{{ park }}/{{ device }}: {{ value:.1f }} degC"}
            params: {hot_c: 45, cool_c: 42}
            overrides: {lingang: {hot_c: 43}}    # per-park parameters
    extra_fields:                                # optional: fields beyond the payload schema
      storage: {fan_rpm: number}

Loading never stops at the first problem: :func:`load_rules` raises one :class:`RuleError`
listing them all, which is what ``parkwatch rules check`` prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from parkwatch.errors import RuleError
from parkwatch.settings import ParkTargets
from rules.compile import window_id
from rules.expr import (
    Call,
    ExprError,
    Node,
    Stale,
    Type,
    check,
    children,
    parse,
    parse_duration,
    type_of,
    value_node,
)
from rules.rule import SEVERITIES, Rule, WindowSpec
from rules.sources import parse_source, source_fields
from rules.templates import Template, TemplateError
from rules.yamlnodes import MAX_FILE_BYTES, Located, load_located

__all__ = ["PACK", "RuleSet", "load_rules", "rule_files"]

PACK: Final = Path(__file__).parent / "pack"
"""The shipped rule pack (the default of ``rules.paths``)."""

TARGETS: Final = {name: float(info.default) for name, info in ParkTargets.model_fields.items()}
"""Parameters every rule can read: the park's green targets (``parks`` configuration)."""

RESERVED_LABELS: Final = frozenset({"alertname", "park", "kind", "device", "connector"})
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_MAX_RULES: Final = 10_000

ParamValue = StrictFloat | StrictInt | StrictStr
_M = TypeVar("_M", bound=BaseModel)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RuleSpec(_Spec):
    """One rule as written in the file."""

    alert: str = Field(pattern=_NAME, max_length=128)
    source: str
    expr: str
    clear: str | None = None
    value: str | None = None
    for_: str | None = Field(default=None, alias="for")
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    params: dict[StrictStr, ParamValue] = Field(default_factory=dict)
    overrides: dict[StrictStr, dict[StrictStr, ParamValue]] = Field(default_factory=dict)


class GroupSpec(_Spec):
    """A named list of rules."""

    name: str = Field(min_length=1, max_length=128)
    rules: list[dict[str, Any]]


class FileSpec(_Spec):
    """A rule file."""

    groups: list[dict[str, Any]]
    extra_fields: dict[StrictStr, dict[StrictStr, Literal["number", "bool"]]] = Field(
        default_factory=dict
    )


class RuleSet:
    """The loaded rules, indexed the way the engine looks them up."""

    def __init__(self, rules: Sequence[Rule], files: Sequence[Path]) -> None:
        self.rules = tuple(rules)
        self.files = tuple(files)
        self.by_uid = {rule.uid: rule for rule in self.rules}

    def __len__(self) -> int:
        return len(self.rules)


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Expand folders into their ``*.yaml``/``*.yml`` files (not recursive); missing paths."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            files += [p for p in found if p.is_file()]
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}:0: no such file or folder")
    return files, problems


def load_rules(paths: Sequence[Path] = ()) -> RuleSet:
    """Load ``paths`` (files or folders; empty: the shipped pack); RuleError lists every problem."""
    files, problems = rule_files(paths or [PACK])
    rules: list[Rule] = []
    for file in files:
        rules += _load_file(file, problems)
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.uid in seen:
            problems.append(
                f"{rule.origin}: {rule.name}: same group, name and labels as the rule at "
                f"{seen[rule.uid]} (give it a different severity or label)"
            )
        seen.setdefault(rule.uid, rule.origin)
    if len(rules) > _MAX_RULES:
        problems.append(f"{files[0]}:1: more than {_MAX_RULES} rules")
    if problems:
        raise RuleError(problems)
    return RuleSet(rules, files)


def _load_file(path: Path, problems: list[str]) -> list[Rule]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}:0: cannot read: {exc.strerror}")
        return []
    if len(raw) > MAX_FILE_BYTES:
        problems.append(f"{path}:1: larger than {MAX_FILE_BYTES} bytes")
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{path}:1: not UTF-8")
        return []
    doc = load_located(text)
    problems += [f"{path}:{line}: {message}" for line, message in doc.problems]
    if doc.data is None and not doc.problems:
        problems.append(f"{path}:1: empty rule file (expected 'groups:')")
    if doc.data is None:
        return []
    spec = _validate(FileSpec, doc.data, (), doc=doc, path=path, problems=problems)
    if spec is None:
        return []
    extra = {
        kind: {name: Type.NUMBER if t == "number" else Type.BOOL for name, t in names.items()}
        for kind, names in spec.extra_fields.items()
    }
    rules: list[Rule] = []
    group_names: set[str] = set()
    for g, group_data in enumerate(spec.groups):
        group = _validate(
            GroupSpec, group_data, ("groups", g), doc=doc, path=path, problems=problems
        )
        if group is None:
            continue
        if group.name in group_names:
            line = doc.line(("groups", g, "name"))
            problems.append(f"{path}:{line}: group {group.name!r} appears twice in this file")
        group_names.add(group.name)
        for r, rule_data in enumerate(group.rules):
            where = ("groups", g, "rules", r)
            rule_spec = _validate(RuleSpec, rule_data, where, doc=doc, path=path, problems=problems)
            if rule_spec is not None:
                rule = _Compiler(
                    path, doc, where, group=group.name, extra=extra, problems=problems
                ).rule(rule_spec)
                if rule is not None:
                    rules.append(rule)
    return rules


def _validate(
    model: type[_M],
    data: Any,
    where: tuple[Any, ...],
    *,
    doc: Located,
    path: Path,
    problems: list[str],
) -> _M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            line = doc.line((*where, *loc))
            name = ".".join(str(part) for part in (*where, *loc)) or "(top level)"
            problems.append(f"{path}:{line}: {name}: {error['msg']}")
        return None


class _Compiler:
    """Checks one validated rule and builds a :class:`Rule`, adding problems as it goes."""

    def __init__(
        self,
        path: Path,
        doc: Located,
        where: tuple[Any, ...],
        *,
        group: str,
        extra: Mapping[str, Mapping[str, Type]],
        problems: list[str],
    ) -> None:
        self.path = path
        self.doc = doc
        self.where = where
        self.group = group
        self.extra = extra
        self.problems = problems
        self.name = ""
        self.failed = False

    def problem(self, key: tuple[Any, ...], message: str) -> None:
        line = self.doc.line((*self.where, *key))
        self.problems.append(f"{self.path}:{line}: {self.name}: {message}")
        self.failed = True

    def rule(self, spec: RuleSpec) -> Rule | None:
        self.name = spec.alert
        try:
            source = parse_source(spec.source)
        except ValueError as exc:
            self.problem(("source",), str(exc))
            return None
        fields = source_fields(source, self.extra)
        params = self.params(spec)
        expr = self.expression("expr", spec.expr, fields, params, allow_stale=source.devices)
        clear = None
        if spec.clear is not None:
            clear = self.expression("clear", spec.clear, fields, params, allow_stale=False)
        value = None
        if spec.value is not None:
            value = self.expression("value", spec.value, fields, params, numeric=True)
        elif expr is not None and not isinstance(expr, Stale):
            value = value_node(expr, fields, params)
        stale_ms = expr.duration_ms if isinstance(expr, Stale) else 0
        if stale_ms and source.status:
            self.problem(("expr",), "stale() does not apply to device_status (use any)")
        if stale_ms and clear is not None:
            self.problem(("clear",), "a stale() rule clears when the device reports again")
        for_ms = self.duration(spec.for_)
        labels = self.labels(spec.labels)
        names = self.template_names(source.devices, labels, params, fields)
        annotations: dict[str, Template] = {}
        for key, text in spec.annotations.items():
            try:
                annotations[key] = Template.parse(text, names)
            except TemplateError as exc:
                self.problem(("annotations", key), f"annotation {key}: {exc}")
        if self.failed or expr is None:
            return None
        windows = _windows([n for n in (expr, clear, value) if n is not None])
        line = self.doc.line(self.where)
        uid = f"{self.group}/{spec.alert}{_label_text(labels)}"
        return Rule(
            uid=uid,
            name=spec.alert,
            group=self.group,
            origin=f"{self.path}:{line}",
            source=source,
            expr=expr,
            clear=clear,
            value=value,
            for_ms=for_ms,
            stale_ms=stale_ms,
            labels=labels,
            annotations=annotations,
            params=params,
            overrides={park: dict(values) for park, values in spec.overrides.items()},
            windows=windows,
        )

    def params(self, spec: RuleSpec) -> dict[str, float | str]:
        known: dict[str, float | str] = {**TARGETS, **spec.params}
        for name in spec.params:
            if not re.match(_NAME, name):
                self.problem(("params", name), f"parameter name {name!r} is not an identifier")
        for park, values in spec.overrides.items():
            for name, value in values.items():
                if name not in known:
                    self.problem(
                        ("overrides", park, name),
                        f"override of unknown parameter {name!r} for park {park!r}",
                    )
                elif isinstance(value, str) != isinstance(known[name], str):
                    self.problem(
                        ("overrides", park, name), f"override of {name!r} changes its type"
                    )
        return dict(spec.params)

    def expression(
        self,
        key: str,
        text: str,
        fields: Mapping[str, Any],
        params: Mapping[str, float | str],
        *,
        allow_stale: bool = False,
        numeric: bool = False,
    ) -> Node | None:
        known = {**TARGETS, **params}
        try:
            node = parse(text)
            kind = type_of(node, fields, known) if numeric else Type.NUMBER
            if not numeric:
                check(node, fields, known, allow_stale=allow_stale)
        except ExprError as exc:
            self.problem((key,), f"{key}: {exc}")
            return None
        if kind is not Type.NUMBER:
            self.problem((key,), f"{key}: the value must be a number, not a {kind.value}")
            return None
        return node

    def duration(self, text: str | None) -> int:
        if text is None:
            return 0
        if text in ("0", "0s"):
            return 0
        try:
            return parse_duration(text)
        except ExprError as exc:
            self.problem(("for",), f"for: {exc.message}")
            return 0

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        result = dict(labels)
        for name in labels:
            if name in RESERVED_LABELS:
                self.problem(("labels", name), f"label {name!r} is set by the engine")
            elif not re.match(_NAME, name):
                self.problem(("labels", name), f"label name {name!r} is not an identifier")
        severity = result.setdefault("severity", "warning")
        if severity not in SEVERITIES:
            self.problem(
                ("labels", "severity"),
                f"severity {severity!r} is not one of {', '.join(SEVERITIES)}",
            )
        return result

    @staticmethod
    def template_names(
        devices: bool,
        labels: Mapping[str, str],
        params: Mapping[str, float | str],
        fields: Mapping[str, Any],
    ) -> frozenset[str]:
        names = {"alertname", "park", "park_name", "value", *labels, *fields}
        names |= {f"${name}" for name in (*TARGETS, *params)}
        if devices:
            names |= {"kind", "device", "connector"}
        return frozenset(names)


def _windows(nodes: Sequence[Node]) -> tuple[WindowSpec, ...]:
    calls: list[Call] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            calls.append(node)
        stack.extend(children(node))
    specs: dict[str, WindowSpec] = {}
    for call in sorted(calls, key=lambda c: (c.field, c.duration_ms)):
        wid = window_id(call.field, call.duration_ms)
        extremes = call.func in ("min_over_time", "max_over_time")
        old = specs.get(wid)
        specs[wid] = WindowSpec(
            wid, call.field, call.duration_ms, extremes or bool(old and old.extremes)
        )
    return tuple(specs.values())


def _label_text(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
