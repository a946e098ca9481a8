"""``parkwatch demo``: local Mosquitto and InfluxDB, the collector and simulated parks, live.

Everything runs in this process's one TaskGroup except the two servers, which are child
processes in ``var/demo`` (InfluxDB's data kept between runs, so Grafana can be pointed at it;
what an earlier run left in simulated time of its own is dropped, see ``forget_earlier_runs``).
Ctrl-C (or ``--duration``) stops the simulators, drains the collector, then stops the servers.
The live view is :mod:`parkwatch.liveview`; the dashboards (provisioning files for a local
Grafana, a configured Grafana provisioned) are :mod:`parkwatch.demo_grafana`.

The simulated clock starts a day in the past by default and runs ``speed`` times faster than
real time, so a full day of PV and load curves lands in InfluxDB within minutes at ``--speed 60``.

Missing servers are installed from Debian's packages when we are root. Where Mosquitto still
cannot be had, an embedded amqtt broker (MQTT 3.1.1, in this process) takes its place; where
InfluxDB cannot, the collector runs without it and spools to disk, and the demo says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from rich.console import Console
from rich.live import Live

from parkwatch.demo_grafana import demo_dashboards
from parkwatch.errors import ConfigError, ServerError
from parkwatch.liveview import LiveView
from parkwatch.localservers import Alertmanager, InfluxDB1, LocalServer, Mosquitto, free_port
from parkwatch.points import STATUS_MEASUREMENT, Point
from parkwatch.schema import OcppErrorCode
from parkwatch.service import Collector
from parkwatch.settings import Settings, load_settings
from simulators.faults import FaultKind, FaultSpec, Scenario

__all__ = ["DemoOptions", "LiveView", "run_demo"]

_Server = TypeVar("_Server", bound=LocalServer)

REFRESH_S: Final = 1.0
DEBIAN_PACKAGES: Final = {
    "mosquitto": "mosquitto",
    "influxd": "influxdb",
    "prometheus-alertmanager": "prometheus-alertmanager",
}
PLAIN_REPORT_S: Final = 10.0
PLAIN_WIDTH: Final = 150
DELIVERY_WAIT_S: Final = 10.0
RETAINED_LEDGER: Final = "retained-seen.bin"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``parkwatch demo`` was asked for."""

    workdir: Path
    speed: float = 60.0
    parks: tuple[str, ...] = ()
    seed: int = 0
    duration_s: float | None = None
    start: datetime | None = None
    live: bool = True
    embedded_broker: bool = False
    """Use the embedded amqtt broker even where Mosquitto is available."""
    faults: bool = True
    """Inject the built-in fault scenario (see ``demo_scenario``) so alerts fire and resolve."""
    config_file: Path | None = None
    """Settings file for what the demo does not set itself (grafana, notify, parks, rules)."""
    grafana_url: str | None = None
    """A Grafana to provision (overrides ``grafana.url``)."""


def _port(preferred: int) -> int:
    """The usual port if it is free on loopback, else any free one."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def settings_state_dir(options: DemoOptions) -> Path:
    """Where the demo's collector keeps its KPI and rule state."""
    return options.workdir / "state"


def forget_earlier_runs(workdir: Path) -> None:
    """Every run simulates afresh from its start time: drop what an earlier run left in
    simulated time of its own. Its KPI and rule state would take this run's readings for late
    or redelivered ones; the broker's retained statuses (the devices' goodbyes) and queued
    messages, stamped up to an hour ahead at 60x, would throw the parks' clocks ahead (every
    device stale, every KPI window closed); the retained-message ledger describes that broker.
    InfluxDB's data, the spool and the dead letters are kept.
    """
    shutil.rmtree(workdir / "state", ignore_errors=True)
    (workdir / "mosquitto" / "mosquitto.db").unlink(missing_ok=True)
    (workdir / RETAINED_LEDGER).unlink(missing_ok=True)


def demo_settings(
    options: DemoOptions,
    mqtt_url: str,
    influx_url: str,
    *,
    mqtt_311: bool = False,
    alertmanager_url: str | None = None,
) -> Settings:
    """Collector settings for the demo's local servers (the rest from the file and env)."""
    given: dict[str, Any] = {"grafana": {"url": options.grafana_url}} if options.grafana_url else {}
    if alertmanager_url is not None:
        given["notify"] = {
            "receivers": {"alertmanager": {"type": "alertmanager", "url": alertmanager_url}},
            "route": {"receivers": ["alertmanager"]},
        }
    return load_settings(
        options.config_file,
        **given,
        mqtt={
            "url": mqtt_url,
            "client_id": "parkwatch-demo",
            "protocol": "3.1.1" if mqtt_311 else "5",
            "retained_state_file": options.workdir / RETAINED_LEDGER,
        },
        influx={"url": influx_url, "database": "parkwatch"},
        # Accelerated simulated time runs ahead of the wall clock, and --start may pick any
        # day: widen the skew window both ways.
        ingest={"max_future_s": 30 * 86400.0, "max_past_s": 3650 * 86400.0},
        spool={"directory": options.workdir / "spool"},
        deadletter={"path": options.workdir / "deadletter.jsonl"},
        state={"directory": settings_state_dir(options)},
        http={"port": _port(9108)},
    )


