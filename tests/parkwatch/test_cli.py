"""The console script: configuration errors as one line (exit 2, no traceback, no secret), and
``parkwatch config show`` (effective settings, sources, secrets masked)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result

from parkwatch.cli import main

MQTT_SECRET = "Mq9/pass#w?rd@x"
MQTT_URL_SECRET = "Ur1/old#pass"
INFLUX_SECRET = "In7/pa:ss#w@rd"
TOKEN = "Tk5-token-value"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PARKWATCH_ variable from the runner; spool and dead letters in this test's tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PARKWATCH_SPOOL__DIRECTORY", str(tmp_path / "spool"))
    monkeypatch.setenv("PARKWATCH_DEADLETTER__PATH", str(tmp_path / "dl" / "dead.jsonl"))


def invoke(*args: str) -> Result:
    """Run ``parkwatch ARGS`` in-process."""
    return CliRunner().invoke(main, list(args))


def assert_one_line_config_error(result: Result, setting: str, *secrets: str) -> None:
    """Exit 2, one line naming the setting, no traceback, none of the secrets (raw or encoded)."""
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    assert setting in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for secret in secrets:
        assert secret not in result.output
        assert quote(secret, safe="") not in result.output


# -- parkwatch run: configuration errors -------------------------------------------------------


def test_run_with_an_influx_token_and_a_username_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARKWATCH_INFLUX__TOKEN", TOKEN)
    monkeypatch.setenv("PARKWATCH_INFLUX__USERNAME", "writer")
    monkeypatch.setenv("PARKWATCH_INFLUX__PASSWORD", INFLUX_SECRET)
    result = invoke("run")
    assert_one_line_config_error(result, "influx.token and influx.username", TOKEN, INFLUX_SECRET)


@pytest.mark.parametrize("password", ["Pw8/rest", "Pw8#rest", "Pw8?rest", "Pw8/r#e?s@t"])
def test_run_with_an_unencoded_slash_or_hash_in_the_mqtt_password_is_one_line(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("PARKWATCH_MQTT__URL", f"mqtt://collector:{password}@broker:1883")
    result = invoke("run")
    assert_one_line_config_error(result, "mqtt.url", password, "Pw8", "rest")
    assert "percent-encode" in result.output


@pytest.mark.parametrize("setting", ["CA_FILE", "CERT_FILE"])
def test_run_with_a_missing_tls_file_is_one_line_naming_setting_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str
) -> None:
    missing = tmp_path / "missing.pem"
    monkeypatch.setenv("PARKWATCH_MQTT__URL", "mqtts://broker:8883")
    monkeypatch.setenv(f"PARKWATCH_MQTT__{setting}", str(missing))
    result = invoke("run")
    assert_one_line_config_error(result, f"mqtt.{setting.lower()}")
    assert str(missing) in result.output


def test_run_with_a_ca_file_that_is_not_pem_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    monkeypatch.setenv("PARKWATCH_MQTT__URL", "mqtts://broker:8883")
    monkeypatch.setenv("PARKWATCH_MQTT__CA_FILE", str(garbage))
    assert_one_line_config_error(invoke("run"), "mqtt.ca_file")


def under_a_file(tmp_path: Path) -> Path:
    """A dead-letter path whose parent directory is a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    return blocker / "dead.jsonl"


@pytest.mark.parametrize(
    ("make_path", "why"),
    [
        (lambda tmp_path: Path("/dev/full"), "is not a regular file"),
        (lambda tmp_path: tmp_path, "is not a regular file"),
        (under_a_file, "is not a directory"),
    ],
    ids=["dev-full", "a-directory", "under-a-file"],
)
def test_run_with_an_unusable_dead_letter_path_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_path: object, why: str
) -> None:
    assert callable(make_path)
    path = make_path(tmp_path)
    monkeypatch.setenv("PARKWATCH_DEADLETTER__PATH", str(path))
    result = invoke("run")
    assert_one_line_config_error(result, "deadletter.path")
    assert str(path) in result.output
    assert why in result.output


