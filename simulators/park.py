"""A park: steps all its devices each tick and closes the energy balance at the grid meter.

The park meter sees ``load = pv + grid_import - grid_export + storage_discharge - storage_charge``
where the load is the process load plus the 5G sites and the charge points on the park's mains.
Every counter integrates the same per-step powers over the same step, so the balance holds in the
counters as exactly as in the powers (to float rounding).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from parkwatch.schema import Kind
from simulators.charger import ChargePoint
from simulators.faults import DeviceId, FaultKind, FaultPlan
from simulators.fleet import ParkSpec
from simulators.load import IndustrialLoad
from simulators.pv import PvArray
from simulators.simtime import Instant
from simulators.site5g import Site5G
from simulators.storage import Battery, dispatch_request
from simulators.weather import CloudProcess

__all__ = ["DEVICE_PREFIX", "GridMeter", "Park", "device_rng"]

DEVICE_PREFIX = {
    Kind.MICROGRID: "mg",
    Kind.STORAGE: "bess",
    Kind.SITE5G: "gnb",
    Kind.CHARGER: "cp",
}
"""Device ids are ``{prefix}-{nn}`` per kind, numbered from 01 within a park."""


def device_rng(seed: int, name: str) -> random.Random:
    """An independent random stream per device, so adding a device leaves the others unchanged.

    Seeding with a string hashes it with SHA-512, which (unlike ``hash()``) is the same in every
    process.
    """
    return random.Random(f"{seed}/{name}")


@dataclass(slots=True)
class GridMeter:
    """The park's microgrid meter: the last step's powers and the cumulative counters."""

    pv_kw: float = 0.0
    load_kw: float = 0.0
    grid_import_kw: float = 0.0
    grid_export_kw: float = 0.0
    pv_kwh: float = 0.0
    load_kwh: float = 0.0
    grid_import_kwh: float = 0.0
    grid_export_kwh: float = 0.0
    frequency_hz: float = 50.0

    def record(self, pv_kw: float, load_kw: float, storage_kw: float, dt_s: float) -> None:
        """Meter one step; ``storage_kw`` is the batteries' net output (+ discharge)."""
        net_import = load_kw - pv_kw - storage_kw
        self.pv_kw, self.load_kw = pv_kw, load_kw
        self.grid_import_kw, self.grid_export_kw = max(net_import, 0.0), max(-net_import, 0.0)
        hours = dt_s / 3600
        self.pv_kwh += pv_kw * hours
        self.load_kwh += load_kw * hours
        self.grid_import_kwh += self.grid_import_kw * hours
        self.grid_export_kwh += self.grid_export_kw * hours


def _ids(park: str, kind: Kind, count: int) -> list[DeviceId]:
    return [DeviceId(park, kind, f"{DEVICE_PREFIX[kind]}-{i:02d}") for i in range(1, count + 1)]


@dataclass(slots=True)
class Park:
    """All simulated devices of one park; build with :meth:`build`."""

    spec: ParkSpec
    meter_id: DeviceId
    pv: PvArray
    load: IndustrialLoad
    batteries: dict[DeviceId, Battery]
    sites: dict[DeviceId, Site5G]
    chargers: dict[DeviceId, ChargePoint]
    rngs: dict[str, random.Random] = field(repr=False)
    freq_dev: float = 0.0
    meter: GridMeter = field(default_factory=GridMeter)

    @classmethod
    def build(cls, spec: ParkSpec, seed: int) -> Park:
        """Devices for ``spec``, their initial states drawn from ``seed``."""
        pid = spec.id
        rngs: dict[str, random.Random] = {}

        def rng(name: str) -> random.Random:
            rngs[name] = device_rng(seed, f"{pid}/{name}")
            return rngs[name]

        st = spec.storage
        batteries = {}
        for dev in _ids(pid, Kind.STORAGE, st.count):
            r = rng(dev.path)
            batteries[dev] = Battery(
                capacity_kwh=st.capacity_kwh,
                rated_kw=st.power_kw,
                soc_pct=r.uniform(30, 70),
                soh_pct=r.uniform(95, 99.5),
                soc_min_pct=st.soc_min_pct,
                soc_max_pct=st.soc_max_pct,
                eta_charge=st.eta_charge,
                eta_discharge=st.eta_discharge,
                temp_spread_c=r.uniform(2, 4),
                volt_spread=r.uniform(0.008, 0.02),
            )
        s5 = spec.site5g
        sites = {
            dev: Site5G(
                idle_kw=s5.idle_kw * rng(dev.path).uniform(0.9, 1.1),
                dynamic_kw=s5.dynamic_kw,
                peak_gb_per_h=s5.peak_gb_per_h * rngs[dev.path].uniform(0.7, 1.3),
            )
            for dev in _ids(pid, Kind.SITE5G, s5.count)
        }
        chargers = {}
        for dev in _ids(pid, Kind.CHARGER, spec.charger.count):
            rng(dev.path)
            chargers[dev] = ChargePoint.build(spec.charger.connectors, spec.charger.max_kw)
        meter_rng = rng("weather")
        rng("load")
        rng("meter")
        return cls(
            spec=spec,
            meter_id=_ids(pid, Kind.MICROGRID, 1)[0],
            pv=PvArray(spec.pv_kw, clouds=CloudProcess(cover=meter_rng.uniform(0.0, 0.7))),
            load=IndustrialLoad(spec.load_kw),
            batteries=batteries,
            sites=sites,
            chargers=chargers,
            rngs=rngs,
        )

    def devices(self) -> list[DeviceId]:
        """Every device of the park, in the order they are stepped and reported."""
        return [self.meter_id, *self.batteries, *self.sites, *self.chargers]

    def step(self, instant: Instant, dt_s: float, faults: FaultPlan) -> None:
        """Advance every device by ``dt_s`` to ``instant`` and meter the result."""
        ts, rngs = instant.ts_ms, self.rngs
        pv_kw = self.pv.step(instant, dt_s, rngs["weather"])
        load_kw = self.load.step(instant, dt_s, rngs["load"])
        for dev, site in self.sites.items():
            on_battery = faults.first(dev, ts, FaultKind.SITE_ON_BATTERY) is not None
            load_kw += site.step(instant, dt_s, rngs[dev.path], on_battery=on_battery)
        for dev, charge_point in self.chargers.items():
            fault = faults.first(dev, ts, FaultKind.CHARGER_FAULTED)
            code = fault.error_code if fault else None
            load_kw += charge_point.step(instant, dt_s, rngs[dev.path], fault=code)

        storage_kw = 0.0
        for dev, battery in self.batteries.items():
            request = dispatch_request(
                instant.period, pv_kw - load_kw, battery.rated_kw, len(self.batteries)
            )
            overheat = faults.first(dev, ts, FaultKind.STORAGE_OVERTEMP)
            heat = overheat.heat_c if overheat else 0.0
            storage_kw += battery.step(request, instant, dt_s, rngs[dev.path], extra_heat_c=heat)

        self.meter.record(pv_kw, load_kw, storage_kw, dt_s)
        # Grid frequency wanders within a few tens of mHz around 50 Hz (East China grid).
        decay = math.exp(-dt_s / 60)
        self.freq_dev = self.freq_dev * decay + 0.02 * math.sqrt(1 - decay * decay) * rngs[
            "meter"
        ].gauss(0.0, 1.0)
        self.meter.frequency_hz = 50.0 + self.freq_dev
