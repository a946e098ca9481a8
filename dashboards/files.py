"""Grafana file provisioning: the data-source and dashboard-provider YAML, plus the JSON.

For anyone who provisions Grafana from files instead of its API: the compose stack (its files
are committed under ``config/grafana/``, checked against :func:`compose_files` by a test), and
``parkwatch demo``, which writes a tree for its own InfluxDB with :func:`write_demo_provisioning`
and prints the one command that starts a locally installed Grafana on it. Grafana layout::

    <dir>/provisioning/datasources/parkwatch.yaml
    <dir>/provisioning/dashboards/parkwatch.yaml   (a file provider reading <dir>/dashboards)
    <dir>/provisioning/{plugins,alerting}/         (empty: Grafana expects them)
    <dir>/dashboards/<uid>.json
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml
from pydantic import SecretStr

from dashboards.build import context_from_settings, write_all
from dashboards.datasource import DataSourceSpec, datasource_from_settings
from parkwatch.settings import Settings

__all__ = [
    "COMPOSE_DASHBOARDS_PATH",
    "ProvisioningFiles",
    "compose_files",
    "datasource_yaml",
    "grafana_command",
    "provider_yaml",
    "write_demo_provisioning",
    "write_provisioning",
]

COMPOSE_DASHBOARDS_PATH: Final = "/etc/grafana/dashboards/parkwatch"
COMPOSE_INFLUX_URL: Final = "http://influxdb:8086"
COMPOSE_TOKEN_VARIABLE: Final = "INFLUX_TOKEN"  # noqa: S105 - a variable name, no secret
"""Grafana expands ``${NAME}`` in provisioning files from its environment."""
HEADER: Final = "# Written by parkwatch (dashboards/files.py); regenerate instead of editing.\n"

ProvisioningFiles = dict[str, str]
"""Path relative to the provisioning directory -> file text."""


def _dump(document: Mapping[str, Any]) -> str:
    return HEADER + yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True)


def datasource_yaml(spec: DataSourceSpec) -> str:
    """The data source as a provisioning file (secrets included: keep it private)."""
    entry: dict[str, Any] = {**spec.public(), "editable": False}
    if spec.secure():
        entry["secureJsonData"] = spec.secure()
    return _dump({"apiVersion": 1, "datasources": [entry]})


def provider_yaml(folder: str, folder_uid: str, path: str) -> str:
    """A file provider loading every dashboard JSON in ``path`` into one folder."""
    provider = {
        "name": "parkwatch",
        "orgId": 1,
        "folder": folder,
        "folderUid": folder_uid,
        "type": "file",
        "disableDeletion": True,
        "allowUiUpdates": False,
        "updateIntervalSeconds": 60,
        "options": {"path": path, "foldersFromFilesStructure": False},
    }
    return _dump({"apiVersion": 1, "providers": [provider]})


def compose_files(settings: Settings | None = None) -> ProvisioningFiles:
    """The provisioning files of ``docker-compose.yml`` (InfluxDB 2.x, token from the env)."""
    settings = settings or Settings()
    spec = datasource_from_settings(settings)
    # The token stays in Grafana's environment: the file names the variable.
    in_compose = DataSourceSpec(
        name=spec.name,
        uid=spec.uid,
        url=COMPOSE_INFLUX_URL,
        database=spec.database,
        token=SecretStr(f"${{{COMPOSE_TOKEN_VARIABLE}}}"),
    )
    grafana = settings.grafana
    return {
        "datasources/parkwatch.yaml": datasource_yaml(in_compose),
        "dashboards/parkwatch.yaml": provider_yaml(
            grafana.folder, grafana.folder_uid, COMPOSE_DASHBOARDS_PATH
        ),
    }


def write_provisioning(directory: Path, settings: Settings) -> Path:
    """Write a complete provisioning tree for ``settings`` into ``directory``; return the
    provisioning directory (what Grafana's ``paths.provisioning`` must name)."""
    provisioning = directory / "provisioning"
    dashboards = directory / "dashboards"
    for sub in ("datasources", "dashboards", "plugins", "alerting"):
        (provisioning / sub).mkdir(parents=True, exist_ok=True)
    grafana = settings.grafana
    spec = datasource_from_settings(settings)
    source = provisioning / "datasources" / "parkwatch.yaml"
    source.write_text(datasource_yaml(spec), encoding="utf-8")
    source.chmod(0o600)  # it may hold the InfluxDB password or token
    (provisioning / "dashboards" / "parkwatch.yaml").write_text(
        provider_yaml(grafana.folder, grafana.folder_uid, str(dashboards.resolve())),
        encoding="utf-8",
    )
    write_all(dashboards, context_from_settings(settings))
    return provisioning


def grafana_command(directory: Path, grafana_url: str = "http://127.0.0.1:3000") -> str:
    """The shell command that starts a locally installed Grafana on the files in
    ``directory`` (written by :func:`write_provisioning`), anonymous viewers allowed."""
    port = urlsplit(grafana_url).port or 3000
    root = directory.resolve()
    env = {
        "GF_PATHS_PROVISIONING": str(root / "provisioning"),
        "GF_PATHS_DATA": str(root / "grafana-data"),
        "GF_PATHS_LOGS": str(root / "grafana-logs"),
        "GF_SERVER_HTTP_PORT": str(port),
        "GF_AUTH_ANONYMOUS_ENABLED": "true",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
    }
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    return f"{assignments} grafana server --homepath /usr/share/grafana"


def write_demo_provisioning(
    directory: Path,
    *,
    influx_url: str,
    database: str = "parkwatch",
    grafana_url: str = "http://127.0.0.1:3000",
    settings: Settings | None = None,
) -> str:
    """Write provisioning files for the demo's InfluxDB 1.x (no auth) into ``directory``;
    return the one command that points a locally installed Grafana at them.

    ``settings`` supplies the rest (grafana folder and data source names, parks targets).
    """
    base = settings or Settings()
    influx = base.influx.model_copy(
        update={
            "url": influx_url.rstrip("/"),
            "database": database,
            "api": "v1",
            "username": None,
            "password": None,
            "token": None,
        }
    )
    write_provisioning(directory, base.model_copy(update={"influx": influx}))
    return grafana_command(directory, grafana_url)
