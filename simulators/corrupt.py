"""Payload-level faults: what a broken sensor, firmware or clock does to a device's messages.

Applied after the physics, to the payload only, so a corrupted reading never feeds back into the
simulation (the park's real energy balance stays intact while its meter lies).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from parkwatch.schema import Kind
from simulators.faults import DeviceId, FaultKind, FaultSpec, Window
from simulators.payloads import COUNTER_FIELDS, Payload, encode

__all__ = ["SPIKE_FIELD", "PayloadCorrupter"]

SPIKE_FIELD: Final = {
    Kind.MICROGRID: "load_kw",
    Kind.STORAGE: "power_kw",
    Kind.SITE5G: "power_kw",
    Kind.CHARGER: "power_kw",
}
"""The field a spike hits unless the fault names one."""

_KEEP: Final = frozenset({"ts", "connector_id"})
"""Identity fields that stuck and wrong-type faults leave alone, so the message stays placeable."""


class PayloadCorrupter:
    """Applies the payload faults of one device, keeping what must persist between messages.

    A stuck sensor repeats the values it had when it stuck; a counter reset subtracts the counter
    value at the reset from then on (permanently, like a meter that rebooted).
    """

    def __init__(self, device: DeviceId, rng: random.Random) -> None:
        self.device = device
        self._rng = rng
        self._counters = COUNTER_FIELDS[device.kind]
        self._stuck: dict[int, Payload] = {}
        self._offsets: dict[int, dict[str, float]] = {}
        self._resets_seen: dict[int, int] = {}

    def _reset_counters(self, payload: Payload, key: int, resets: int) -> None:
        if resets > self._resets_seen.get(key, 0):
            self._resets_seen[key] = resets
            self._offsets[key] = {f: payload[f] for f in self._counters if f in payload}
        for name, offset in self._offsets.get(key, {}).items():
            payload[name] = round(payload[name] - offset, 3) + 0.0

    def _freeze(self, payload: Payload, key: int, spec: FaultSpec | None) -> None:
        if spec is None:
            self._stuck.pop(key, None)
            return
        frozen = self._stuck.get(key)
        if frozen is None:
            frozen = self._stuck[key] = {
                name: value
                for name, value in payload.items()
                if name not in _KEEP
                and name not in self._counters
                and (spec.field is None or name == spec.field)
            }
        payload.update(frozen)

    def apply(
        self, payload: Payload, active: Sequence[FaultSpec], windows: Sequence[Window]
    ) -> bytes:
        """Corrupt ``payload`` (in place) by the ``active`` faults; return the bytes to publish.

        ``windows`` are all the device's fault windows: a counter reset applies from its start on.
        """
        key = int(payload.get("connector_id", 0))
        ts_ms = payload["ts"]
        resets = sum(
            1 for w in windows if w.spec.fault is FaultKind.COUNTER_RESET and w.start_ms <= ts_ms
        )
        if resets:
            self._reset_counters(payload, key, resets)
        by_kind = {spec.fault: spec for spec in active}
        self._freeze(payload, key, by_kind.get(FaultKind.STUCK))

        if (spike := by_kind.get(FaultKind.SPIKE)) and self._rng.random() < spike.probability:
            name = spike.field or SPIKE_FIELD[self.device.kind]
            value = payload.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                payload[name] = round(value * spike.factor if value else spike.factor, 3)
        if skew := by_kind.get(FaultKind.CLOCK_SKEW):
            payload["ts"] = ts_ms + round(skew.skew_s * 1000)
        if wrong := by_kind.get(FaultKind.WRONG_TYPES):
            for name, value in payload.items():
                if name not in _KEEP and (wrong.field is None or name == wrong.field):
                    # Numbers and booleans as strings: what a careless firmware sends.
                    payload[name] = str(value).lower() if isinstance(value, bool) else str(value)
        data = encode(payload)
        if FaultKind.MALFORMED in by_kind:
            return data[: len(data) // 2]  # a message cut off mid-object
        return data