async def _show(view: LiveView, console: Console, live: bool, stop: asyncio.Event) -> None:
    if live:
        with Live(view.render(), console=console, refresh_per_second=4) as screen:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REFRESH_S)
                screen.update(view.render())
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PLAIN_REPORT_S)
        console.print(view.render())


def _have(binary: str) -> bool:
    return shutil.which(binary, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin") is not None


def ensure_servers(console: Console) -> set[str]:
    """Install missing server packages when root; return the binaries still missing."""
    missing = {binary for binary in DEBIAN_PACKAGES if not _have(binary)}
    if missing and os.geteuid() == 0 and _have("apt-get"):
        packages = sorted(DEBIAN_PACKAGES[binary] for binary in missing)
        console.print(f"installing Debian packages: {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            subprocess.run(command, env=env, check=False, capture_output=True)
        missing = {binary for binary in missing if not _have(binary)}
    return missing


class EmbeddedBroker:
    """amqtt in this process: the fallback where Mosquitto cannot be installed (MQTT 3.1.1)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        self._broker: Any = None

    async def start(self) -> None:
        """Listen on loopback."""
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ServerError(
                "neither Mosquitto nor the embedded broker is available: "
                "pip install 'parkwatch[embedded-broker]' or apt-get install mosquitto"
            ) from exc
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await self._broker.start()

    async def stop(self) -> None:
        """Shut the broker down."""
        if self._broker is not None:
            await self._broker.shutdown()


async def _main(
    options: DemoOptions,
    settings: Settings,
    mqtt_url: str,
    console: Console,
    embedded: EmbeddedBroker | None = None,
) -> None:
    if embedded is not None:
        await embedded.start()
    try:
        await _run_pipeline(options, settings, mqtt_url, console)
    finally:
        if embedded is not None:
            await embedded.stop()


async def _run_pipeline(
    options: DemoOptions, settings: Settings, mqtt_url: str, console: Console
) -> None:
    from simulators.fleet import default_fleet  # noqa: PLC0415 - the demo is their only joint
    from simulators.runner import run_fleet  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = Collector(settings)
    view = LiveView(service)
    service.observe(view.observe)
    service.observe_outputs(view.observe_output)
    readings = 0

    def count_reading(point: Point) -> None:
        nonlocal readings
        readings += point.kind != STATUS_MEASUREMENT

    service.observe(count_reading)
    fleet = default_fleet(list(options.parks) or None)
    start = options.start or datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    collector_stop = asyncio.Event()
    scenario = demo_scenario(fleet.parks[0].id) if options.faults else None

    async def simulate() -> None:
        await service.connected.wait()
        stats = await run_fleet(
            fleet,
            mqtt_url=mqtt_url,
            speed=options.speed,
            start=start,
            seed=options.seed,
            duration_s=None,
            stop=stop,
            scenario=scenario,
        )
        console.log(f"simulators: {stats.published} published, {stats.acked} acknowledged")
        # The broker has acknowledged every reading; let it deliver them before the collector
        # stops reading (a slow broker, such as the embedded one, may still hold some). Counted
        # like for like: messages received include the devices' status messages, so that total
        # reached the acknowledged readings while a few of them were still on their way.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELIVERY_WAIT_S):
                while readings < stats.acked:  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0.05)
        console.log(f"collector: {readings} readings taken in")

    async def stop_after_duration() -> None:
        if options.duration_s is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.duration_s)
            stop.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(service.run(collector_stop), name="collector")
        group.create_task(_show(view, console, options.live, stop), name="live-view")
        group.create_task(stop_after_duration(), name="demo-timer")
        simulation = group.create_task(simulate(), name="simulators")
        await stop.wait()
        view.stopping()
        await simulation  # simulators finish their PUBACKs before the collector drains
        collector_stop.set()
    console.print(view.render())


def demo_scenario(park: str) -> Scenario:
    """Faults in ``park`` whose alerts fire and resolve within the first simulated hour.

    At the default 60x that is the first minute of ``parkwatch demo``: a charger Faulted
    (ChargerFaulted, with the OCPP error code), a charger losing its connection (DeviceOffline
    from its MQTT last will, placed at the park's simulated clock), a 5G site on battery
    (Site5gOnBattery), and a storage container losing its cooling (StorageCellHot, which
    resolves once it has cooled below the hysteresis level).
    """
    return Scenario(
        faults=[
            FaultSpec(
                fault=FaultKind.CHARGER_FAULTED,
                device=f"{park}/charger/cp-01",
                at=120,
                duration=900,
                error_code=OcppErrorCode.HIGH_TEMPERATURE,
            ),
            FaultSpec(
                fault=FaultKind.OFFLINE, device=f"{park}/charger/cp-02", at=240, duration=600
            ),
            FaultSpec(
                fault=FaultKind.STORAGE_OVERTEMP,
                device=f"{park}/storage/bess-01",
                at=300,
                duration=1200,
                heat_c=60,
            ),
            FaultSpec(
                fault=FaultKind.SITE_ON_BATTERY,
                device=f"{park}/site5g/gnb-01",
                at=600,
                duration=900,
            ),
        ]
    )


def run_demo(options: DemoOptions) -> None:
    """Start the servers, run everything until Ctrl-C or the duration, stop everything."""
    console = Console()
    if not options.live:
        # Plain output usually goes to a pipe or a log (80 columns): give the table room.
        console = Console(width=max(console.width, PLAIN_WIDTH))
    options.workdir.mkdir(parents=True, exist_ok=True)
    forget_earlier_runs(options.workdir)
    missing = ensure_servers(console)
    embedded = None
    if options.embedded_broker or "mosquitto" in missing:
        embedded = EmbeddedBroker(_port(1883))
        if "mosquitto" in missing:
            console.print(
                "[yellow]Mosquitto is not installed and could not be installed[/]: using the "
                "embedded amqtt broker (MQTT 3.1.1, no persistence across restarts)"
            )
    try:
        with contextlib.ExitStack() as servers:
            broker_url = (
                embedded.url
                if embedded
                else _started(
                    servers, Mosquitto(options.workdir / "mosquitto", port=_port(1883))
                ).url
            )
            if "influxd" in missing:
                influx_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: spool only
                console.print(
                    "[yellow]InfluxDB is not installed and could not be installed[/] (Debian "
                    "package 'influxdb'): nothing is stored; the collector keeps the data in "
                    f"its spool ({options.workdir / 'spool'}) and /healthz reports the sink down"
                )
            else:
                influx_url = _started(
                    servers, InfluxDB1(options.workdir / "influxdb", port=_port(8086))
                ).url
            settings = demo_settings(options, broker_url, influx_url, mqtt_311=embedded is not None)
            alertmanager_url = None
            if not settings.notify.receivers and "prometheus-alertmanager" not in missing:
                # No receivers of the user's: notify a local Alertmanager, as the compose
                # stack does, so the demo shows notifications too.
                alertmanager = _started(
                    servers, Alertmanager(options.workdir / "alertmanager", port=_port(9093))
                )
                alertmanager_url = alertmanager.url
                settings = demo_settings(
                    options,
                    broker_url,
                    influx_url,
                    mqtt_311=embedded is not None,
                    alertmanager_url=alertmanager_url,
                )
            console.print(
                f"[bold]parkwatch demo[/]: MQTT {settings.mqtt.redacted_url()} · "
                f"InfluxDB {settings.influx.redacted_url()} "
                f"(database 'parkwatch') · health http://127.0.0.1:{settings.http.port}/healthz"
                f" · data in {options.workdir} · Ctrl-C to stop"
            )
            _print_notifications(console, settings, alertmanager_url)
            _print_dashboards(console, settings, options.workdir)
            asyncio.run(_main(options, settings, broker_url, console, embedded))
    except ServerError as exc:
        console.print(f"[red]could not start a local server[/]: {exc}")
        raise SystemExit(1) from exc
    except ConfigError as exc:  # the settings file, or a rule file it names
        console.print(f"[red]invalid configuration[/]: {exc}")
        raise SystemExit(2) from exc
    console.print("demo stopped; servers shut down")


def _print_notifications(console: Console, settings: Settings, alertmanager: str | None) -> None:
    """Say where alerts are notified."""
    if alertmanager is not None:
        console.print(
            f"notifications: every alert goes to a local Alertmanager, {alertmanager} "
            f"(its alerts: {alertmanager}/#/alerts); your own receivers go in --config"
        )
    elif settings.notify.enabled and settings.notify.receivers:
        console.print(f"notifications: to {', '.join(sorted(settings.notify.receivers))}")
    else:
        console.print(
            "notifications: none (no receivers configured, and no prometheus-alertmanager "
            "to start a local Alertmanager)"
        )


def _print_dashboards(console: Console, settings: Settings, workdir: Path) -> None:
    """Write the Grafana provisioning files, provision a configured Grafana, say where."""
    dashboards = demo_dashboards(settings, workdir / "grafana", grafana_port=_port(3000))
    for line in dashboards.lines():
        console.print(line)
    # Plain and unwrapped: it is meant to be copied into a shell.
    console.print(f"  {dashboards.command}", markup=False, highlight=False, soft_wrap=True)


def _started(stack: contextlib.ExitStack, server: _Server) -> _Server:
    """Start ``server`` and stop it when ``stack`` closes."""
    stack.enter_context(server)
    return server
