"""The signed webhook against a local HTTP server: the body matches the committed JSON Schema,
the signature verifies, extra headers are sent, and 5xx/hangs are retried while 4xx is not."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

import jsonschema
import orjson
import pytest
from prometheus_client import CollectorRegistry

from notify.dispatcher import Dispatcher
from notify.receivers.webhook import DELIVERY_HEADER, webhook_schema
from tests.helpers import until
from tests.notify.helpers import RecordingServer, alert, resolved, running, settings, transition

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "notify" / "webhook.schema.json"
SECRET = "a shared secret 共享密钥"


def hook(server: RecordingServer, **extra: object) -> dict[str, object]:
    """Webhook receiver settings pointing at the recording server."""
    return {
        "type": "webhook",
        "url": f"{server.url}/hooks/parkwatch?src=test",
        "secret": SECRET,
        "headers": {"Authorization": "Bearer hook-token", "X-Team": "ops"},
        **extra,
    }


def test_the_committed_schema_matches_the_model() -> None:
    committed = orjson.loads(SCHEMA_PATH.read_bytes())
    regenerate = "python -m notify.receivers.webhook > schemas/notify/webhook.schema.json"
    assert committed == webhook_schema(), f"regenerate with: {regenerate}"


async def test_a_signed_body_arrives_that_the_schema_and_signature_accept(
    http_receiver: RecordingServer,
    registry: CollectorRegistry,
    record_property: Callable[[str, object], None],
) -> None:
    receivers = {"hook": hook(http_receiver, language="en")}
    dispatcher = Dispatcher(settings(receivers, grafana_url="http://grafana:3000"), registry)
    firing = alert(device="bess-1")
    async with running(dispatcher):
        dispatcher.submit(transition(firing))
        dispatcher.submit(transition(alert(device="bess-2")))
        await until(lambda: len(http_receiver.requests) == 1, what="the webhook")
        dispatcher.submit(transition(resolved(firing)))
        await until(lambda: len(http_receiver.requests) == 2, what="the resolve")
    request = http_receiver.requests[0]
    assert request.method == "POST"
    assert (request.path, request.query) == ("/hooks/parkwatch", {"src": "test"})
    # The receiver's check: HMAC-SHA256 over the exact bytes received, compared in constant time.
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Parkwatch-Signature"], expected)
    assert request.headers["Authorization"] == "Bearer hook-token"
    assert request.headers["X-Team"] == "ops"
    assert request.headers["Content-Type"] == "application/json"
    assert len(request.headers[DELIVERY_HEADER]) == 32

    body = orjson.loads(request.body)
    jsonschema.validate(body, orjson.loads(SCHEMA_PATH.read_bytes()))
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"park": "caohejing", "alertname": "StorageCellHot"}
    assert body["commonLabels"] == {
        "alertname": "StorageCellHot",
        "park": "caohejing",
        "severity": "critical",
        "kind": "storage",
    }
    assert [a["labels"]["device"] for a in body["alerts"]] == ["bess-1", "bess-2"]
    first = body["alerts"][0]
    assert first["startsAt"] == "2026-07-15T06:02:05Z"
    assert first["endsAt"] is None
    assert first["value"] == 47.2
    assert first["dashboardURL"].startswith("http://grafana:3000/d/parkwatch-park?var-park=")
    assert body["title"] == "[FIRING:2] StorageCellHot · caohejing"
    assert body["text"].startswith("**Firing (2)**")

    ended = orjson.loads(http_receiver.requests[1].body)
    jsonschema.validate(ended, orjson.loads(SCHEMA_PATH.read_bytes()))
    assert ended["status"] == "resolved"
    assert ended["alerts"][0]["endsAt"] == "2026-07-15T06:10:05Z"
    total = registry.get_sample_value(
        "parkwatch_notification_latency_seconds_sum", {"receiver": "hook"}
    )
    assert total is not None
    record_property("webhook_latency_firing_to_delivered_ms", round(total / 2 * 1000, 1))


async def test_an_unsigned_webhook_has_no_signature_header(
    http_receiver: RecordingServer, registry: CollectorRegistry
) -> None:
    receivers = {"hook": {"type": "webhook", "url": http_receiver.url}}
    async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
        dispatcher.submit(transition(alert()))
        await until(lambda: bool(http_receiver.requests), what="the webhook")
    assert "X-Parkwatch-Signature" not in http_receiver.requests[0].headers


async def test_a_500_is_retried_with_the_same_body_until_accepted(
    http_receiver: RecordingServer, registry: CollectorRegistry
) -> None:
    http_receiver.status = 500
    async with running(Dispatcher(settings({"hook": hook(http_receiver)}), registry)) as d:
        d.submit(transition(alert()))
        await until(lambda: len(http_receiver.requests) >= 3, what="two retries")
        http_receiver.status = 200
        sent = ("parkwatch_notifications_total", {"receiver": "hook", "outcome": "sent"})
        await until(lambda: registry.get_sample_value(*sent) == 1, what="accepted")
    bodies = {r.body for r in http_receiver.requests}
    assert len(bodies) == 1, "every retry posts the same bytes"
    deliveries = {r.headers[DELIVERY_HEADER] for r in http_receiver.requests}
    assert len(deliveries) == 1, "every retry has the same delivery id"


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_a_4xx_is_not_retried(
    http_receiver: RecordingServer, registry: CollectorRegistry, status: int
) -> None:
    http_receiver.status = status
    async with running(Dispatcher(settings({"hook": hook(http_receiver)}), registry)) as d:
        d.submit(transition(alert()))
        failed = ("parkwatch_notifications_total", {"receiver": "hook", "outcome": "failed"})
        await until(lambda: registry.get_sample_value(*failed) == 1, what="given up")
    assert len(http_receiver.requests) == 1


async def test_a_hanging_webhook_is_retried_while_another_receiver_gets_its_message(
    http_receiver: RecordingServer,
    http_receiver_2: RecordingServer,
    registry: CollectorRegistry,
) -> None:
    http_receiver.hang = True
    receivers = {
        "stuck": hook(http_receiver, attempt_timeout_s=0.2),
        "fine": hook(http_receiver_2),
    }
    async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
        dispatcher.submit(transition(alert()))
        await until(lambda: len(http_receiver_2.requests) == 1, what="the healthy receiver")
        await until(lambda: len(http_receiver.requests) >= 2, what="a retry after a timeout")
    retries = registry.get_sample_value(
        "parkwatch_notification_retries_total", {"receiver": "stuck"}
    )
    assert retries is not None
    assert retries >= 1
