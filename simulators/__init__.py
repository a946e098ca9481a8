"""Simulated park devices (microgrid, storage, 5G site, EV charger).

Pure simulation (device models, the park energy balance, faults, the message generator) is kept
apart from MQTT I/O (:mod:`simulators.link`, :mod:`simulators.runner`, :mod:`simulators.rate`):

- :func:`iter_messages` / :func:`iter_ticks`: deterministic ``(topic, payload)`` streams for a
  fleet, seed and start, with no I/O;
- :func:`run_fleet`: realistic mode, one MQTT connection per device, paced at ``speed``;
- :func:`simulators.rate.publish_at_rate`: rate mode for benchmarks (imported on demand: it
  needs gmqtt, which nothing else here does);
- :func:`simulators.cli.simulate`: the click command wired into ``parkwatch simulate``.
"""

from simulators.faults import (
    DeviceId,
    FaultKind,
    FaultSpec,
    Scenario,
    load_scenario,
    parse_fault_flag,
)
from simulators.fleet import FleetSpec, ParkSpec, default_fleet, load_fleet
from simulators.generate import Outgoing, Tick, device_ids, iter_messages, iter_ticks
from simulators.runner import FleetRunStats, parse_mqtt_url, run_fleet

__all__ = [
    "DeviceId",
    "FaultKind",
    "FaultSpec",
    "FleetRunStats",
    "FleetSpec",
    "Outgoing",
    "ParkSpec",
    "Scenario",
    "Tick",
    "default_fleet",
    "device_ids",
    "iter_messages",
    "iter_ticks",
    "load_fleet",
    "load_scenario",
    "parse_fault_flag",
    "parse_mqtt_url",
    "run_fleet",
]
