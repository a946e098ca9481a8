"""Realistic mode: every simulated device publishes over its own MQTT connection, paced in time.

:func:`run_fleet` connects one :class:`~simulators.link.DeviceLink` per device, then walks the
ticks of :func:`~simulators.generate.iter_ticks`, waiting for each tick's simulated time at
``speed`` x real time and for the broker to acknowledge the previous tick's messages (so no
device gets ahead of another at any speed), and publishes at QoS 1. An ``offline`` fault drops
the device's connection (the broker publishes its last will) and reconnects it when the fault
ends. It stops when the simulated ``duration_s`` is over, when ``stop`` is set, or when
cancelled; in every case each device announces itself offline, waits for its PUBACKs and
disconnects.

A connection lost to a broker failure is retried on later ticks (at most every
``RECONNECT_DELAY_S``); the messages a device could not send meanwhile are counted as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pydantic import ValidationError

from parkwatch.errors import ConfigError, SourceError
from parkwatch.schema import status_topic
from parkwatch.settings import MqttSettings
from simulators.faults import DeviceId, Scenario
from simulators.fleet import FleetSpec
from simulators.generate import device_ids, iter_ticks
from simulators.link import DeviceLink
from simulators.payloads import status_payload
from simulators.simtime import Pacer, default_start

__all__ = ["FleetRunStats", "MqttTarget", "mqtt_target", "parse_mqtt_url", "run_fleet"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 10.0
"""How long shutdown waits for outstanding PUBACKs per device."""
RECONNECT_DELAY_S: Final = 2.0
KEEPALIVE_PERIOD_S: Final = 1.0

OnPublish = Callable[[str, bytes], None]
"""Called with (topic, payload) for every telemetry message handed to the broker."""


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where to publish: the parts of an ``mqtt://[user[:password]@]host[:port]`` URL."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None


def mqtt_target(settings: MqttSettings) -> MqttTarget:
    """Where to publish, from the ``mqtt`` section of the one settings tree."""
    if settings.tls:
        raise ConfigError(f"simulators: {settings.redacted_url()}: TLS (mqtts://) is not supported")
    credentials = settings.credentials()
    user, password = credentials if credentials is not None else (None, None)
    return MqttTarget(host=settings.host, port=settings.port, username=user, password=password)


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user:password@]host[:port]`` as a target; ``ConfigError`` if it is not one."""
    try:
        settings = MqttSettings(url=url)
        settings.port  # noqa: B018 - a port out of range raises only when read
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"MQTT URL: {_first_error(exc)}") from exc
    return mqtt_target(settings)


def _target(mqtt: MqttSettings | None, mqtt_url: str | None) -> MqttTarget:
    if mqtt is not None:
        return mqtt_target(mqtt)
    if mqtt_url is not None:
        return parse_mqtt_url(mqtt_url)
    raise ConfigError("run_fleet needs mqtt settings or an mqtt_url")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return str(exc.errors()[0]["msg"])
    return str(exc)


@dataclass(slots=True)
class FleetRunStats:
    """Counts of a realistic-mode run."""

    ticks: int = 0
    published: int = 0
    acked: int = 0
    dropped: int = 0
    """Messages not sent because their device's connection was down (not by an offline fault)."""


