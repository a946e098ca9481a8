"""InfluxDB 2.x adapter: writes through influxdb-client to the real VictoriaMetrics'
``/api/v2/write``, and the exact HTTP contract of InfluxDB 2.x (which cannot run here) checked
against a recording ``aiohttp.web`` server; plus how HTTP answers map onto sink errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from collector.adapters.httpstatus import error_for_status
from collector.adapters.influx_v2 import InfluxV2Sink
from parkwatch import httpheaders
from parkwatch.errors import SinkRejected, SinkUnavailable
from parkwatch.localservers import VictoriaMetrics, free_port
from parkwatch.settings import InfluxSettings
from tests.helpers import FIXED_NOW, http_date, until
from tests.proxy import PrefixProxy

TOKEN = "v2-test-token"
BASE_MS = 1_704_067_200_000  # 2024-01-01: an hour long past, visible at once after a flush


def v2_settings(url: str, **overrides: Any) -> InfluxSettings:
    """Settings for the v2 adapter (api v2, a token, database = bucket)."""
    values: dict[str, Any] = {
        "url": url,
        "api": "v2",
        "token": SecretStr(TOKEN),
        "org": "parks-org",
        "database": "telemetry-bucket",
        "timeout_s": 5,
        **overrides,
    }
    return InfluxSettings(**values)


@contextlib.asynccontextmanager
async def started(settings: InfluxSettings) -> AsyncIterator[InfluxV2Sink]:
    """A started sink, closed on exit."""
    sink = InfluxV2Sink(settings)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


# -- against the real VictoriaMetrics --------------------------------------------------------------


@pytest.mark.servers
@pytest.mark.parametrize("gzip_on", [True, False], ids=["gzip", "plain"])
async def test_lines_written_through_the_v2_api_arrive_with_names_labels_values_and_times(
    victoria: VictoriaMetrics, request: pytest.FixtureRequest, gzip_on: bool
) -> None:
    measurement = "v2sink_" + re.sub(r"\W+", "_", request.node.callspec.id)
    body = (
        f"{measurement},device=m-1,park=Cao\\ he\\,jing pv_kw=120.5,seq=3i,ok=true {BASE_MS}\n"
        f"{measurement},device=m-2,park=p2 pv_kw=-2.25 {BASE_MS + 1000}"
    ).encode()
    async with started(v2_settings(victoria.url, gzip=gzip_on)) as sink:
        await sink.write(body)
        assert await sink.ping() is True

    match = f'{{__name__=~"{measurement}_.*"}}'

    async def exported() -> list[dict[str, Any]]:
        return await asyncio.to_thread(victoria.export, match)

    series: list[dict[str, Any]] = []

    async def all_visible() -> bool:
        series[:] = await exported()
        return len(series) == 4

    await until(all_visible, what="4 series exported")
    found = {
        (
            s["metric"]["__name__"],
            tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")),
            tuple(s["values"]),
            tuple(s["timestamps"]),
        )
        for s in series
    }
    first = (("device", "m-1"), ("park", "Cao he,jing"))  # bucket and org are not labels
    second = (("device", "m-2"), ("park", "p2"))
    assert found == {
        (f"{measurement}_pv_kw", first, (120.5,), (BASE_MS,)),
        (f"{measurement}_seq", first, (3,), (BASE_MS,)),
        (f"{measurement}_ok", first, (1,), (BASE_MS,)),
        (f"{measurement}_pv_kw", second, (-2.25,), (BASE_MS + 1000,)),
    }


@pytest.mark.servers
async def test_a_url_with_a_path_reaches_the_v2_api_behind_a_reverse_proxy(
    victoria: VictoriaMetrics,
) -> None:
    measurement = "v2proxied"
    proxy = PrefixProxy(victoria.url, "tsdb")
    # proxy.url is pasted with its trailing slash.
    async with proxy.running(), started(v2_settings(proxy.url)) as sink:
        await sink.write(f"{measurement},device=d-1 pv_kw=7.5 {BASE_MS}".encode())
        assert await sink.ping() is True
    assert set(proxy.forwarded) == {"/api/v2/write", "/ping"}
    assert proxy.refused == []

    async def arrived() -> bool:
        series = await asyncio.to_thread(victoria.export, f'{{__name__="{measurement}_pv_kw"}}')
        return [(s["values"], s["timestamps"]) for s in series] == [([7.5], [BASE_MS])]

    await until(arrived, what="the proxied point exported")


async def test_a_server_that_is_not_listening_is_unavailable_and_pings_false() -> None:
    async with started(v2_settings(f"http://127.0.0.1:{free_port()}")) as sink:
        with pytest.raises(SinkUnavailable) as caught:
            await sink.write(b"m v=1 1")
        assert await sink.ping() is False
    assert caught.value.retryable


async def test_writing_before_start_is_unavailable_and_ping_false() -> None:
    sink = InfluxV2Sink(v2_settings("http://127.0.0.1:1"))
    with pytest.raises(SinkUnavailable, match="not started"):
        await sink.write(b"m v=1 1")
    assert await sink.ping() is False


# -- the InfluxDB 2.x HTTP contract, against a recording server --------------------------------


@dataclass
class Recorded:
    """One request as the server saw it (body exactly as sent, not decompressed)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingServer:
    """Answers every request with the scripted status and headers, and records it."""

    url: str = ""
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    requests: list[Recorded] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        """Record, then answer as scripted."""
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                await request.read(),
            )
        )
        if self.status == 204:
            return web.Response(status=204, headers=self.headers)
        return web.Response(status=self.status, headers=self.headers, text=self.text)


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingServer]:
    """A recording HTTP server on a free loopback port."""
    server = RecordingServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    # Keep request bodies as sent: the test checks the gzip encoding itself.
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


