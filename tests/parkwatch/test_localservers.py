"""Exercise the real servers of parkwatch.localservers: MQTT delivery, auth, TLS, persistence,
InfluxDB and VictoriaMetrics round trips, crash and restart, and the shipped broker config."""

from __future__ import annotations

import os
import queue
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from parkwatch.errors import ServerError
from parkwatch.localservers import (
    NO_LOSS_SETTINGS,
    InfluxDB1,
    Mosquitto,
    VictoriaMetrics,
    free_port,
    wait_for,
)

TIMEOUT = 10.0  # seconds to wait for any one event from a server
SHIPPED_CONFIG = Path(__file__).parents[2] / "config" / "mosquitto.conf"


class MqttProbe:
    """A paho client on its own network thread that queues what it receives, for assertions."""

    def __init__(
        self,
        broker: Mosquitto,
        *,
        client_id: str = "",
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.broker = broker
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,  # the protocol devices in the parks speak
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.connacks: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._started = False

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            client.disconnect()  # stop paho's reconnect loop, whose back-off would delay close()
        self.connacks.put((reason, flags.session_present))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.subacks.put(reasons)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def connect(self) -> tuple[ReasonCode, bool]:
        """Connect and return the CONNACK's reason code and session-present flag."""
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        self._started = True
        return self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK."""
        self.client.subscribe(topic, qos=1)
        reasons = self.subacks.get(timeout=TIMEOUT)
        assert not any(reason.is_failure for reason in reasons), reasons

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()

    def close(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker) and stop the thread."""
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False


@pytest.fixture
def mqtt_probe() -> Iterator[Callable[..., MqttProbe]]:
    """Make MqttProbes that are closed after the test."""
    made: list[MqttProbe] = []

    def make(broker: Mosquitto, **kwargs: Any) -> MqttProbe:
        probe = MqttProbe(broker, **kwargs)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


def _roundtrip(subscriber: MqttProbe, publisher: MqttProbe, topic: str) -> None:
    """Deliver one QoS 1 message from publisher to subscriber."""
    subscriber.subscribe(topic)
    publisher.publish(topic, b'{"kw": 1.5}')
    message = subscriber.messages.get(timeout=TIMEOUT)
    assert (message.topic, message.payload, message.qos) == (topic, b'{"kw": 1.5}', 1)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535  # an unprivileged port, chosen by the kernel
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # OSError if it were taken
        assert sock.getsockname() == ("127.0.0.1", port)


@pytest.mark.servers
def test_mosquitto_delivers_qos1(
    mosquitto: Mosquitto, mqtt_probe: Callable[..., MqttProbe], topic_prefix: str
) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    subscriber, publisher = mqtt_probe(mosquitto), mqtt_probe(mosquitto)
    assert not subscriber.connect()[0].is_failure
    assert not publisher.connect()[0].is_failure
    _roundtrip(subscriber, publisher, f"{topic_prefix}/park1/meter1")


@pytest.mark.servers
@pytest.mark.parametrize(
    ("username", "password"), [("parkwatch", "wrong"), (None, None)], ids=["wrong", "anonymous"]
)
def test_mosquitto_auth_rejects(
    mosquitto_auth: Mosquitto,
    mqtt_probe: Callable[..., MqttProbe],
    username: str | None,
    password: str | None,
) -> None:
    reason, _ = mqtt_probe(mosquitto_auth, username=username, password=password).connect()
    assert reason.is_failure
    assert str(reason) == "Not authorized"


@pytest.mark.servers
def test_mosquitto_auth_accepts_valid_password(
    mosquitto_auth: Mosquitto, mqtt_probe: Callable[..., MqttProbe], topic_prefix: str
) -> None:
    credentials = {"username": mosquitto_auth.username, "password": mosquitto_auth.password}
    subscriber = mqtt_probe(mosquitto_auth, **credentials)
    publisher = mqtt_probe(mosquitto_auth, **credentials)
    assert not subscriber.connect()[0].is_failure
    assert not publisher.connect()[0].is_failure
    _roundtrip(subscriber, publisher, f"{topic_prefix}/secured")


@pytest.mark.servers
def test_mosquitto_tls_with_ca(
    mosquitto_tls: Mosquitto, mqtt_probe: Callable[..., MqttProbe], topic_prefix: str
) -> None:
    assert mosquitto_tls.tls is not None
    assert mosquitto_tls.url == f"mqtts://127.0.0.1:{mosquitto_tls.port}"
    ca_file = mosquitto_tls.tls.ca_file
    subscriber = mqtt_probe(mosquitto_tls, ca_file=ca_file)
    publisher = mqtt_probe(mosquitto_tls, ca_file=ca_file)
    assert not subscriber.connect()[0].is_failure
    assert not publisher.connect()[0].is_failure
    _roundtrip(subscriber, publisher, f"{topic_prefix}/tls")


@pytest.mark.servers
@pytest.mark.parametrize("server_name", ["127.0.0.1", "localhost"])
def test_mosquitto_tls_cert_is_verified(mosquitto_tls: Mosquitto, server_name: str) -> None:
    assert mosquitto_tls.tls is not None
    trusting = ssl.create_default_context(cafile=str(mosquitto_tls.tls.ca_file))
    with (
        socket.create_connection((mosquitto_tls.host, mosquitto_tls.port), timeout=TIMEOUT) as raw,
        trusting.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        assert tls.version() is not None
    # Without our CA the handshake must fail: the broker really presents the generated cert.
    with (
        socket.create_connection((mosquitto_tls.host, mosquitto_tls.port), timeout=TIMEOUT) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=server_name)


@pytest.mark.servers
def test_persistent_session_survives_restart(
    tmp_path: Path, mqtt_probe: Callable[..., MqttProbe], topic_prefix: str
) -> None:
    topic = f"{topic_prefix}/telemetry"
    collector_id = f"{topic_prefix}-collector"
    with Mosquitto(tmp_path / "broker") as broker:
        collector = mqtt_probe(broker, client_id=collector_id, clean_session=False)
        reason, session_present = collector.connect()
        assert not reason.is_failure
        assert not session_present
        collector.subscribe(topic)
        collector.close()

        device = mqtt_probe(broker)
        device.connect()
        device.publish(topic, b"queued while the collector was away")  # PUBACK: it is queued
        device.close()

        port = broker.port
        broker.restart()
        assert broker.running
        assert broker.port == port

        returning = mqtt_probe(broker, client_id=collector_id, clean_session=False)
        reason, session_present = returning.connect()
        assert not reason.is_failure
        assert session_present
        message = returning.messages.get(timeout=TIMEOUT)
        assert (message.topic, message.payload) == (topic, b"queued while the collector was away")
        returning.close()  # before the broker goes, or paho's reconnect back-off delays teardown
    assert not broker.running


@pytest.mark.servers
def test_kill_then_start(tmp_path: Path, mqtt_probe: Callable[..., MqttProbe]) -> None:
    with Mosquitto(tmp_path) as broker:
        broker.kill()
        assert not broker.running
        broker.start()
        assert broker.running
        probe = mqtt_probe(broker)
        assert not probe.connect()[0].is_failure
        probe.close()


@pytest.mark.servers
def test_failed_start_raises_with_log_tail(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, extra_conf="no_such_option true")
    with pytest.raises(ServerError, match='Unknown configuration variable "no_such_option"'):
        broker.start(timeout=5.0)
    assert not broker.running


def _shipped_settings() -> dict[str, str]:
    """The shipped config's options; for repeated options the last value."""
    lines = SHIPPED_CONFIG.read_text().splitlines()
    pairs = [line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def test_shipped_config_has_the_no_loss_settings() -> None:
    settings = _shipped_settings()
    assert {key: settings.get(key) for key in NO_LOSS_SETTINGS} == dict(NO_LOSS_SETTINGS)
    assert settings["persistence"] == "true"
    assert "persistent_client_expiration" not in settings  # sessions must not expire


@pytest.mark.servers
def test_the_broker_discards_a_payload_over_message_size_limit(
    mosquitto: Mosquitto, mqtt_probe: Callable[..., MqttProbe], topic_prefix: str
) -> None:
    limit = int(NO_LOSS_SETTINGS["message_size_limit"])
    subscriber, publisher = mqtt_probe(mosquitto), mqtt_probe(mosquitto)
    subscriber.connect()
    publisher.connect()
    topic = f"{topic_prefix}/size"
    subscriber.subscribe(topic)
    publisher.publish(topic, b"o" * (limit + 1))  # acked to the publisher, then discarded
    publisher.publish(topic, b"x" * limit)
    message = subscriber.messages.get(timeout=TIMEOUT)
    assert len(message.payload) == limit
    assert subscriber.messages.empty()


class ShippedMosquitto(Mosquitto):
    """A broker running config/mosquitto.conf, with only its port and data dir redirected."""

    def config_text(self) -> str:
        text = SHIPPED_CONFIG.read_text()
        text = re.sub(r"(?m)^listener .*$", f"listener {self.port} {self.host}", text)
        text = re.sub(
            r"(?m)^persistence_location .*$", f"persistence_location {self.workdir}/", text
        )
        return text + ("user root\n" if os.geteuid() == 0 else "")


@pytest.mark.servers
def test_shipped_config_runs(
    tmp_path: Path, mqtt_probe: Callable[..., MqttProbe], topic_prefix: str
) -> None:
    # Mosquitto refuses unknown options at start, so this proves every option name exists.
    with ShippedMosquitto(tmp_path) as broker:
        subscriber, publisher = mqtt_probe(broker), mqtt_probe(broker)
        subscriber.connect()
        publisher.connect()
        _roundtrip(subscriber, publisher, f"{topic_prefix}/shipped")
        subscriber.close()
        publisher.close()
    log = broker.log_path.read_text()
    assert "Error" not in log
    assert (tmp_path / "mosquitto.db").exists()  # written on SIGTERM


@pytest.mark.servers
def test_influxdb_write_query_roundtrip(influxdb: InfluxDB1, influx_database: str) -> None:
    assert influxdb.url == f"http://127.0.0.1:{influxdb.port}"
    influxdb.write(
        influx_database,
        "energy,site=north,device=m1 kw=1.5,kwh=10i 1690000000000\n"
        "energy,site=south,device=m2 kw=2.5 1690000001000",
    )
    rows = influxdb.query(influx_database, "SELECT * FROM energy GROUP BY *")
    assert sorted(rows, key=lambda row: row["time"]) == [
        {"time": 1690000000000, "kw": 1.5, "kwh": 10, "device": "m1", "site": "north"},
        {"time": 1690000001000, "kw": 2.5, "kwh": None, "device": "m2", "site": "south"},
    ]


@pytest.mark.servers
def test_influx_database_is_per_test(influxdb: InfluxDB1, influx_database: str) -> None:
    assert influx_database.startswith("t_test_influx_database_is_per_test_")
    names = {row["name"] for row in influxdb.query(influx_database, "SHOW DATABASES")}
    assert influx_database in names


@pytest.mark.servers
def test_influxdb_errors_raise(influxdb: InfluxDB1) -> None:
    with pytest.raises(ServerError, match="database not found"):
        influxdb.query("no_such_database", "SELECT * FROM energy")
    with pytest.raises(ServerError, match="HTTP 404"):
        influxdb.write("no_such_database", "energy kw=1 1690000000000")


def _samples(series: list[dict[str, Any]]) -> int:
    return sum(len(one["timestamps"]) for one in series)


@pytest.mark.servers
def test_victoria_v2_write_export_roundtrip(victoria: VictoriaMetrics, topic_prefix: str) -> None:
    old = 1690000000000  # 2023: needs -retentionPeriod beyond the default month
    now = int(time.time() * 1000)  # current hour: visible only ~1 s after the flush
    victoria.write(
        f"energy,test={topic_prefix},device=m1 kw=1.5,kwh=10i {old}\n"
        f"energy,test={topic_prefix},device=m1 kw=2.5 {now}",
        bucket="parkbucket",
        org="parkorg",
    )

    def all_three() -> list[dict[str, Any]] | None:
        found = victoria.export(f'{{test="{topic_prefix}"}}')
        return found if _samples(found) == 3 else None

    series = wait_for(all_three, timeout=TIMEOUT, what="3 samples in VictoriaMetrics")
    by_name = {one["metric"]["__name__"]: one for one in series}
    # measurement_field names, tags as labels, bucket/org not labels.
    assert by_name["energy_kw"]["metric"] == {
        "__name__": "energy_kw",
        "device": "m1",
        "test": topic_prefix,
    }
    assert (by_name["energy_kw"]["timestamps"], by_name["energy_kw"]["values"]) == (
        [old, now],
        [1.5, 2.5],
    )
    assert (by_name["energy_kwh"]["timestamps"], by_name["energy_kwh"]["values"]) == ([old], [10])


@pytest.mark.servers
def test_victoria_deduplicates_a_rewritten_sample(
    victoria: VictoriaMetrics, topic_prefix: str
) -> None:
    line = f"energy,test={topic_prefix} kw=1.5 1690000000000"
    victoria.write(line)
    victoria.write(line)  # a retried batch
    series = victoria.export(f'{{test="{topic_prefix}"}}')
    assert _samples(series) == 1


@pytest.mark.servers
def test_a_relative_workdir_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's default work dir is relative (``var/demo``); servers run with it as cwd."""
    monkeypatch.chdir(tmp_path)
    with Mosquitto(Path("var/broker")) as broker:
        assert broker.workdir == tmp_path / "var" / "broker"
        assert broker.running
