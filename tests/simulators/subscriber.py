"""Test helpers for code that consumes the simulators over MQTT (used by the simulator tests).

:class:`MqttSubscriber` collects everything published under a topic prefix, waits for conditions
with a timeout, and can *flush*: make sure every message the broker accepted before now has been
received, without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import aiomqtt

__all__ = ["BrokerAddress", "MqttSubscriber", "Received"]


class BrokerAddress(Protocol):
    """Where a test broker listens (``parkwatch.localservers.Mosquitto`` fits)."""

    @property
    def host(self) -> str:
        """Host name or address."""
        ...

    @property
    def port(self) -> int:
        """TCP port."""
        ...

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        ...


Received = tuple[str, bytes, bool]
"""(topic, payload, retained) of one received message."""


class MqttSubscriber:
    """Collects everything published under a prefix, in arrival order."""

    def __init__(self, client: aiomqtt.Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.received: list[Received] = []
        self._marks = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, broker: BrokerAddress, prefix: str) -> AsyncIterator[MqttSubscriber]:
        """Connect and subscribe to ``{prefix}/#`` at QoS 1."""
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"sub-{prefix}") as client:
            await client.subscribe(f"{prefix}/#", qos=1)
            yield cls(client, prefix)

    async def _next(self) -> Received:
        message = await anext(self.client.messages)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        return str(message.topic), payload, bool(message.retain)

    async def until(self, done: Callable[[list[Received]], bool], *, limit_s: float = 30) -> None:
        """Receive until ``done(received)`` holds; TimeoutError after ``limit_s`` seconds."""
        async with asyncio.timeout(limit_s):
            while not done(self.received):
                self.received.append(await self._next())

    async def flush(self, *, limit_s: float = 30) -> None:
        """Receive everything the broker accepted for us before now.

        The broker delivers to one subscriber in order, so once a marker published now comes
        back, every message it had accepted earlier has arrived.
        """
        self._marks += 1
        marker = f"{self.prefix}/_marker/{self._marks}"
        await self.client.publish(marker, b"", qos=1)
        async with asyncio.timeout(limit_s):
            while (received := await self._next())[0] != marker:
                self.received.append(received)

    def telemetry(self) -> list[Received]:
        """Received telemetry messages."""
        return [r for r in self.received if r[0].endswith("/telemetry")]

    def statuses(self, device_path: str) -> list[bytes]:
        """Payloads received on ``{prefix}/{device_path}/status``, in order."""
        topic = f"{self.prefix}/{device_path}/status"
        return [payload for t, payload, _ in self.received if t == topic]
