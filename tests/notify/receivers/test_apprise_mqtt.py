"""MQTT notifications through Apprise's ``mqtt://`` service to a real Mosquitto: a subscriber
gets the rendered message on the configured topic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from notify.dispatcher import Dispatcher
from parkwatch.localservers import Mosquitto
from tests.notify.helpers import alert, mean_latency_ms, running, settings, transition

pytestmark = pytest.mark.servers


async def test_a_subscriber_gets_the_notification(
    mosquitto: Mosquitto,
    topic_prefix: str,
    registry: CollectorRegistry,
    record_property: Callable[[str, object], None],
) -> None:
    topic = f"{topic_prefix}/alerts/ops"
    url = f"mqtt://{mosquitto.host}:{mosquitto.port}/{topic}?qos=1"
    receivers = {"mqtt": {"type": "apprise", "url": url, "language": "en"}}
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as subscriber:
        await subscriber.subscribe(topic, qos=1)
        async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
            dispatcher.submit(transition(alert()))
            async with asyncio.timeout(20):
                message = await anext(aiter(subscriber.messages))
            await dispatcher.drain(5)
    assert str(message.topic) == topic
    assert isinstance(message.payload, bytes)
    text = message.payload.decode()
    # No title field in MQTT: Apprise puts the title on the first line.
    assert text.startswith("[FIRING:1] StorageCellHot · caohejing\r\nFiring (1)\n\n")
    assert "- Critical StorageCellHot · caohejing storage bess-1" in text
    record_property("mqtt_latency_firing_to_delivered_ms", mean_latency_ms(registry, "mqtt"))
