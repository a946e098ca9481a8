"""Provisioning through grafana-client against a local server speaking Grafana's HTTP API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from dashboards.build import DASHBOARD_UIDS, STAMP_KEY, build_all, context_from_settings
from dashboards.datasource import datasource_from_settings
from dashboards.grafana_api import GrafanaHttpApi
from dashboards.provision import Report, provision
from parkwatch.cli import main
from parkwatch.errors import (
    GrafanaAuthError,
    GrafanaConflict,
    GrafanaUnreachable,
    GrafanaUnsupported,
)
from parkwatch.settings import Settings, load_settings
from tests.dashboards.fake_grafana import FakeGrafana

TOKEN = "service-account-token"


@pytest.fixture
async def grafana() -> AsyncIterator[FakeGrafana]:
    """A fake Grafana 11.3 that accepts the service-account token ``TOKEN``."""
    fake = FakeGrafana(token=TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


def _settings(url: str, **grafana: Any) -> Settings:
    values: dict[str, Any] = {"url": url, "token": TOKEN, **grafana}
    return load_settings(None, grafana={k: v for k, v in values.items() if v is not None})


async def _provision(settings: Settings, *, force: bool = False) -> Report:
    """One run, as ``parkwatch dashboards provision`` does it (in a thread: it is blocking)."""
    return await asyncio.to_thread(
        provision,
        GrafanaHttpApi(settings.grafana),
        datasource=datasource_from_settings(settings),
        folder_uid=settings.grafana.folder_uid,
        folder_title=settings.grafana.folder,
        dashboards=build_all(context_from_settings(settings)),
        force=force,
    )


async def test_first_run_creates_everything_in_one_folder(grafana: FakeGrafana) -> None:
    report = await _provision(_settings(grafana.url))

    writes = grafana.writes()
    assert [(w.method, w.path) for w in writes] == [
        ("POST", "/api/datasources"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(DASHBOARD_UIDS),
    ]
    source = writes[0].body
    assert source["uid"] == "parkwatch-influxdb"
    assert source["type"] == "influxdb"
    assert source["url"] == "http://127.0.0.1:8086"
    assert source["jsonData"]["dbName"] == "parkwatch"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert "secureJsonData" not in source  # InfluxDB 1.x without auth: no secret to send
    assert writes[1].body == {"uid": "parkwatch", "title": "parkwatch"}
    saved = [w.body for w in writes[2:]]
    assert [s["dashboard"]["uid"] for s in saved] == list(DASHBOARD_UIDS)
    assert all(s["folderUid"] == "parkwatch" for s in saved)
    assert all(s["overwrite"] is False for s in saved)
    assert all("id" not in s["dashboard"] for s in saved)  # created, not saved over
    assert all(w.authorization == f"Bearer {TOKEN}" for w in grafana.requests[1:])
    assert report.changed
    assert report.lines()[-1] == "9 created, 0 updated, 0 unchanged"


async def test_second_run_changes_nothing_and_says_so(grafana: FakeGrafana) -> None:
    await _provision(_settings(grafana.url))
    before = len(grafana.writes())

    report = await _provision(_settings(grafana.url))

    assert len(grafana.writes()) == before
    assert not report.changed
    assert report.lines() == [
        f"Grafana 11.3.0 at {grafana.url}: nothing to do, all 9 objects are up to date"
    ]


async def test_a_new_target_updates_only_the_dashboards_it_colours(grafana: FakeGrafana) -> None:
    await _provision(_settings(grafana.url))
    stored_versions = {uid: d["dashboard"]["version"] for uid, d in grafana.dashboards.items()}
    before = len(grafana.requests)
    settings = load_settings(
        None,
        grafana={"url": grafana.url, "token": TOKEN},
        parks={"defaults": {"targets": {"site5g_kwh_per_gb_max": 0.05}}},
    )

    report = await _provision(settings)

    saved = [r.body for r in grafana.requests[before:] if r.method == "POST"]
    assert [s["dashboard"]["uid"] for s in saved] == ["parkwatch-site5g"]
    # Saved over the version read, without overwrite: a concurrent edit would get a 412.
    assert saved[0]["dashboard"]["version"] == stored_versions["parkwatch-site5g"]
    assert saved[0]["overwrite"] is False
    assert grafana.dashboards["parkwatch-site5g"]["dashboard"]["version"] == 2
    assert report.lines()[-1] == "0 created, 1 updated, 8 unchanged"


async def test_a_dashboard_edited_in_grafana_is_not_overwritten(grafana: FakeGrafana) -> None:
    await _provision(_settings(grafana.url))
    edited = grafana.dashboards["parkwatch-city"]["dashboard"]
    edited["title"] = "City (our own tweaks)"
    edited["version"] += 1
    before = len(grafana.writes())

    with pytest.raises(GrafanaConflict) as caught:
        await _provision(_settings(grafana.url))

    assert len(grafana.writes()) == before  # refused before any write
    message = str(caught.value)
    assert "\n" not in message
    assert "parkwatch-city: edited in Grafana since parkwatch provisioned it (version 2)" in message
    assert "--force" in message

    report = await _provision(_settings(grafana.url), force=True)

    (saved,) = [w.body for w in grafana.writes()[before:] if w.path == "/api/dashboards/db"]
    assert saved["overwrite"] is True
    assert saved["dashboard"]["title"] == "parkwatch · City overview"
    assert "forced: edited in Grafana" in "\n".join(report.lines())


async def test_a_dashboard_parkwatch_did_not_create_is_left_alone(grafana: FakeGrafana) -> None:
    grafana.folders["ops"] = {"id": 90, "uid": "ops", "title": "ops", "version": 1}
    theirs = {"uid": "parkwatch-park", "title": "Somebody's park board", "id": 91, "version": 4}
    grafana.dashboards["parkwatch-park"] = {
        "dashboard": theirs,
        "meta": {"folderUid": "ops", "version": 4},
    }

    with pytest.raises(GrafanaConflict, match="parkwatch-park: not created by parkwatch"):
        await _provision(_settings(grafana.url))

    assert grafana.writes() == []  # not even the data source or the folder
    assert grafana.dashboards["parkwatch-park"]["dashboard"] == theirs


async def test_a_dashboard_moved_out_of_the_folder_is_moved_back(grafana: FakeGrafana) -> None:
    await _provision(_settings(grafana.url))
    grafana.dashboards["parkwatch-ev"]["meta"]["folderUid"] = ""
    before = len(grafana.writes())

    report = await _provision(_settings(grafana.url))

    (saved,) = [w.body for w in grafana.writes()[before:]]
    assert saved["dashboard"]["uid"] == "parkwatch-ev"
    assert saved["folderUid"] == "parkwatch"
    assert "dashboard parkwatch-ev: updated (moved into the folder)" in "\n".join(report.lines())


async def test_a_renamed_folder_setting_renames_the_folder(grafana: FakeGrafana) -> None:
    await _provision(_settings(grafana.url))

    await _provision(_settings(grafana.url, folder="Green parks"))

    (rename,) = [w for w in grafana.writes() if w.method == "PUT"]
    assert rename.path == "/api/folders/parkwatch"
    assert rename.body == {"title": "Green parks", "version": 1, "overwrite": False}


async def test_influxdb_2_gets_influxql_through_dbrp_with_the_token_header(
    grafana: FakeGrafana,
) -> None:
    settings = load_settings(
        None,
        grafana={"url": grafana.url, "token": TOKEN, "datasource_url": "http://influxdb:8086"},
        influx={"api": "v2", "token": "influx-secret", "database": "parkwatch"},
    )
    await _provision(settings)
    (create,) = [w.body for w in grafana.writes() if w.path == "/api/datasources"]
    assert create["url"] == "http://influxdb:8086"
    assert create["jsonData"]["httpHeaderName1"] == "Authorization"
    assert create["jsonData"]["dbName"] == "parkwatch"
    assert create["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}

    second = await _provision(settings)
    assert not second.changed  # the secret is known to be set; it is not read back

    third = await _provision(settings, force=True)  # e.g. after rotating the token
    assert (
        third.changes[0].line() == "data source parkwatch-influxdb: updated (http://influxdb:8086)"
    )


async def test_influxdb_1_user_and_password(grafana: FakeGrafana) -> None:
    settings = load_settings(
        None,
        grafana={"url": grafana.url, "token": TOKEN},
        influx={"username": "grafana", "password": "reader-secret"},
    )
    await _provision(settings)
    (create,) = [w.body for w in grafana.writes() if w.path == "/api/datasources"]
    assert create["user"] == "grafana"
    assert create["secureJsonData"] == {"password": "reader-secret"}
    assert "httpHeaderName1" not in create["jsonData"]


async def test_basic_auth_from_the_url(grafana: FakeGrafana) -> None:
    grafana.token, grafana.basic = None, ("admin", "s3cret")
    host = grafana.url.removeprefix("http://")
    settings = load_settings(None, grafana={"url": f"http://admin:s3cret@{host}"})
    assert settings.grafana.url == grafana.url  # the password moved out of the URL
    report = await _provision(settings)
    assert report.changed
    assert grafana.requests[-1].authorization.startswith("Basic ")


async def test_bad_credentials_are_one_line(grafana: FakeGrafana) -> None:
    with pytest.raises(GrafanaAuthError) as caught:
        await _provision(_settings(grafana.url, token="wrong"))
    message = str(caught.value)
    assert message == (
        f"Grafana at {grafana.url} refused the credentials (HTTP 401: invalid API key): "
        "check grafana.token, or grafana.username and grafana.password"
    )
    assert grafana.writes() == []


async def test_a_viewer_account_is_told_it_lacks_permission(grafana: FakeGrafana) -> None:
    grafana.read_only = True
    with pytest.raises(GrafanaAuthError, match=r"POST /api/datasources: permission denied"):
        await _provision(_settings(grafana.url))


async def test_an_old_grafana_is_refused_before_anything_else(grafana: FakeGrafana) -> None:
    grafana.version = "10.4.2"
    with pytest.raises(GrafanaUnsupported) as caught:
        await _provision(_settings(grafana.url))
    assert str(caught.value) == (
        "Grafana 10.4.2 is not supported: the dashboards need Grafana 11.0 or newer"
    )
    assert [r.path for r in grafana.requests] == ["/api/health"]


async def test_a_hidden_version_is_read_from_the_build_info(grafana: FakeGrafana) -> None:
    grafana.hide_version, grafana.version = True, "12.0.1"
    report = await _provision(_settings(grafana.url))
    assert report.version == "12.0.1"
    assert grafana.requests[1].path == "/api/frontend/settings"


async def test_a_taken_data_source_name_is_a_conflict(grafana: FakeGrafana) -> None:
    grafana.datasources["other"] = {"uid": "other", "name": "parkwatch InfluxDB", "id": 5}
    with pytest.raises(GrafanaConflict, match="data source with the same name already exists"):
        await _provision(_settings(grafana.url))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_grafana_is_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(GrafanaUnreachable) as caught:
        await _provision(_settings(url))
    assert str(caught.value) == f"cannot reach Grafana at {url}: connection refused"


async def test_something_else_at_the_url_is_not_taken_for_grafana() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>welcome</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with pytest.raises(GrafanaUnreachable, match="does not answer like Grafana"):
            await _provision(_settings(url))
    finally:
        await runner.cleanup()


async def test_the_cli_provisions_then_reports_nothing_to_do(grafana: FakeGrafana) -> None:
    runner = CliRunner()
    args = ["dashboards", "provision", "--grafana-url", grafana.url, "--token", TOKEN]

    first = await asyncio.to_thread(runner.invoke, main, args)
    second = await asyncio.to_thread(runner.invoke, main, args)
    wrong = await asyncio.to_thread(runner.invoke, main, [*args[:-1], "nope"])

    assert first.exit_code == 0, first.output
    assert "9 created" in first.output
    assert second.exit_code == 0
    assert "nothing to do" in second.output
    assert wrong.exit_code == 1
    assert wrong.output.count("\n") == 1
    assert wrong.output.startswith(f"Error: Grafana at {grafana.url} refused the credentials")
    assert set(grafana.dashboards) == set(DASHBOARD_UIDS)
    for stored in grafana.dashboards.values():
        assert stored["dashboard"][STAMP_KEY]["generator"] == "parkwatch dashboards build"


def test_the_cli_needs_a_grafana_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARKWATCH_GRAFANA__URL", raising=False)
    result = CliRunner().invoke(main, ["dashboards", "provision"])
    assert result.exit_code == 2
    assert "give --grafana-url" in result.output
