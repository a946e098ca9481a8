"""The ``simulate`` click command (``parkwatch simulate``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import simulators
from parkwatch.localservers import Mosquitto
from parkwatch.schema import KIND_MODELS, Kind
from simulators.cli import simulate

EXAMPLES = Path(simulators.__file__).parent
PRINT = ["--print", "--parks", "hongqiao", "--start", "2025-06-23T08:00", "--duration", "1m"]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(simulate, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_print_writes_valid_deterministic_telemetry() -> None:
    code, out = _run(*PRINT, "--seed", "3")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 6 * 1 + 6 * 1 + 2 * 2 + 2 * 4 * 2  # 6 ticks; sites/chargers every 3
    for line in lines:
        topic, payload = line.split(" ", 1)
        KIND_MODELS[Kind(topic.split("/")[2])].model_validate_json(payload)
    first = orjson.loads(lines[0].split(" ", 1)[1])
    assert first["ts"] == 1750636800000  # 08:00 Shanghai time
    assert _run(*PRINT, "--seed", "3")[1] == out
    assert _run(*PRINT, "--seed", "4")[1] != out


def test_print_with_fleet_scenario_and_fault_flag() -> None:
    code, out = _run(
        "--print",
        "--fleet", str(EXAMPLES / "fleet.example.yaml"),
        "--parks", "hongqiao,lingang",
        "--scenario", str(EXAMPLES / "scenario.example.yaml"),
        "--fault", "malformed:lingang/microgrid/mg-01@0s+10s",
        "--start", "2025-06-23T00:00+08:00",
        "--duration", "20s",
        "--prefix", "lab",
    )  # fmt: skip
    assert code == 0
    meters = [line.split(" ", 1) for line in out.splitlines() if "/microgrid/" in line]
    assert [topic for topic, _ in meters] == [
        "lab/hongqiao/microgrid/mg-01/telemetry",
        "lab/lingang/microgrid/mg-01/telemetry",
    ] * 2
    orjson.loads(meters[0][1])
    with pytest.raises(orjson.JSONDecodeError):  # the --fault flag hit the first tick
        orjson.loads(meters[1][1])
    orjson.loads(meters[3][1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--print"], "--print needs --duration"),
        (["--print", "--duration", "soon"], "not a duration"),
        (["--print", "--duration", "1m", "--start", "yesterday"], "not an ISO 8601"),
        (["--print", "--duration", "1m", "--parks", "Bad Park"], "invalid park ids"),
        (["--print", "--duration", "1m", "--fault", "offline"], "expected FAULT"),
        (["--mqtt-url", "http://x", "--duration", "1m"], "must look like mqtt://"),
    ],
)
def test_bad_arguments_are_reported(args: list[str], message: str) -> None:
    code, out = _run(*args)
    assert code != 0
    assert message in out


@pytest.mark.servers
def test_live_and_rate_mode_against_mosquitto(mosquitto: Mosquitto, topic_prefix: str) -> None:
    code, out = _run(
        "--mqtt-url", mosquitto.url, "--prefix", topic_prefix, "--parks", "hongqiao",
        "--speed", "100000", "--duration", "5m", "--start", "2025-06-23T12:00",
    )  # fmt: skip
    assert code == 0, out
    # 30 ticks: meter and storage 30 each, 2 sites x 10, 4 chargers x 2 connectors x 10.
    assert "30 ticks, 160 messages published, 160 acknowledged, 0 dropped" in out

    code, out = _run(
        "--mqtt-url", mosquitto.url, "--prefix", topic_prefix, "--parks", "hongqiao",
        "--rate", "0", "--count", "500",
    )  # fmt: skip
    assert code == 0, out
    assert "sent 500, acknowledged 500" in out


@pytest.mark.servers
def test_the_broker_and_prefix_come_from_the_shared_settings_tree(
    mosquitto: Mosquitto, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``parkwatch simulate`` reads PARKWATCH_MQTT__URL like ``parkwatch run`` does."""
    monkeypatch.setenv("PARKWATCH_MQTT__URL", mosquitto.url)
    monkeypatch.setenv("PARKWATCH_MQTT__TOPIC_PREFIX", topic_prefix)
    code, out = _run("--parks", "hongqiao", "--rate", "0", "--count", "50")
    assert code == 0, out
    assert "sent 50, acknowledged 50" in out
    monkeypatch.setenv("PARKWATCH_MQTT__URL", "mqtt://127.0.0.1:1")  # nothing listens there
    code, out = _run("--parks", "hongqiao", "--rate", "0", "--count", "50")
    assert code != 0
