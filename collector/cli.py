"""The ``parkwatch`` console script."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click
import orjson

from collector.config import Settings, load_settings
from collector.errors import ConfigError
from collector.schema import json_schemas

__all__ = ["main"]


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )


async def _run_collector(settings: Settings) -> None:
    from collector.service import Collector  # noqa: PLC0415 - keep `parkwatch schema` light

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Collector(settings).run(stop)


@click.group()
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
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _configure_logging(settings.log_level)
    asyncio.run(_run_collector(settings))


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
