"""What each device publishes: telemetry dicts in a fixed key order, and their JSON bytes.

Values are rounded to what a real device would report (watt-hours, centi-degrees), which also keeps
the JSON short. Keys are emitted in a fixed order and serialised with orjson, so the same state
always gives byte-identical payloads.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from parkwatch.schema import Kind
from simulators.faults import DeviceId
from simulators.park import Park

__all__ = [
    "COUNTER_FIELDS",
    "Payload",
    "device_payloads",
    "encode",
    "status_payload",
]

Payload = dict[str, Any]
"""One telemetry message before serialisation; ``ts`` first."""

COUNTER_FIELDS: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.MICROGRID: ("pv_kwh", "load_kwh", "grid_import_kwh", "grid_export_kwh"),
    Kind.STORAGE: ("charged_kwh", "discharged_kwh"),
    Kind.SITE5G: ("energy_kwh", "traffic_gb"),
    Kind.CHARGER: ("energy_kwh",),
}
"""Cumulative fields per kind: monotonic except across a counter reset."""


def _r(value: float, digits: int = 3) -> float:
    # Adding 0.0 turns the -0.0 that rounding a tiny negative gives into 0.0.
    return round(value, digits) + 0.0


def _microgrid(park: Park, ts_ms: int) -> list[Payload]:
    m = park.meter
    return [
        {
            "ts": ts_ms,
            "pv_kw": _r(m.pv_kw),
            "load_kw": _r(m.load_kw),
            "grid_import_kw": _r(m.grid_import_kw),
            "grid_export_kw": _r(m.grid_export_kw),
            "pv_kwh": _r(m.pv_kwh),
            "load_kwh": _r(m.load_kwh),
            "grid_import_kwh": _r(m.grid_import_kwh),
            "grid_export_kwh": _r(m.grid_export_kwh),
            "frequency_hz": _r(m.frequency_hz),
        }
    ]


def _storage(park: Park, device: DeviceId, ts_ms: int) -> list[Payload]:
    b = park.batteries[device]
    return [
        {
            "ts": ts_ms,
            "soc_pct": _r(b.soc_pct, 2),
            "soh_pct": _r(b.soh_pct, 3),
            "power_kw": _r(b.power_kw),
            "cell_temp_max_c": _r(b.cell_temp_max_c, 2),
            "cell_temp_min_c": _r(b.cell_temp_min_c, 2),
            "cell_v_max": _r(b.cell_v_mean + b.volt_spread / 2, 4),
            "cell_v_min": _r(b.cell_v_mean - b.volt_spread / 2, 4),
            "charged_kwh": _r(b.charged_kwh),
            "discharged_kwh": _r(b.discharged_kwh),
            "capacity_kwh": _r(b.capacity_kwh),
        }
    ]


def _site(park: Park, device: DeviceId, ts_ms: int) -> list[Payload]:
    s = park.sites[device]
    return [
        {
            "ts": ts_ms,
            "power_kw": _r(s.power_kw),
            "energy_kwh": _r(s.energy_kwh),
            "traffic_gb": _r(s.traffic_gb),
            "prb_util_pct": _r(s.prb_util_pct, 2),
            "active_ues": s.active_ues,
            "sleep_level": s.sleep_level,
            "on_battery": s.on_battery,
            "cabinet_temp_c": _r(s.cabinet_temp_c, 2),
        }
    ]


def _charger(park: Park, device: DeviceId, ts_ms: int) -> list[Payload]:
    payloads = []
    for c in park.chargers[device].connectors:
        payload: Payload = {
            "ts": ts_ms,
            "connector_id": c.connector_id,
            "status": c.status.value,
            "error_code": c.error_code.value,
            "power_kw": _r(c.power_kw),
            "energy_kwh": _r(c.energy_kwh),
        }
        if c.session is not None:  # no EV, no EV state of charge
            payload["ev_soc_pct"] = _r(c.session.soc_pct, 1)
        payload["connector_temp_c"] = _r(c.temp_c, 2)
        payloads.append(payload)
    return payloads


def device_payloads(park: Park, device: DeviceId, ts_ms: int) -> list[Payload]:
    """The telemetry ``device`` of ``park`` reports now (one per connector for a charger)."""
    if device.kind is Kind.MICROGRID:
        return _microgrid(park, ts_ms)
    if device.kind is Kind.STORAGE:
        return _storage(park, device, ts_ms)
    if device.kind is Kind.SITE5G:
        return _site(park, device, ts_ms)
    return _charger(park, device, ts_ms)


def encode(payload: Payload) -> bytes:
    """Compact JSON in the dict's own key order."""
    return orjson.dumps(payload)


def status_payload(*, online: bool, ts_ms: int | None = None) -> bytes:
    """The body of a ``.../status`` message; the last will carries no timestamp."""
    if ts_ms is None:
        return orjson.dumps({"online": online})
    return orjson.dumps({"online": online, "ts": ts_ms})
