"""The routing tree: which receivers an alert goes to, and how it is grouped there.

The algorithm is Alertmanager's (``dispatch/route.go``): an alert enters at the root; the
children are tried in order, and the first whose matchers all hold takes it (recursively);
a later sibling is tried only if the child that matched has ``continue``. A node that no child
took is the one that notifies. A missing label matches as the empty string, and regexes are
anchored, as in Alertmanager.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from parkwatch.settings import DEFAULT_GROUP_BY, DEFAULT_GROUP_WAIT_S, RouteSettings

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled routing node; ``path`` (``"0"``, ``"0.2"``) names it in logs and group keys."""

    path: str
    receivers: tuple[str, ...]
    match: tuple[tuple[str, str], ...]
    match_re: tuple[tuple[str, re.Pattern[str]], ...]
    continue_: bool
    group_by: tuple[str, ...]
    group_wait_s: float
    children: tuple[Route, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher of this node holds for ``labels``."""
        return all(labels.get(name, "") == value for name, value in self.match) and all(
            pattern.fullmatch(labels.get(name, "")) for name, pattern in self.match_re
        )

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The values of this node's ``group_by`` labels: alerts sharing them form one group."""
        return {name: labels.get(name, "") for name in self.group_by}


def _compile(settings: RouteSettings, parent: Route | None, path: str) -> Route:
    receivers = (
        tuple(settings.receivers)
        if settings.receivers is not None
        else (parent.receivers if parent else ())
    )
    group_by = (
        tuple(settings.group_by)
        if settings.group_by is not None
        else (parent.group_by if parent else DEFAULT_GROUP_BY)
    )
    group_wait_s = (
        settings.group_wait_s
        if settings.group_wait_s is not None
        else (parent.group_wait_s if parent else DEFAULT_GROUP_WAIT_S)
    )
    node = Route(
        path=path,
        receivers=receivers,
        match=tuple(sorted(settings.match.items())),
        match_re=tuple((k, re.compile(v)) for k, v in sorted(settings.match_re.items())),
        continue_=settings.continue_,
        group_by=group_by,
        group_wait_s=group_wait_s,
        children=(),
    )
    children = tuple(
        _compile(child, node, f"{path}.{index}") for index, child in enumerate(settings.routes)
    )
    # Frozen: a copy with the children, which needed the node as their parent.
    return dataclasses.replace(node, children=children)


class Router:
    """Finds the routing nodes that notify an alert's labels."""

    def __init__(self, settings: RouteSettings) -> None:
        self.root = _compile(settings, None, "0")

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        """The nodes whose receivers an alert with ``labels`` goes to (the root at least)."""
        return _match(self.root, labels) or [self.root]

    def routes(self) -> list[Route]:
        """Every node, depth first."""
        nodes: list[Route] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(reversed(node.children))
        return nodes


def _match(node: Route, labels: Mapping[str, str]) -> list[Route]:
    if not node.matches(labels):
        return []
    found: list[Route] = []
    for child in node.children:
        matched = _match(child, labels)
        found += matched
        if matched and not child.continue_:
            break
    return found or [node]
