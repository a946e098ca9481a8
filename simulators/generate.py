"""The pure message generator: fleet + seed + start -> ticks of (topic, payload) messages.

No I/O and no wall clock: with an explicit ``start`` the output is a function of its arguments, so
two runs give byte-identical payloads. The MQTT publishers pace and send what this yields; tests
and rate mode consume it directly.

Each tick first steps every park over the preceding simulation step, then emits the telemetry of
the devices whose reporting interval divides the tick (every device reports at tick 0). A device
under an ``offline`` fault emits nothing; the tick lists the devices that went offline or came
back, so a publisher can drop or restore their connections.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from parkwatch.schema import Kind, telemetry_topic
from simulators.corrupt import PayloadCorrupter
from simulators.faults import DeviceId, FaultKind, FaultPlan, Scenario
from simulators.fleet import FleetSpec
from simulators.park import Park, device_rng
from simulators.payloads import device_payloads, encode
from simulators.simtime import instant_at

__all__ = ["Outgoing", "Tick", "device_ids", "iter_messages", "iter_ticks"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One telemetry message of one device."""

    device: DeviceId
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    """What happens at one simulated instant."""

    index: int
    ts_ms: int
    elapsed_s: float
    """Simulated seconds since the start."""
    messages: tuple[Outgoing, ...]
    went_offline: tuple[DeviceId, ...] = ()
    came_online: tuple[DeviceId, ...] = ()


def device_ids(fleet: FleetSpec) -> list[DeviceId]:
    """Every device of ``fleet``, parks in fleet order, kinds in a fixed order."""
    return [dev for spec in fleet.parks for dev in Park.build(spec, 0).devices()]


def _start_ms(start: datetime) -> int:
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (e.g. 2025-06-21T00:00:00+08:00)")
    return round(start.timestamp() * 1000)


def iter_ticks(
    fleet: FleetSpec,
    seed: int,
    start: datetime,
    duration_s: float | None = None,
    *,
    scenario: Scenario | None = None,
    prefix: str = "parks",
) -> Iterator[Tick]:
    """Simulate ``fleet`` from ``start`` for ``duration_s`` simulated seconds (None: forever)."""
    start_ms, step_ms = _start_ms(start), fleet.step_ms
    parks = [Park.build(spec, seed) for spec in fleet.parks]
    devices = [(park, dev) for park in parks for dev in park.devices()]
    plan = FaultPlan(scenario, (dev for _, dev in devices), start_ms)
    topics = {dev: telemetry_topic(dev.park, dev.kind, dev.device, prefix) for _, dev in devices}
    every = {kind: fleet.every(kind) for kind in Kind}
    corrupters = {
        dev: PayloadCorrupter(dev, device_rng(seed, f"faults/{dev.path}"))
        for _, dev in devices
        if plan.windows(dev)
    }
    offline: set[DeviceId] = set()
    total = None if duration_s is None else max(0, -(-round(duration_s * 1000) // step_ms))

    for index in itertools.count() if total is None else range(total):
        ts_ms = start_ms + index * step_ms
        instant = instant_at(ts_ms)
        for park in parks:
            park.step(instant, fleet.step_s, plan)

        went_offline: list[DeviceId] = []
        came_online: list[DeviceId] = []
        messages: list[Outgoing] = []
        for park, dev in devices:
            corrupter = corrupters.get(dev)
            active = plan.active(dev, ts_ms) if corrupter else []
            is_offline = any(spec.fault is FaultKind.OFFLINE for spec in active)
            if is_offline != (dev in offline):
                (went_offline if is_offline else came_online).append(dev)
                (offline.add if is_offline else offline.discard)(dev)
            if is_offline or index % every[dev.kind]:
                continue
            for payload in device_payloads(park, dev, ts_ms):
                data = (
                    corrupter.apply(payload, active, plan.windows(dev))
                    if corrupter
                    else encode(payload)
                )
                messages.append(Outgoing(dev, topics[dev], data))
        yield Tick(
            index,
            ts_ms,
            index * step_ms / 1000,
            tuple(messages),
            tuple(went_offline),
            tuple(came_online),
        )


def iter_messages(
    fleet: FleetSpec,
    seed: int,
    start: datetime,
    duration_s: float,
    *,
    scenario: Scenario | None = None,
    prefix: str = "parks",
) -> Iterator[tuple[str, bytes]]:
    """Every telemetry message of a run as ``(topic, payload)``, in publishing order."""
    for tick in iter_ticks(fleet, seed, start, duration_s, scenario=scenario, prefix=prefix):
        for message in tick.messages:
            yield message.topic, message.payload
