"""Shared by the benchmarks: queue N messages in a broker for a client that is offline."""

from __future__ import annotations

import time

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from parkwatch.localservers import Mosquitto


def payloads(prefix: str, count: int, devices: int = 200) -> list[tuple[str, bytes]]:
    """~150-byte microgrid readings spread over ``devices`` meters, one distinct ts each."""
    base = int(time.time() * 1000) - count
    return [
        (
            f"{prefix}/zhangjiang/microgrid/meter-{n % devices}/telemetry",
            orjson.dumps(
                {
                    "ts": base + n,
                    "pv_kw": 120.5 + n % 7,
                    "load_kw": 300.25,
                    "grid_import_kw": 179.75,
                    "pv_kwh": 1234.5 + n,
                    "frequency_hz": 50.01,
                }
            ),
        )
        for n in range(count)
    ]


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 and wait for every PUBACK; return the seconds taken."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    started = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=120)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed
