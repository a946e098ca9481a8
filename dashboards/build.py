"""Build every dashboard and write it as JSON, deterministically.

The same settings give byte-identical files (sorted keys, fixed indentation, a pinned SDK), so
the JSON committed in ``dashboards/json/`` is checked against a fresh build by a test. Each
dashboard carries a ``parkwatch`` stamp with the SHA-256 of its own content: the provisioner
uses it to tell a dashboard it wrote, untouched since, from one edited in Grafana.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from dashboards import alerts, city, collector, ev, park, site5g, storage
from dashboards.board import Board, BuildContext
from parkwatch.settings import Settings

__all__ = [
    "DASHBOARD_UIDS",
    "STAMP_KEY",
    "build_all",
    "content_digest",
    "context_from_settings",
    "render",
    "write_all",
]

STAMP_KEY: Final = "parkwatch"
"""Top-level key of the stamp: ``{"generator": ..., "sha256": <digest of the rest>}``."""
GENERATOR: Final = "parkwatch dashboards build"
# Keys Grafana itself sets on a stored dashboard: not part of what parkwatch wrote.
GRAFANA_MANAGED_KEYS: Final = frozenset({"id", "version", STAMP_KEY})

BUILDERS: Final[tuple[tuple[str, Callable[[BuildContext], Board]], ...]] = (
    (city.UID, city.build),
    (park.UID, park.build),
    (storage.UID, storage.build),
    (site5g.UID, site5g.build),
    (ev.UID, ev.build),
    (alerts.UID, alerts.build),
    (collector.UID, collector.build),
)
DASHBOARD_UIDS: Final = tuple(uid for uid, _ in BUILDERS)


def context_from_settings(settings: Settings) -> BuildContext:
    """The build context of a settings tree: data source uid, default targets and time zone."""
    return BuildContext(
        datasource_uid=settings.grafana.datasource_uid,
        targets=settings.parks.defaults.targets,
        timezone=settings.parks.defaults.timezone,
    )


def content_digest(dashboard: Mapping[str, Any]) -> str:
    """SHA-256 of a dashboard's content, without the keys Grafana manages and the stamp."""
    content = {k: v for k, v in dashboard.items() if k not in GRAFANA_MANAGED_KEYS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_all(context: BuildContext) -> dict[str, dict[str, Any]]:
    """Every dashboard by uid, stamped, in a fixed order."""
    built: dict[str, dict[str, Any]] = {}
    for uid, build in BUILDERS:
        dashboard = build(context).build()
        if dashboard.get("uid") != uid:
            raise AssertionError(f"dashboard {uid} was built with uid {dashboard.get('uid')}")
        dashboard[STAMP_KEY] = {"generator": GENERATOR, "sha256": content_digest(dashboard)}
        built[uid] = dashboard
    return built


def render(dashboard: Mapping[str, Any]) -> bytes:
    """The dashboard as it is written to disk: sorted keys, two-space indent, final newline."""
    return (json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_all(directory: Path, context: BuildContext) -> list[Path]:
    """Write ``<uid>.json`` for every dashboard into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, dashboard in build_all(context).items():
        path = directory / f"{uid}.json"
        path.write_bytes(render(dashboard))
        paths.append(path)
    return paths
