"""Configuration: environment, TOML/YAML files and keyword arguments, their priority, validation
errors that name the setting, and secrets that never show."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from parkwatch.errors import ConfigError
from parkwatch.settings import MqttSettings, Settings, load_settings

TOKEN = "s3cr3t-token-value"
PASSWORD = "hunter2-mqtt-pass"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test without any PARKWATCH_ variable the runner's environment may hold."""
    for name in list(os.environ):
        if name.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    """Write a config file and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


# -- sources ---------------------------------------------------------------------------------------


def test_defaults_apply_without_file_environment_or_arguments() -> None:
    settings = load_settings()
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.influx.api == "v1"
    assert settings.writer.batch_size == 5000
    assert settings.log_level == "INFO"


def test_environment_variables_use_the_prefix_and_double_underscore_nesting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARKWATCH_MQTT__URL", "mqtt://broker.example:1999")
    monkeypatch.setenv("PARKWATCH_WRITER__BATCH_SIZE", "250")
    monkeypatch.setenv("PARKWATCH_INFLUX__GZIP", "false")
    monkeypatch.setenv("PARKWATCH_LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert settings.mqtt.url == "mqtt://broker.example:1999"
    assert settings.mqtt.port == 1999
    assert settings.writer.batch_size == 250
    assert settings.influx.gzip is False
    assert settings.log_level == "DEBUG"


def test_environment_variables_without_the_prefix_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WRITER__BATCH_SIZE", "7")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    settings = load_settings()
    assert settings.writer.batch_size == 5000
    assert settings.log_level == "INFO"


def test_a_whole_subsystem_can_be_given_as_json_in_one_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARKWATCH_INFLUX", '{"url": "http://db.example:8086", "database": "x"}')
    settings = load_settings()
    assert settings.influx.url == "http://db.example:8086"
    assert settings.influx.database == "x"


def test_a_toml_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "parkwatch.toml",
        '[mqtt]\nurl = "mqtts://broker:8884"\ntopic_prefix = "site-a"\n'
        "[writer]\nbatch_size = 100\nflush_interval_s = 0.5\n",
    )
    settings = load_settings(path)
    assert settings.mqtt.url == "mqtts://broker:8884"
    assert settings.mqtt.tls is True
    assert settings.mqtt.topic_prefix == "site-a"
    assert settings.writer.batch_size == 100
    assert settings.writer.flush_interval_s == 0.5


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_yaml_file_is_read(tmp_path: Path, suffix: str) -> None:
    path = write(
        tmp_path / f"parkwatch{suffix}",
        "influx:\n  url: http://db:8086/\n  database: parks\nspool:\n  directory: /data/spool\n",
    )
    settings = load_settings(path)
    assert settings.influx.url == "http://db:8086"  # the trailing slash is trimmed
    assert settings.influx.database == "parks"
    assert settings.spool.directory == Path("/data/spool")


def test_an_empty_yaml_file_means_all_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path / "empty.yaml", ""))
    assert settings.model_dump() == load_settings().model_dump()


# -- priority --------------------------------------------------------------------------------------


def test_priority_is_arguments_then_environment_then_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "parkwatch.toml",
        '[mqtt]\nclient_id = "from-file"\ntopic_prefix = "file-prefix"\nkeepalive_s = 50\n',
    )
    monkeypatch.setenv("PARKWATCH_MQTT__CLIENT_ID", "from-env")
    monkeypatch.setenv("PARKWATCH_MQTT__TOPIC_PREFIX", "env-prefix")
    settings = load_settings(path, mqtt={"client_id": "from-arguments"})
    assert settings.mqtt.client_id == "from-arguments"  # arguments beat env and file
    assert settings.mqtt.topic_prefix == "env-prefix"  # env beats file
    assert settings.mqtt.keepalive_s == 50  # file beats default
    assert settings.mqtt.receive_maximum == 8192  # default where nobody says otherwise


def test_nested_sources_merge_field_by_field_rather_than_replacing_the_subsystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.yaml", "writer:\n  batch_size: 10\n  retry_max_attempts: 9\n")
    monkeypatch.setenv("PARKWATCH_WRITER__FLUSH_INTERVAL_S", "0.25")
    settings = load_settings(path, writer={"max_concurrent_writes": 3})
    assert settings.writer.batch_size == 10
    assert settings.writer.retry_max_attempts == 9
    assert settings.writer.flush_interval_s == 0.25
    assert settings.writer.max_concurrent_writes == 3


# -- validation errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value", "setting"),
    [
        ("PARKWATCH_MQTT__KEEPALIVE_S", "soon", "mqtt.keepalive_s"),
        ("PARKWATCH_MQTT__KEEPALIVE_S", "1", "mqtt.keepalive_s"),
        ("PARKWATCH_MQTT__URL", "http://broker:1883", "mqtt.url"),
        ("PARKWATCH_MQTT__PROTOCOL", "4", "mqtt.protocol"),
        ("PARKWATCH_INFLUX__URL", "db:8086", "influx.url"),
        ("PARKWATCH_INFLUX__API", "v3", "influx.api"),
        ("PARKWATCH_WRITER__BATCH_SIZE", "0", "writer.batch_size"),
        ("PARKWATCH_HTTP__PORT", "70000", "http.port"),
        ("PARKWATCH_LOG_LEVEL", "LOUD", "log_level"),
    ],
)
def test_an_invalid_environment_value_is_a_config_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=rf"\b{setting}:"):
        load_settings()


def test_an_invalid_file_value_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[deadletter]\nbackups = 0\n")
    with pytest.raises(ConfigError, match=r"deadletter\.backups:"):
        load_settings(path)


def test_an_unknown_top_level_setting_in_a_file_is_a_config_error_naming_it(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "c.yaml", "mqtt:\n  url: mqtt://broker\nwriterr:\n  batch_size: 5\n")
    with pytest.raises(ConfigError, match=r"writerr:"):
        load_settings(path)


def test_an_invalid_argument_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"spool\.max_bytes:"):
        load_settings(spool={"max_bytes": 10})


def test_every_invalid_setting_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_WRITER__BATCH_SIZE", "-1")
    monkeypatch.setenv("PARKWATCH_HTTP__PORT", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "writer.batch_size" in str(caught.value)
    assert "http.port" in str(caught.value)


def test_influx_v2_without_a_token_is_a_config_error_naming_the_token() -> None:
    with pytest.raises(ConfigError, match=r"influx\.token is required"):
        load_settings(influx={"api": "v2"})


def test_influx_v2_with_a_token_from_the_environment_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARKWATCH_INFLUX__API", "v2")
    monkeypatch.setenv("PARKWATCH_INFLUX__TOKEN", TOKEN)
    settings = load_settings()
    assert settings.influx.token is not None
    assert settings.influx.token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.toml", "[mqtt\nurl = 1", "does not parse"),
        ("c.yaml", "mqtt: [unclosed", "does not parse"),
        ("c.yaml", "- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_a_broken_config_file_is_a_config_error_naming_the_file(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml")


# -- MQTT URL and credentials --------------------------------------------------------------------


def test_mqtt_url_credentials_are_parsed_and_percent_decoded() -> None:
    mqtt = MqttSettings(url="mqtt://site%40a:p%40ss%3Aword@broker:1884")
    assert mqtt.credentials() == ("site@a", "p@ss:word")
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("broker", 1884, False)


def test_explicit_username_and_password_win_over_the_url() -> None:
    mqtt = MqttSettings(url="mqtt://u:p@broker", username="other", password=PASSWORD)  # type: ignore[arg-type]
    assert mqtt.credentials() == ("other", PASSWORD)


def test_no_username_anywhere_means_no_credentials() -> None:
    assert MqttSettings(url="mqtt://broker").credentials() is None


def test_mqtts_defaults_to_port_8883_and_mqtt_to_1883() -> None:
    assert MqttSettings(url="mqtts://broker").port == 8883
    assert MqttSettings(url="mqtt://broker").port == 1883


def test_redacted_url_hides_the_password_but_keeps_user_host_and_port() -> None:
    mqtt = MqttSettings(url=f"mqtts://collector:{PASSWORD}@broker.example:8884")
    assert mqtt.redacted_url() == "mqtts://collector:***@broker.example:8884"
    assert PASSWORD not in mqtt.redacted_url()


def test_redacted_url_without_credentials_is_the_plain_url() -> None:
    assert MqttSettings(url="mqtt://broker:1883").redacted_url() == "mqtt://broker:1883"


# -- secrets ---------------------------------------------------------------------------------------


def test_secret_settings_never_show_in_repr_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_INFLUX__TOKEN", TOKEN)
    monkeypatch.setenv("PARKWATCH_MQTT__PASSWORD", PASSWORD)
    with_token = load_settings(influx={"api": "v2"}, mqtt={"username": "collector"})
    monkeypatch.delenv("PARKWATCH_INFLUX__TOKEN")
    monkeypatch.setenv("PARKWATCH_INFLUX__PASSWORD", "influx-" + PASSWORD)
    with_password = load_settings(influx={"username": "writer"}, mqtt={"username": "collector"})
    for settings in (with_token, with_password):
        for text in (repr(settings), str(settings), settings.model_dump_json()):
            assert TOKEN not in text
            assert PASSWORD not in text
        assert settings.mqtt.credentials() == ("collector", PASSWORD)
    assert with_token.influx.token is not None
    assert with_token.influx.token.get_secret_value() == TOKEN
    assert with_password.influx.password is not None
    assert with_password.influx.password.get_secret_value() == "influx-" + PASSWORD


def test_settings_class_reads_the_environment_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_HTTP__PORT", "0")
    assert Settings().http.port == 0


# -- regression tests of fixed bugs ----------------------------------------------------------------


def test_a_password_in_the_mqtt_url_never_shows_in_repr_or_json() -> None:
    settings = load_settings(mqtt={"url": f"mqtt://collector:{PASSWORD}@broker:1883"})
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in settings.model_dump_json()


def test_redacted_url_keeps_the_brackets_of_an_ipv6_host() -> None:
    assert MqttSettings(url="mqtt://[::1]:1883").redacted_url() == "mqtt://[::1]:1883"


def test_an_unknown_nested_setting_in_a_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "writer:\n  batch_sise: 10\n")
    with pytest.raises(ConfigError, match=r"writer\.batch_sise:"):
        load_settings(path)


# -- InfluxDB URL: credentials, a path, one way to authenticate --------------------------------


def test_influx_url_credentials_move_into_username_and_password() -> None:
    settings = load_settings(influx={"url": "http://writer:p%40ss%2Fword@db.example:8086/"})
    assert settings.influx.url == "http://db.example:8086"
    assert settings.influx.username == "writer"
    assert settings.influx.password is not None
    assert settings.influx.password.get_secret_value() == "p@ss/word"
    for text in (repr(settings), settings.model_dump_json(), settings.influx.redacted_url()):
        assert "p@ss/word" not in text
        assert "p%40ss%2Fword" not in text


def test_explicit_influx_username_and_password_win_over_the_url() -> None:
    settings = load_settings(
        influx={"url": "http://u:old@db:8086", "username": "w", "password": "new"}
    )
    assert settings.influx.url == "http://db:8086"
    assert settings.influx.username == "w"
    assert settings.influx.password is not None
    assert settings.influx.password.get_secret_value() == "new"


def test_an_influx_url_with_a_path_keeps_it_without_the_trailing_slash() -> None:
    settings = load_settings(influx={"url": "https://proxy.example/influx/"})
    assert settings.influx.url == "https://proxy.example/influx"


@pytest.mark.parametrize(
    ("influx", "message"),
    [
        ({"token": TOKEN, "username": "w"}, r"influx: influx\.token and influx\.username"),
        ({"token": TOKEN, "url": f"http://w:{PASSWORD}@db:8086"}, r"influx\.token and influx"),
        ({"password": PASSWORD}, r"influx\.password is set without influx\.username"),
        (
            {"api": "v2", "token": TOKEN, "url": f"http://w:{PASSWORD}@db"},
            r"influx\.token and influx\.username",
        ),
        ({"api": "v2", "username": "w"}, r"influx\.username/password are for api v1"),
        ({"url": f"http://w:{PASSWORD}@db:8086/?db=x"}, r"influx\.url: .*without a query"),
        ({"url": f"http://w:{PASSWORD}@db:80x6"}, r"influx\.url: .*port is not a number"),
        ({"url": "http://w:Xk9/Qzv@db:8086"}, r"influx\.url: .*percent-encode"),
    ],
)
def test_influx_settings_that_cannot_work_are_one_line_naming_them_without_secrets(
    influx: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(influx=influx)
    text = str(caught.value)
    assert "\n" not in text
    for secret in (TOKEN, PASSWORD, "Xk9", "Qzv"):
        assert secret not in text


# -- MQTT URL: passwords that do not parse, TLS files ------------------------------------------


@pytest.mark.parametrize("password", ["Xk9/secret", "Xk9#secret", "Xk9?secret", "Xk9/se#c?r"])
def test_an_unencoded_slash_hash_or_question_mark_in_the_mqtt_password_is_one_clear_line(
    password: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(mqtt={"url": f"mqtt://collector:{password}@broker:1883"})
    text = str(caught.value)
    assert text.startswith("invalid configuration: mqtt.url: ")
    assert "percent-encode" in text
    assert "mqtt.password" in text
    assert "\n" not in text
    assert "Xk9" not in text  # not even the start of the password
    assert "secret" not in text


def test_a_percent_encoded_mqtt_password_with_those_characters_is_accepted() -> None:
    settings = load_settings(mqtt={"url": "mqtt://collector:Xk9%2Fse%23c%3Fr@broker:1883"})
    assert settings.mqtt.credentials() == ("collector", "Xk9/se#c?r")
    assert settings.mqtt.url == "mqtt://collector@broker:1883"


def test_a_password_at_sign_in_the_mqtt_url_is_accepted_as_before() -> None:
    settings = load_settings(mqtt={"url": "mqtt://collector:p@ss@broker:1883"})
    assert settings.mqtt.credentials() == ("collector", "p@ss")
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker", 1883)


def test_an_mqtt_password_without_a_user_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.password is set without a user name"):
        load_settings(mqtt={"password": PASSWORD})


@pytest.mark.parametrize("setting", ["ca_file", "cert_file"])
def test_a_missing_tls_file_is_one_line_naming_the_setting_and_the_file(
    tmp_path: Path, setting: str
) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as caught:
        load_settings(mqtt={"url": "mqtts://broker", setting: missing})
    assert str(caught.value) == (
        f"invalid configuration: mqtt.{setting}: cannot read {missing}: No such file or directory"
    )


def test_tls_files_that_are_not_pem_are_a_config_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    garbage = write(tmp_path / "garbage.pem", "not a certificate\n")
    with pytest.raises(ConfigError, match=r"mqtt: mqtt\.ca_file: .*garbage\.pem"):
        load_settings(mqtt={"url": "mqtts://broker", "ca_file": garbage})
    with pytest.raises(ConfigError, match=r"mqtt: mqtt\.cert_file/key_file: .*garbage\.pem"):
        load_settings(mqtt={"url": "mqtts://broker", "cert_file": garbage, "key_file": garbage})


# -- scale-out: parks split over collectors, and rule files ---------------------------------------


def test_a_partition_takes_a_stable_share_of_the_configured_parks() -> None:
    parks = ["caohejing", "zhangjiang", "lingang", "hongqiao", "baoshan-nanda", "jinshan-bay"]
    shares = [
        MqttSettings(parks=parks, partition=f"{i}/2").assigned_parks() or [] for i in range(2)
    ]
    assert sorted(shares[0] + shares[1]) == sorted(parks)  # every park exactly once
    assert shares[1] == ["hongqiao", "baoshan-nanda", "jinshan-bay"]  # crc32 % 2 == 1
    # Adding a park moves no other park between collectors.
    more = MqttSettings(parks=[*parks, "wusong"], partition="1/2").assigned_parks()
    assert more == shares[1]
    assert MqttSettings(parks=["lingang"]).assigned_parks() == ["lingang"]
    assert MqttSettings().assigned_parks() is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"partition": "0/2"}, "partition needs the list of every park"),
        ({"parks": ["a"], "partition": "2/2"}, "must be 'i/N' with 0 <= i < N"),
        ({"parks": ["a"], "partition": "x"}, "must be 'i/N'"),
        ({"parks": ["lingang"], "partition": "1/2"}, "holds no park"),
        ({"parks": ["a/b"]}, "is not a park id"),
        ({"parks": ["#"]}, "is not a park id"),
    ],
)
def test_partition_mistakes_are_config_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(mqtt=values)


def test_rule_paths_and_partition_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_RULES__PATHS", '["/etc/parkwatch/rules", "extra.yaml"]')
    monkeypatch.setenv("PARKWATCH_MQTT__PARKS", '["lingang", "hongqiao"]')
    monkeypatch.setenv("PARKWATCH_MQTT__PARTITION", "1/2")
    settings = load_settings()
    assert settings.rules.paths == [Path("/etc/parkwatch/rules"), Path("extra.yaml")]
    assert settings.mqtt.assigned_parks() == ["hongqiao"]


def test_a_shared_subscription_is_refused_while_kpis_or_rules_need_whole_parks() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.shared_group .*mqtt\.partition"):
        load_settings(None, mqtt={"shared_group": "collectors"})
    with pytest.raises(ConfigError, match=r"mqtt\.shared_group"):
        load_settings(None, mqtt={"shared_group": "collectors"}, kpi={"enabled": False})
    storing_only = load_settings(
        None, mqtt={"shared_group": "collectors"}, kpi={"enabled": False}, rules={"enabled": False}
    )
    assert storing_only.mqtt.shared_group == "collectors"
