"""MQTT receive rate: stock paho vs parkwatch's buffered paho (both manual ack), and aiomqtt.

Each client drains the same number of QoS 1 messages that were queued in its persistent session
while it was offline, so the publisher's speed does not enter the measurement. Every message is
acked on receipt here: this measures the client, not the pipeline (see ``bench.pipeline``).
Baseline: stock paho-mqtt driven by the asyncio loop, as aiomqtt drives it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.preload import payloads, publish, register_session
from collector.adapters.mqtt import MqttSource
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.localservers import Mosquitto
from parkwatch.settings import MqttSettings

RECEIVE_MAXIMUM = 8192


async def _drain_source(
    broker: Mosquitto, client_id: str, prefix: str, count: int, *, buffered: bool
) -> float:
    settings = MqttSettings(
        url=broker.url, client_id=client_id, topic_prefix=prefix, receive_maximum=RECEIVE_MAXIMUM
    )
    inbox: asyncio.Queue[RawMessage] = asyncio.Queue(RECEIVE_MAXIMUM)
    source = MqttSource(settings, inbox, Metrics(), buffered=buffered)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(source.run()), group.create_task(source.run_pump())]
        for _ in range(count):
            message = await inbox.get()
            source.settle((message.ticket,))
        elapsed = time.perf_counter() - started
        await source.disconnect()
        for task in tasks:
            task.cancel()
    return elapsed


async def _drain_aiomqtt(broker: Mosquitto, client_id: str, prefix: str, count: int) -> float:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    started = time.perf_counter()
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
    return time.perf_counter() - started


def run(count: int = 40_000) -> dict[str, float]:
    """Messages per second for each client, and ratios against stock paho."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        for name in ("paho_stock", "paho_buffered", "aiomqtt"):
            prefix, client_id = f"bench-{name}", f"bench-{name}"
            register_session(broker, client_id, f"{prefix}/#")
            publish(broker, payloads(prefix, count))
            if name == "aiomqtt":
                elapsed = asyncio.run(_drain_aiomqtt(broker, client_id, prefix, count))
            else:
                buffered = name == "paho_buffered"
                elapsed = asyncio.run(
                    _drain_source(broker, client_id, prefix, count, buffered=buffered)
                )
            results[f"{name}_msgs_per_s"] = count / elapsed
    base = results["paho_stock_msgs_per_s"]
    results["paho_buffered_vs_stock"] = results["paho_buffered_msgs_per_s"] / base
    results["aiomqtt_vs_stock"] = results["aiomqtt_msgs_per_s"] / base
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:>28}: {value:10.2f}")
