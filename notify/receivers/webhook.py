"""Signed webhook receiver: a documented JSON body, HMAC-SHA256-signed with a shared secret.

The body is :class:`WebhookBody` (JSON Schema: ``schemas/notify/webhook.schema.json``), shaped
after Alertmanager's webhook so existing consumers read it easily. With a ``secret``, the header
``X-Parkwatch-Signature: sha256=<hex>`` carries HMAC-SHA256(secret, raw body bytes); a receiver
recomputes it over the bytes it got and compares in constant time. ``X-Parkwatch-Delivery`` is
the same for every retry of one message, so a receiver can ignore repeats.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from notify.links import DashboardLinks
from notify.model import Notification, NotificationKind, alert_fingerprint, common_labels
from notify.receivers.http import post
from notify.render import Renderer
from parkwatch.events import Alert, AlertState
from parkwatch.settings import WebhookReceiverSettings

__all__ = ["WebhookAlert", "WebhookBody", "WebhookNotifier", "sign", "webhook_schema"]

DELIVERY_HEADER = "X-Parkwatch-Delivery"


class WebhookAlert(BaseModel):
    """One alert in a webhook body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None = Field(description="The rule's value when the alert changed state.")
    starts_at: datetime = Field(alias="startsAt", description="When it fired (event time).")
    ends_at: datetime | None = Field(alias="endsAt", description="When it resolved, if it did.")
    fingerprint: str = Field(description="Stable identity of the alert series.")
    dashboard_url: str | None = Field(alias="dashboardURL", description="The park dashboard.")


class WebhookBody(BaseModel):
    """The JSON body parkwatch POSTs to a webhook receiver."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, title="parkwatch webhook notification"
    )

    version: Literal["1"] = "1"
    receiver: str
    kind: NotificationKind = Field(description="alerts, or test (parkwatch notify test).")
    status: Literal["firing", "resolved"] = Field(description="firing while any alert fires.")
    group_labels: dict[str, str] = Field(alias="groupLabels")
    common_labels: dict[str, str] = Field(alias="commonLabels")
    alerts: list[WebhookAlert]
    language: Literal["zh", "en"]
    title: str = Field(description="The rendered title, in the receiver's language.")
    text: str = Field(description="The rendered message, markdown, in the receiver's language.")


def webhook_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`WebhookBody`, as committed in ``schemas/notify/``."""
    return WebhookBody.model_json_schema(by_alias=True)


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """POSTs :class:`WebhookBody` to a URL, signed when a secret is configured."""

    grouped = True

    def __init__(
        self,
        name: str,
        settings: WebhookReceiverSettings,
        renderer: Renderer,
        links: DashboardLinks,
    ) -> None:
        self.name = name
        self._settings = settings
        self._renderer = renderer
        self._links = links
        self._session: aiohttp.ClientSession | None = None

    def body(self, notification: Notification) -> bytes:
        """The exact bytes that are posted (and signed)."""
        message = self._renderer.render(notification, self._settings.language, markdown=True)
        document = WebhookBody(
            receiver=self.name,
            kind=notification.kind,
            status=notification.status,
            groupLabels=dict(notification.group_labels),
            commonLabels=common_labels(notification.alerts),
            alerts=[self._alert(alert) for alert in notification.alerts],
            language=self._settings.language,
            title=message.title,
            text=message.body,
        )
        return document.model_dump_json(by_alias=True).encode()

    def _alert(self, alert: Alert) -> WebhookAlert:
        resolved = alert.resolved_at_ms
        return WebhookAlert(
            status="resolved" if alert.state is AlertState.RESOLVED else "firing",
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            value=alert.value,
            startsAt=_time(alert.fired_at_ms or alert.active_at_ms),
            endsAt=_time(resolved) if resolved is not None else None,
            fingerprint=alert_fingerprint(alert),
            dashboardURL=self._links.alert(alert),
        )

    def headers(self, body: bytes) -> dict[str, str]:
        """Configured extra headers, then content type, delivery id and signature."""
        headers = {k: v.get_secret_value() for k, v in self._settings.headers.items()}
        headers["Content-Type"] = "application/json"
        headers[DELIVERY_HEADER] = hashlib.sha256(body).hexdigest()[:32]
        if self._settings.secret is not None:
            secret = self._settings.secret.get_secret_value().encode()
            headers[self._settings.signature_header] = sign(secret, body)
        return headers

    async def send(self, notification: Notification) -> None:
        """POST the signed body."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = self.body(notification)
        await post(self._session, self._settings.url, body, self.headers(body), self.name)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


if __name__ == "__main__":
    # python -m notify.receivers.webhook > schemas/notify/webhook.schema.json
    import sys

    import orjson

    sys.stdout.buffer.write(
        orjson.dumps(webhook_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
