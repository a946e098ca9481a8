"""Backlogs for the drain benchmark: a realistic fleet's telemetry, queued for an offline client.

:func:`telemetry` builds ~150-byte payloads of all four device kinds, valid against
``parkwatch/schema.py``, spread round-robin over many devices in many parks, each message with a
distinct timestamp (so nothing collapses into one InfluxDB point) and counters that only grow
(so KPI engines see no counter resets). Values stay inside the healthy ranges of the default rule
pack: a backlog is "catching up after an outage", not an alert storm.

:func:`register_session` creates a persistent MQTT 5 session subscribed to the given filters and
leaves it offline; :func:`publish_backlog` then queues the messages in it at full speed with
gmqtt (``simulators.rate``: measured 7-9x paho's publish rate, see ``bench.publish``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any, Final

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parkwatch.localservers import Mosquitto
from parkwatch.schema import Kind, telemetry_topic
from simulators.rate import publish_at_rate

__all__ = [
    "KIND_FIELD",
    "NAMED_PARKS",
    "Message",
    "balanced_parks",
    "device_of",
    "mean_size",
    "publish_backlog",
    "register_session",
    "telemetry",
]

Message = tuple[str, bytes]

NAMED_PARKS: Final = (
    "caohejing",
    "zhangjiang",
    "lingang",
    "hongqiao",
    "baoshan-nanda",
    "wusong",
    "jinshan-bay",
    "carbon-valley",
)
KINDS: Final = (Kind.MICROGRID, Kind.STORAGE, Kind.SITE5G, Kind.CHARGER)
KIND_FIELD: Final = {
    Kind.MICROGRID: "pv_kw",
    Kind.STORAGE: "soc_pct",
    Kind.SITE5G: "power_kw",
    Kind.CHARGER: "power_kw",
}
"""A field every message of the kind carries: ``count()`` of it counts the kind's points."""
_DEVICE_PREFIX: Final = {
    Kind.MICROGRID: "mg",
    Kind.STORAGE: "bess",
    Kind.SITE5G: "g5",
    Kind.CHARGER: "evc",
}
SESSION_EXPIRY_S: Final = 3600
SUBSCRIBE_TIMEOUT_S: Final = 10.0
PUBLISH_CONNECTIONS: Final = 4
PUBLISH_WINDOW: Final = 1000


