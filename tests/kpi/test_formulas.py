"""The KPI formulas on window totals: values worked out by hand, and what is left out."""

from __future__ import annotations

import pytest

from kpi.formulas import KPI_FIELDS, WindowTotals, kpi_fields, minute_green_kwh

MICROGRID = {
    "pv_kwh": 400.0,
    "load_kwh": 1000.0,
    "grid_import_kwh": 700.0,
    "grid_export_kwh": 100.0,
}


def test_every_field_of_a_full_day() -> None:
    totals = WindowTotals(
        {
            **MICROGRID,
            "storage_charged_kwh": 200.0,
            "storage_discharged_kwh": 180.0,
            "site5g_energy_kwh": 48.0,
            "site5g_traffic_gb": 960.0,
            "ev_energy_kwh": 50.0,
        },
        charging_ms=6 * 3_600_000,
        faulted_ms=3_600_000,
        known_ms=48 * 3_600_000,
        ev_green_kwh=12.5,
        peak_demand_kw=90.0,
    )
    fields = kpi_fields("1d", totals, 0.55)
    assert list(fields) == list(KPI_FIELDS)  # all of them, in the documented order
    assert fields == pytest.approx(
        {
            **MICROGRID,
            "self_consumption_pct": 100 * (400 - 100) / 400,  # 75
            "self_sufficiency_pct": 100 * (400 - 100) / 1000,  # 30
            "emission_factor_kg_per_kwh": 0.55,
            "co2_kg": 700 * 0.55,  # 385
            "carbon_intensity_kg_per_kwh": 385 / 1000,
            "carbon_intensity_t_per_tce": 385 / (1000 * 0.1229),  # 3.13
            "storage_charged_kwh": 200,
            "storage_discharged_kwh": 180,
            "storage_rte_pct": 90,
            "site5g_energy_kwh": 48,
            "site5g_traffic_gb": 960,
            "site5g_kwh_per_gb": 0.05,
            "ev_energy_kwh": 50,
            "ev_green_kwh": 12.5,
            "ev_green_share_pct": 25,
            "ev_utilisation_pct": 12.5,
            "ev_faulted_pct": 100 / 48,
            "peak_demand_kw": 90,
        }
    )


def test_zero_denominators_and_missing_inputs_are_left_out() -> None:
    fields = kpi_fields(
        "1h",
        WindowTotals(
            {
                "pv_kwh": 0.0,  # night: no self-consumption
                "load_kwh": 0.0,  # no load: no self-sufficiency, no intensities
                "grid_import_kwh": 0.0,
                "storage_charged_kwh": 0.0,
                "site5g_energy_kwh": 1.0,
                "site5g_traffic_gb": 0.0,  # no traffic: no kWh/GB
                "ev_energy_kwh": 0.0,
            }
        ),
        0.55,
    )
    assert fields == {
        "pv_kwh": 0.0,
        "load_kwh": 0.0,
        "grid_import_kwh": 0.0,
        "emission_factor_kg_per_kwh": 0.55,
        "co2_kg": 0.0,
        "storage_charged_kwh": 0.0,
        "site5g_energy_kwh": 1.0,
        "site5g_traffic_gb": 0.0,
        "ev_energy_kwh": 0.0,
    }
    assert kpi_fields("1m", WindowTotals({}), 0.55) == {}


def test_window_specific_fields() -> None:
    totals = WindowTotals(
        {"grid_import_kwh": 30.0, "storage_charged_kwh": 10.0, "storage_discharged_kwh": 9.0},
        ev_green_kwh=1.0,
        peak_demand_kw=200.0,
    )
    assert "peak_demand_kw" not in kpi_fields("1m", totals, 0.55)
    assert kpi_fields("15m", totals, 0.55)["peak_demand_kw"] == 30 / 0.25  # from its import
    assert kpi_fields("1h", totals, 0.55)["peak_demand_kw"] == 200.0  # the highest quarter
    assert "storage_rte_pct" not in kpi_fields("1h", totals, 0.55)
    assert kpi_fields("1d", totals, 0.55)["storage_rte_pct"] == pytest.approx(90)
    # Green EV energy needs the EV energy it is a share of.
    assert "ev_green_kwh" not in kpi_fields("1h", totals, 0.55)


@pytest.mark.parametrize(
    ("ev", "self_sufficiency", "green"),
    [
        (4.0, 25.0, 1.0),
        (4.0, 150.0, 4.0),  # held to 100 %
        (4.0, -20.0, 0.0),  # held to 0 %
        (0.0, None, 0.0),  # no EV energy: no green energy, whatever the park did
        (4.0, None, None),
        (None, 50.0, None),
    ],
)
def test_minute_green_energy(
    ev: float | None, self_sufficiency: float | None, green: float | None
) -> None:
    assert minute_green_kwh(ev, self_sufficiency) == green
