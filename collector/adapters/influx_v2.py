"""InfluxDB 2.x/3.x adapter through ``influxdb-client``'s ``InfluxDBClientAsync`` (asyncio).

Its threaded Rx batching API is not used: the writer stage batches, this adapter only writes.
Tested against VictoriaMetrics' ``/api/v2/write``, since no InfluxDB 2/3 server runs here. A URL
with a path (behind a reverse proxy) works: the client appends ``/api/v2/write`` to it.
"""

from __future__ import annotations

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision

from collector.adapters.httpstatus import error_for_status
from parkwatch.errors import SinkMissing, SinkUnavailable
from parkwatch.settings import InfluxSettings

__all__ = ["InfluxV2Sink"]


class InfluxV2Sink:
    """Writes to an InfluxDB v2 write API (bucket, org, token)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._settings = settings
        self.name = f"influxdb-v2 {settings.redacted_url()} bucket={settings.database}"
        self.problem: str | None = None
        """A missing bucket, as the last write found it (cleared by a successful write)."""
        self._client: InfluxDBClientAsync | None = None

    async def start(self) -> None:
        """Create the client (the bucket must exist: creating it needs an all-access token)."""
        token = self._settings.token.get_secret_value() if self._settings.token else ""
        self._client = InfluxDBClientAsync(
            url=self._settings.url,
            token=token,
            org=self._settings.org,
            timeout=int(self._settings.timeout_s * 1000),
            enable_gzip=self._settings.gzip,
        )

    async def write(self, body: bytes) -> None:
        """Write lines; raise ``SinkUnavailable`` or ``SinkRejected``."""
        if self._client is None:
            raise SinkUnavailable("sink not started", target=self.name)
        try:
            await self._write(body)
        except SinkMissing as exc:
            self.problem = str(exc)
            raise
        self.problem = None

    async def _write(self, body: bytes) -> None:
        assert self._client is not None
        try:
            await self._client.write_api().write(
                bucket=self._settings.database,
                org=self._settings.org,
                record=body,
                # The library types the parameter as its class but its constants are plain str.
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]
            )
        except InfluxDBError as exc:
            response = getattr(exc, "response", None)
            status = getattr(exc, "status", None) or getattr(response, "status", None) or 0
            if not status:
                raise SinkUnavailable(f"{self.name}: {exc}", target=self.name) from exc
            headers = dict(getattr(exc, "headers", None) or {})
            text = str(getattr(exc, "body", "") or exc.message or "")
            raise error_for_status(int(status), text, headers, self.name) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"{self.name}: {exc!r}", target=self.name) from exc

    async def ping(self) -> bool:
        """``/ping`` through the client."""
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except (InfluxDBError, aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        """Close the client's HTTP session."""
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
