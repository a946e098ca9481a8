"""YAML to plain data while remembering the line of every key and item (for ``file:line``).

PyYAML's composer gives nodes with marks; building the data ourselves from them keeps each value's
line, refuses duplicate keys (which ``yaml.safe_load`` silently resolves to the last) and refuses
anchors and aliases (no "billion laughs" expansion, and a rule file has no use for them).
"""

from __future__ import annotations

from typing import Any, Final

import yaml

__all__ = ["MAX_FILE_BYTES", "Located", "load_located"]

MAX_FILE_BYTES: Final = 1 << 20

Path_ = tuple[Any, ...]


class Located:
    """The data of one YAML document and the line (1-based) of each path in it."""

    def __init__(self, data: Any, lines: dict[Path_, int], problems: list[tuple[int, str]]):
        self.data = data
        self.lines = lines
        self.problems = problems
        """``(line, message)`` for what could not be read (the data then lacks that part)."""

    def line(self, path: tuple[Any, ...]) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return 1


def load_located(text: str) -> Located:
    """Parse one YAML document; syntax errors come back as problems with their line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return Located(None, {}, [(line, f"YAML: {exc.problem or exc}")])
    except yaml.YAMLError as exc:
        return Located(None, {}, [(1, f"YAML: {exc}")])
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    problems: list[tuple[int, str]] = []
    if node is None:
        return Located(None, lines, problems)
    data = _Builder(loader, lines, problems).build(node, ())
    return Located(data, lines, problems)


class _Builder:
    def __init__(
        self, loader: yaml.SafeLoader, lines: dict[Path_, int], problems: list[tuple[int, str]]
    ) -> None:
        self.loader = loader
        self.lines = lines
        self.problems = problems
        self.seen: set[int] = set()

    def build(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        if id(node) in self.seen:
            self.problems.append((line, "YAML anchors and aliases are not supported"))
            return None
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node)
                if not isinstance(key, str | int | float | bool):
                    self.problems.append(
                        (key_node.start_mark.line + 1, "a mapping key must be a plain scalar")
                    )
                    continue
                if key in result:
                    self.problems.append((key_node.start_mark.line + 1, f"duplicate key {key!r}"))
                    continue
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problems.append((node.start_mark.line + 1, f"YAML: {exc}"))
            return None
