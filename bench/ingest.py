"""MQTT receive rate of the clients the collector could use, each acking every message.

Each client drains the same number of QoS 1 messages that were queued in its persistent session
while it was offline, so the publisher's speed does not enter the measurement. This measures the
client, not the pipeline (see ``bench.pipeline`` and ``bench.drain``):

* ``native``, ``paho_buffered``, ``paho_stock``: parkwatch's ``MqttSource`` with
  ``mqtt.client = native`` (its own asyncio client, ``collector/adapters/mqttconn.py``), with
  paho-mqtt reading through a 64 KiB buffer, and with stock paho (byte-at-a-time reads); all
  three take each message from the inbox and settle it, so the PUBACK goes out after that, as in
  the collector (manual ack, in order).
* ``gmqtt``: a bare gmqtt subscriber that acks on receipt and discards: the fastest asyncio
  client we know, doing nothing else (it cannot defer an ack without a task per message).
* ``aiomqtt``: its message iterator (acks on receipt).

Rounds alternate the order; the medians are reported with the process CPU time per message,
which a shared machine disturbs less than the wall clock, and the load average.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import aiomqtt
from gmqtt import Client as GmqttClient  # type: ignore[import-untyped]
from gmqtt.mqtt.constants import MQTTv50  # type: ignore[import-untyped]
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.backlog import register_session
from bench.preload import payloads, publish
from collector.adapters.mqtt import MqttSource
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.localservers import Mosquitto
from parkwatch.settings import MqttSettings

RECEIVE_MAXIMUM: Final = 8192
CLIENTS: Final = ("native", "paho_buffered", "paho_stock", "gmqtt", "aiomqtt")
BASELINE: Final = "paho_stock"

Drain = Callable[[Mosquitto, str, str, int], Coroutine[Any, Any, None]]


def _source_drain(client: str, *, buffered: bool = True) -> Drain:
    async def drain(broker: Mosquitto, client_id: str, prefix: str, count: int) -> None:
        settings = MqttSettings(
            url=broker.url,
            client_id=client_id,
            topic_prefix=prefix,
            receive_maximum=RECEIVE_MAXIMUM,
            client=client,  # type: ignore[arg-type]
        )
        inbox: asyncio.Queue[RawMessage] = asyncio.Queue(RECEIVE_MAXIMUM)
        source = MqttSource(settings, inbox, Metrics(), buffered=buffered)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(source.run()), group.create_task(source.run_pump())]
            for _ in range(count):
                message = await inbox.get()
                source.settle((message.ticket,))
            await source.disconnect()
            for task in tasks:
                task.cancel()

    return drain


async def _drain_gmqtt(broker: Mosquitto, client_id: str, prefix: str, count: int) -> None:
    done = asyncio.Event()
    received = 0

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        nonlocal received
        received += 1
        if received >= count:
            done.set()
        return 0  # PUBACK "success": gmqtt acks on receipt

    client = GmqttClient(
        client_id,
        clean_session=False,
        session_expiry_interval=3600,
        receive_maximum=RECEIVE_MAXIMUM,
    )
    client.on_message = on_message
    await client.connect(broker.host, broker.port, version=MQTTv50, keepalive=60)
    await done.wait()
    await client.disconnect()


async def _drain_aiomqtt(broker: Mosquitto, client_id: str, prefix: str, count: int) -> None:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    received = 0
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
    ) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        async for _ in client.messages:
            received += 1
            if received == count:
                break


DRAINS: Final[dict[str, Drain]] = {
    "native": _source_drain("native"),
    "paho_buffered": _source_drain("paho"),
    "paho_stock": _source_drain("paho", buffered=False),
    "gmqtt": _drain_gmqtt,
    "aiomqtt": _drain_aiomqtt,
}


def _measure(broker: Mosquitto, name: str, tag: str, count: int) -> tuple[float, float]:
    """(messages per second, CPU microseconds per message) of one drain."""
    prefix = client_id = f"bench-{name}-{tag}"
    register_session(broker, client_id, [f"{prefix}/#"])
    publish(broker, payloads(prefix, count))
    cpu, started = time.process_time(), time.perf_counter()
    asyncio.run(DRAINS[name](broker, client_id, prefix, count))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return count / elapsed, cpu / count * 1e6


def run(count: int = 40_000, rounds: int = 3) -> dict[str, Any]:
    """Medians over ``rounds`` (order alternating) per client, and ratios to stock paho."""
    rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
    cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        for number in range(rounds):
            for name in CLIENTS if number % 2 == 0 else CLIENTS[::-1]:
                rate, us = _measure(broker, name, f"r{number}", count)
                rates[name].append(rate)
                cpu[name].append(us)
                print(f"  round {number + 1}: {name:14s} {rate:9,.0f} msg/s {us:6.1f} us/msg")
    results: dict[str, Any] = {
        "messages": count,
        "rounds": rounds,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
    }
    base = statistics.median(rates[BASELINE])
    for name in CLIENTS:
        results[f"{name}_msgs_per_s"] = statistics.median(rates[name])
        results[f"{name}_msgs_per_s_range"] = (min(rates[name]), max(rates[name]))
        results[f"{name}_cpu_us_per_msg"] = statistics.median(cpu[name])
        results[f"{name}_vs_{BASELINE}"] = statistics.median(rates[name]) / base
    results["native_vs_paho_buffered"] = (
        results["native_msgs_per_s"] / results["paho_buffered_msgs_per_s"]
    )
    return results


if __name__ == "__main__":
    arguments = sys.argv[1:]
    figures = run(*(int(a) for a in arguments[:2]))
    for key, value in figures.items():
        shown = f"{value:12.2f}" if isinstance(value, float) else str(value)
        print(f"{key:>32}: {shown}")
