"""``GET /healthz``, ``GET /metrics`` (Prometheus text format) and ``GET /api/v1/alerts``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from collector.metrics import Metrics
from parkwatch.events import Alert

__all__ = ["HealthCheck", "HttpServer"]

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]
"""Returns named checks, each ``{"ok": bool, ...}``; healthy when all are ok."""


class HttpServer:
    """Serves health and metrics; ``port`` is known after ``start`` (0 picks a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health: HealthCheck,
        *,
        alerts: Callable[[], list[Alert]] = list,
    ) -> None:
        self._host = host
        self.port = port
        self._metrics = metrics
        self._health = health
        self._alerts = alerts
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/api/v1/alerts", self._alerts_page)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        """Bind and serve."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        if self.port == 0:
            # (host, port) of each bound socket; one site on one address here.
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(3):
                checks = await self._health()
        except TimeoutError:
            checks = {"health": {"ok": False, "detail": "health check timed out"}}
        ok = all(check.get("ok") for check in checks.values())
        body = {"status": "ok" if ok else "unavailable", "checks": checks}
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _alerts_page(self, request: web.Request) -> web.Response:
        """Pending and firing alerts, shaped like Prometheus' ``/api/v1/alerts``."""
        alerts = [
            {
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "state": alert.state.value,
                "activeAt": _rfc3339(alert.active_at_ms),
                "value": None if alert.value is None else repr(alert.value),
                "fingerprint": alert.fingerprint,
            }
            for alert in self._alerts()
        ]
        return web.json_response({"status": "success", "data": {"alerts": alerts}})


def _rfc3339(epoch_ms: int) -> str:
    stamp = datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
