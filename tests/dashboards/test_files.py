"""File provisioning: the compose stack's files in step, the demo's tree and command."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import yaml

from dashboards.build import DASHBOARD_UIDS
from dashboards.files import COMPOSE_DASHBOARDS_PATH, compose_files, write_demo_provisioning

REPO = Path(__file__).resolve().parents[2]
COMPOSE_PROVISIONING = REPO / "config" / "grafana" / "provisioning"


def test_committed_compose_provisioning_is_what_the_code_writes() -> None:
    for relative, text in compose_files().items():
        assert (COMPOSE_PROVISIONING / relative).read_text(encoding="utf-8") == text, relative


def test_compose_data_source_reads_the_token_from_grafanas_environment() -> None:
    (source,) = yaml.safe_load(compose_files()["datasources/parkwatch.yaml"])["datasources"]
    assert source["uid"] == "parkwatch-influxdb"
    assert source["url"] == "http://influxdb:8086"
    assert source["jsonData"]["dbName"] == "parkwatch"
    assert source["secureJsonData"] == {"httpHeaderValue1": "Token ${INFLUX_TOKEN}"}
    (provider,) = yaml.safe_load(compose_files()["dashboards/parkwatch.yaml"])["providers"]
    assert provider["options"]["path"] == COMPOSE_DASHBOARDS_PATH
    assert provider["folderUid"] == "parkwatch"


def test_the_demo_writes_a_tree_and_the_command_that_uses_it(tmp_path: Path) -> None:
    command = write_demo_provisioning(
        tmp_path / "grafana", influx_url="http://127.0.0.1:18086/", grafana_url="http://x:3300"
    )

    root = (tmp_path / "grafana").resolve()
    (source,) = yaml.safe_load((root / "provisioning/datasources/parkwatch.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://127.0.0.1:18086"
    assert "secureJsonData" not in source
    assert (root / "provisioning/datasources/parkwatch.yaml").stat().st_mode & 0o077 == 0
    (provider,) = yaml.safe_load((root / "provisioning/dashboards/parkwatch.yaml").read_text())[
        "providers"
    ]
    dashboards = Path(provider["options"]["path"])
    assert sorted(p.stem for p in dashboards.glob("*.json")) == sorted(DASHBOARD_UIDS)
    city = json.loads((dashboards / "parkwatch-city.json").read_text())
    assert city["uid"] == "parkwatch-city"
    assert (root / "provisioning/plugins").is_dir()
    assert (root / "provisioning/alerting").is_dir()

    words = shlex.split(command)
    env = dict(word.split("=", 1) for word in words if "=" in word and not word.startswith("-"))
    assert env["GF_PATHS_PROVISIONING"] == str(root / "provisioning")
    assert env["GF_SERVER_HTTP_PORT"] == "3300"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert words[-4:] == ["grafana", "server", "--homepath", "/usr/share/grafana"]
    assert os.path.isabs(env["GF_PATHS_DATA"])
