"""``parkwatch demo`` as a user runs it: servers, collector, simulators; stops cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


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


def test_demo_runs_the_whole_pipeline_and_leaves_no_process_behind(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    output, acked, written = run_demo(workdir, "--duration", "6", "--parks", "caohejing,lingang")
    # Every acknowledged message became a point (plus the devices' status messages).
    assert written >= acked > 0
    assert "caohejing" in output
    assert "lingang" in output
    assert (workdir / "influxdb").is_dir()
    assert processes_mentioning(str(workdir)) == []


def test_demo_runs_on_the_embedded_broker_where_mosquitto_is_missing(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    _, acked, written = run_demo(
        workdir, "--duration", "5", "--embedded-broker", "--parks", "hongqiao"
    )
    assert written >= acked > 0
    assert not (workdir / "mosquitto").exists()  # the embedded broker served MQTT
    assert processes_mentioning(str(workdir)) == []


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


def test_the_demo_fault_scenario_fires_and_resolves_an_alert(tmp_path: Path) -> None:
    # 600x: the charger fault (2-17 simulated minutes) fires and resolves in ~2 real seconds.
    output, _, _ = run_demo(
        tmp_path / "demo", "--speed", "600", "--duration", "5", "--parks", "lingang"
    )
    assert "alerts (simulated time)" in output
    resolved = re.search(r"resolved .*ChargerFaulted .*lingang/cp-01#1", output)
    assert resolved, output[-3000:]
