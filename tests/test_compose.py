"""docker-compose.yml: structure checked here (no Docker engine runs in CI), and by
``docker-compose config`` (Debian's docker-compose 1.29 validates offline) where installed; the
collector's settings file loaded as the container sees it; Alertmanager's config checked by
``amtool check-config`` (Debian's prometheus-alertmanager); the Dockerfile against pyproject."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dashboards.files import COMPOSE_DASHBOARDS_PATH, COMPOSE_TOKEN_VARIABLE
from notify.routing import Router
from parkwatch.settings import AlertmanagerReceiverSettings, load_settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def test_the_full_stack_is_there() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "mosquitto", "influxdb", "alertmanager", "collector", "simulators", "grafana"
    }  # fmt: skip
    assert services["collector"]["build"] == "."
    assert services["simulators"]["build"] == "."
    assert services["influxdb"]["image"].startswith("influxdb:2")
    assert services["grafana"]["image"].startswith("grafana/grafana:11")


def test_every_bind_mount_exists_in_the_repo_and_every_dependency_is_a_service() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on {dependency}"


def test_influxdb_is_initialised_with_org_bucket_token_and_dbrp() -> None:
    services = _compose()["services"]
    env = services["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == "parkwatch"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == "parkwatch"
    assert "INFLUX_TOKEN" in env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert (
        "./config/influxdb/dbrp.sh:/docker-entrypoint-initdb.d/dbrp.sh:ro"
        in (services["influxdb"]["volumes"])
    )
    script = (REPO / "config/influxdb/dbrp.sh").read_text()
    assert "influx v1 dbrp create" in script
    # The collector writes the bucket with the same token Grafana reads it with.
    collector = services["collector"]["environment"]
    assert collector["PARKWATCH_INFLUX__API"] == "v2"
    assert collector["PARKWATCH_INFLUX__DATABASE"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert collector["PARKWATCH_INFLUX__TOKEN"] == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert (
        services["grafana"]["environment"][COMPOSE_TOKEN_VARIABLE]
        == collector["PARKWATCH_INFLUX__TOKEN"]
    )


def test_grafana_is_file_provisioned_with_anonymous_viewers() -> None:
    grafana = _compose()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert f"./dashboards/json:{COMPOSE_DASHBOARDS_PATH}:ro" in grafana["volumes"]
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(COMPOSE_DASHBOARDS_PATH)
    assert (REPO / "dashboards/json" / home.name).exists()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_collector_reads_a_settings_file_that_notifies_the_stacks_alertmanager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = _compose()
    collector = compose["services"]["collector"]
    command = collector["command"]
    mounted = dict(
        volume.split(":")[:2] for volume in collector["volumes"] if volume.startswith("./")
    )
    config_path = command[command.index("--config") + 1]
    source = next(src for src, target in mounted.items() if target == config_path)
    # As the container sees it: the compose environment over the file.
    for name, value in collector["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings(REPO / source)
    assert settings.mqtt.url == "mqtt://mosquitto:1883"
    (name,) = settings.notify.receivers
    receiver = settings.notify.receivers[name]
    assert isinstance(receiver, AlertmanagerReceiverSettings)
    url = urlsplit(receiver.url)
    assert url.hostname == "alertmanager"
    assert f"{url.port}:{url.port}" in compose["services"]["alertmanager"]["ports"]
    assert "alertmanager" in collector["depends_on"]
    # Every alert goes there, whatever its labels.
    router = Router(settings.notify.route)
    for labels in ({"alertname": "DeviceOffline", "park": "lingang", "severity": "major"},
                   {"alertname": "CarbonIntensityAboveTarget", "park": "caohejing"}):  # fmt: skip
        assert [list(r.receivers) for r in router.routes_for(labels)] == [[name]]


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed")
def test_alertmanager_accepts_its_config() -> None:
    alertmanager = _compose()["services"]["alertmanager"]
    (mount,) = alertmanager["volumes"]
    source, target = mount.split(":")[:2]
    assert target == "/etc/alertmanager/alertmanager.yml"  # the image's default config file
    result = subprocess.run(
        ["amtool", "check-config", str(REPO / source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_image_holds_every_package_and_keeps_its_state_on_the_data_volume() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert set(packages) <= copied, f"not copied into the image: {set(packages) - copied}"
    # Everything the collector writes lives on the volume mounted at /var/lib/parkwatch.
    (volume,) = (
        v for v in _compose()["services"]["collector"]["volumes"] if v.startswith("collector-data")
    )
    data = volume.split(":")[1]
    for name in ("SPOOL__DIRECTORY", "DEADLETTER__PATH", "STATE__DIRECTORY",
                 "MQTT__RETAINED_STATE_FILE"):  # fmt: skip
        found = re.search(rf"PARKWATCH_{name}=(\S+)", dockerfile)
        assert found, name
        assert found.group(1).startswith(f"{data}/"), name
