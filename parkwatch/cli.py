"""The ``parkwatch`` console script."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Final

import click
import orjson

from parkwatch.errors import ConfigError, GrafanaError, NotifyError
from parkwatch.schema import json_schemas
from parkwatch.settings import Settings, load_settings

__all__ = ["GC_THRESHOLDS", "ConfigProblem", "main", "tune_gc"]


class ConfigProblem(click.ClickException):
    """Invalid configuration: one line naming the setting (never its secret), exit status 2."""

    exit_code = 2


def _load(config_file: Path | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )


GC_THRESHOLDS: Final = (50_000, 20, 100)
"""Generation thresholds of the collector process's garbage collector (Python's: 700, 10, 10)."""


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running collector.

    Nearly everything on the hot path is freed by reference counting, but the collector still
    allocates a container object or more per message, so with Python's thresholds the cyclic
    collector ran ~900 young and 7 full collections per 60 000 messages, the full ones
    traversing every device's KPI and rule state (~0.1 s each, a pause for the whole
    pipeline): about a sixth of the stages' CPU (``bench/stages.py``). Freezing what exists
    after the imports keeps modules and compiled schemas out of every later pass.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _run_collector(settings: Settings) -> None:
    from parkwatch.service import Collector  # noqa: PLC0415 - keep `parkwatch schema` light

    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Collector(settings).run(stop)


class _LazyGroup(click.Group):
    """A group with subcommands imported only when asked for: ``parkwatch run`` does not pay
    for the simulators' imports (~60 ms of its startup), and the import order stays acyclic."""

    LAZY: Final = {"simulate": "simulators.cli:simulate"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, _, name = self.LAZY[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), name), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="parkwatch")
def main() -> None:
    """parkwatch: green-park telemetry from MQTT into InfluxDB."""


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or YAML file; PARKWATCH_* environment variables override it.",
)
def run(config_file: Path | None) -> None:
    """Run the collector until SIGTERM or Ctrl-C (then drain and exit 0)."""
    settings = _load(config_file)
    _configure_logging(settings.log_level)
    try:
        asyncio.run(_run_collector(settings))
    except ConfigError as exc:  # found at start: a file the settings name, a rule file
        raise ConfigProblem(str(exc)) from None


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or YAML file, as for `parkwatch run`.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for machines.")
def config_show(config_file: Path | None, *, as_json: bool) -> None:
    """Print the effective settings: environment over file over defaults, secrets masked."""
    from parkwatch.configshow import effective_settings, render_settings  # noqa: PLC0415

    settings = _load(config_file)
    if as_json:
        click.echo(orjson.dumps(effective_settings(settings), option=orjson.OPT_INDENT_2))
        return
    click.echo(render_settings(settings, config_file), nl=False)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one <kind>.schema.json per device kind here instead of printing.",
)
def schema(out: Path | None) -> None:
    """Print (or write) the JSON Schema of every device kind's payload."""
    schemas = json_schemas()
    if out is None:
        click.echo(orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode())
        return
    out.mkdir(parents=True, exist_ok=True)
    for kind, document in schemas.items():
        (out / f"{kind}.schema.json").write_bytes(
            orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        )


@main.command()
@click.option(
    "--speed",
    type=float,
    default=60.0,
    show_default=True,
    help="Simulated seconds per real second.",
)
@click.option("--parks", help="Comma-separated park ids (default: a handful of Shanghai parks).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", "duration_s", type=float, help="Stop after this many real seconds.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Server data, spool and dead letters (kept between runs).",
)
@click.option(
    "--start",
    "start_text",
    metavar="ISO8601",
    help="Simulated start (naive = Shanghai time; default: 24 h ago).",
)
@click.option(
    "--embedded-broker",
    is_flag=True,
    help="Use the embedded amqtt broker (the fallback where Mosquitto is missing).",
)
@click.option(
    "--faults/--no-faults",
    default=True,
    show_default=True,
    help="Inject the built-in fault scenario (a charger fault, a charger offline, a hot "
    "battery, a site on battery in the first park) so alerts fire and resolve in the first "
    "minute at 60x.",
)
@click.option(
    "--grafana-url",
    help="Provision this Grafana with the demo's data source and dashboards (default: "
    "grafana.url); provisioning files for a local Grafana are written in any case.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or YAML file for what the demo does not set itself (grafana, notify, parks, "
    "rules); PARKWATCH_* environment variables override it.",
)
@click.option(
    "--live/--plain",
    default=None,
    help="Live terminal table (default when stdout is a terminal) or periodic prints.",
)
def demo(  # click passes the options by keyword
    *,
    speed: float,
    parks: str | None,
    seed: int,
    duration_s: float | None,
    workdir: Path,
    start_text: str | None,
    embedded_broker: bool,
    faults: bool,
    grafana_url: str | None,
    config_file: Path | None,
    live: bool | None,
) -> None:
    """Run local Mosquitto + InfluxDB, the collector and simulated parks, with a live view."""
    from parkwatch.demo import DemoOptions, run_demo  # noqa: PLC0415 - heavy, demo only

    _configure_logging("WARNING")
    from simulators.cli import parse_start  # noqa: PLC0415

    park_ids = tuple(p.strip() for p in parks.split(",") if p.strip()) if parks else ()
    run_demo(
        DemoOptions(
            workdir=workdir,
            speed=speed,
            parks=park_ids,
            seed=seed,
            duration_s=duration_s,
            start=parse_start(start_text),
            embedded_broker=embedded_broker,
            faults=faults,
            config_file=config_file,
            grafana_url=grafana_url,
            live=sys.stdout.isatty() if live is None else live,
        )
    )


