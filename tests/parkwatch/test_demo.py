"""``parkwatch demo`` as a user runs it: servers, collector, simulators; stops cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from parkwatch.demo import LiveView
from parkwatch.events import KpiRecord
from parkwatch.points import Point
from parkwatch.service import Collector
from parkwatch.settings import load_settings


def run_demo(workdir: Path, *options: str) -> tuple[str, int, int]:
    """Run the demo briefly at high speed; return its output, messages acked and points written.

    Fails unless it exits 0 and reports both figures.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parkwatch",
            "demo",
            "--speed",
            "600",
            "--plain",
            "--workdir",
            str(workdir),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    published = re.search(r"simulators: (\d+) published, (\d+) acknowledged", output)
    assert published, output[-3000:]
    assert published.group(1) == published.group(2)  # every publish was acknowledged
    written = [int(n) for n in re.findall(r"points written (\d+)", output)]
    assert written, output[-3000:]
    assert "demo stopped" in output
    return output, int(published.group(2)), written[-1]


@pytest.mark.servers
def test_demo_runs_the_whole_pipeline_and_leaves_no_process_behind(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    output, acked, written = run_demo(workdir, "--duration", "6", "--parks", "caohejing,lingang")
    # Every acknowledged message became a point (plus the devices' status messages).
    assert written >= acked > 0
    assert "caohejing" in output
    assert "lingang" in output
    assert (workdir / "influxdb").is_dir()
    assert processes_mentioning(str(workdir)) == []
    # The parks' green KPIs so far today, from the KPI engine's closed minutes.
    today = column(output, "today kg CO2")
    assert set(today) == {"caohejing", "lingang"}
    assert all(float(value.replace(",", "")) > 0 for value in today.values()), today


@pytest.mark.servers
def test_demo_runs_on_the_embedded_broker_where_mosquitto_is_missing(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    _, acked, written = run_demo(
        workdir, "--duration", "5", "--embedded-broker", "--parks", "hongqiao"
    )
    assert written >= acked > 0
    assert not (workdir / "mosquitto").exists()  # the embedded broker served MQTT
    assert processes_mentioning(str(workdir)) == []


def column(output: str, header: str) -> dict[str, str]:
    """The cells of column ``header`` in the last table printed, by park."""
    lines = output.splitlines()
    top = max(i for i, line in enumerate(lines) if header in line)
    index = [cell.strip() for cell in lines[top].split("┃")].index(header)
    cells: dict[str, str] = {}
    for line in lines[top + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            row = [cell.strip() for cell in line.split("│")]
            cells[row[1]] = row[index]
    return cells


def test_the_live_view_shows_todays_green_kpis() -> None:
    """Two closed minutes of one park: pv 8, export 1, load 20, import 14 kWh."""
    view = LiveView(Collector(load_settings()))
    start = round(datetime(2025, 6, 21, tzinfo=UTC).timestamp() * 1000)
    view.observe(Point("lingang", "microgrid", "mg-01", start, {"pv_kw": 1.0}, "", 0))
    for offset, fields in (
        (0, {"pv_kwh": 6.0, "load_kwh": 12.0, "grid_import_kwh": 8.0, "grid_export_kwh": 1.0}),
        (60_000, {"pv_kwh": 2.0, "load_kwh": 8.0, "grid_import_kwh": 6.0, "grid_export_kwh": 0.0}),
    ):
        view.observe_output(KpiRecord("lingang", "1m", start + offset, start + offset, fields))
    console = Console(width=200, record=True)
    console.print(view.table())
    text = console.export_text()
    assert column(text, "today self-suff. %") == {"lingang": f"{100 * 7 / 20:.1f}"}
    assert column(text, "today tCO2/tce") == {"lingang": f"{14 * 0.55 / (20 * 0.1229):.2f}"}
    assert column(text, "today kg CO2") == {"lingang": f"{14 * 0.55:.0f}"}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (read from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if text in command:
            found.append(command)
    return found


def test_the_live_view_caption_shows_the_collector_counts(tmp_path: Path) -> None:
    collector = Collector(load_settings(None, spool={"directory": tmp_path / "spool"}))
    metrics = collector.metrics
    metrics.points_written.inc(41)
    metrics.dead_letters.labels("invalid_json").inc(2)
    metrics.unacked.set_function(lambda: 7)  # as the MQTT adapter reports it: a function
    console = Console(width=120, record=True)
    console.print(LiveView(collector).table())
    assert "points written 41 · dead letters 2 · unacked 7" in console.export_text()


@pytest.mark.servers
def test_the_demo_fault_scenario_fires_and_resolves_an_alert(tmp_path: Path) -> None:
    # 600x: the charger fault (2-17 simulated minutes) fires and resolves in ~2 real seconds.
    output, _, _ = run_demo(
        tmp_path / "demo", "--speed", "600", "--duration", "5", "--parks", "lingang"
    )
    assert "alerts (simulated time)" in output
    resolved = re.search(r"resolved .*ChargerFaulted .*lingang/cp-01#1", output)
    assert resolved, output[-3000:]
