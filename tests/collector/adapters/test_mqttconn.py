"""The native client's connection: batches, coalesced acks, flow control, QoS 2, DISCONNECT
reasons, keepalive and protocol errors; first on a recording transport, then through the MQTT
adapter against a scripted fake broker (what Mosquitto cannot be made to send; the rest is
tested against the real Mosquitto in ``test_mqtt.py``, for both clients)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from collector.adapters import mqtt
from collector.adapters.mqtt import MqttSource
from collector.adapters.mqttconn import MqttConnection, tls_context
from collector.adapters.mqttparser import Publish
from collector.adapters.mqttwire import MQTT_5, PUBREL, encode_ack, encode_disconnect
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.errors import SourceError
from parkwatch.localservers import make_tls_files
from parkwatch.settings import MqttSettings
from tests.collector.adapters.mqttfake import (
    FakeBroker,
    FakeClientConnection,
    decode_connect,
    decode_subscribe,
    decode_unsubscribe,
    encode_connack,
    encode_publish,
    encode_suback,
    encode_unsuback,
    frame,
)
from tests.helpers import metric_value, until

CONNECT, PUBACK, PUBREC, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = (
    1,
    4,
    5,
    7,
    8,
    10,
    12,
    14,
)
UNLIMITED = (1 << 30, 1 << 62)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingTransport(asyncio.Transport):
    """Keeps what is written; reading paused or not; closing calls connection_lost."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.paused = False
        self.closing = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: Any) -> None:
        """Record one write call."""
        self.writes.append(bytes(data))

    def packets(self) -> list[tuple[int, int, bytes]]:
        """Every packet written so far, in order."""
        packets, rest = frame(b"".join(self.writes))
        assert rest == b""
        return packets

    def pause_reading(self) -> None:
        """Note the pause."""
        self.paused = True

    def resume_reading(self) -> None:
        """Note the resume."""
        self.paused = False

    def is_closing(self) -> bool:
        """Whether close or abort was called."""
        return self.closing

    def close(self) -> None:
        """Close: connection_lost on the next loop turn, as asyncio does."""
        if not self.closing and self.protocol is not None:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        """Same as close here."""
        self.close()


class Recorder:
    """A receiver that records what the connection delivers."""

    def __init__(self) -> None:
        self.batches: list[list[Publish]] = []
        self.losses: list[tuple[str, int | None]] = []
        self.allowance = UNLIMITED

    def budget(self) -> tuple[int, int]:
        """What the test allows."""
        return self.allowance

    def take_in(self, publishes: list[Publish]) -> None:
        """Record one batch; it uses up budget, as in the adapter."""
        self.batches.append(publishes)
        self.allowance = (self.allowance[0] - len(publishes), self.allowance[1])

    def lost(self, reason: str, code: int | None) -> None:
        """Record the loss."""
        self.losses.append((reason, code))


def settings(**extra: Any) -> MqttSettings:
    """Settings for a connection under test."""
    return MqttSettings(**{"client_id": "test", **extra})


@pytest.fixture
def clock() -> Clock:
    """The connection's clock."""
    return Clock()


@pytest.fixture
async def wired(clock: Clock) -> tuple[MqttConnection, RecordingTransport, Recorder]:
    """A connection on a recording transport, as if connected."""
    recorder = Recorder()
    connection = MqttConnection(settings(), recorder, clock=clock)
    transport = RecordingTransport()
    transport.protocol = connection
    connection.connection_made(transport)
    return connection, transport, recorder


def publishes(count: int, *, qos: int = 1, start: int = 1) -> bytes:
    """``count`` MQTT 5 PUBLISHes with packet ids from ``start``."""
    return b"".join(
        encode_publish(
            "parks/p/storage/b/telemetry",
            b"%d" % n,
            version=MQTT_5,
            qos=qos,
            packet_id=n if qos else 0,
        )
        for n in range(start, start + count)
    )


