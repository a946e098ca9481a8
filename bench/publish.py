"""Measure QoS 1 publish throughput of the MQTT client libraries against a local Mosquitto.

Starts its own ``mosquitto`` on a free loopback port in a temporary directory, then publishes a
fixed number of pre-generated telemetry payloads with each candidate publisher over a few
connections, waits for every PUBACK, and prints messages per second and the ratio to paho-mqtt
(the baseline). ``simulators`` picks its rate-mode publisher from these numbers.

Usage::

    python bench/publish.py [--count 100000] [--connections 4] [--window 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from parkwatch.localservers import free_port, wait_for
from simulators.fleet import default_fleet
from simulators.generate import iter_messages
from simulators.rate import publish_at_rate

Message = tuple[str, bytes]
Candidate = Callable[[str, int, Sequence[Message], int, int], Awaitable[int]]
"""(host, port, messages, connections, window) -> PUBACKs received."""

QUIET = logging.getLogger("bench.aiomqtt")
QUIET.setLevel(logging.ERROR)  # aiomqtt warns about every pending publish beyond 10

ACK_TIMEOUT_S = 120.0
"""Give up waiting for PUBACKs after this long (a stuck broker must not hang the bench)."""


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    """Run a throwaway Mosquitto on a free port; yield the port."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        # The broker is ready once it accepts connections.
        wait_for(lambda: _accepts(port, proc), timeout=10, what="the benchmark's Mosquitto")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _accepts(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether the broker accepts connections; raise if it has exited."""
    if proc.poll() is not None:
        raise RuntimeError(f"mosquitto exited with {proc.returncode}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def messages(count: int) -> list[Message]:
    """``count`` realistic telemetry messages from the simulator (cycled if needed)."""
    start = datetime(2025, 6, 21, tzinfo=UTC)
    pool = list(iter_messages(default_fleet(), seed=1, start=start, duration_s=3600))
    return [pool[i % len(pool)] for i in range(count)]


async def bench_paho_thread(
    host: str, port: int, msgs: Sequence[Message], connections: int, window: int
) -> int:
    """paho-mqtt with its own network thread per connection (``loop_start``)."""
    acked = 0
    lock = threading.Lock()
    done = threading.Event()

    def on_publish(*_: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked == len(msgs):
                done.set()

    clients = []
    for i in range(connections):
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{i}")
        client.max_inflight_messages_set(window)
        client.on_publish = on_publish
        client.connect(host, port)
        client.loop_start()
        clients.append(client)
    for i, (topic, payload) in enumerate(msgs):
        clients[i % connections].publish(topic, payload, qos=1)
    await asyncio.to_thread(done.wait, ACK_TIMEOUT_S)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return acked


async def bench_aiomqtt(
    host: str, port: int, msgs: Sequence[Message], connections: int, window: int
) -> int:
    """aiomqtt: one awaited ``publish`` per message, ``window`` of them in flight per client."""
    acked = 0
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                aiomqtt.Client(
                    host,
                    port,
                    identifier=f"bench-aiomqtt-{i}",
                    max_inflight_messages=window,
                    logger=QUIET,
                )
            )
            for i in range(connections)
        ]

        async def worker(index: int) -> None:
            nonlocal acked
            client = clients[index]
            gate = asyncio.Semaphore(window)

            async def one(topic: str, payload: bytes) -> None:
                nonlocal acked
                try:
                    await client.publish(topic, payload, qos=1, timeout=ACK_TIMEOUT_S)
                    acked += 1
                finally:
                    gate.release()

            async with asyncio.TaskGroup() as group:
                for topic, payload in msgs[index::connections]:
                    await gate.acquire()
                    group.create_task(one(topic, payload))

        async with asyncio.TaskGroup() as group:
            for index in range(connections):
                group.create_task(worker(index))
    return acked


async def bench_gmqtt(
    host: str, port: int, msgs: Sequence[Message], connections: int, window: int
) -> int:
    """gmqtt through the simulators' rate-mode publisher, as fast as possible."""
    report = await publish_at_rate(
        msgs, host=host, port=port, rate=0, connections=connections, window=window
    )
    return report.acked


CANDIDATES: dict[str, Candidate] = {
    "paho-mqtt (thread loop)": bench_paho_thread,
    "aiomqtt": bench_aiomqtt,
    "gmqtt (simulators.rate)": bench_gmqtt,
}


async def run(args: argparse.Namespace) -> None:
    """Run every candidate ``repeat`` times and print the best rate of each."""
    msgs = messages(args.count)
    size = sum(len(p) for _, p in msgs) / len(msgs)
    print(f"{len(msgs)} messages of ~{size:.0f} B, QoS 1, {args.connections} connections")
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp)) as port:
        best: dict[str, float] = {}
        for name, candidate in CANDIDATES.items():
            for _ in range(args.repeat):
                began = time.perf_counter()
                acked = await candidate("127.0.0.1", port, msgs, args.connections, args.window)
                elapsed = time.perf_counter() - began
                if acked != len(msgs):
                    print(f"{name}: only {acked}/{len(msgs)} PUBACKs")
                best[name] = max(best.get(name, 0.0), acked / elapsed)
        baseline = best["paho-mqtt (thread loop)"]
        for name, rate in best.items():
            print(f"{name:28s} {rate:10,.0f} msg/s   x{rate / baseline:.2f} vs paho")


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--window", type=int, default=1000, help="QoS 1 in flight per connection")
    parser.add_argument("--repeat", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