def balanced_parks(count: int, parts: int = 2) -> list[str]:
    """``count`` park ids (the named Shanghai parks first) that split evenly into ``parts``.

    Split as ``mqtt.partition`` splits them (crc32 of the id modulo ``parts``), so that two
    collectors partitioning the parks get the same share of a round-robin backlog.
    """
    candidates = [*NAMED_PARKS, *(f"park-{n:03d}" for n in range(4 * count + 64))]
    buckets: list[list[str]] = [[] for _ in range(parts)]
    for park in candidates:
        buckets[zlib.crc32(park.encode()) % parts].append(park)
    # Take from the parts in turn, so that a smaller count is as balanced as it can be.
    return [buckets[i % parts][i // parts] for i in range(count)]


def device_of(index: int, parks: Sequence[str]) -> tuple[str, Kind, str]:
    """Device ``index``: its park, kind and id (kinds alternate, parks go round-robin)."""
    kind = KINDS[index % len(KINDS)]
    park = parks[(index // len(KINDS)) % len(parks)]
    return park, kind, f"{_DEVICE_PREFIX[kind]}-{index:05d}"


def _payload(kind: Kind, n: int, device: int, report: int, ts: int) -> dict[str, Any]:
    """One reading; ``report`` (the device's nth message) drives its counters upwards."""
    wobble = (n * 7919) % 100 / 100  # deterministic variety, stable across runs
    if kind is Kind.MICROGRID:
        return {
            "ts": ts,
            "pv_kw": round(180 + 40 * wobble, 2),
            "load_kw": round(420 + 30 * wobble, 2),
            "grid_import_kw": round(240 - 10 * wobble, 2),
            "pv_kwh": round(5000 + device % 97 + 0.05 * report, 3),
            "grid_import_kwh": round(9000 + device % 89 + 0.07 * report, 3),
            "load_kwh": round(12000 + device % 83 + 0.12 * report, 3),
            "frequency_hz": 50.01,
        }
    if kind is Kind.STORAGE:
        return {
            "ts": ts,
            "soc_pct": round(55 + 10 * wobble, 1),
            "soh_pct": 96.5,
            "power_kw": round(-120 + 240 * wobble, 1),
            "cell_temp_max_c": 29.5,
            "cell_temp_min_c": 25.0,
            "charged_kwh": round(800 + device % 53 + 0.03 * report, 3),
            "discharged_kwh": round(700 + device % 53 + 0.027 * report, 3),
        }
    if kind is Kind.SITE5G:
        return {
            "ts": ts,
            "power_kw": round(3.2 + wobble, 2),
            "energy_kwh": round(2000 + device % 61 + 0.001 * report, 4),
            "traffic_gb": round(900 + device % 71 + 0.02 * report, 3),
            "prb_util_pct": round(40 + 20 * wobble, 1),
            "active_ues": 120 + n % 50,
            "sleep_level": 0,
            "cabinet_temp_c": round(28 + 3 * wobble, 1),
        }
    return {
        "ts": ts,
        "connector_id": 1 + device % 2,
        "status": "Charging",
        "error_code": "NoError",
        "power_kw": round(60 + 20 * wobble, 1),
        "energy_kwh": round(300 + device % 43 + 0.02 * report, 3),
        "ev_soc_pct": round(40 + 30 * wobble, 1),
        "connector_temp_c": round(35 + 5 * wobble, 1),
    }


def telemetry(
    prefix: str,
    count: int,
    *,
    devices: int,
    parks: Sequence[str],
    base_ms: int | None = None,
    step_ms: float = 1.0,
) -> list[Message]:
    """``count`` messages over ``devices`` devices, message ``n`` stamped ``base + n * step``.

    The default base puts the last message one second in the past, so a backlog is just old.
    """
    if base_ms is None:
        base_ms = int(time.time() * 1000) - int(count * step_ms) - 1000
    devices = max(1, devices)
    topics = [telemetry_topic(*device_of(d, parks), prefix=prefix) for d in range(devices)]
    out = []
    for n in range(count):
        device = n % devices
        kind = KINDS[device % len(KINDS)]
        payload = _payload(kind, n, device, n // devices, base_ms + int(n * step_ms))
        out.append((topics[device], orjson.dumps(payload)))
    return out


def register_session(broker: Mosquitto, client_id: str, topic_filters: Sequence[str]) -> None:
    """Create a persistent MQTT 5 session subscribed at QoS 1 to every filter, then go offline."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    client.loop_start()
    try:
        client.subscribe([(topic, 1) for topic in topic_filters])
        if not subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            raise RuntimeError(f"broker did not acknowledge the subscription of {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def publish_backlog(
    broker: Mosquitto, messages: Sequence[Message], *, client_id: str = "bench-backlog"
) -> float:
    """Publish at QoS 1 as fast as the broker takes them; return msg/s (all were PUBACKed)."""
    report = asyncio.run(
        publish_at_rate(
            messages,
            host=broker.host,
            port=broker.port,
            rate=0,
            connections=PUBLISH_CONNECTIONS,
            window=PUBLISH_WINDOW,
            client_id=client_id,
        )
    )
    if report.acked != len(messages):
        raise RuntimeError(f"backlog: the broker acknowledged only {report}")
    return report.rate


def mean_size(messages: Sequence[Message]) -> float:
    """The mean payload size in bytes."""
    return sum(len(payload) for _, payload in messages) / max(1, len(messages))