def test_run_with_a_dead_letter_path_on_a_read_only_mount_is_one_line(
    monkeypatch: pytest.MonkeyPatch, read_only_dir: Path
) -> None:
    path = read_only_dir / "dead.jsonl"
    monkeypatch.setenv("PARKWATCH_DEADLETTER__PATH", str(path))
    result = invoke("run")
    assert_one_line_config_error(result, "deadletter.path")
    assert "Read-only file system" in result.output


# -- parkwatch config show ----------------------------------------------------------------------


SECTIONS = (
    *("mqtt", "influx", "ingest", "writer", "spool", "deadletter", "http"),
    *("parks", "kpi", "rules", "state", "notify", "grafana"),
)


def set_every_v1_secret(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """MQTT password in the URL and in its setting, InfluxDB password in the URL."""
    monkeypatch.setenv(
        "PARKWATCH_MQTT__URL", f"mqtt://collector:{quote(MQTT_URL_SECRET, safe='')}@broker:1883"
    )
    monkeypatch.setenv("PARKWATCH_MQTT__PASSWORD", MQTT_SECRET)
    monkeypatch.setenv(
        "PARKWATCH_INFLUX__URL", f"http://writer:{quote(INFLUX_SECRET, safe='')}@db:8086/influx/"
    )
    return (MQTT_SECRET, MQTT_URL_SECRET, INFLUX_SECRET)


def set_every_v2_secret(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """MQTT password in the URL, an InfluxDB v2 token."""
    monkeypatch.setenv(
        "PARKWATCH_MQTT__URL", f"mqtts://collector:{quote(MQTT_SECRET, safe='')}@broker:8883"
    )
    monkeypatch.setenv("PARKWATCH_INFLUX__API", "v2")
    monkeypatch.setenv("PARKWATCH_INFLUX__TOKEN", TOKEN)
    return (MQTT_SECRET, TOKEN)


@pytest.mark.parametrize("set_secrets", [set_every_v1_secret, set_every_v2_secret])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_config_show_never_shows_a_secret_raw_or_url_encoded(
    monkeypatch: pytest.MonkeyPatch, set_secrets: object, as_json: bool
) -> None:
    assert callable(set_secrets)
    secrets = set_secrets(monkeypatch)
    result = invoke("config", "show", *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    for secret in secrets:
        assert secret not in result.output
        assert quote(secret, safe="") not in result.output
        assert quote(secret) not in result.output
    assert "**********" in result.output


def test_config_show_json_is_the_whole_tree_with_secrets_masked_and_urls_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_every_v1_secret(monkeypatch)
    result = invoke("config", "show", "--json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.output)
    assert set(tree) == {*SECTIONS, "log_level"}
    assert tree["mqtt"]["url"] == "mqtt://collector:***@broker:1883"
    assert tree["mqtt"]["password"] == "**********"
    assert tree["influx"]["url"] == "http://db:8086/influx"
    assert tree["influx"]["username"] == "writer"
    assert tree["influx"]["password"] == "**********"
    assert tree["influx"]["token"] is None
    assert tree["writer"]["batch_size"] == 5000


def test_config_show_names_each_value_source_environment_over_file_over_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "parkwatch.toml"
    config.write_text(
        "[writer]\nbatch_size = 10\nflush_interval_s = 0.5\n"
        f'[influx]\nurl = "http://writer:{quote(INFLUX_SECRET, safe="")}@db:8086"\n'
    )
    monkeypatch.setenv("PARKWATCH_WRITER__BATCH_SIZE", "20")
    result = invoke("config", "show", "--config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  batch_size: 20  # env" in lines  # env beats the file's 10
    assert "  flush_interval_s: 0.5  # file" in lines
    assert "  max_concurrent_writes: 2  # default" in lines
    assert '  url: "http://db:8086"  # file' in lines
    assert '  username: "writer"  # derived' in lines  # moved out of the URL
    assert '  password: "**********"  # derived' in lines
    assert 'log_level: "INFO"  # default' in lines
    for section in SECTIONS:
        assert f"{section}:" in lines
    assert any("highest priority first: environment" in line for line in lines)
    assert INFLUX_SECRET not in result.output


def test_config_show_with_an_invalid_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_WRITER__BATCH_SIZE", "none")
    assert_one_line_config_error(invoke("config", "show"), "writer.batch_size")