@main.group()
def notify() -> None:
    """Alert notifications: check the receivers configured under [notify]."""


@notify.command("test")
@click.argument("receiver")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or YAML file; PARKWATCH_* environment variables override it.",
)
def notify_test(receiver: str, config_file: Path | None) -> None:
    """Send a test notification to RECEIVER and say whether it was delivered."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from notify import Dispatcher  # noqa: PLC0415 - keeps the other commands light

    try:
        settings = load_settings(config_file)
        dispatcher = Dispatcher(settings.notify, CollectorRegistry(), parks=settings.parks)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _configure_logging("WARNING")

    async def send() -> float:
        try:
            return await dispatcher.test(receiver)
        finally:
            await dispatcher.close()

    try:
        seconds = asyncio.run(send())
    except (ConfigError, NotifyError) as exc:
        raise click.ClickException(f"not delivered: {exc}") from exc
    click.echo(f"test notification delivered to {receiver} in {seconds:.2f} s")


@main.group(name="rules")
def rules_group() -> None:
    """Check and unit-test alerting rule files (promtool's spirit)."""


@rules_group.command(name="check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def rules_check(paths: tuple[Path, ...]) -> None:
    """Validate rule files or folders: exit 0, or 1 with every problem as file:line: message."""
    from rules import load_rules  # noqa: PLC0415 - keep the other commands light

    try:
        ruleset = load_rules(list(paths))
    except ConfigError as exc:
        click.echo(str(exc))
        raise SystemExit(1) from exc
    click.echo(f"OK: {len(ruleset)} rules in {len(ruleset.files)} files")


@rules_group.command(name="test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def rules_test(paths: tuple[Path, ...]) -> None:
    """Run rule unit tests (YAML test files or folders of them); exit 1 if any fails."""
    from rules import run_test_paths  # noqa: PLC0415

    report = run_test_paths(list(paths))
    for failure in report.failures:
        click.echo(f"FAILED {failure}")
    click.echo(f"{len(report.passed)} passed, {len(report.failures)} failed")
    if not report.ok:
        raise SystemExit(1)


# ---------------------------------------------------------------------------------------------
# parkwatch dashboards: build the Grafana dashboards as JSON, provision a Grafana
# ---------------------------------------------------------------------------------------------

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or YAML file; PARKWATCH_* environment variables override it.",
)


def _settings(config_file: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_file, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group("dashboards")
def dashboards_group() -> None:
    """Grafana dashboards: build them as JSON, provision a Grafana (API or files)."""


@dashboards_group.command("build")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dashboards/json"),
    show_default=True,
    help="Directory for <uid>.json (same settings, byte-identical files).",
)
@CONFIG_OPTION
def dashboards_build(out: Path, config_file: Path | None) -> None:
    """Write every dashboard as JSON (thresholds from parks.defaults.targets)."""
    from dashboards.build import context_from_settings, write_all  # noqa: PLC0415 - light CLI

    for path in write_all(out, context_from_settings(_settings(config_file))):
        click.echo(path)


@dashboards_group.command("provision")
@click.option("--grafana-url", help="Grafana's base URL (default: grafana.url).")
@click.option("--token", help="Service-account token (default: grafana.token).")
@click.option("--username", help="Basic auth user (default: grafana.username).")
@click.option(
    "--password", help="Basic auth password (default: grafana.password; prefer the env var)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite dashboards parkwatch did not create or that were edited; resend secrets.",
)
@CONFIG_OPTION
def dashboards_provision(  # click passes the options by keyword
    *,
    grafana_url: str | None,
    token: str | None,
    username: str | None,
    password: str | None,
    force: bool,
    config_file: Path | None,
) -> None:
    """Create or update the InfluxDB data source, the folder and every dashboard."""
    from dashboards.grafana_api import provision_from_settings  # noqa: PLC0415

    given = {"url": grafana_url, "token": token, "username": username, "password": password}
    overrides = {key: value for key, value in given.items() if value is not None}
    settings = _settings(config_file, grafana=overrides) if overrides else _settings(config_file)
    if settings.grafana.url is None:
        raise click.UsageError("give --grafana-url (or set grafana.url / PARKWATCH_GRAFANA__URL)")
    try:
        report = provision_from_settings(settings, force=force)
    except GrafanaError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in report.lines():
        click.echo(line)


@dashboards_group.command("files")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for provisioning/ and dashboards/.",
)
@CONFIG_OPTION
def dashboards_files(out: Path, config_file: Path | None) -> None:
    """Write Grafana provisioning files for the configured InfluxDB, and how to use them."""
    from dashboards.files import grafana_command, write_provisioning  # noqa: PLC0415

    settings = _settings(config_file)
    provisioning = write_provisioning(out, settings)
    click.echo(f"wrote {provisioning} and {out / 'dashboards'}; start Grafana on them with:")
    click.echo(grafana_command(out, settings.grafana.url or "http://127.0.0.1:3000"))