LINES = (
    b"microgrid,device=m-1,park=p pv_kw=1.5 1700000000000\n"
    b"storage,device=b soc_pct=50 1700000000001"
)


async def test_a_write_is_a_post_to_api_v2_write_with_org_bucket_ms_precision_and_token(
    recorder: RecordingServer,
) -> None:
    async with started(v2_settings(recorder.url, gzip=True)) as sink:
        await sink.write(LINES)
    [sent] = recorder.requests
    assert sent.method == "POST"
    assert sent.path == "/api/v2/write"
    assert sent.query == {"org": "parks-org", "bucket": "telemetry-bucket", "precision": "ms"}
    assert sent.headers["Authorization"] == f"Token {TOKEN}"
    assert sent.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(sent.body) == LINES


async def test_without_gzip_the_body_is_the_exact_lines_and_not_marked_encoded(
    recorder: RecordingServer,
) -> None:
    async with started(v2_settings(recorder.url, gzip=False)) as sink:
        await sink.write(LINES)
    [sent] = recorder.requests
    assert "Content-Encoding" not in sent.headers
    assert sent.body == LINES
    assert sent.headers["Authorization"] == f"Token {TOKEN}"


async def test_ping_asks_the_ping_endpoint(recorder: RecordingServer) -> None:
    async with started(v2_settings(recorder.url)) as sink:
        assert await sink.ping() is True
        recorder.status = 503
        assert await sink.ping() is False
    assert [(r.method, r.path) for r in recorder.requests] == [("GET", "/ping")] * 2


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (400, {}, SinkRejected, None),
        (413, {}, SinkRejected, None),
        (422, {}, SinkRejected, None),
        (401, {}, SinkUnavailable, None),
        (403, {}, SinkUnavailable, None),
        (404, {}, SinkUnavailable, None),
        (429, {"Retry-After": "7"}, SinkUnavailable, 7.0),
        (500, {}, SinkUnavailable, None),
        (503, {}, SinkUnavailable, None),
        (503, {"Retry-After": "2.5"}, SinkUnavailable, 2.5),
    ],
)
async def test_http_errors_map_onto_refused_or_unavailable_with_status_and_retry_after(
    recorder: RecordingServer,
    status: int,
    headers: dict[str, str],
    error: type[SinkRejected | SinkUnavailable],
    retry_after: float | None,
) -> None:
    recorder.status, recorder.headers = status, headers
    recorder.text = '{"code":"invalid","message":"partial write: field type conflict"}'
    async with started(v2_settings(recorder.url)) as sink:
        with pytest.raises(error) as caught:
            await sink.write(LINES)
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.target == sink.name
    assert f"HTTP {status}" in str(caught.value)
    if isinstance(caught.value, SinkUnavailable):
        assert caught.value.retry_after == retry_after
    assert len(recorder.requests) == 1  # the adapter never retries on its own


async def test_204_is_success(recorder: RecordingServer) -> None:
    async with started(v2_settings(recorder.url)) as sink:
        await sink.write(LINES)
    assert len(recorder.requests) == 1


# -- httpstatus ------------------------------------------------------------------------------------


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeze the clock HTTP dates are compared with."""
    monkeypatch.setattr(httpheaders, "time", FIXED_NOW.timestamp)


@pytest.mark.usefixtures("fixed_clock")
def test_error_for_status_carries_an_http_date_retry_after_as_seconds() -> None:
    error = error_for_status(503, "busy", {"Retry-After": http_date(120)}, "db")
    assert isinstance(error, SinkUnavailable)
    assert error.retry_after == 120.0


def test_error_for_status_keeps_the_message_short_and_names_the_target() -> None:
    error = error_for_status(400, "x" * 1000 + "\n", {}, "influxdb-v2 http://db bucket=b")
    assert isinstance(error, SinkRejected)
    assert str(error) == f"influxdb-v2 http://db bucket=b: HTTP 400: {'x' * 300}"
