"""The demo's dashboards: files for a local Grafana always, a configured Grafana provisioned
(against the fake Grafana of tests/dashboards, which speaks the endpoints provisioning uses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.build import DASHBOARD_UIDS
from parkwatch.demo_grafana import DemoDashboards, demo_dashboards
from parkwatch.settings import Settings, load_settings
from tests.dashboards.fake_grafana import FakeGrafana

TOKEN = "demo-token"
INFLUX = "http://127.0.0.1:18086"


@pytest.fixture
async def grafana() -> AsyncIterator[FakeGrafana]:
    """A fake Grafana 11.3 accepting ``TOKEN``."""
    fake = FakeGrafana(token=TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


def demo_settings(**grafana: Any) -> Settings:
    """The demo's InfluxDB 1.x (no auth), and ``grafana`` as configured."""
    return load_settings(None, influx={"url": INFLUX, "database": "parkwatch"}, grafana=grafana)


async def dashboards(settings: Settings, directory: Path) -> DemoDashboards:
    """As the demo calls it (blocking HTTP: in a thread, so the fake can answer)."""
    return await asyncio.to_thread(demo_dashboards, settings, directory, grafana_port=3300)


async def test_without_a_grafana_url_the_files_and_the_command_are_the_answer(
    tmp_path: Path,
) -> None:
    result = await dashboards(demo_settings(), tmp_path / "grafana")
    assert result.provisioned_url is None
    assert result.problem is None
    source = tmp_path / "grafana" / "provisioning" / "datasources" / "parkwatch.yaml"
    (entry,) = yaml.safe_load(source.read_text())["datasources"]
    assert (entry["url"], entry["jsonData"]["dbName"]) == (INFLUX, "parkwatch")
    assert "GF_SERVER_HTTP_PORT=3300" in result.command
    assert result.local_url == "http://127.0.0.1:3300/d/parkwatch-city"
    (line,) = result.lines()
    assert str(tmp_path / "grafana") in line
    assert result.local_url in line


async def test_a_configured_grafana_is_provisioned_with_the_demos_influxdb(
    tmp_path: Path, grafana: FakeGrafana
) -> None:
    settings = demo_settings(url=grafana.url, token=TOKEN)
    first = await dashboards(settings, tmp_path / "grafana")
    assert first.provisioned_url == f"{grafana.url}/d/parkwatch-city"
    assert sorted(grafana.dashboards) == sorted(DASHBOARD_UIDS)
    (source,) = grafana.datasources.values()
    assert (source["url"], source["jsonData"]["dbName"]) == (INFLUX, "parkwatch")
    objects = len(DASHBOARD_UIDS) + 2  # and the data source and the folder
    assert first.lines()[0].endswith(f": {objects} of {objects} objects created or updated)")
    assert (tmp_path / "grafana" / "dashboards" / "parkwatch-city.json").is_file()

    writes = len(grafana.writes())
    again = await dashboards(settings, tmp_path / "grafana")  # the next demo run
    assert len(grafana.writes()) == writes
    assert again.lines()[0].endswith(f": 0 of {objects} objects created or updated)")


async def test_a_grafana_that_refuses_is_one_line_and_the_files_are_still_written(
    tmp_path: Path, grafana: FakeGrafana
) -> None:
    result = await dashboards(demo_settings(url=grafana.url, token="wrong"), tmp_path / "g")
    assert result.provisioned_url is None
    assert result.problem is not None
    assert "refused the credentials" in result.problem
    assert "wrong" not in result.problem
    assert result.lines()[0].startswith("[yellow]could not provision Grafana[/]: ")
    assert (tmp_path / "g" / "provisioning" / "dashboards" / "parkwatch.yaml").is_file()
