"""Provision a running Grafana: the data source, the folder and every dashboard, idempotently.

The core decides; :class:`GrafanaApi` (the adapter seam, ``dashboards/grafana_api.py`` over
``grafana-client``) talks HTTP. A run first reads everything and plans, then writes only what
differs, so a second run changes nothing and says so. It never deletes anything, and it
overwrites a dashboard only when parkwatch wrote it and nobody edited it since (its stamp, see
``dashboards/build.py``, still matches its content); anything else in the way stops the run
before any write, unless ``force``. Updates send the version read, so a dashboard saved in
Grafana meanwhile is not overwritten either (Grafana answers 412).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from dashboards.build import STAMP_KEY, content_digest
from dashboards.datasource import DataSourceSpec
from parkwatch.errors import GrafanaConflict, GrafanaUnsupported

__all__ = ["MIN_GRAFANA", "Change", "GrafanaApi", "Report", "check_version", "provision"]

MIN_GRAFANA: Final = (11, 0)
"""The dashboards are built for Grafana 11 (schema 41, grafana-foundation-sdk for 11.6)."""
MESSAGE: Final = "provisioned by parkwatch dashboards provision"

Action = Literal["create", "update", "unchanged"]


class GrafanaApi(Protocol):
    """The Grafana HTTP API calls provisioning needs (``None``: not found)."""

    url: str

    def version(self) -> str:
        """Grafana's version string, e.g. ``11.3.0``."""

    def get_datasource(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/datasources/uid/{uid}``."""

    def create_datasource(self, body: dict[str, Any]) -> None:
        """``POST /api/datasources``."""

    def update_datasource(self, uid: str, body: dict[str, Any]) -> None:
        """``PUT /api/datasources/uid/{uid}``."""

    def get_folder(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/folders/{uid}``."""

    def create_folder(self, uid: str, title: str) -> None:
        """``POST /api/folders``."""

    def update_folder(self, uid: str, title: str, version: int) -> None:
        """``PUT /api/folders/{uid}``."""

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/dashboards/uid/{uid}``: ``{"dashboard": ..., "meta": ...}``."""

    def save_dashboard(
        self, dashboard: dict[str, Any], *, folder_uid: str, overwrite: bool, message: str
    ) -> None:
        """``POST /api/dashboards/db``."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a run does (or did) to one object."""

    kind: Literal["data source", "folder", "dashboard"]
    uid: str
    action: Action
    detail: str = ""
    conflict: str = ""
    """Why this write needs ``force`` (empty: it does not)."""

    def line(self) -> str:
        """One line for the report, e.g. ``dashboard parkwatch-city: updated (moved)``."""
        done = {"create": "created", "update": "updated", "unchanged": "unchanged"}[self.action]
        extra = f" ({self.detail})" if self.detail else ""
        forced = f" [forced: {self.conflict}]" if self.conflict else ""
        return f"{self.kind} {self.uid}: {done}{extra}{forced}"


@dataclass(slots=True)
class Report:
    """The outcome of a run."""

    grafana_url: str
    version: str
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return any(change.action != "unchanged" for change in self.changes)

    def lines(self) -> list[str]:
        """Human-readable lines: one per object, then a summary."""
        head = f"Grafana {self.version} at {self.grafana_url}"
        if not self.changed:
            return [f"{head}: nothing to do, all {len(self.changes)} objects are up to date"]
        counts = {a: sum(c.action == a for c in self.changes) for a in ("create", "update")}
        summary = (
            f"{counts['create']} created, {counts['update']} updated, "
            f"{len(self.changes) - counts['create'] - counts['update']} unchanged"
        )
        return [f"{head}:", *(f"  {c.line()}" for c in self.changes), summary]


def check_version(version: str) -> None:
    """Raise ``GrafanaUnsupported`` for a Grafana older than :data:`MIN_GRAFANA`."""
    found = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if found is None:
        raise GrafanaUnsupported(f"cannot read the Grafana version {version!r}")
    if (int(found[1]), int(found[2])) < MIN_GRAFANA:
        need = ".".join(map(str, MIN_GRAFANA))
        raise GrafanaUnsupported(
            f"Grafana {version} is not supported: the dashboards need Grafana {need} or newer"
        )


def _plan_datasource(api: GrafanaApi, spec: DataSourceSpec, force: bool) -> Change:
    stored = api.get_datasource(spec.uid)
    if stored is None:
        return Change("data source", spec.uid, "create", spec.url)
    if spec.matches(stored):
        # Secrets cannot be read back; force re-sends them (e.g. after rotating a password).
        return Change("data source", spec.uid, "update" if force else "unchanged", spec.url)
    return Change("data source", spec.uid, "update", spec.url)


def _plan_folder(api: GrafanaApi, uid: str, title: str) -> tuple[Change, int]:
    stored = api.get_folder(uid)
    if stored is None:
        return Change("folder", uid, "create", title), 0
    version = int(stored.get("version") or 0)
    if stored.get("title") != title:
        return Change("folder", uid, "update", f"renamed to {title!r}"), version
    return Change("folder", uid, "unchanged", title), version


def _plan_dashboard(
    api: GrafanaApi, uid: str, wanted: Mapping[str, Any], folder_uid: str
) -> tuple[Change, dict[str, Any] | None]:
    stored = api.get_dashboard(uid)
    if stored is None:
        return Change("dashboard", uid, "create"), None
    document: dict[str, Any] = stored.get("dashboard") or {}
    meta: dict[str, Any] = stored.get("meta") or {}
    stamp = document.get(STAMP_KEY)
    version = document.get("version", meta.get("version"))
    if not isinstance(stamp, dict) or "sha256" not in stamp:
        return Change("dashboard", uid, "update", conflict="not created by parkwatch"), stored
    digest = content_digest(document)
    if stamp["sha256"] != digest:
        return Change(
            "dashboard",
            uid,
            "update",
            conflict=f"edited in Grafana since parkwatch provisioned it (version {version})",
        ), stored
    moved = meta.get("folderUid", "") != folder_uid
    if not moved and digest == wanted[STAMP_KEY]["sha256"]:
        return Change("dashboard", uid, "unchanged"), stored
    return Change("dashboard", uid, "update", "moved into the folder" if moved else ""), stored


def provision(
    api: GrafanaApi,
    *,
    datasource: DataSourceSpec,
    folder_uid: str,
    folder_title: str,
    dashboards: Mapping[str, Mapping[str, Any]],
    force: bool = False,
) -> Report:
    """Bring Grafana in line with the data source, folder and dashboards; return what changed.

    Raises ``GrafanaConflict`` (before writing anything) when a dashboard with one of our uids
    was not created by parkwatch or was edited since, unless ``force``.
    """
    version = api.version()
    check_version(version)
    report = Report(api.url, version)

    source = _plan_datasource(api, datasource, force)
    folder, folder_version = _plan_folder(api, folder_uid, folder_title)
    planned = [
        (uid, wanted, *_plan_dashboard(api, uid, wanted, folder_uid))
        for uid, wanted in dashboards.items()
    ]
    blocked = [change for _, _, change, _ in planned if change.conflict]
    if blocked and not force:
        which = "; ".join(f"{c.uid}: {c.conflict}" for c in blocked)
        raise GrafanaConflict(
            f"Grafana at {api.url}: will not overwrite {which} "
            "(nothing was changed; --force overwrites)"
        )

    if source.action == "create":
        api.create_datasource(datasource.body())
    elif source.action == "update":
        api.update_datasource(datasource.uid, datasource.body())
    report.changes.append(source)
    if folder.action == "create":
        api.create_folder(folder_uid, folder_title)
    elif folder.action == "update":
        api.update_folder(folder_uid, folder_title, folder_version)
    report.changes.append(folder)
    for _, wanted, change, stored in planned:
        if change.action != "unchanged":
            document = dict(wanted)
            if stored is not None:
                # Saving over a stored dashboard names its id and the version we read.
                stored_document = stored.get("dashboard") or {}
                document["id"] = stored_document.get("id")
                document["version"] = stored_document.get("version")
            api.save_dashboard(
                document, folder_uid=folder_uid, overwrite=bool(change.conflict), message=MESSAGE
            )
        report.changes.append(change)
    return report
