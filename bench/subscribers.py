"""The drain benchmark's baseline contenders, each run as its own process by ``bench.drain``.

* ``gmqtt``: a bare gmqtt subscriber that acks on receipt and discards (the limit for a Python
  collector: the fastest asyncio MQTT client we have, doing nothing else).
* ``paho``: a bare paho-mqtt subscriber (stock client, its own network loop) that discards.
* ``naive``: the collector one writes in an afternoon: subscribe, and for every message one HTTP
  ``POST /write`` of one line to InfluxDB 1.x, then the PUBACK (ack after the write, so it keeps
  parkwatch's guarantee, without batching). It reuses one keep-alive connection: being kind to
  the baseline only makes parkwatch's ratio against it harder to reach.

Each resumes a persistent MQTT 5 session that already holds ``--count`` queued messages, with the
receive maximum parkwatch uses, and prints one JSON object: ``received``, ``elapsed_s`` (connect
to the last message handled) and ``cpu_s`` (its own CPU time over the whole run).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import sys
import threading
import time
import urllib.parse
from typing import Any, Final

import orjson
import paho.mqtt.client as paho
from gmqtt import Client as GmqttClient  # type: ignore[import-untyped]
from gmqtt.mqtt.constants import MQTTv50  # type: ignore[import-untyped]
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["line_of", "main"]

SESSION_EXPIRY_S: Final = 3600
KEEPALIVE_S: Final = 60
CONTENDERS: Final = ("gmqtt", "paho", "naive")


def _report(received: int, elapsed_s: float) -> None:
    cpu = time.process_time()
    print(orjson.dumps({"received": received, "elapsed_s": elapsed_s, "cpu_s": cpu}).decode())


async def _drain_gmqtt(args: argparse.Namespace) -> tuple[int, float]:
    done = asyncio.Event()
    received = 0

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        nonlocal received
        received += 1
        if received >= args.count:
            done.set()
        return 0  # PUBACK reason code "success": gmqtt acks on receipt

    client = GmqttClient(
        args.client_id,
        clean_session=False,
        session_expiry_interval=SESSION_EXPIRY_S,
        receive_maximum=args.receive_maximum,
    )
    client.on_message = on_message
    started = time.perf_counter()
    await client.connect(args.host, args.port, version=MQTTv50, keepalive=KEEPALIVE_S)
    try:
        async with asyncio.timeout(args.timeout):
            await done.wait()
    except TimeoutError:
        pass  # reported as fewer messages received than queued
    elapsed = time.perf_counter() - started
    await client.disconnect()
    return received, elapsed


def _paho_client(args: argparse.Namespace, *, manual_ack: bool) -> paho.Client:
    return paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )


def _run_paho(
    args: argparse.Namespace, client: paho.Client, handle: Any | None
) -> tuple[int, float]:
    """Drive ``client`` with ``loop_forever`` until ``count`` messages went through ``handle``."""
    received = 0
    finished = 0.0

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal received, finished
        if handle is not None:
            handle(message)
        received += 1
        if received >= args.count:
            finished = time.perf_counter()
            client.disconnect()

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = args.receive_maximum
    watchdog = threading.Timer(args.timeout, client.disconnect)
    watchdog.daemon = True
    watchdog.start()
    started = time.perf_counter()
    client.connect(args.host, args.port, KEEPALIVE_S, clean_start=False, properties=props)
    client.loop_forever()
    watchdog.cancel()
    return received, (finished or time.perf_counter()) - started


def line_of(topic: str, payload: bytes) -> bytes:
    """One line of InfluxDB line protocol for a telemetry message (the naive writer's encoder)."""
    _, park, kind, device, _ = topic.split("/")
    reading = orjson.loads(payload)
    ts = reading.pop("ts")
    tags = f"park={park},device={device}"
    if "connector_id" in reading:
        tags += f",connector={reading.pop('connector_id')}"
    fields = []
    for key, value in reading.items():
        if isinstance(value, bool):
            fields.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, int):
            fields.append(f"{key}={value}i")
        elif isinstance(value, float):
            fields.append(f"{key}={value!r}")
        else:
            fields.append(f'{key}="{value}"')
    return f"{kind},{tags} {','.join(fields)} {ts}".encode()


def _drain_naive(args: argparse.Namespace) -> tuple[int, float]:
    url = urllib.parse.urlsplit(args.influx_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 8086)
    path = "/write?" + urllib.parse.urlencode({"db": args.database, "precision": "ms"})
    client = _paho_client(args, manual_ack=True)

    def write_then_ack(message: paho.MQTTMessage) -> None:
        connection.request("POST", path, body=line_of(message.topic, bytes(message.payload)))
        response = connection.getresponse()
        body = response.read()
        if response.status != 204:
            raise RuntimeError(f"InfluxDB answered {response.status}: {body[:200]!r}")
        client.ack(message.mid, message.qos)

    try:
        return _run_paho(args, client, write_then_ack)
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    """Drain one backlog with the contender named on the command line; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--receive-maximum", type=int, default=8192)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--influx-url", default="http://127.0.0.1:8086")
    parser.add_argument("--database", default="bench")
    args = parser.parse_args(argv)
    if args.contender == "gmqtt":
        received, elapsed = asyncio.run(_drain_gmqtt(args))
    elif args.contender == "paho":
        received, elapsed = _run_paho(args, _paho_client(args, manual_ack=False), None)
    else:
        received, elapsed = _drain_naive(args)
    _report(received, elapsed)
    return 0 if received >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
