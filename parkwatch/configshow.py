"""``parkwatch config show``: the effective settings, secrets masked, each value's source named.

Sources, highest priority first: keyword arguments (tests only), ``PARKWATCH_*`` environment
variables, the config file, the defaults (see ``parkwatch.settings``). A value that no source set
and that differs from its default was derived from another setting (a password moved out of a
URL into ``password``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic_settings import EnvSettingsSource

from parkwatch.redaction import redact_url
from parkwatch.settings import Settings, read_config_file

__all__ = ["effective_settings", "render_settings", "setting_sources"]


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings tree as JSON values, secrets as ``**********`` and every URL redacted."""
    # mode="json" turns each SecretStr into pydantic's mask and each Path into text.
    tree: dict[str, Any] = _redacted(settings.model_dump(mode="json"))
    return tree


def _redacted(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _redacted(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_redacted(value) for value in node]
    if isinstance(node, str) and "://" in node:
        return redact_url(node)
    return node


def _leaves(node: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def setting_sources(settings: Settings, config_file: Path | None) -> dict[str, str]:
    """Where each setting's value came from: env, file, default or derived."""
    env = dict(_leaves(EnvSettingsSource(Settings)()))
    file = dict(_leaves(read_config_file(config_file))) if config_file else {}
    defaults = dict(_leaves(Settings.model_construct().model_dump(mode="json")))
    sources = {}
    for path, value in _leaves(settings.model_dump(mode="json")):
        if path in env or any(path.startswith(f"{key}.") for key in env):
            sources[path] = "env"
        elif path in file or any(path.startswith(f"{key}.") for key in file):
            sources[path] = "file"
        elif defaults.get(path) == value:
            sources[path] = "default"
        else:
            sources[path] = "derived"
    return sources


def render_settings(settings: Settings, config_file: Path | None) -> str:
    """The effective settings as YAML (values in JSON notation), a source comment on each."""
    tree = effective_settings(settings)
    sources = setting_sources(settings, config_file)
    lines = [
        "# parkwatch effective settings",
        "# sources, highest priority first: environment (PARKWATCH_*, __ nests), "
        f"config file ({config_file or 'none'}), defaults",
        "# secrets show as **********, passwords in URLs as ***",
    ]
    lines += _render(tree, sources, "", 0)
    return "\n".join(lines) + "\n"


def _render(
    node: Mapping[str, Any], sources: Mapping[str, str], prefix: str, depth: int
) -> list[str]:
    lines = []
    indent = "  " * depth
    # Plain values first, then the sections, so top-level scalars do not end up inside one.
    for key, value in sorted(node.items(), key=lambda item: isinstance(item[1], Mapping)):
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines += _render(value, sources, f"{path}.", depth + 1)
        else:
            lines.append(f"{indent}{key}: {json.dumps(value)}  # {sources.get(path, 'default')}")
    return lines
