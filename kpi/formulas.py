"""The park KPIs of one window, from its totals: the formulas of the README's KPI table.

Pure functions. A field whose inputs are missing or whose denominator is zero is left out, never
written as 0 or NaN. Sources: ``../shared/domain.md`` (self-consumption and self-sufficiency;
scope-2 location-based emissions, GHG Protocol; grid factors of MEE/NBS; 0.1229 kgce/kWh, GB/T
2589; storage round-trip efficiency; 5G kWh/GB, ETSI ES 203 228; 15-minute peak demand).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from parkwatch.events import KPI_FIELDS

__all__ = [
    "ENERGY_TOTALS",
    "KGCE_PER_KWH",
    "KPI_FIELDS",
    "WindowTotals",
    "kpi_fields",
    "minute_green_kwh",
]

KGCE_PER_KWH: Final = 0.1229
"""Electricity to standard coal equivalent, calorific equivalent (GB/T 2589)."""
QUARTER_HOUR_H: Final = 0.25

ENERGY_TOTALS: Final[tuple[str, ...]] = (
    "pv_kwh",
    "load_kwh",
    "grid_import_kwh",
    "grid_export_kwh",
    "storage_charged_kwh",
    "storage_discharged_kwh",
    "site5g_energy_kwh",
    "site5g_traffic_gb",
    "ev_energy_kwh",
)
"""Counter totals summed over a park's devices, in the order fields are written."""


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """What one park's window adds up to; absent or None where it is not known."""

    energy: Mapping[str, float]
    """Known counter totals (``ENERGY_TOTALS`` names); a missing key is unknown or absent."""
    charging_ms: int = 0
    faulted_ms: int = 0
    known_ms: int = 0
    """Connector-time in Charging, in Faulted, and with a known status."""
    ev_green_kwh: float | None = None
    """``15m``/``1h``/``1d``: the sum of the window's minutes' green EV energy, if all known."""
    peak_demand_kw: float | None = None
    """``1h``/``1d``: the highest of the window's 15-minute demands, if all known."""


def _ratio(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return scale * numerator / denominator


def minute_green_kwh(ev_kwh: float | None, self_sufficiency_pct: float | None) -> float | None:
    """One minute's green EV energy: its EV energy times its self-sufficiency.

    The share is held to 0-100 %: self-sufficiency above 100 % (PV charging the storage while the
    load is small) cannot make charging more than all green. No EV energy is zero green energy,
    whatever the self-sufficiency.
    """
    if ev_kwh is None:
        return None
    if ev_kwh == 0:
        return 0.0
    if self_sufficiency_pct is None:
        return None
    return ev_kwh * min(max(self_sufficiency_pct / 100, 0.0), 1.0)


def kpi_fields(window: str, totals: WindowTotals, emission_factor: float) -> dict[str, float]:
    """The ``park_kpi`` fields of one window (``window`` is ``1m``, ``15m``, ``1h`` or ``1d``)."""
    energy = totals.energy
    pv, load = energy.get("pv_kwh"), energy.get("load_kwh")
    grid_in, grid_out = energy.get("grid_import_kwh"), energy.get("grid_export_kwh")
    charged, discharged = energy.get("storage_charged_kwh"), energy.get("storage_discharged_kwh")
    site_kwh, site_gb = energy.get("site5g_energy_kwh"), energy.get("site5g_traffic_gb")
    ev = energy.get("ev_energy_kwh")

    self_used = None if pv is None or grid_out is None else pv - grid_out
    co2 = None if grid_in is None else grid_in * emission_factor
    self_sufficiency = _ratio(self_used, load, 100)
    if window == "1m":
        ev_green = minute_green_kwh(ev, self_sufficiency)
    else:
        ev_green = totals.ev_green_kwh if ev is not None else None
    if window == "15m":
        peak = None if grid_in is None else grid_in / QUARTER_HOUR_H
    elif window == "1m":
        peak = None
    else:
        peak = totals.peak_demand_kw

    values: dict[str, float | None] = {
        "pv_kwh": pv,
        "load_kwh": load,
        "grid_import_kwh": grid_in,
        "grid_export_kwh": grid_out,
        "self_consumption_pct": _ratio(self_used, pv, 100),
        "self_sufficiency_pct": self_sufficiency,
        "emission_factor_kg_per_kwh": None if co2 is None else emission_factor,
        "co2_kg": co2,
        "carbon_intensity_kg_per_kwh": _ratio(co2, load),
        "carbon_intensity_t_per_tce": _ratio(co2, None if load is None else load * KGCE_PER_KWH),
        "storage_charged_kwh": charged,
        "storage_discharged_kwh": discharged,
        "storage_rte_pct": _ratio(discharged, charged, 100) if window == "1d" else None,
        "site5g_energy_kwh": site_kwh,
        "site5g_traffic_gb": site_gb,
        "site5g_kwh_per_gb": _ratio(site_kwh, site_gb),
        "ev_energy_kwh": ev,
        "ev_green_kwh": ev_green,
        "ev_green_share_pct": _ratio(ev_green, ev, 100),
        "ev_utilisation_pct": _ratio(totals.charging_ms, totals.known_ms, 100),
        "ev_faulted_pct": _ratio(totals.faulted_ms, totals.known_ms, 100),
        "peak_demand_kw": peak,
    }
    return {name: value for name, value in values.items() if value is not None}
