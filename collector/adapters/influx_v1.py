"""InfluxDB 1.x adapter: ``POST /write?db=&rp=&precision=ms`` over aiohttp, gzip optional.

The configured URL may carry a path (an InfluxDB behind a reverse proxy at ``/influx``): every
endpoint is joined onto it. Credentials come from the settings (which moved any ``user:password@``
out of the URL) and travel as one ``Authorization`` header: Basic for username/password, Token for
a token; the settings allow only one of the two.
"""

from __future__ import annotations

import gzip
import logging

import aiohttp
import orjson
from yarl import URL

from collector.adapters.httpstatus import error_for_status
from parkwatch.errors import SinkError, SinkRejected, SinkUnavailable
from parkwatch.settings import InfluxSettings

__all__ = ["InfluxV1Sink"]

log = logging.getLogger(__name__)


class InfluxV1Sink:
    """Writes to InfluxDB 1.x (or anything speaking its ``/write`` API)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._settings = settings
        self.name = f"influxdb-v1 {settings.redacted_url()} db={settings.database}"
        self._session: aiohttp.ClientSession | None = None
        base = URL(settings.url)
        self._write_url, self._query_url, self._ping_url = (
            base.joinpath(endpoint) for endpoint in ("write", "query", "ping")
        )
        params = {"db": settings.database, "precision": "ms"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        self._params = params

    def _headers(self) -> dict[str, str]:
        s = self._settings
        if s.token is not None:
            return {"Authorization": f"Token {s.token.get_secret_value()}"}
        if s.username is not None:
            password = s.password.get_secret_value() if s.password is not None else ""
            return {"Authorization": aiohttp.encode_basic_auth(s.username, password)}
        return {}

    async def start(self) -> None:
        """Open the HTTP session; create the database if configured to (best effort)."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            headers=self._headers(),
        )
        if self._settings.create_database:
            try:
                await self._query(f'CREATE DATABASE "{self._settings.database}"')
            except SinkError as exc:
                # Not fatal: the database may exist and we lack admin rights, or the server is
                # down; the first write and the health check report it with context.
                log.warning("could not create database: %s", exc)

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise SinkUnavailable("sink not started", target=self.name)
        return self._session

    async def _query(self, influxql: str) -> None:
        session = self._require_session()
        try:
            async with session.post(self._query_url, data={"q": influxql}) as response:
                # Read the body: InfluxDB 1.x sends the status line before the statement has
                # run, and reports statement errors inside a 200 answer.
                text = await response.text()
                if response.status >= 300:
                    raise error_for_status(response.status, text, response.headers, self.name)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkUnavailable(f"{self.name}: {exc!r}", target=self.name) from exc
        try:
            results = orjson.loads(text).get("results", [])
        except (orjson.JSONDecodeError, AttributeError):
            results = []
        errors = [r["error"] for r in results if isinstance(r, dict) and "error" in r]
        if errors:
            raise SinkRejected(f"{self.name}: {influxql[:80]}: {errors[0]}", target=self.name)

    async def write(self, body: bytes) -> None:
        """Write lines; raise ``SinkUnavailable`` or ``SinkRejected``."""
        session = self._require_session()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._settings.gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            async with session.post(
                self._write_url, params=self._params, data=body, headers=headers
            ) as response:
                if response.status == 204:
                    return
                text = await response.text()
                raise error_for_status(response.status, text, response.headers, self.name)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkUnavailable(f"{self.name}: {exc!r}", target=self.name) from exc

    async def ping(self) -> bool:
        """``GET /ping`` answers 204 when InfluxDB is up."""
        session = self._require_session()
        try:
            async with session.get(self._ping_url) as response:
                return response.status == 204
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
