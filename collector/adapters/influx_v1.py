"""InfluxDB 1.x adapter: ``POST /write?db=&rp=&precision=ms`` over aiohttp, gzip optional.

The configured URL may carry a path (an InfluxDB behind a reverse proxy at ``/influx``): every
endpoint is joined onto it. Credentials come from the settings (which moved any ``user:password@``
out of the URL) and travel as one ``Authorization`` header: Basic for username/password, Token for
a token; the settings allow only one of the two.

The target is checked, not assumed: at start (``SHOW RETENTION POLICIES ON db``) and whenever a
write answers that the database or retention policy is missing. A missing database is created
(again: ``DROP DATABASE`` happens at run time too) when ``influx.create_database`` allows it; a
missing retention policy is never guessed at. What is wrong stays in ``problem`` (the health check
shows it) until a write succeeds or a ping finds it fixed.
"""

from __future__ import annotations

import gzip
import logging

import aiohttp
import orjson
from yarl import URL

from collector.adapters.httpstatus import error_for_status
from parkwatch.errors import SinkError, SinkMissing, SinkRejected, SinkUnavailable
from parkwatch.settings import InfluxSettings

__all__ = ["InfluxV1Sink"]

log = logging.getLogger(__name__)


class InfluxV1Sink:
    """Writes to InfluxDB 1.x (or anything speaking its ``/write`` API)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._settings = settings
        self.name = f"influxdb-v1 {settings.redacted_url()} db={settings.database}"
        self.problem: str | None = None
        """What is known to be wrong with the target (a missing database or retention policy)."""
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
        """Open the HTTP session; create the database if configured to; check the target."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            headers=self._headers(),
        )
        if self._settings.create_database:
            try:
                await self._create_database()
            except SinkError as exc:
                # Not fatal: the database may exist and we lack admin rights, or the server is
                # down; the first write and the health check report it with context.
                log.warning("could not create database: %s", exc)
        await self._check_target(at_start=True)

    async def _create_database(self) -> None:
        await self._query_rows(f"CREATE DATABASE {_ident(self._settings.database)}")

    async def _check_target(self, *, at_start: bool = False) -> None:
        """Set ``problem`` from whether the database and retention policy exist.

        Unknown (server down, no right to list policies) leaves ``problem`` as it is: writes
        and pings report those conditions themselves.
        """
        database, policy = self._settings.database, self._settings.retention_policy
        problem: str | None
        try:
            rows = await self._query_rows(f"SHOW RETENTION POLICIES ON {_ident(database)}")
        except SinkRejected as exc:
            if "database not found" not in str(exc):
                return
            problem = (
                f"database {database!r} (influx.database) does not exist on {self.name}: "
                f"writes fail until it is created"
                + ("" if self._settings.create_database else " (influx.create_database is off)")
            )
        except SinkError:
            return
        else:
            names = [str(row[0]) for row in rows if row]
            if policy is None or policy in names:
                problem = None
            else:
                problem = (
                    f"retention policy {policy!r} (influx.retention_policy) does not exist on "
                    f"database {database!r}; it has {', '.join(names) or 'none'}: writes fail "
                    f"until the policy is created or the setting is fixed"
                )
        if problem is not None and (at_start or problem != self.problem):
            log.error("%s", problem)
        self.problem = problem

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise SinkUnavailable("sink not started", target=self.name)
        return self._session

    async def _query_rows(self, influxql: str) -> list[list[object]]:
        """Run one statement; return the rows of its first series (none: an empty list)."""
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
        for result in results:
            for series in result.get("series", []) if isinstance(result, dict) else []:
                return list(series.get("values", []))
        return []

    async def write(self, body: bytes) -> None:
        """Write lines; raise ``SinkUnavailable`` (``SinkMissing``) or ``SinkRejected``.

        A database found missing is created (when allowed) and the write tried once more.
        """
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._settings.gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            await self._post_write(body, headers)
        except SinkMissing as exc:
            if exc.what != "database" or not self._settings.create_database:
                await self._missing(exc)
                raise
            await self._create_again(exc)
            try:
                await self._post_write(body, headers)
            except SinkMissing as still:  # e.g. the retention policy died with the database
                await self._missing(still)
                raise
        self.problem = None

    async def _create_again(self, exc: SinkMissing) -> None:
        """Create the database a write found missing; raise ``SinkMissing`` if that fails."""
        try:
            await self._create_database()
        except SinkError as failed:
            await self._missing(exc)
            raise SinkMissing(
                f"{exc}; creating it failed: {failed}",
                what=exc.what,
                status=exc.status,
                target=self.name,
            ) from failed
        log.warning(
            "database %r was missing on %s (dropped?): created it again",
            self._settings.database,
            self.name,
        )

    async def _missing(self, exc: SinkMissing) -> None:
        """Record (and log, when it is news) a missing target, with what exists instead."""
        await self._check_target()
        if self.problem is None:  # the check could not say (or raced a fix): keep the answer
            self.problem = str(exc)

    async def _post_write(self, body: bytes, headers: dict[str, str]) -> None:
        session = self._require_session()
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
        """``GET /ping`` answers 204 when InfluxDB is up; a known ``problem`` is checked again."""
        session = self._require_session()
        try:
            async with session.get(self._ping_url) as response:
                up = response.status == 204
        except (aiohttp.ClientError, TimeoutError):
            return False
        if up and self.problem is not None:
            await self._check_target()
        return up

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _ident(name: str) -> str:
    """Quote an InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
