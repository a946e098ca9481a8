"""The demo's dashboards: Grafana provisioning files for its own servers, and a configured Grafana.

``parkwatch demo`` always writes a provisioning tree for its InfluxDB into ``<workdir>/grafana``
(``dashboards/files.py``) and prints the one command that starts a locally installed Grafana on
it. Where a Grafana URL is configured (``grafana.url``, ``PARKWATCH_GRAFANA__URL`` or ``demo
--grafana-url``) it also provisions that Grafana through its API, as ``parkwatch dashboards
provision`` does; a failure there is reported in one line and the demo goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dashboards.files import write_demo_provisioning
from dashboards.grafana_api import provision_from_settings
from parkwatch.errors import GrafanaError
from parkwatch.settings import Settings

__all__ = ["HOME_DASHBOARD", "DemoDashboards", "demo_dashboards"]

HOME_DASHBOARD: Final = "parkwatch-city"
"""The dashboard a newcomer opens first (every park ranked, the city's totals)."""


@dataclass(frozen=True, slots=True)
class DemoDashboards:
    """Where the demo's dashboards are: the files, the command, a provisioned Grafana."""

    directory: Path
    """The provisioning tree (``provisioning/`` and ``dashboards/``)."""
    command: str
    """The shell command that starts a local Grafana on ``directory``."""
    local_url: str
    """The home dashboard in that local Grafana."""
    provisioned_url: str | None = None
    """The home dashboard in the configured Grafana, once provisioned."""
    problem: str | None = None
    """Why the configured Grafana could not be provisioned (one line)."""
    written: int = 0
    """Objects (data source, folder, dashboards) provisioning created or updated."""
    objects: int = 0
    """Objects provisioning looked at."""

    def lines(self) -> list[str]:
        """What the demo prints (rich markup)."""
        lines = []
        if self.provisioned_url is not None:
            lines.append(
                f"[bold]dashboards[/]: {self.provisioned_url} (Grafana provisioned: "
                f"{self.written} of {self.objects} objects created or updated)"
            )
        elif self.problem is not None:
            lines.append(f"[yellow]could not provision Grafana[/]: {self.problem}")
        lines.append(
            f"[bold]dashboards[/] for a local Grafana: provisioning files in {self.directory}; "
            f"start Grafana on them with the command below, then open {self.local_url}"
        )
        return lines


def demo_dashboards(settings: Settings, directory: Path, *, grafana_port: int) -> DemoDashboards:
    """Write the provisioning tree for ``settings``' InfluxDB and provision ``grafana.url``."""
    local = f"http://127.0.0.1:{grafana_port}"
    command = write_demo_provisioning(
        directory,
        influx_url=settings.influx.url,
        database=settings.influx.database,
        grafana_url=local,
        settings=settings,
    )
    files = DemoDashboards(directory, command, f"{local}/d/{HOME_DASHBOARD}")
    grafana = settings.grafana
    if grafana.url is None:
        return files
    try:
        report = provision_from_settings(settings)
    except GrafanaError as exc:
        return DemoDashboards(directory, command, files.local_url, problem=str(exc))
    return DemoDashboards(
        directory,
        command,
        files.local_url,
        provisioned_url=f"{grafana.url.rstrip('/')}/d/{HOME_DASHBOARD}",
        written=sum(change.action != "unchanged" for change in report.changes),
        objects=len(report.changes),
    )
