"""Rate mode: publish pre-generated payloads at N messages/s over a few connections, at QoS 1.

For benchmarks of the collector, not realism: payloads come from :func:`iter_messages` ahead of
time and are spread round-robin over ``connections`` clients, each keeping at most ``window``
QoS 1 messages in flight. The report counts the PUBACKs the broker returned; the run is only done
when every message is acknowledged (or ``ACK_TIMEOUT_S`` passed).

Why gmqtt: ``bench/publish.py`` measures it against paho-mqtt and aiomqtt at QoS 1 (100,000
simulator payloads, 4 connections, Mosquitto on loopback, no subscriber); it is several times
faster than both, and runs vary but the order does not. The figures of the last run are in the
README's Benchmarks table, the one place they are kept. With a subscriber draining the same
broker the broker, not the client, becomes the limit. gmqtt is a native asyncio protocol, so a
publish is a buffered ``transport.write`` with no thread hand-off and no per-message future.
It is untyped, so it is confined to this module (and it must be in the project's dependencies).
PUBACKs are counted through gmqtt's
``persistent_storage`` hook (the store of un-acknowledged QoS messages), which also bounds the
in-flight window. MQTT 3.1.1 is used because under MQTT 5 gmqtt caps its packet ids at the
broker's receive maximum (20 on a default Mosquitto) and raises instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from gmqtt import Client  # type: ignore[import-untyped]
from gmqtt.mqtt.constants import MQTTv311  # type: ignore[import-untyped]
from gmqtt.mqtt.handler import MQTTConnectError  # type: ignore[import-untyped]
from gmqtt.storage import PersistentStorage  # type: ignore[import-untyped]

from parkwatch.errors import SourceError

__all__ = ["ACK_TIMEOUT_S", "RateReport", "publish_at_rate"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0
ACK_TIMEOUT_S: Final = 60.0
"""How long to wait for the last PUBACKs before reporting what was acknowledged."""
PACE_TICK_S: Final = 0.005
"""Granularity of rate pacing: messages due in a tick are sent together."""
MAX_WINDOW: Final = 60_000
"""MQTT packet ids are 16 bit; keep the window clear of them wrapping."""


class _AckCounter(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of un-acknowledged messages, counting PUBACKs and gating the window."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.acked = 0
        self.room = asyncio.Event()
        self.room.set()

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if len(self._messages) >= self.window:
            self.room.clear()

    def remove_message_by_mid(self, mid: int) -> None:
        if mid in self._messages:
            self.acked += 1
        super().remove_message_by_mid(mid)
        if len(self._messages) < self.window:
            self.room.set()

    @property
    def inflight(self) -> int:
        """Messages sent and not yet acknowledged."""
        return len(self._messages)


@dataclass(frozen=True, slots=True)
class RateReport:
    """The outcome of a rate-mode run."""

    sent: int
    acked: int
    elapsed_s: float
    """From the first publish to the last PUBACK (connecting is not counted)."""

    @property
    def rate(self) -> float:
        """Acknowledged messages per second."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"sent {self.sent}, acknowledged {self.acked} in {self.elapsed_s:.2f} s "
            f"({self.rate:,.0f} msg/s)"
        )


async def _connect(
    *, name: str, host: str, port: int, window: int, username: str | None, password: str | None
) -> tuple[Any, _AckCounter]:
    store = _AckCounter(window)
    client = Client(name, clean_session=True, persistent_storage=store)
    if username:
        client.set_auth_credentials(username, password)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await client.connect(host, port, version=MQTTv311, keepalive=60)
    except (OSError, TimeoutError, MQTTConnectError) as exc:
        raise SourceError(f"rate mode: cannot connect {name} to {host}:{port}: {exc}") from exc
    return client, store


async def publish_at_rate(
    messages: Sequence[tuple[str, bytes]],
    *,
    host: str,
    port: int,
    rate: float,
    count: int | None = None,
    connections: int = 4,
    window: int = 1000,
    username: str | None = None,
    password: str | None = None,
    client_id: str = "parkwatch-rate",
    stop: asyncio.Event | None = None,
) -> RateReport:
    """Publish ``count`` messages (default all, cycling ``messages``) at ``rate``/s (0: flat out).

    Returns once every sent message is acknowledged, ``ACK_TIMEOUT_S`` passed, or ``stop`` is set.
    """
    if not messages:
        raise ValueError("rate mode needs at least one message to publish")
    if rate < 0 or connections < 1 or not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"bad rate mode settings: {rate=} {connections=} {window=}")
    total = len(messages) if count is None else count
    links: list[tuple[Any, _AckCounter]] = []
    try:
        links.extend(
            [
                await _connect(
                    name=f"{client_id}-{i}",
                    host=host,
                    port=port,
                    window=window,
                    username=username,
                    password=password,
                )
                for i in range(connections)
            ]
        )
        sent = 0
        source = itertools.cycle(messages)
        began = time.perf_counter()
        while sent < total and not (stop and stop.is_set()):
            due = total if rate == 0 else min(total, int(rate * (time.perf_counter() - began)) + 1)
            while sent < due:
                client, store = links[sent % connections]
                if not store.room.is_set():
                    await store.room.wait()
                topic, payload = next(source)
                client.publish(topic, payload, qos=1)
                sent += 1
            if sent < total:
                await asyncio.sleep(PACE_TICK_S if rate else 0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACK_TIMEOUT_S):
                for _, store in links:
                    await store.wait_empty()
        elapsed = time.perf_counter() - began
        acked = sum(store.acked for _, store in links)
        if acked < sent:
            log.warning("rate mode: %d of %d messages never acknowledged", sent - acked, sent)
        return RateReport(sent=sent, acked=acked, elapsed_s=elapsed)
    finally:
        for client, _ in links:
            with contextlib.suppress(Exception):  # best effort: the report is what matters
                await client.disconnect()
