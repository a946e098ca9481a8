"""``parkwatch demo`` as a user runs it: servers, collector, simulators; stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from dashboards.build import DASHBOARD_UIDS
from tests.dashboards.fake_grafana import FakeGrafana

GRAFANA_TOKEN = "demo-grafana-token"
DAYLIGHT_START = "2026-09-15T14:00"  # Shanghai time; the demo accepts any day within ten years
SCENARIO_ALERTS = [
    ("ChargerFaulted", "caohejing/cp-01#1"),
    ("DeviceOffline", "caohejing/cp-02#1"),  # its last will
    ("Site5gOnBattery", "caohejing/gnb-01"),
    ("StorageCellHot", "caohejing/bess-01"),
]


async def run_demo(
    workdir: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[str, int, int]:
    """Run the demo briefly at high speed; return its output, messages acked and points written.

    Fails unless it exits 0 and reports both figures. A subprocess awaited, not waited for, so
    that servers of the test (a fake Grafana) keep answering meanwhile.
    """
    # One fixed afternoon, whatever the time of the run: the KPI checks need PV and grid import
    # (with the default start, 24 h ago, a run after ~16:30 in Shanghai simulated a dark hour:
    # self-sufficiency 0.0; a morning start met lingang's storage covering its load: 0 kg CO2).
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parkwatch",
        "demo",
        "--speed",
        "600",
        "--start",
        DAYLIGHT_START,
        "--plain",
        "--workdir",
        str(workdir),
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(180):
            stdout, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
    output = stdout.decode()
    assert process.returncode == 0, output[-3000:]
    published = re.search(r"simulators: (\d+) published, (\d+) acknowledged", output)
    assert published, output[-3000:]
    assert published.group(1) == published.group(2)  # every publish was acknowledged
    taken = re.search(r"collector: (\d+) readings taken in", output)
    assert taken, output[-3000:]
    assert taken.group(1) == published.group(2)  # every acknowledged reading reached it
    written = [int(n) for n in re.findall(r"points written (\d+)", output)]
    assert written, output[-3000:]
    assert "demo stopped" in output
    return output, int(published.group(2)), written[-1]


@pytest.mark.servers
async def test_demo_runs_the_whole_pipeline_and_leaves_no_process_behind(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    grafana = FakeGrafana(token=GRAFANA_TOKEN)
    await grafana.start()
    try:
        output, acked, written = await run_demo(
            workdir,
            "--duration",
            "6",
            "--parks",
            "caohejing,lingang",
            "--grafana-url",
            grafana.url,
            env={"PARKWATCH_GRAFANA__TOKEN": GRAFANA_TOKEN},
        )
    finally:
        await grafana.stop()
    # Every acknowledged message became a point (plus the devices' status messages).
    assert written >= acked > 0
    assert "caohejing" in output
    assert "lingang" in output
    assert (workdir / "influxdb").is_dir()
    assert processes_mentioning(str(workdir)) == []
    # The parks' green KPIs so far today, from the KPI engine's closed minutes.
    for header in ("today kg CO2", "today tCO2/tce", "today self-suff. %"):
        today = column(output, header)
        assert set(today) == {"caohejing", "lingang"}, header
        assert all(float(value.replace(",", "")) > 0 for value in today.values()), today
    # The built-in fault scenario: every alert fired and resolved within the simulated hour.
    resolved = alerts(output, "resolved")
    for name, where in SCENARIO_ALERTS:
        assert (name, where) in resolved, output[-4000:]
    assert "said goodbye (offline)" in output  # the devices' goodbyes, counted not listed
    # ... and were notified: to a local Alertmanager, as no receiver was configured.
    assert "notifications: every alert goes to a local Alertmanager" in output
    notified = re.findall(r"notifications: alertmanager: (\d+) sent, (\d+) failed", output)
    assert notified, output[-3000:]
    sent, failed = map(int, notified[-1])
    assert sent > 0, output[-3000:]
    assert failed == 0, output[-3000:]
    # Where the dashboards are: the configured Grafana, provisioned with the demo's InfluxDB.
    assert f"dashboards: {grafana.url}/d/parkwatch-city" in output
    assert sorted(grafana.dashboards) == sorted(DASHBOARD_UIDS)
    (source,) = grafana.datasources.values()
    assert source["url"] == influx_url(output)
    assert source["jsonData"]["dbName"] == "parkwatch"
    # ... and the files for a local Grafana, with the one command that starts it on them.
    provisioning = workdir.resolve() / "grafana" / "provisioning"
    assert (provisioning / "datasources" / "parkwatch.yaml").is_file()
    assert f"GF_PATHS_PROVISIONING={provisioning} " in output

    # A second run in the same directory starts afresh: nothing of the first run's simulated
    # time (the devices' retained goodbyes, an hour ahead) moves this run's clocks.
    output, acked, written = await run_demo(
        workdir, "--duration", "6", "--parks", "caohejing,lingang", "--no-faults"
    )
    assert written >= acked > 0
    assert alerts(output, "firing") == alerts(output, "resolved") == set()
    today = column(output, "today kg CO2")
    assert all(float(value.replace(",", "")) > 0 for value in today.values()), today


@pytest.mark.servers
async def test_demo_runs_on_the_embedded_broker_where_mosquitto_is_missing(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    _, acked, written = await run_demo(
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


def alerts(output: str, state: str) -> set[tuple[str, str]]:
    """(alert name, where) of the rows in ``state`` in the last alerts table printed."""
    tables = output.split("alerts (simulated time")
    if len(tables) == 1:
        return set()
    rows = set()
    for line in tables[-1].split("└", 1)[0].splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 4 and cells[1] == state:
            rows.add((cells[3].split(" (")[0], cells[4]))
    return rows


def influx_url(output: str) -> str:
    """The demo's InfluxDB URL, from its first line."""
    found = re.search(r"InfluxDB (http://\S+)", output)
    assert found, output[:2000]
    return found.group(1)