class _Fleet:
    """The connections of one run and the bookkeeping around them."""

    def __init__(self, devices: list[DeviceId], target: MqttTarget, prefix: str) -> None:
        self.links = {
            dev: DeviceLink(
                dev,
                host=target.host,
                port=target.port,
                status_topic=status_topic(dev.park, dev.kind, dev.device, prefix),
                will_payload=status_payload(online=False),
                username=target.username,
                password=target.password,
                client_id=f"parkwatch-sim-{prefix}-{dev.park}-{dev.kind}-{dev.device}",
            )
            for dev in devices
        }
        self.offline: set[DeviceId] = set()
        self.retry_at: dict[DeviceId, float] = {}

    async def connect_all(self, ts_ms: int) -> None:
        """Connect every device at once; one SourceError if any cannot connect."""
        try:
            async with asyncio.TaskGroup() as group:
                for dev, link in self.links.items():
                    online = status_payload(online=True, ts_ms=ts_ms)
                    group.create_task(link.connect(online), name=f"connect {dev.path}")
        except* SourceError as failed:
            errors = failed.exceptions
            # The simulator cannot run without its broker: report once, not once per device.
            raise SourceError(
                f"{len(errors)} device(s) could not connect: {errors[0]}"
            ) from errors[0]

    async def ensure(self, dev: DeviceId, ts_ms: int) -> bool:
        """Reconnect a device whose connection was lost, at most every RECONNECT_DELAY_S."""
        link = self.links[dev]
        if link.is_connected:
            return True
        now = time.monotonic()
        if now < self.retry_at.get(dev, 0.0):
            return False
        try:
            await link.connect(status_payload(online=True, ts_ms=ts_ms))
        except SourceError as exc:
            self.retry_at[dev] = now + RECONNECT_DELAY_S
            log.warning("%s", exc)
            return False
        return True

    def go_offline(self, dev: DeviceId) -> None:
        """Drop a device's connection (its last will follows).

        Call it after ``delivered``: in real time, the messages of earlier ticks were
        acknowledged long before the device went offline; at a high ``speed`` they may still be
        in flight, and dropping them would lose what the scenario never meant to lose.
        """
        self.links[dev].drop()

    async def delivered(self) -> None:
        """Wait until the broker acknowledged what every connected device sent (bounded).

        In real time a tick's messages reach the broker long before the next tick's. At a high
        ``speed`` each connection queues on its own, and one device would run simulated minutes
        ahead of another: consumers that close event-time windows after a lateness (the KPI
        engine) would find the others' readings late. Waiting here keeps the real-time order.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                for link in self.links.values():
                    if link.is_connected:  # a dropped session's messages will never be acked
                        await link.drain()

    async def keepalive(self) -> None:
        while True:
            for link in self.links.values():
                link.keepalive()
            await asyncio.sleep(KEEPALIVE_PERIOD_S)

    async def close_all(self, ts_ms: int) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for dev, link in self.links.items():
                    payload = status_payload(online=False, ts_ms=ts_ms)
                    group.create_task(
                        link.close(payload, grace_s=DRAIN_TIMEOUT_S), name=f"close {dev.path}"
                    )
        finally:
            for link in self.links.values():  # whatever did not close cleanly is cut
                link.abort()


async def run_fleet(
    fleet: FleetSpec,
    *,
    mqtt_url: str | None = None,
    mqtt: MqttSettings | None = None,
    prefix: str = "parks",
    speed: float = 1.0,
    start: datetime | None = None,
    seed: int = 0,
    scenario: Scenario | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_publish: OnPublish | None = None,
) -> FleetRunStats:
    """Publish ``fleet`` in realistic mode until ``duration_s`` (simulated), ``stop`` or cancel.

    The broker is ``mqtt`` (the settings tree's section) or, for tests, a bare ``mqtt_url``.
    """
    target = _target(mqtt, mqtt_url)
    pacer = Pacer(speed)
    start = start or default_start(fleet.step_s)
    conns = _Fleet(device_ids(fleet), target, prefix)
    stats = FleetRunStats()
    ts_ms = round(start.timestamp() * 1000)
    try:
        await conns.connect_all(ts_ms)
        async with asyncio.TaskGroup() as group:
            keepalive = group.create_task(conns.keepalive(), name="simulator keepalive")
            try:
                ticks = iter_ticks(fleet, seed, start, duration_s, scenario=scenario, prefix=prefix)
                for tick in ticks:
                    ts_ms = tick.ts_ms
                    if not await pacer.wait_until(tick.elapsed_s, stop):
                        break
                    # The previous tick first, as in real time (devices going offline too).
                    await conns.delivered()
                    for dev in tick.went_offline:
                        conns.offline.add(dev)
                        conns.go_offline(dev)
                    for dev in tick.came_online:
                        conns.offline.discard(dev)
                    for message in tick.messages:
                        if not await conns.ensure(message.device, ts_ms):
                            stats.dropped += 1
                        elif conns.links[message.device].publish(message.topic, message.payload):
                            stats.published += 1
                            if on_publish is not None:
                                on_publish(message.topic, message.payload)
                    stats.ticks += 1
            finally:
                keepalive.cancel()
    finally:
        await conns.close_all(ts_ms)
        stats.acked = sum(link.acked for link in conns.links.values())
    return stats
