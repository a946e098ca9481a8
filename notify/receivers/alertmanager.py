"""Prometheus Alertmanager receiver: ``POST /api/v2/alerts``, the way Prometheus does it.

Every alert carries its labels (``alertname``, ``park``, ``kind``, ``device``, ``severity`` and the
rule's own), annotations (plus ``value``), ``startsAt``, ``endsAt`` and a ``generatorURL`` to the
park dashboard. A firing alert is posted with ``endsAt`` = now + 4 x the re-send interval and
re-sent every interval by the dispatcher (Prometheus: ``4 x resend_delay``), so Alertmanager
keeps it active while parkwatch runs and resolves it by itself if parkwatch stops. A resolved
alert is posted with ``endsAt`` = its resolve time.

Times are the park's event times, clamped to the wall clock: a simulated park running ahead of
real time must not post an alert that starts, or resolves, in the future.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from notify.links import DashboardLinks
from notify.model import Notification
from notify.receivers.http import post
from parkwatch.events import Alert, AlertState
from parkwatch.settings import AlertmanagerReceiverSettings

__all__ = ["AlertmanagerNotifier"]

VALIDITY_RESENDS = 4
"""A firing alert stays active in Alertmanager this many re-send intervals after each post."""


class AlertmanagerNotifier:
    """Posts alerts to one Alertmanager (configure one receiver per instance of an HA pair)."""

    grouped = False  # Alertmanager groups, silences and inhibits by itself

    def __init__(
        self,
        name: str,
        settings: AlertmanagerReceiverSettings,
        links: DashboardLinks,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._settings = settings
        self._links = links
        self._clock = clock
        self._url = f"{settings.url}/api/v2/alerts"
        self._session: aiohttp.ClientSession | None = None
        headers = {"Content-Type": "application/json"}
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        self._headers = headers

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            auth = None
            if self._settings.username is not None:
                password = self._settings.password
                auth = aiohttp.BasicAuth(
                    self._settings.username, password.get_secret_value() if password else ""
                )
            self._session = aiohttp.ClientSession(auth=auth)
        return self._session

    async def send(self, notification: Notification) -> None:
        """Post every alert of the notification in one request."""
        now_ms = int(self._clock() * 1000)
        body = orjson.dumps([self.payload(alert, now_ms) for alert in notification.alerts])
        await post(self._session_now(), self._url, body, self._headers, self.name)

    def payload(self, alert: Alert, now_ms: int) -> dict[str, Any]:
        """One alert as Alertmanager's API v2 ``postableAlert``."""
        if alert.state is AlertState.RESOLVED:
            ends_ms = min(alert.resolved_at_ms or now_ms, now_ms)
        else:
            valid_ms = int(VALIDITY_RESENDS * self._settings.resend_interval_s * 1000)
            ends_ms = now_ms + valid_ms
        starts_ms = min(alert.fired_at_ms or alert.active_at_ms, now_ms, ends_ms)
        annotations = dict(alert.annotations)
        if alert.value is not None:
            annotations.setdefault("value", f"{alert.value:g}")
        item: dict[str, Any] = {
            # Alertmanager treats an empty label as absent; leave such labels out.
            "labels": {k: v for k, v in alert.labels.items() if v},
            "annotations": annotations,
            "startsAt": _rfc3339(starts_ms),
            "endsAt": _rfc3339(ends_ms),
        }
        if (link := self._links.alert(alert)) is not None:
            item["generatorURL"] = link
        return item

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
