"""The Dockerfile (never built here: no Docker engine) ships what the wheel ships."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_copies_every_package_the_wheel_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert copied == packages


def test_every_state_the_collector_keeps_is_on_the_data_volume() -> None:
    """Spool, dead letters, the retained-message ledger and the KPI/rule state survive a new
    container only on the volume (/var/lib/parkwatch); the defaults point under ./var."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    for setting in (
        "SPOOL__DIRECTORY",
        "DEADLETTER__PATH",
        "MQTT__RETAINED_STATE_FILE",
        "STATE__DIRECTORY",
    ):
        assert re.search(rf"PARKWATCH_{setting}=/var/lib/parkwatch/", dockerfile), setting
