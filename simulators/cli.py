"""``parkwatch simulate``: run the simulated fleet against a broker, at a rate, or to stdout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from parkwatch.errors import ParkwatchError
from parkwatch.settings import MqttSettings, load_settings
from simulators.faults import Scenario, Seconds, load_scenario, parse_fault_flag
from simulators.fleet import FleetSpec, default_fleet, load_fleet
from simulators.generate import iter_messages
from simulators.runner import FleetRunStats, mqtt_target, run_fleet
from simulators.simtime import SHANGHAI, default_start

__all__ = ["simulate"]

_SECONDS = TypeAdapter(Seconds)


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return _SECONDS.validate_python(value)
    except ValidationError as exc:
        raise click.BadParameter(
            f"{value!r} is not a duration like 3600, 90s, 10m or 1h30m"
        ) from exc


def parse_start(value: str | None) -> datetime | None:
    """A ``--start`` value: ISO 8601, naive meaning Shanghai time; None for "now"."""
    if value is None or value == "now":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date/time") from exc
    # A bare local time means Shanghai time: that is where the parks are.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHANGHAI)


def _mqtt_settings(config_file: Path | None, mqtt_url: str | None) -> MqttSettings:
    """The ``mqtt`` section of the one settings tree; ``--mqtt-url`` overrides its URL."""
    overrides: dict[str, Any] = {"mqtt": {"url": mqtt_url}} if mqtt_url else {}
    return load_settings(config_file, **overrides).mqtt


def _fleet(fleet_file: Path | None, parks: str | None) -> FleetSpec:
    ids = [p.strip() for p in parks.split(",") if p.strip()] if parks else None
    if fleet_file is None:
        return default_fleet(ids)
    fleet = load_fleet(fleet_file)
    return fleet.select(ids) if ids else fleet


def _scenario(scenario_file: Path | None, faults: tuple[str, ...]) -> Scenario | None:
    scenario = load_scenario(scenario_file) if scenario_file else Scenario()
    extra = [parse_fault_flag(text) for text in faults]
    scenario = scenario.model_copy(update={"faults": [*scenario.faults, *extra]})
    return scenario if scenario.faults else None


async def _run_live(run: Callable[[asyncio.Event], Awaitable[FleetRunStats]]) -> None:
    """Run realistic mode; SIGTERM stops it cleanly (Ctrl-C cancels it, also cleanly)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    stats = await run(stop)
    click.echo(
        f"{stats.ticks} ticks, {stats.published} messages published, {stats.acked} acknowledged,"
        f" {stats.dropped} dropped while disconnected"
    )


@click.command("simulate")
@click.option(
    "--fleet",
    "fleet_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Fleet YAML (default: the built-in Shanghai parks).",
)
@click.option("--parks", help="Comma-separated park ids to run (default: all of the fleet).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The settings file shared by every subcommand (its [mqtt] section is used).",
)
@click.option(
    "--mqtt-url",
    default=None,
    help="Broker, mqtt://[user:password@]host[:port] (default: the settings' mqtt.url, "
    "i.e. PARKWATCH_MQTT__URL or the config file).",
)
@click.option(
    "--prefix", default=None, help="First topic segment (default: the settings' mqtt.topic_prefix)."
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second (60: a minute a second).",
)
@click.option(
    "--start",
    "start_text",
    metavar="ISO8601",
    help="Simulated start (naive = Shanghai time; default: now).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--duration",
    "duration_text",
    metavar="DURATION",
    help="Simulated time to run: 3600, 90s, 10m, 1h30m (default: forever).",
)
@click.option(
    "--scenario",
    "scenario_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Scenario YAML listing faults to inject.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="FAULT:SELECTOR@AT[+DURATION]",
    help="Inject a fault, e.g. offline:caohejing/charger/cp-01@10m+5m (repeatable).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    help="Rate mode: publish N msg/s from pre-generated payloads (0: flat out).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rate mode: messages to publish.",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Rate mode: MQTT connections.",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Write 'topic payload' lines to stdout instead of publishing (needs --duration).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def simulate(  # click passes every option by keyword
    *,
    fleet_file: Path | None,
    parks: str | None,
    config_file: Path | None,
    mqtt_url: str | None,
    prefix: str | None,
    speed: float,
    start_text: str | None,
    seed: int,
    duration_text: str | None,
    scenario_file: Path | None,
    faults: tuple[str, ...],
    rate: float | None,
    count: int,
    connections: int,
    print_only: bool,
    verbose: bool,
) -> None:
    """Simulate park devices (microgrid, storage, 5G sites, EV chargers) publishing telemetry."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)
    duration_s, start = _duration(duration_text), parse_start(start_text)
    try:
        mqtt = _mqtt_settings(config_file, mqtt_url)
        prefix = prefix or mqtt.topic_prefix
        fleet = _fleet(fleet_file, parks)
        scenario = _scenario(scenario_file, faults)
        if print_only or rate is not None:
            begin = start or default_start(fleet.step_s)
            span = duration_s if duration_s is not None else 10 * 365 * 86400.0
            if print_only and duration_s is None:
                raise click.UsageError("--print needs --duration")
            messages = iter_messages(fleet, seed, begin, span, scenario=scenario, prefix=prefix)
            if print_only:
                for topic, payload in messages:
                    click.echo(f"{topic} {payload.decode(errors='replace')}")
                return
            # Imported here: rate mode is the only user of gmqtt.
            from simulators.rate import publish_at_rate  # noqa: PLC0415

            target = mqtt_target(mqtt)
            pool = list(itertools.islice(messages, count))
            report = asyncio.run(
                publish_at_rate(
                    pool,
                    host=target.host,
                    port=target.port,
                    rate=rate or 0.0,
                    count=count,
                    connections=connections,
                    username=target.username,
                    password=target.password,
                )
            )
            click.echo(f"rate mode: {report}")
            return
        asyncio.run(
            _run_live(
                lambda stop: run_fleet(
                    fleet,
                    mqtt=mqtt,
                    prefix=prefix,
                    speed=speed,
                    start=start,
                    seed=seed,
                    scenario=scenario,
                    duration_s=duration_s,
                    stop=stop,
                )
            )
        )
    except ParkwatchError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