async def test_one_read_of_many_publishes_is_one_take_in_call(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    connection, _, recorder = wired
    connection.data_received(publishes(50))
    assert len(recorder.batches) == 1
    assert [p[1] for p in recorder.batches[0]] == [b"%d" % n for n in range(1, 51)]


async def test_the_acks_of_a_batch_go_out_in_one_write_in_order(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    connection, transport, _ = wired
    for packet_id in range(1, 101):
        connection.ack(packet_id, 1)
    connection.ack(101, 2)
    assert transport.writes == []  # queued until the loop's next turn
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    packets = transport.packets()
    assert [(kind, int.from_bytes(body, "big")) for kind, _, body in packets] == [
        *((PUBACK, n) for n in range(1, 101)),
        (PUBREC, 101),
    ]


async def test_a_packet_sent_after_acks_follows_them(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    """The shutdown barrier relies on it: the UNSUBACK then proves the acks arrived."""
    connection, transport, _ = wired
    connection.ack(7, 1)
    connection.ack(8, 1)
    barrier = asyncio.ensure_future(connection.unsubscribe(["$barrier"]))
    await asyncio.sleep(0)
    assert [kind for kind, _, _ in transport.packets()] == [PUBACK, PUBACK, UNSUBSCRIBE]
    packet_id, filters = decode_unsubscribe(transport.packets()[-1][2], 5)
    assert filters == ["$barrier"]
    connection.data_received(encode_unsuback(packet_id, [0x11], version=MQTT_5))
    await asyncio.wait_for(barrier, 1)


async def test_an_answer_that_comes_after_we_stopped_waiting_is_no_protocol_error(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    """The shutdown barrier waits for its UNSUBACK a bounded time; a late one is harmless."""
    connection, transport, recorder = wired
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connection.unsubscribe(["$barrier"]), 0.01)
    packet_id, _ = decode_unsubscribe(transport.packets()[-1][2], 5)
    connection.data_received(encode_unsuback(packet_id, [0x11], version=MQTT_5))
    await asyncio.sleep(0)
    assert connection.is_open
    assert recorder.losses == []
    # An answer to nothing we ever asked is one.
    connection.data_received(encode_unsuback(packet_id + 1, [0x11], version=MQTT_5))
    await asyncio.sleep(0)
    assert [kind for kind, _, _ in transport.packets()] == [UNSUBSCRIBE, DISCONNECT]
    assert recorder.losses == [("protocol error: unexpected UnsubAck", None)]


async def test_publishes_beyond_the_budget_wait_and_come_after_resume_without_new_bytes(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    connection, transport, recorder = wired
    recorder.allowance = (2, 1 << 62)
    connection.data_received(publishes(5) + b"\xd0\x00" + publishes(1, start=6))
    assert [len(batch) for batch in recorder.batches] == [2]
    # The adapter, out of budget, stops the reading; the rest stays buffered.
    connection.set_reading(False)
    assert transport.paused
    recorder.allowance = UNLIMITED
    connection.set_reading(True)
    assert not transport.paused
    await asyncio.sleep(0)  # no new bytes arrive: the buffered ones are parsed on resume
    assert [[p[1] for p in batch] for batch in recorder.batches] == [
        [b"1", b"2"],
        [b"3", b"4", b"5"],  # then the PINGRESP, then the last one
        [b"6"],
    ]


async def test_qos2_pubrec_waits_for_the_ack_and_pubrel_gets_pubcomp(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    connection, transport, recorder = wired
    connection.data_received(publishes(1, qos=2, start=42))
    assert recorder.batches[0][0][2:4] == (42, 2)
    await asyncio.sleep(0)
    assert transport.writes == []  # nothing before the message is safe
    connection.ack(42, 2)
    await asyncio.sleep(0)
    connection.data_received(encode_ack(PUBREL, 42))
    assert [(kind, int.from_bytes(body, "big")) for kind, _, body in transport.packets()] == [
        (PUBREC, 42),
        (PUBCOMP, 42),
    ]


async def test_a_broker_disconnect_passes_its_reason_code_on(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    connection, transport, recorder = wired
    body = b"\x8e\x0a\x1f\x00\x07elsehow"
    connection.data_received(b"\xe0" + bytes([len(body)]) + body)
    await asyncio.sleep(0)
    assert transport.closing
    assert recorder.losses == [("Session taken over (elsehow)", 0x8E)]
    assert not connection.is_open


async def test_a_topic_alias_ends_the_connection_with_reason_0x94(
    wired: tuple[MqttConnection, RecordingTransport, Recorder],
) -> None:
    connection, transport, recorder = wired
    connection.data_received(
        publishes(1) + encode_publish("t", b"x", version=MQTT_5, properties={0x23: 1})
    )
    await asyncio.sleep(0)
    assert [len(batch) for batch in recorder.batches] == [1]  # what came before it is kept
    assert transport.packets() == [(DISCONNECT, 0, b"\x94")]
    assert transport.closing
    ((reason, code),) = recorder.losses
    assert reason.startswith("protocol error: the broker used a topic alias")
    assert code is None


async def test_keepalive_pings_when_idle_and_drops_a_silent_broker(
    wired: tuple[MqttConnection, RecordingTransport, Recorder], clock: Clock
) -> None:
    connection, transport, recorder = wired
    keepalive = connection.keepalive
    clock.now += keepalive - 1
    connection.keep_alive()
    assert transport.writes == []
    clock.now += 1
    connection.keep_alive()
    assert transport.packets() == [(PINGREQ, 0, b"")]
    connection.data_received(b"\xd0\x00")  # PINGRESP
    clock.now += keepalive
    connection.keep_alive()  # a second ping, not a verdict
    assert len(transport.packets()) == 2
    # While the adapter keeps the reading off, answers cannot be read: pings go on (so the
    # broker keeps us), verdicts wait.
    connection.set_reading(False)
    for _ in range(3):
        clock.now += keepalive
        connection.keep_alive()
    await asyncio.sleep(0)
    assert recorder.losses == []
    assert [kind for kind, _, _ in transport.packets()] == [PINGREQ] * 5
    connection.set_reading(True)
    clock.now += keepalive
    connection.keep_alive()  # pings, now expecting the answer
    clock.now += keepalive
    connection.keep_alive()
    await asyncio.sleep(0)
    assert recorder.losses == [(f"no answer to PINGREQ in {keepalive} s", None)]


def test_the_tls_context_verifies_the_broker_and_can_skip_only_the_host_name(
    tmp_path: Any,
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    strict = tls_context(settings(url="mqtts://broker:8883", ca_file=tls.ca_file))
    assert (strict.verify_mode, strict.check_hostname) == (ssl.CERT_REQUIRED, True)
    insecure = tls_context(
        settings(
            url="mqtts://broker:8883",
            ca_file=tls.ca_file,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            tls_insecure=True,
        )
    )
    # Like paho's tls_insecure_set: the certificate is still verified, the name is not.
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_REQUIRED, False)


# -- through the adapter, against a scripted fake broker -----------------------------------------


@asynccontextmanager
async def source_running(source: MqttSource) -> AsyncIterator[MqttSource]:
    """The adapter's tasks until the block ends."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(source.run()),
            group.create_task(source.run_misc()),
            group.create_task(source.run_pump()),
            group.create_task(source.run_retained()),
        ]
        try:
            yield source
        finally:
            for task in tasks:
                task.cancel()


def fake_settings(broker: FakeBroker, tmp_path: Any, **extra: Any) -> MqttSettings:
    """Adapter settings pointing at the fake broker."""
    values = {
        "url": broker.url,
        "client_id": "fake-test",
        "topic_prefix": "parks",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "retained_state_file": tmp_path / "retained.bin",
        "username": "collector",
        "password": "s3cret",
    }
    return MqttSettings(**{**values, **extra})


async def handshake(client: FakeClientConnection, version: int = MQTT_5) -> Any:
    """Answer CONNECT and SUBSCRIBE; return the decoded CONNECT."""
    _, _, body = await client.expect(CONNECT)
    connect = decode_connect(body)
    client.send(encode_connack(version=version, session_present=True))
    _, _, body = await client.expect(SUBSCRIBE)
    packet_id, filters = decode_subscribe(body, version)
    client.send(encode_suback(packet_id, [1] * len(filters), version=version))
    return connect, filters


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_connect_asks_for_a_persistent_session_without_aliases_or_size_limit(
    tmp_path: Any, protocol: str
) -> None:
    async with FakeBroker().running() as broker:
        s = fake_settings(broker, tmp_path, protocol=protocol, parks=["a", "b"])
        source = MqttSource(s, asyncio.Queue(10), Metrics())
        async with source_running(source):
            client = await broker.accept()
            version = 5 if protocol == "5" else 4
            connect, filters = await handshake(client, version)
            await until(source.connected.is_set, what="subscribed")
    assert (connect.version, connect.clean_start) == (version, False)
    assert (connect.client_id, connect.keepalive) == ("fake-test", s.keepalive_s)
    assert (connect.username, connect.password) == ("collector", "s3cret")
    # Session expiry and receive maximum; no topic alias maximum, no maximum packet size.
    expected = {0x11: s.session_expiry_s, 0x21: s.receive_maximum} if version == 5 else {}
    assert connect.properties == expected
    assert filters == [("parks/a/#", 1), ("parks/b/#", 1)]


async def test_qos2_through_the_adapter_is_recorded_only_once_safe(tmp_path: Any) -> None:
    inbox: asyncio.Queue[RawMessage] = asyncio.Queue(10)
    async with FakeBroker().running() as broker:
        source = MqttSource(fake_settings(broker, tmp_path), inbox, Metrics())
        async with source_running(source):
            client = await broker.accept()
            await handshake(client)
            client.send(
                encode_publish("parks/p/storage/b/telemetry", b"{}", version=5, qos=2, packet_id=9)
            )
            message = await asyncio.wait_for(inbox.get(), 10)
            assert source.tracker.in_flight == 1
            source.settle([message.ticket])
            assert await client.next_packet() == (PUBREC, 0, b"\x00\x09")
            client.send(encode_ack(PUBREL, 9))
            assert await client.next_packet() == (PUBCOMP, 0, b"\x00\x09")
            assert source.tracker.in_flight == 0


async def test_a_session_taken_over_is_counted_and_backed_off(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    async with FakeBroker().running() as broker:
        source = MqttSource(fake_settings(broker, tmp_path), asyncio.Queue(10), metrics)
        async with source_running(source):
            client = await broker.accept()
            await handshake(client)
            await until(source.connected.is_set, what="subscribed")
            client.send(encode_disconnect(0x8E, version=MQTT_5))
            await until(
                lambda: metric_value(metrics, "parkwatch_mqtt_session_takeovers_total") == 1,
                what="the takeover counted",
            )
            await handshake(await broker.accept())  # back after the back-off
            await until(source.connected.is_set, what="subscribed again")
    assert "another connection took over the session" in caplog.text


async def test_a_refused_subscription_is_a_source_error(tmp_path: Any) -> None:
    async with FakeBroker().running() as broker:
        source = MqttSource(fake_settings(broker, tmp_path), asyncio.Queue(10), Metrics())
        attempt = asyncio.create_task(source.connect_once())
        client = await broker.accept()
        await client.expect(CONNECT)
        client.send(encode_connack(version=MQTT_5))
        _, _, body = await client.expect(SUBSCRIBE)
        client.send(encode_suback(decode_subscribe(body, 5)[0], [0x87], version=MQTT_5))
        with pytest.raises(SourceError, match=r"subscription to parks/# refused: Not authorized"):
            await attempt
        await client.closed()  # the attempt was given up: the connection closed


async def test_a_broker_that_never_answers_connect_times_out(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "CONNECT_TIMEOUT_S", 0.3)
    async with FakeBroker().running() as broker:
        source = MqttSource(fake_settings(broker, tmp_path), asyncio.Queue(10), Metrics())
        attempt = asyncio.create_task(source.connect_once())
        client = await broker.accept()
        await client.expect(CONNECT)
        with pytest.raises(SourceError, match="TimeoutError"):
            await attempt
        await client.closed()


async def test_garbage_from_the_broker_ends_the_connection_and_we_reconnect(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    inbox: asyncio.Queue[RawMessage] = asyncio.Queue(10)
    metrics = Metrics()
    with caplog.at_level(logging.WARNING):
        async with FakeBroker().running() as broker:
            source = MqttSource(fake_settings(broker, tmp_path), inbox, metrics)
            async with source_running(source):
                client = await broker.accept()
                await handshake(client)
                client.send(publishes(1) + b"\x00\x00")  # one message, then packet type 0
                message = await asyncio.wait_for(inbox.get(), 10)
                assert message.payload == b"1"
                assert await client.closed() == [(DISCONNECT, 0, b"\x81")]  # malformed packet
                await handshake(await broker.accept())
                await until(
                    lambda: metric_value(metrics, "parkwatch_mqtt_reconnects_total") == 1,
                    what="reconnected",
                )
    assert "broker sent an invalid packet" in caplog.text
